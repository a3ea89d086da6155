// Tests of the fused CUDA path.
//
// Part A runs everywhere: the per-entry math of detail/tile_math.hpp (the code
// the kernels run) against hand values in float64, and that math composed the
// way the kernels compose it (rows, online log-sum-exp merged from partial
// states, per-entry gradient coefficients) against the reference composition.
// Part B needs a CUDA device and the kernels (drolt::cuda linked): the fused CUDA
// path against the reference on fresh random inputs, for every dtype,
// normalization and distance, odd shapes and a feature equal to a centroid.
// Without a device each Part B test says so with WARN and passes.
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

#include "drolt/detail/tile_math.hpp"
#include "drolt/drolt.hpp"

#if defined(DROLT_HAS_CUDA_KERNELS)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

using drolt::Backend;
using drolt::Distance;
using drolt::Normalization;
using drolt::detail::DistKind;
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

// ================================================================== Part A (CPU)

TEST_CASE("online log-sum-exp equals a direct logsumexp, in any order and after merges",
          "[cuda][tile_math]") {
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
          "[cuda][tile_math]") {
  using drolt::detail::tm_dist_grad_coef;
  using drolt::detail::tm_distance;
  // Euclidean, scale 3: d2 = 4 -> distance 3 * 2 = 6; d(3||v||)/dv = 3 v / ||v|| = (9 / 6) v.
  CHECK(tm_distance(4.0, DistKind::euclidean, 3.0) == 6.0);
  CHECK(tm_dist_grad_coef(6.0, DistKind::euclidean, 3.0) == 1.5);
  // Squared, scale 0.5 (cosine on normalised inputs): d(0.5 ||v||^2)/dv = v.
  CHECK(tm_distance(4.0, DistKind::squared, 0.5) == 2.0);
  CHECK(tm_dist_grad_coef(2.0, DistKind::squared, 0.5) == 1.0);
  // At zero distance: no NaN, the Euclidean coefficient is 0 (as torch::cdist).
  CHECK(tm_distance(0.0, DistKind::euclidean, 1.0) == 0.0);
  CHECK(tm_dist_grad_coef(0.0, DistKind::euclidean, 1.0) == 0.0);
  CHECK(tm_dist_grad_coef(0.0f, DistKind::euclidean, 1.0f) == 0.0f);
  CHECK(tm_dist_grad_coef(0.0, DistKind::squared, 1.0) == 2.0);
  // Rounding in |z|^2 + |mu|^2 - 2 z.mu can give a tiny negative d2: clamped to 0.
  CHECK(tm_distance(-1e-12, DistKind::euclidean, 1.0) == 0.0);
  CHECK(tm_distance(-1e-12, DistKind::squared, 1.0) == 0.0);
}

TEST_CASE("scores and score gradients match hand values", "[cuda][tile_math]") {
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
                         bool batch, DistKind dist, double scale, double tau, double tau_b) {
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

void check_close(const torch::Tensor& got, const torch::Tensor& want, double tol,
                 const std::string& what) {
  REQUIRE(got.sizes() == want.sizes());
  auto g = got.to(torch::kDouble).cpu();
  auto w = want.to(torch::kDouble).cpu();
  const double scale = w.numel() ? w.abs().max().item<double>() : 0.0;
  auto err = (g - w).abs();
  const double max_err = err.numel() ? err.max().item<double>() : 0.0;
  const bool finite = torch::isfinite(g).all().item<bool>();
  const bool ok = (err <= tol * scale + tol * w.abs() + 1e-300).all().item<bool>();
  INFO(what << ": max abs error " << max_err << ", max |want| " << scale << ", tol " << tol);
  CHECK(finite);
  CHECK(ok);
}

}  // namespace

TEST_CASE("tile math composed as the kernels compose it reproduces the reference loss and gradients",
          "[cuda][tile_math]") {
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

  const DistKind kind =
      distance == Distance::euclidean ? DistKind::euclidean : DistKind::squared;
  auto e = emulate_kernels(z, y, mu, eps, valid, grad_loss, batch, kind, 1.0, tau, tau_b);
  check_close(e.loss, l.detach(), 1e-12, "loss vector");
  check_close(e.gz, zr.grad(), 1e-10, "grad features");
  check_close(e.gmu, mur.grad(), 1e-10, "grad centroids");
  check_close(e.geps, epsr.grad(), 1e-10, "grad radii");
}

// ================================================================== Part B (CUDA)

namespace {

bool cuda_kernels_ready() {
  return torch::cuda::is_available() && drolt::detail::cuda_backend_slot() != nullptr;
}

#define DROLT_SKIP_WITHOUT_CUDA()                                                         \
  do {                                                                                    \
    if (!cuda_kernels_ready()) {                                                          \
      WARN("CUDA test skipped: no CUDA device"                                            \
           << (drolt::detail::cuda_backend_slot() ? "" : " (and drolt::cuda not linked)")); \
      return;                                                                             \
    }                                                                                     \
  } while (0)

/// Fresh random seed unless DROLT_TEST_SEED is set; printed on failure.
uint64_t test_seed() {
  if (const char* s = std::getenv("DROLT_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

struct Shape {
  int64_t B, C, D;
};

std::ostream& operator<<(std::ostream& o, const Shape& s) {
  return o << "B=" << s.B << " C=" << s.C << " D=" << s.D;
}

/// Inputs in float64 on the CPU; each run quantises them to its dtype first, so
/// the float64 reference sees exactly the values the fused path sees.
struct Problem {
  torch::Tensor z, y, mu, eps, valid, grad_loss_batch, grad_loss_classes;
};

Problem make_problem(const Shape& s, uint64_t seed) {
  torch::manual_seed(seed);
  auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  Problem p;
  // Norms around 2 whatever D, as for embeddings: scores of moderate size, so the
  // comparison measures the kernels and not float32's resolution of huge scores.
  const double scale = 2.0 / std::sqrt(static_cast<double>(s.D));
  p.z = torch::randn({s.B, s.D}, f64) * scale;
  p.mu = torch::randn({s.C, s.D}, f64) * scale;
  p.y = torch::randint(0, s.C, {s.B}, torch::kLong);
  if (s.B > 2) p.y[s.B - 1] = p.y[0].item<int64_t>();  // at least one class twice
  p.eps = torch::rand({s.C}, f64) * 0.5;
  p.valid = torch::rand({s.C}, f64) > 0.2;
  p.valid[p.y[0].item<int64_t>()] = true;               // at least one row
  const int64_t c0 = p.y[0].item<int64_t>();
  p.z[0].copy_(p.mu[c0]);                               // a feature equal to its centroid
  if (s.B > 1 && s.C > 1) p.z[1].copy_(p.mu[(c0 + 1) % s.C]);  // and to another one
  p.grad_loss_batch = torch::rand({s.C}, f64) + 0.5;
  p.grad_loss_classes = torch::rand({s.B}, f64) + 0.5;
  return p;
}

struct Result {
  torch::Tensor loss, gz, gmu, geps;
};

/// Unreduced loss, weighted by a fixed random vector so every entry of grad_loss
/// differs, and the three gradients, all returned as float64 on the CPU.
Result run_loss(const Problem& p, torch::Dtype dt, bool ref64, const Opts& base,
                bool centroid_grad = true) {
  const auto dev = torch::Device(torch::kCUDA);
  const auto in_dt = ref64 ? torch::kDouble : dt;
  const auto eps_dt = dt == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto z = p.z.to(dt).to(in_dt).to(dev).requires_grad_();
  auto mu = p.mu.to(dt).to(in_dt).to(dev).requires_grad_(centroid_grad);
  auto eps = p.eps.to(eps_dt).to(ref64 ? torch::kDouble : eps_dt).to(dev).requires_grad_();
  auto y = p.y.to(dev);
  auto opts = base;
  opts.valid(p.valid.to(dev)).reduction(torch::kNone).backend(ref64 ? Backend::reference
                                                                    : Backend::fused);
  auto l = robust_centroid_loss(z, y, mu, eps, opts);
  const auto& r =
      base.normalization() == Normalization::batch ? p.grad_loss_batch : p.grad_loss_classes;
  (l.to(torch::kDouble) * r.to(dev)).sum().backward();
  Result out;
  out.loss = l.detach().to(torch::kDouble).cpu();
  out.gz = z.grad().to(torch::kDouble).cpu();
  out.gmu = centroid_grad ? mu.grad().to(torch::kDouble).cpu() : torch::Tensor();
  out.geps = eps.grad().to(torch::kDouble).cpu();
  return out;
}

double tolerance(torch::Dtype dt) {
  switch (dt) {
    case torch::kDouble: return 1e-9;
    case torch::kFloat: return 1e-4;
    case torch::kHalf: return 2e-2;
    default: return 5e-2;  // bfloat16: 8 bits of mantissa in the inputs and the gradients
  }
}

const char* dtype_name(torch::Dtype dt) {
  switch (dt) {
    case torch::kDouble: return "float64";
    case torch::kFloat: return "float32";
    case torch::kHalf: return "float16";
    default: return "bfloat16";
  }
}

}  // namespace

TEST_CASE("fused CUDA loss and gradients match the float64 reference", "[cuda]") {
  DROLT_SKIP_WITHOUT_CUDA();
  const torch::Dtype dt = GENERATE(torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16);
  const Normalization norm = GENERATE(Normalization::batch, Normalization::classes);
  const Distance distance =
      GENERATE(Distance::euclidean, Distance::squared_euclidean, Distance::cosine);
  // Odd sizes, sizes that are not multiples of a warp, and B, C above one block
  // of 256 (several chunks in the backward kernels).
  const Shape shape = GENERATE(values<Shape>(
      {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {128, 100, 64}, {257, 300, 129}, {64, 1000, 33}}));
  const uint64_t seed = test_seed();
  INFO(dtype_name(dt) << ", " << drolt::to_string(norm) << ", " << drolt::to_string(distance)
                      << ", " << shape << ", seed " << seed);

  const auto p = make_problem(shape, seed);
  const auto base = Opts().temperature(0.5).base_temperature(0.7).normalization(norm).distance(
      distance);
  const auto want = run_loss(p, dt, /*ref64=*/true, base);
  const auto got = run_loss(p, dt, /*ref64=*/false, base);
  const double tol = tolerance(dt);
  check_close(got.loss, want.loss, tol, "loss vector");
  check_close(got.gz, want.gz, tol, "grad features");
  check_close(got.gmu, want.gmu, tol, "grad centroids");
  check_close(got.geps, want.geps, tol, "grad radii");
}

TEST_CASE("fused CUDA path without centroid gradients gives the same feature and radius gradients",
          "[cuda][small]") {
  DROLT_SKIP_WITHOUT_CUDA();
  const Normalization norm = GENERATE(Normalization::batch, Normalization::classes);
  const uint64_t seed = test_seed();
  INFO(drolt::to_string(norm) << ", seed " << seed);
  const auto p = make_problem({40, 23, 17}, seed);
  const auto base = Opts().temperature(0.3).normalization(norm);
  const auto with = run_loss(p, torch::kFloat, false, base, /*centroid_grad=*/true);
  const auto without = run_loss(p, torch::kFloat, false, base, /*centroid_grad=*/false);
  CHECK(torch::equal(with.loss, without.loss));
  CHECK(torch::equal(with.gz, without.gz));
  CHECK(torch::equal(with.geps, without.geps));
}

TEST_CASE("fused CUDA path is bitwise deterministic", "[cuda][small]") {
  DROLT_SKIP_WITHOUT_CUDA();
  const Normalization norm = GENERATE(Normalization::batch, Normalization::classes);
  const uint64_t seed = test_seed();
  INFO(drolt::to_string(norm) << ", seed " << seed);
  // B and C above 256: several chunks in every backward kernel.
  const auto p = make_problem({260, 300, 130}, seed);
  const auto base = Opts().temperature(0.1).normalization(norm);
  const auto a = run_loss(p, torch::kFloat, false, base);
  const auto b = run_loss(p, torch::kFloat, false, base);
  CHECK(torch::equal(a.loss, b.loss));
  CHECK(torch::equal(a.gz, b.gz));
  CHECK(torch::equal(a.gmu, b.gmu));
  CHECK(torch::equal(a.geps, b.geps));
}

TEST_CASE("fused CUDA path: features equal to centroids give finite values and gradients",
          "[cuda][small]") {
  DROLT_SKIP_WITHOUT_CUDA();
  const torch::Dtype dt = GENERATE(torch::kFloat, torch::kHalf);
  const Normalization norm = GENERATE(Normalization::batch, Normalization::classes);
  INFO(dtype_name(dt) << ", " << drolt::to_string(norm));
  const auto dev = torch::Device(torch::kCUDA);
  auto mu = torch::randn({5, 8}, torch::TensorOptions().dtype(dt).device(dev));
  auto y = torch::tensor(std::vector<int64_t>{0, 1, 2, 3, 4, 0}, torch::kLong).to(dev);
  auto z = mu.index_select(0, y).clone().requires_grad_();  // every feature on its centroid
  auto muq = mu.clone().requires_grad_();
  auto eps = torch::full({5}, 0.5, torch::TensorOptions().device(dev)).requires_grad_();
  auto l = robust_centroid_loss(z, y, muq, eps,
                                Opts().temperature(0.1).normalization(norm).backend(Backend::fused));
  l.backward();
  CHECK(std::isfinite(l.item<double>()));
  CHECK(torch::isfinite(z.grad()).all().item<bool>());
  CHECK(torch::isfinite(muq.grad()).all().item<bool>());
  CHECK(torch::isfinite(eps.grad()).all().item<bool>());
}

TEST_CASE("fused CUDA path with class weights and mean or sum reduction matches the reference",
          "[cuda]") {
  DROLT_SKIP_WITHOUT_CUDA();
  const Normalization norm = GENERATE(Normalization::batch, Normalization::classes);
  const bool weighted = GENERATE(true, false);
  const bool mean = GENERATE(true, false);
  const uint64_t seed = test_seed();
  INFO(drolt::to_string(norm) << (weighted ? ", class weights" : "") << (mean ? ", mean" : ", sum")
                              << ", seed " << seed);
  const auto dev = torch::Device(torch::kCUDA);
  const auto p = make_problem({50, 30, 20}, seed);
  auto w = weighted ? (torch::rand({30}, torch::kDouble) + 0.5).to(dev) : torch::Tensor();
  auto run = [&](Backend be) {
    auto z = p.z.to(dev).requires_grad_();
    auto mu = p.mu.to(dev).requires_grad_();
    auto eps = p.eps.to(dev).requires_grad_();
    auto opts = Opts().temperature(0.2).class_weights(w).valid(p.valid.to(dev)).normalization(norm).backend(be);
    if (!mean) opts.reduction(torch::kSum);
    auto l = robust_centroid_loss(z, p.y.to(dev), mu, eps, opts);
    l.backward();
    return std::vector<torch::Tensor>{l.detach().cpu(), z.grad().cpu(), mu.grad().cpu(),
                                      eps.grad().cpu()};
  };
  const auto want = run(Backend::reference);
  const auto got = run(Backend::fused);
  const char* names[] = {"loss", "grad features", "grad centroids", "grad radii"};
  for (int k = 0; k < 4; ++k) check_close(got[k], want[k], 1e-10, names[k]);
}

TEST_CASE("CUDA reduction weights equal the CPU loops", "[cuda][small]") {
  DROLT_SKIP_WITHOUT_CUDA();
  const auto* be = drolt::detail::cuda_backend_slot();
  REQUIRE(be->reduction_weights != nullptr);
  const Normalization norm = GENERATE(Normalization::batch, Normalization::classes);
  const bool mean = GENERATE(true, false);
  const bool weighted = GENERATE(true, false);
  const torch::Dtype dt = GENERATE(torch::kFloat, torch::kDouble);
  // C = 9000: presence flags over many shared-memory words; "none valid": all weights 0.
  const int64_t C = GENERATE(as<int64_t>{}, 1, 37, 9000);
  const bool none_valid = GENERATE(false, true);
  const uint64_t seed = test_seed();
  INFO(drolt::to_string(norm) << (mean ? " mean" : " sum") << (weighted ? " weighted " : " ")
                              << dtype_name(dt) << " C=" << C << (none_valid ? " none valid" : "")
                              << ", seed " << seed);
  torch::manual_seed(seed);
  const int64_t B = 300;
  auto y = torch::randint(0, C, {B}, torch::kLong);
  auto valid = none_valid ? torch::zeros({C}, torch::kBool) : torch::rand({C}) > 0.3;
  auto w = weighted ? torch::rand({C}, torch::TensorOptions().dtype(dt)) + 0.5 : torch::Tensor();
  drolt::detail::CheckedInputs in;
  in.labels = y;
  in.valid = valid;
  in.weights = w;
  in.compute_dtype = dt;
  in.base_temperature = 1.0;
  const auto red = mean ? at::Reduction::Mean : at::Reduction::Sum;
  const auto want = drolt::detail::reduction_weights(in, norm, red, C, torch::TensorOptions().dtype(dt));
  const auto dev = torch::Device(torch::kCUDA);
  const auto got = be->reduction_weights(
      y.to(dev), valid.to(dev), weighted ? w.to(dev) : torch::Tensor(),
      norm == Normalization::batch ? drolt::detail::NormKind::batch
                                   : drolt::detail::NormKind::classes,
      mean, C, dt);
  REQUIRE(got.defined());
  CHECK(got.scalar_type() == dt);
  check_close(got.to(torch::kDouble).cpu(), want.to(torch::kDouble), dt == torch::kDouble ? 1e-14 : 1e-6,
              "reduction weights");
}

TEST_CASE("fused CUDA path at the iNaturalist shape matches the reference in float32", "[cuda]") {
  DROLT_SKIP_WITHOUT_CUDA();
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  const auto p = make_problem({256, 8142, 2048}, seed);
  const auto base = Opts().temperature(1.0);
  const auto want = run_loss(p, torch::kFloat, /*ref64=*/true, base);
  const auto got = run_loss(p, torch::kFloat, /*ref64=*/false, base);
  check_close(got.loss, want.loss, 1e-4, "loss vector");
  check_close(got.gz, want.gz, 1e-4, "grad features");
  check_close(got.gmu, want.gmu, 1e-4, "grad centroids");
  check_close(got.geps, want.geps, 1e-4, "grad radii");
}

#if defined(DROLT_HAS_CUDA_KERNELS)
TEST_CASE("CUDA kernels run on the current stream and without host synchronisation", "[cuda]") {
  DROLT_SKIP_WITHOUT_CUDA();
  // A CUDA graph capture fails on any synchronising call, and only records work
  // issued to the capturing (current) stream; replaying it must reproduce the
  // eager results.
  const auto* be = drolt::detail::cuda_backend_slot();
  const auto dev = torch::Device(torch::kCUDA);
  const auto p = make_problem({37, 21, 19}, test_seed());
  auto z = p.z.to(torch::kFloat).to(dev);
  auto mu = p.mu.to(torch::kFloat).to(dev);
  auto eps = p.eps.to(torch::kFloat).to(dev);
  auto y = p.y.to(dev);
  auto valid = p.valid.to(dev);
  const auto norm = GENERATE(drolt::detail::NormKind::batch, drolt::detail::NormKind::classes);
  drolt::detail::FusedParams fp;
  fp.norm = norm;
  fp.temperature = 0.5;
  fp.base_temperature = 0.5;
  fp.centroid_grad = true;
  auto grad_loss =
      torch::rand({norm == drolt::detail::NormKind::batch ? 21 : 37}, z.options());

  auto eager_f = be->forward(z, y, mu, eps, valid, fp);
  auto eager_b = be->backward(grad_loss, z, y, mu, eps, valid, eager_f.saved, fp);

  auto side = c10::cuda::getStreamFromPool();
  torch::cuda::synchronize();  // inputs and eager results are ready for the side stream
  drolt::detail::FusedForwardResult gf;
  drolt::detail::FusedBackwardResult gb;
  at::cuda::CUDAGraph graph;
  {
    c10::cuda::CUDAStreamGuard guard(side);
    // Warm-up on the side stream (first-use allocations happen outside capture).
    be->backward(grad_loss, z, y, mu, eps, valid, be->forward(z, y, mu, eps, valid, fp).saved, fp);
    graph.capture_begin();
    gf = be->forward(z, y, mu, eps, valid, fp);
    gb = be->backward(grad_loss, z, y, mu, eps, valid, gf.saved, fp);
    graph.capture_end();
    graph.replay();
  }
  torch::cuda::synchronize();
  CHECK(torch::equal(gf.loss, eager_f.loss));
  CHECK(torch::equal(gb.grad_features, eager_b.grad_features));
  CHECK(torch::equal(gb.grad_centroids, eager_b.grad_centroids));
  CHECK(torch::equal(gb.grad_radii, eager_b.grad_radii));
}
#endif
