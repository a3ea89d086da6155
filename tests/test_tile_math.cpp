// Tests of the per-entry math of drolt/detail/tile_math.hpp, the code the
// CUDA kernels run (compiled here for the CPU): against hand values in float64,
// and composed the way the kernels compose it (rows, online log-sum-exp merged
// from partial states, per-entry gradient coefficients) against the reference
// composition. They need no GPU.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "check_close.hpp"
#include "drolt/detail/tile_math.hpp"
#include "drolt/drolt.hpp"

using drolt::Backend;
using drolt::Distance;
using drolt::Normalization;
using drolt::detail::OnlineLse;
using drolt::functional::robust_centroid_loss;
using Opts = drolt::functional::RobustCentroidLossFuncOptions;

namespace {

double direct_logsumexp(const std::vector<double>& x) {
  double m = -std::numeric_limits<double>::infinity();
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

}  // namespace

TEST_CASE("online log-sum-exp equals a direct logsumexp, in any order and after merges",
          "[tile_math]") {
  const std::vector<double> x{-3.0, 2.5, 700.0, -1000.0, 699.5, 0.0, 2.5, -0.25};
  const double want = direct_logsumexp(x);

  SECTION("streamed in order") {
    OnlineLse<double> st;
    for (double v : x) st.add(v);
    CHECK(st.value() == Approx(want).epsilon(1e-15));
  }
  SECTION("streamed in reverse (the maximum arrives first)") {
    OnlineLse<double> st;
    for (auto it = x.rbegin(); it != x.rend(); ++it) st.add(*it);
    CHECK(st.value() == Approx(want).epsilon(1e-15));
  }
  SECTION("split into strided parts and merged, as warps are") {
    for (int parts : {2, 3, 8}) {
      std::vector<OnlineLse<double>> st(parts);
      for (size_t i = 0; i < x.size(); ++i) st[i % parts].add(x[i]);
      OnlineLse<double> total;
      for (const auto& s : st) total.merge(s);
      INFO("parts = " << parts);
      CHECK(total.value() == Approx(want).epsilon(1e-15));
    }
  }
  SECTION("merging an empty state changes nothing, either way round") {
    OnlineLse<double> a, empty;
    for (double v : x) a.add(v);
    OnlineLse<double> b = a;
    b.merge(empty);
    CHECK(b.value() == a.value());
    OnlineLse<double> c;
    c.merge(a);
    CHECK(c.value() == a.value());
    CHECK(std::isinf(empty.value()));
    CHECK(empty.value() < 0);
  }
  SECTION("float32 state keeps float accuracy on large scores") {
    OnlineLse<float> st;
    for (double v : x) st.add(static_cast<float>(v));
    CHECK(st.value() == Approx(want).epsilon(1e-6));
  }
}

TEST_CASE("distance and its gradient coefficient match hand values, and are 0 at distance 0",
          "[tile_math]") {
  using drolt::detail::tm_dist_grad_coef;
  using drolt::detail::tm_distance;
  // Euclidean, scale 3: d2 = 4 -> distance 3 * 2 = 6; d(3||v||)/dv = 3 v / ||v|| = (9 / 6) v.
  CHECK(tm_distance(4.0, Distance::euclidean, 3.0) == 6.0);
  CHECK(tm_dist_grad_coef(6.0, Distance::euclidean, 3.0) == 1.5);
  // Squared, scale 0.5 (cosine on normalised inputs): d(0.5 ||v||^2)/dv = v.
  CHECK(tm_distance(4.0, Distance::squared_euclidean, 0.5) == 2.0);
  CHECK(tm_dist_grad_coef(2.0, Distance::squared_euclidean, 0.5) == 1.0);
  // At zero distance: no NaN, the Euclidean coefficient is 0 (as torch::cdist).
  CHECK(tm_distance(0.0, Distance::euclidean, 1.0) == 0.0);
  CHECK(tm_dist_grad_coef(0.0, Distance::euclidean, 1.0) == 0.0);
  CHECK(tm_dist_grad_coef(0.0f, Distance::euclidean, 1.0f) == 0.0f);
  CHECK(tm_dist_grad_coef(0.0, Distance::squared_euclidean, 1.0) == 2.0);
  // Rounding in |z|^2 + |mu|^2 - 2 z.mu can give a tiny negative d2: clamped to 0.
  CHECK(tm_distance(-1e-12, Distance::euclidean, 1.0) == 0.0);
  CHECK(tm_distance(-1e-12, Distance::squared_euclidean, 1.0) == 0.0);
}

TEST_CASE("scores and score gradients match hand values", "[tile_math]") {
  using namespace drolt::detail;
  const double inv_tau = 2.0;  // tau = 0.5
  // batch: s = (-d - 2 eps [positive]) / tau
  CHECK(tm_score_batch(2.0, 0.25, true, inv_tau) == -5.0);
  CHECK(tm_score_batch(2.0, 0.25, false, inv_tau) == -4.0);
  // classes: s = (-d - eps [positive] + eps [negative]) / tau
  CHECK(tm_score_classes(2.0, 0.25, true, inv_tau) == -4.5);
  CHECK(tm_score_classes(2.0, 0.25, false, inv_tau) == -3.5);
  // p = exp(s - lse) = 0.25
  const double lse = 1.75, s = std::log(0.25) + lse;
  CHECK(tm_dscore_batch(s, lse, true, 2.0, 0.5) == Approx(2.0 * (0.25 - 0.5)).epsilon(1e-15));
  CHECK(tm_dscore_batch(s, lse, false, 2.0, 0.5) == Approx(2.0 * 0.25).epsilon(1e-15));
  CHECK(tm_dscore_classes(s, lse, true, 3.0) == Approx(3.0 * (0.25 - 1.0)).epsilon(1e-15));
  CHECK(tm_dscore_classes(s, lse, false, 3.0) == Approx(3.0 * 0.25).epsilon(1e-15));
}

namespace {

/// The kernels' algorithm written as plain loops over the tile math (float64):
/// forward rows with an online LSE merged from strided partial states (as the
/// warps of a block), backward from the saved LSE through per-entry coefficients.
struct Emulated {
  torch::Tensor loss, gz, gmu, geps;
};

Emulated emulate_kernels(const torch::Tensor& z_t, const torch::Tensor& y_t,
                         const torch::Tensor& mu_t, const torch::Tensor& eps_t,
                         const torch::Tensor& valid_t, const torch::Tensor& grad_loss_t,
                         bool batch, Distance dist, double scale, double tau, double tau_b) {
  using namespace drolt::detail;
  const int64_t B = z_t.size(0), D = z_t.size(1), C = mu_t.size(0);
  auto z = z_t.accessor<double, 2>();
  auto mu = mu_t.accessor<double, 2>();
  auto y = y_t.accessor<int64_t, 1>();
  auto eps = eps_t.accessor<double, 1>();
  auto valid = valid_t.accessor<bool, 1>();
  auto gl = grad_loss_t.accessor<double, 1>();
  const double inv_tau = 1.0 / tau, ratio = tau / tau_b;
  auto dist_of = [&](int64_t i, int64_t c) {
    double d2 = 0;
    for (int64_t d = 0; d < D; ++d) d2 += (z[i][d] - mu[c][d]) * (z[i][d] - mu[c][d]);
    return tm_distance(d2, dist, scale);
  };
  Emulated out;
  auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  out.gz = torch::zeros({B, D}, f64);
  out.gmu = torch::zeros({C, D}, f64);
  out.geps = torch::zeros({C}, f64);
  auto gz = out.gz.accessor<double, 2>();
  auto gmu = out.gmu.accessor<double, 2>();
  auto geps = out.geps.accessor<double, 1>();
  auto accumulate = [&](int64_t i, int64_t c, double g, double dist_ic) {
    const double q = g * tm_dist_grad_coef(dist_ic, dist, scale) * inv_tau;
    for (int64_t d = 0; d < D; ++d) {
      gz[i][d] -= q * (z[i][d] - mu[c][d]);
      gmu[c][d] += q * (z[i][d] - mu[c][d]);
    }
  };
  constexpr int kParts = 3;  // stands in for the warps of a block
  if (batch) {
    out.loss = torch::zeros({C}, f64);
    auto loss = out.loss.accessor<double, 1>();
    for (int64_t c = 0; c < C; ++c) {
      int64_t n = 0;
      for (int64_t i = 0; i < B; ++i) n += y[i] == c;
      if (n == 0 || !valid[c]) continue;
      OnlineLse<double> part[kParts];
      double pos = 0;
      for (int64_t i = 0; i < B; ++i) {
        const double s = tm_score_batch(dist_of(i, c), eps[c], y[i] == c, inv_tau);
        part[i % kParts].add(s);
        if (y[i] == c) pos += s;
      }
      OnlineLse<double> total;
      for (auto& p : part) total.merge(p);
      const double lse = total.value();
      loss[c] = -ratio * (pos / static_cast<double>(n) - lse);
      for (int64_t i = 0; i < B; ++i) {
        const bool positive = y[i] == c;
        const double dist_ic = dist_of(i, c);
        const double s = tm_score_batch(dist_ic, eps[c], positive, inv_tau);
        const double g = tm_dscore_batch(s, lse, positive, gl[c] * ratio, 1.0 / n);
        if (positive) geps[c] += -2.0 * inv_tau * g;
        accumulate(i, c, g, dist_ic);
      }
    }
  } else {
    out.loss = torch::zeros({B}, f64);
    auto loss = out.loss.accessor<double, 1>();
    for (int64_t i = 0; i < B; ++i) {
      if (!valid[y[i]]) continue;
      OnlineLse<double> part[kParts];
      double pos = 0;
      for (int64_t c = 0; c < C; ++c) {
        if (!valid[c]) continue;
        const double s = tm_score_classes(dist_of(i, c), eps[c], c == y[i], inv_tau);
        part[c % kParts].add(s);
        if (c == y[i]) pos = s;
      }
      OnlineLse<double> total;
      for (auto& p : part) total.merge(p);
      const double lse = total.value();
      loss[i] = -ratio * (pos - lse);
      for (int64_t c = 0; c < C; ++c) {
        if (!valid[c]) continue;
        const bool positive = c == y[i];
        const double dist_ic = dist_of(i, c);
        const double s = tm_score_classes(dist_ic, eps[c], positive, inv_tau);
        const double g = tm_dscore_classes(s, lse, positive, gl[i] * ratio);
        geps[c] += (positive ? -g : g) * inv_tau;
        accumulate(i, c, g, dist_ic);
      }
    }
  }
  return out;
}

}  // namespace

TEST_CASE("tile math composed as the kernels compose it reproduces the reference loss and gradients",
          "[tile_math]") {
  const bool batch = GENERATE(true, false);
  const Distance distance = GENERATE(Distance::euclidean, Distance::squared_euclidean);
  INFO("batch normalization: " << batch << ", distance: " << drolt::to_string(distance));
  torch::manual_seed(7);
  const int64_t B = 9, C = 6, D = 5;
  auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  auto z = torch::randn({B, D}, f64);
  auto mu = torch::randn({C, D}, f64);
  auto y = torch::tensor(std::vector<int64_t>{2, 0, 2, 5, 1, 0, 2, 4, 3}, torch::kLong);
  auto eps = torch::rand({C}, f64) * 0.6;
  auto valid = torch::ones({C}, torch::kBool);
  valid[4] = false;        // sample 7's class: no row, still a column in batch mode
  z[1].copy_(mu[0]);       // a feature equal to its own centroid
  z[3].copy_(mu[1]);       // and one equal to another class's centroid
  const double tau = 0.5, tau_b = 0.7;
  auto grad_loss = torch::rand({batch ? C : B}, f64) + 0.25;

  auto zr = z.clone().requires_grad_();
  auto mur = mu.clone().requires_grad_();
  auto epsr = eps.clone().requires_grad_();
  auto l = robust_centroid_loss(zr, y, mur, epsr,
                                Opts()
                                    .temperature(tau)
                                    .base_temperature(tau_b)
                                    .valid(valid)
                                    .normalization(batch ? Normalization::batch
                                                         : Normalization::classes)
                                    .distance(distance)
                                    .reduction(torch::kNone)
                                    .backend(Backend::reference));
  (l * grad_loss).sum().backward();

  const Distance kind =
      distance == Distance::euclidean ? Distance::euclidean : Distance::squared_euclidean;
  auto e = emulate_kernels(z, y, mu, eps, valid, grad_loss, batch, kind, 1.0, tau, tau_b);
  check_close(e.loss, l.detach(), 1e-12, "loss vector");
  check_close(e.gz, zr.grad(), 1e-10, "grad features");
  check_close(e.gmu, mur.grad(), 1e-10, "grad centroids");
  check_close(e.geps, epsr.grad(), 1e-10, "grad radii");
}
