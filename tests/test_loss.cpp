// Tests of the loss: values against a direct float64 composition written with
// plain loops, the fused path against the reference, gradients against finite
// differences, every bad input, and its options: radius policies
// (drolt/radius.hpp) and class weights (drolt/class_weights.hpp).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "drolt/drolt.hpp"

using drolt::Backend;
using drolt::Distance;
using drolt::Normalization;
using drolt::functional::robust_centroid_loss;
using Opts = drolt::functional::RobustCentroidLossFuncOptions;
using Catch::Matchers::Contains;

namespace {

struct Problem {
  torch::Tensor z, y, mu, eps, w, valid;
};

Problem make_problem(int64_t B, int64_t C, int64_t D, torch::Dtype dt, uint64_t seed,
                     bool all_classes = true) {
  torch::manual_seed(seed);
  Problem p;
  auto o = torch::TensorOptions().dtype(dt);
  p.z = torch::randn({B, D}, o);
  p.mu = torch::randn({C, D}, o);
  p.y = torch::randint(0, C, {B}, torch::kLong);
  if (all_classes && B >= C) p.y.slice(0, 0, C).copy_(torch::arange(C));
  p.y = p.y.index_select(0, torch::randperm(B));
  p.eps = torch::rand({C}, o) * 0.8;
  p.w = torch::rand({C}, o) + 0.5;
  p.valid = torch::ones({C}, torch::kBool);
  return p;
}

double dist_of(const double* a, const double* b, int64_t D, Distance kind) {
  double s = 0, na = 0, nb = 0, dot = 0;
  for (int64_t d = 0; d < D; ++d) {
    s += (a[d] - b[d]) * (a[d] - b[d]);
    na += a[d] * a[d];
    nb += b[d] * b[d];
    dot += a[d] * b[d];
  }
  if (kind == Distance::euclidean) return std::sqrt(s);
  if (kind == Distance::squared_euclidean) return s;
  return 1.0 - dot / (std::max(std::sqrt(na), 1e-12) * std::max(std::sqrt(nb), 1e-12));
}

double lse_of(const std::vector<double>& v) {
  double m = -std::numeric_limits<double>::infinity();
  for (double x : v) m = std::max(m, x);
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

/// docs/math.md's loss (both normalizations) written out with loops, in float64. Returns the
/// unreduced vector; `reduced` receives the mean / sum.
std::vector<double> direct(const Problem& p, double tau, double tau_b, Normalization norm,
                           Distance dist, bool weighted, double* mean_out, double* sum_out) {
  auto z = p.z.to(torch::kDouble).contiguous();
  auto mu = p.mu.to(torch::kDouble).contiguous();
  auto eps = p.eps.to(torch::kDouble).contiguous();
  auto w = p.w.to(torch::kDouble).contiguous();
  auto y = p.y.contiguous();
  auto v = p.valid.contiguous();
  const int64_t B = z.size(0), C = mu.size(0), D = z.size(1);
  const double* zp = z.data_ptr<double>();
  const double* mp = mu.data_ptr<double>();
  const int64_t* yp = y.data_ptr<int64_t>();
  const bool* vp = v.data_ptr<bool>();
  auto dd = [&](int64_t i, int64_t c) { return dist_of(zp + i * D, mp + c * D, D, dist); };
  double num = 0, den = 0;
  if (norm == Normalization::batch) {
    std::vector<double> l(C, 0.0);
    for (int64_t c = 0; c < C; ++c) {
      int64_t n = 0;
      for (int64_t i = 0; i < B; ++i) n += yp[i] == c;
      if (n == 0 || !vp[c]) continue;
      std::vector<double> s(B);
      double pos = 0;
      for (int64_t i = 0; i < B; ++i) {
        s[i] = (-dd(i, c) - 2 * eps[c].item<double>() * (yp[i] == c)) / tau;
        if (yp[i] == c) pos += s[i];
      }
      l[c] = -(tau / tau_b) * (pos / n - lse_of(s));
      const double wc = weighted ? w[c].item<double>() : 1.0;
      num += wc * l[c];
      den += wc;
    }
    *mean_out = num / den;
    *sum_out = num;
    return l;
  }
  std::vector<double> l(B, 0.0);
  for (int64_t i = 0; i < B; ++i) {
    if (!vp[yp[i]]) continue;
    std::vector<double> s;
    double spos = 0;
    for (int64_t c = 0; c < C; ++c) {
      if (!vp[c]) continue;
      const double e = eps[c].item<double>();
      const double sc = (-dd(i, c) + (yp[i] == c ? -e : e)) / tau;
      s.push_back(sc);
      if (yp[i] == c) spos = sc;
    }
    l[i] = -(tau / tau_b) * (spos - lse_of(s));
    const double wi = weighted ? w[yp[i]].item<double>() : 1.0;
    num += wi * l[i];
    den += wi;
  }
  *mean_out = num / den;
  *sum_out = num;
  return l;
}

Opts opts_for(const Problem& p, double tau, double tau_b, Normalization norm, Distance dist,
              bool weighted, Backend be) {
  Opts o;
  o.temperature(tau).base_temperature(tau_b).normalization(norm).distance(dist).backend(be).valid(
      p.valid);
  if (weighted) o.class_weights(p.w);
  return o;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(1e-30, std::abs(b)); }

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
  auto s = b.to(torch::kDouble).abs().max().item<double>();
  return d / std::max(s, 1e-30);
}

struct Grads {
  torch::Tensor loss, gz, gmu, geps;
};

Grads run_with_grads(const Problem& p, const Opts& o, bool centroid_grad) {
  auto z = p.z.clone().requires_grad_(true);
  auto mu = p.mu.clone().requires_grad_(centroid_grad);
  auto eps = p.eps.clone().requires_grad_(true);
  auto l = robust_centroid_loss(z, p.y, mu, eps, o);
  // A random upstream gradient (also exercises reduction none); drawn in float64
  // so float32 and float64 runs see the same values.
  torch::manual_seed(7);
  auto g = (torch::rand(l.sizes(), torch::kDouble) + 0.5).to(l.scalar_type());
  (l * g).sum().backward();
  return {l.detach(), z.grad(), centroid_grad ? mu.grad() : torch::Tensor(), eps.grad()};
}

}  // namespace

TEST_CASE("loss equals a float64 direct composition", "[loss]") {
  auto norm = GENERATE(Normalization::batch, Normalization::classes);
  auto dist = GENERATE(Distance::euclidean, Distance::squared_euclidean, Distance::cosine);
  auto weighted = GENERATE(false, true);
  auto be = GENERATE(Backend::reference, Backend::fused);
  auto p = make_problem(24, 6, 5, torch::kDouble, 11);
  p.valid[4] = false;  // a class without centroid: no row, still a negative column
  const double tau = 0.7, tau_b = 1.3;
  double mean = 0, sum = 0;
  auto l = direct(p, tau, tau_b, norm, dist, weighted, &mean, &sum);
  auto o = opts_for(p, tau, tau_b, norm, dist, weighted, be);
  CAPTURE(drolt::to_string(norm), drolt::to_string(dist), weighted, static_cast<int>(be));
  const double tol = be == Backend::reference ? 1e-12 : 1e-10;
  auto got_mean = robust_centroid_loss(p.z, p.y, p.mu, p.eps, o).item<double>();
  CHECK(rel(got_mean, mean) < tol);
  auto got_sum =
      robust_centroid_loss(p.z, p.y, p.mu, p.eps, Opts(o).reduction(torch::kSum)).item<double>();
  CHECK(rel(got_sum, sum) < tol);
  auto got_none = robust_centroid_loss(p.z, p.y, p.mu, p.eps, Opts(o).reduction(torch::kNone));
  REQUIRE(got_none.size(0) == static_cast<int64_t>(l.size()));
  for (size_t k = 0; k < l.size(); ++k) CHECK(std::abs(got_none[k].item<double>() - l[k]) < tol * 10);
}

TEST_CASE("fused path matches the reference in float32 for values and all three gradients", "[loss]") {
  auto norm = GENERATE(Normalization::batch, Normalization::classes);
  auto dist = GENERATE(Distance::euclidean, Distance::squared_euclidean, Distance::cosine);
  auto red = GENERATE(0, 1, 2);
  auto p = make_problem(128, 100, 64, torch::kFloat, 3);
  p.valid[17] = false;
  // Temperatures that keep scores O(10) for each distance (squared distances of
  // these inputs are ~128), so float32 conditioning is the same for all three.
  const double tau = dist == Distance::squared_euclidean ? 8.0 : dist == Distance::cosine ? 0.1 : 0.5;
  auto o = opts_for(p, tau, tau, norm, dist, true, Backend::reference);
  if (red == 1) o.reduction(torch::kSum);
  if (red == 2) o.reduction(torch::kNone);
  CAPTURE(drolt::to_string(norm), drolt::to_string(dist), red);
  auto ref = run_with_grads(p, o, true);
  auto fus = run_with_grads(p, Opts(o).backend(Backend::fused), true);
  CHECK(max_rel(fus.loss, ref.loss) < 1e-5);
  CHECK(max_rel(fus.gz, ref.gz) < 1e-5);
  CHECK(max_rel(fus.gmu, ref.gmu) < 1e-5);
  CHECK(max_rel(fus.geps, ref.geps) < 1e-5);
}

TEST_CASE("gradients match finite differences in float64", "[loss]") {
  auto norm = GENERATE(Normalization::batch, Normalization::classes);
  auto dist = GENERATE(Distance::euclidean, Distance::squared_euclidean, Distance::cosine);
  auto be = GENERATE(Backend::reference, Backend::fused);
  auto p = make_problem(9, 4, 3, torch::kDouble, 5);
  auto o = opts_for(p, 0.8, 1.1, norm, dist, true, be);
  CAPTURE(drolt::to_string(norm), drolt::to_string(dist), static_cast<int>(be));
  auto g = run_with_grads(p, Opts(o).reduction(torch::kMean), true);
  auto f = [&](const torch::Tensor& z, const torch::Tensor& mu, const torch::Tensor& eps) {
    torch::NoGradGuard ng;
    return robust_centroid_loss(z, p.y, mu, eps, o).item<double>();
  };
  // The upstream gradient in run_with_grads is a fixed random scalar for kMean.
  torch::manual_seed(7);
  const double up = (torch::rand({}, torch::kDouble) + 0.5).item<double>();
  const double h = 1e-6;
  auto check = [&](torch::Tensor t, const torch::Tensor& grad, int which) {
    auto flat = t.view(-1);
    for (int64_t k = 0; k < flat.numel(); ++k) {
      const double orig = flat[k].item<double>();
      flat[k] = orig + h;
      const double fp = which == 0 ? f(t, p.mu, p.eps) : which == 1 ? f(p.z, t, p.eps) : f(p.z, p.mu, t);
      flat[k] = orig - h;
      const double fm = which == 0 ? f(t, p.mu, p.eps) : which == 1 ? f(p.z, t, p.eps) : f(p.z, p.mu, t);
      flat[k] = orig;
      const double fd = up * (fp - fm) / (2 * h);
      CHECK(std::abs(fd - grad.view(-1)[k].item<double>()) < 1e-6 * std::max(1.0, std::abs(fd)));
    }
  };
  check(p.z.clone(), g.gz, 0);
  check(p.mu.clone(), g.gmu, 1);
  check(p.eps.clone(), g.geps, 2);
}

TEST_CASE("margin is applied by class, not by batch position", "[loss]") {
  auto be = GENERATE(Backend::reference, Backend::fused);
  auto norm = GENERATE(Normalization::batch, Normalization::classes);
  auto p = make_problem(40, 7, 6, torch::kDouble, 21);
  p.eps = torch::linspace(0.1, 1.5, 7, torch::kDouble);  // distinct radii expose mis-indexing
  auto o = opts_for(p, 0.6, 0.6, norm, Distance::euclidean, false, be);
  const double base = robust_centroid_loss(p.z, p.y, p.mu, p.eps, o).item<double>();
  double mean = 0, sum = 0;
  direct(p, 0.6, 0.6, norm, Distance::euclidean, false, &mean, &sum);
  CHECK(rel(base, mean) < 1e-10);
  for (int trial = 0; trial < 5; ++trial) {
    auto perm = torch::randperm(40);
    const double shuffled =
        robust_centroid_loss(p.z.index_select(0, perm), p.y.index_select(0, perm), p.mu, p.eps, o)
            .item<double>();
    CHECK(rel(shuffled, base) < 1e-12);
  }
  // Sorting by class must not change it either (a position-indexed margin would
  // only be right in this order).
  auto order = std::get<1>(p.y.sort());
  CHECK(rel(robust_centroid_loss(p.z.index_select(0, order), p.y.index_select(0, order), p.mu,
                                 p.eps, o)
                .item<double>(),
            base) < 1e-12);
}

TEST_CASE("eps = 0 gives the plain centroid likelihood loss", "[loss]") {
  auto be = GENERATE(Backend::reference, Backend::fused);
  auto p = make_problem(30, 5, 4, torch::kDouble, 8);
  const double tau = 0.9;
  auto got = robust_centroid_loss(p.z, p.y, p.mu, torch::zeros({5}, torch::kDouble),
                                  Opts().temperature(tau).backend(be))
                 .item<double>();
  // Eq. 8: -(1/|P|) sum_c (1/n_c) sum_{i in c} log softmax_j(-d(z_j, mu_c)/tau)_i
  auto logits = -torch::cdist(p.mu, p.z) / tau;  // [C, B]
  auto logp = torch::log_softmax(logits, 1);
  double total = 0;
  for (int64_t c = 0; c < 5; ++c) total += -logp[c].masked_select(p.y == c).mean().item<double>();
  CHECK(rel(got, total / 5) < 1e-12);
}

TEST_CASE("a feature equal to a centroid gives finite values and gradients", "[loss]") {
  auto dt = GENERATE(torch::kFloat, torch::kDouble);
  auto dist = GENERATE(Distance::euclidean, Distance::squared_euclidean, Distance::cosine);
  auto norm = GENERATE(Normalization::batch, Normalization::classes);
  auto p = make_problem(16, 4, 8, dt, 2);
  p.z[0].copy_(p.mu[p.y[0].item<int64_t>()]);
  p.z[1].copy_(p.mu[(p.y[1].item<int64_t>() + 1) % 4]);  // equal to a negative's centroid
  auto o = opts_for(p, 0.5, 0.5, norm, dist, false, Backend::reference);
  auto ref = run_with_grads(p, o, true);
  auto fus = run_with_grads(p, Opts(o).backend(Backend::fused), true);
  for (auto* t : {&fus.loss, &fus.gz, &fus.gmu, &fus.geps, &ref.gz})
    CHECK(torch::isfinite(*t).all().item<bool>());
  const double tol = dt == torch::kFloat ? 1e-5 : 1e-10;
  CHECK(max_rel(fus.loss, ref.loss) < tol);
  CHECK(max_rel(fus.gz, ref.gz) < tol);
  CHECK(max_rel(fus.gmu, ref.gmu) < tol);
  CHECK(max_rel(fus.geps, ref.geps) < tol);
}

TEST_CASE("features clustered far from the origin keep float32 accuracy", "[loss]") {
  // Real penultimate features share a large common component; the fused path's
  // |z|^2 + |mu|^2 - 2 z.mu must not lose the small differences (without
  // centring, float32 cancellation here costs ~1% of each squared distance).
  auto p = make_problem(64, 10, 32, torch::kFloat, 4);
  p.mu = p.mu + 40.0f;
  p.z = p.mu.index_select(0, p.y) + 0.3 * torch::randn({64, 32});
  auto o = opts_for(p, 1.0, 1.0, Normalization::batch, Distance::euclidean, false, Backend::reference);
  auto pd = p;
  pd.z = p.z.to(torch::kDouble);
  pd.mu = p.mu.to(torch::kDouble);
  pd.eps = p.eps.to(torch::kDouble);
  auto exact = run_with_grads(pd, o, true);
  auto ref32 = run_with_grads(p, o, true);
  auto fus = run_with_grads(p, Opts(o).backend(Backend::fused), true);
  CHECK(max_rel(fus.loss, exact.loss) < 1e-5);
  CHECK(max_rel(fus.gz, exact.gz) < 2e-5);
  CHECK(max_rel(fus.gmu, exact.gmu) < 2e-5);
  CHECK(max_rel(fus.geps, exact.geps) < 2e-5);
  // The float32 reference composition is in the same range (sanity of the bound).
  CHECK(max_rel(ref32.gz, exact.gz) < 2e-5);
}

TEST_CASE("non-contiguous inputs give the same loss", "[loss]") {
  auto be = GENERATE(Backend::reference, Backend::fused);
  auto p = make_problem(20, 5, 6, torch::kFloat, 9);
  auto o = Opts().backend(be);
  auto base = robust_centroid_loss(p.z, p.y, p.mu, p.eps, o).item<double>();
  auto zt = p.z.t().contiguous().t();
  auto mut = p.mu.t().contiguous().t();
  auto y2 = torch::stack({p.y, p.y}, 1).select(1, 1);
  auto eps2 = torch::stack({p.eps, p.eps}, 1).select(1, 0);
  REQUIRE_FALSE(zt.is_contiguous());
  REQUIRE_FALSE(y2.is_contiguous());
  CHECK(rel(robust_centroid_loss(zt, y2, mut, eps2, o).item<double>(), base) < 1e-6);
}

TEST_CASE("a batch whose classes have no centroid gives a zero loss, not NaN", "[loss]") {
  auto be = GENERATE(Backend::reference, Backend::fused);
  auto p = make_problem(8, 4, 3, torch::kFloat, 1);
  p.y.fill_(2);
  auto valid = torch::tensor({true, true, false, true});
  auto z = p.z.clone().requires_grad_(true);
  auto l = robust_centroid_loss(z, p.y, p.mu, p.eps, Opts().valid(valid).backend(be));
  CHECK(l.item<double>() == 0.0);
  l.backward();
  CHECK(z.grad().abs().sum().item<double>() == 0.0);
}

TEST_CASE("non-finite features give NaN, or a named error with check_finite", "[loss]") {
  auto be = GENERATE(Backend::reference, Backend::fused);
  auto p = make_problem(10, 3, 4, torch::kFloat, 1);
  p.z[3][1] = std::numeric_limits<float>::quiet_NaN();
  p.z[7][0] = std::numeric_limits<float>::infinity();
  auto l = robust_centroid_loss(p.z, p.y, p.mu, p.eps, Opts().backend(be));
  CHECK(std::isnan(l.item<double>()));
  REQUIRE_THROWS_WITH(robust_centroid_loss(p.z, p.y, p.mu, p.eps, Opts().backend(be).check_finite(true)),
                      Contains("2 row(s): 3, 7"));
}

TEST_CASE("bad input raises c10::Error naming what was expected and what was given", "[loss]") {
  auto p = make_problem(6, 3, 4, torch::kFloat, 1);
  auto call = [&](const torch::Tensor& z, const torch::Tensor& y, const torch::Tensor& mu,
                  const torch::Tensor& eps, const Opts& o = {}) {
    return robust_centroid_loss(z, y, mu, eps, o);
  };
  CHECK_THROWS_AS(call(p.z.view(-1), p.y, p.mu, p.eps), c10::Error);
  CHECK_THROWS_WITH(call(p.z.view(-1), p.y, p.mu, p.eps), Contains("expected features of shape [B, D], got [24]"));
  CHECK_THROWS_WITH(call(p.z.slice(0, 0, 0), p.y.slice(0, 0, 0), p.mu, p.eps), Contains("non-empty batch"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu.slice(1, 0, 3), p.eps), Contains("expected centroids of shape [C, 4]"));
  CHECK_THROWS_WITH(call(p.z, p.y.slice(0, 0, 5), p.mu, p.eps), Contains("expected labels of shape [6], got [5]"));
  CHECK_THROWS_WITH(call(p.z, p.y.to(torch::kFloat), p.mu, p.eps), Contains("expected integer labels, got Float"));
  auto bad_y = p.y.clone();
  bad_y[2] = 3;
  CHECK_THROWS_WITH(call(p.z, bad_y, p.mu, p.eps), Contains("expected labels in [0, 3), got values in [0, 3]"));
  bad_y[2] = -1;
  CHECK_THROWS_WITH(call(p.z, bad_y, p.mu, p.eps), Contains("expected labels in [0, 3)"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu.to(torch::kDouble), p.eps), Contains("expected centroids of the features' dtype Float, got Double"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps.slice(0, 0, 2)), Contains("expected radii of shape [3] (one per class), got [2]"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps - 5), Contains("expected radii >= 0"));
  auto nan_eps = p.eps.clone();
  nan_eps[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, nan_eps), Contains("expected finite radii"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps, Opts().temperature(0)), Contains("expected temperature > 0, got 0"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps, Opts().temperature(-1)), Contains("expected temperature > 0"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps, Opts().base_temperature(0.0)), Contains("expected base_temperature > 0"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps, Opts().class_weights(torch::ones({4}))), Contains("expected class_weights of shape [3], got [4]"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps, Opts().class_weights(-torch::ones({3}))), Contains("expected class_weights > 0"));
  CHECK_THROWS_WITH(call(p.z, p.y, p.mu, p.eps, Opts().valid(torch::ones({2}, torch::kBool))), Contains("valid-centroid mask of shape [3]"));
  CHECK_THROWS_WITH(call(p.z.to(torch::kInt), p.y, p.mu, p.eps), Contains("expected floating-point features"));
  CHECK_THROWS_WITH(call(p.z.to(torch::kHalf), p.y, p.mu.to(torch::kHalf), p.eps, Opts().backend(Backend::fused)),
                    Contains("fused backend does not support"));
  CHECK_THROWS_WITH(drolt::RadiusPolicy::shared(-1.0), Contains("eps0 >= 0, got -1"));
  CHECK_THROWS_WITH(drolt::RadiusPolicy::parse("huge", 0.5), Contains("got 'huge'"));
}

TEST_CASE("module: learned radii are parameters and stay non-negative under SGD", "[loss][module]") {
  const int64_t C = 5;
  drolt::RobustCentroidLoss loss(drolt::RobustCentroidLossOptions(C).temperature(0.5).radius(
      drolt::RadiusPolicy::learned(0.5)));
  auto params = loss->named_parameters();
  REQUIRE(params.size() == 1);
  REQUIRE(params.contains("radii"));
  CHECK(loss->radii().allclose(torch::full({C}, 0.5)));
  torch::optim::SGD opt(loss->parameters(), torch::optim::SGDOptions(0.5).momentum(0.9));
  auto p = make_problem(40, C, 6, torch::kFloat, 3);
  for (int step = 0; step < 300; ++step) {
    opt.zero_grad();
    auto l = loss->compute(p.z, p.y, p.mu);
    l.backward();
    opt.step();
    REQUIRE((loss->radii() >= 0).all().item<bool>());
  }
  // The gradient is never negative (docs/math.md, "Gradients"), so every radius has shrunk.
  CHECK((loss->radii() < 0.5).all().item<bool>());
  CHECK(loss->radii().min().item<double>() == 0.0);
}

TEST_CASE("module: fixed policies and counts", "[loss][module]") {
  auto counts = torch::tensor({100, 25, 4}, torch::kLong);
  drolt::RobustCentroidLoss sq(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::sqrt_n(2.0)).class_counts(counts));
  CHECK(sq->radii().allclose(torch::tensor({0.2f, 0.4f, 1.0f})));
  CHECK(sq->parameters().empty());
  drolt::RobustCentroidLoss sh(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::shared(0.3)));
  CHECK(sh->radii().allclose(torch::full({3}, 0.3f)));
  // sqrt-n without counts takes them from the bank.
  drolt::CentroidBank bank(3, 4);
  auto p = make_problem(12, 3, 4, torch::kFloat, 1);
  bank->accumulate(p.z, p.y);
  bank->finalize();
  drolt::RobustCentroidLoss sq2(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::sqrt_n(1.0)));
  CHECK_THROWS_WITH(sq2->compute(p.z, p.y, p.mu), Contains("needs the training-set class counts"));
  auto l = sq2(p.z, p.y, bank);
  CHECK(std::isfinite(l.item<double>()));
  CHECK(sq2->radii().allclose(1.0 / bank->counts().to(torch::kFloat).sqrt()));
  // Module and functional forms agree.
  auto f = robust_centroid_loss(p.z, p.y, bank->centroids(), sq2->radii(), Opts().valid(bank->valid()));
  CHECK(rel(l.item<double>(), f.item<double>()) < 1e-7);

  // The bank's counts are read again only when they change, but then always:
  // another epoch's finalize(), another bank, a bank loaded from a file.
  const auto expect = [](const drolt::CentroidBank& b) { return 1.0 / b->counts().to(torch::kFloat).sqrt(); };
  bank->clear_sums();
  bank->accumulate(p.z.narrow(0, 0, 6), p.y.narrow(0, 0, 6));
  bank->finalize();
  sq2(p.z, p.y, bank);
  CHECK(sq2->radii().allclose(expect(bank)));
  drolt::CentroidBank other(3, 4);
  auto q = make_problem(30, 3, 4, torch::kFloat, 2);
  other->accumulate(q.z, q.y);
  other->finalize();
  REQUIRE_FALSE(torch::equal(other->counts(), bank->counts()));
  sq2(p.z, p.y, other);
  CHECK(sq2->radii().allclose(expect(other)));
  sq2(p.z, p.y, bank);  // back to the first bank
  CHECK(sq2->radii().allclose(expect(bank)));
  std::stringstream file;
  torch::save(other, file);
  torch::load(bank, file);  // the same bank object, other counts
  REQUIRE(torch::equal(bank->counts(), other->counts()));
  sq2(p.z, p.y, bank);
  CHECK(sq2->radii().allclose(expect(other)));
  // has_counts() follows set_class_counts and load as well.
  drolt::RobustCentroidLoss sq3(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::sqrt_n(1.0)));
  CHECK_FALSE(sq3->has_counts());
  sq3->set_class_counts(torch::tensor({4, 9, 16}, torch::kLong));
  CHECK(sq3->has_counts());
  CHECK(sq3->radii().allclose(torch::tensor({0.5f, 1.0f / 3, 0.25f})));
  std::stringstream empty;
  torch::save(drolt::RobustCentroidLoss(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::sqrt_n(1.0))),
              empty);
  torch::load(sq3, empty);
  CHECK_FALSE(sq3->has_counts());
  CHECK_THROWS_WITH(sq3->compute(p.z, p.y, p.mu), Contains("needs the training-set class counts"));
}

TEST_CASE("module: state round-trips through torch::save", "[loss][module]") {
  drolt::RobustCentroidLoss a(drolt::RobustCentroidLossOptions(4).radius(drolt::RadiusPolicy::learned(0.5)));
  {
    torch::NoGradGuard g;
    a->named_parameters()["radii"].copy_(torch::tensor({0.1f, 0.2f, 0.3f, 0.4f}));
  }
  const std::string path = std::string(DROLT_TEST_TMPDIR) + "/loss_module.pt";
  torch::save(a, path);
  drolt::RobustCentroidLoss b(drolt::RobustCentroidLossOptions(4).radius(drolt::RadiusPolicy::learned(0.5)));
  torch::load(b, path);
  CHECK(b->radii().equal(a->radii()));
  auto c = std::dynamic_pointer_cast<drolt::RobustCentroidLossImpl>(a->clone());
  REQUIRE(c);
  CHECK(c->radii().equal(a->radii()));
}

TEST_CASE("radius policies give the documented radii", "[radius]") {
  auto counts = torch::tensor({400, 100, 16, 0});
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  CHECK(drolt::RadiusPolicy::shared(0.7).fixed_radii(4, {}, o).equal(torch::full({4}, 0.7, o)));
  auto r = drolt::RadiusPolicy::sqrt_n(2.0).fixed_radii(4, counts, o);
  CHECK(r.allclose(torch::tensor({0.1, 0.2, 0.5, 2.0}, o)));
  CHECK(drolt::RadiusPolicy::parse("erm", 0.5).eps0() == 0.0);
  CHECK(drolt::RadiusPolicy::parse("sqrtn", 0.5).kind() == drolt::RadiusPolicy::Kind::sqrt_n);
  CHECK(drolt::RadiusPolicy::parse("learned", 0.5).is_learned());
  CHECK_THROWS_WITH(drolt::RadiusPolicy::sqrt_n(1.0).fixed_radii(4, {}, o), Contains("class counts"));
  CHECK_THROWS_WITH(drolt::RadiusPolicy::learned(1.0).fixed_radii(4, counts, o), Contains("no fixed radii"));
}

TEST_CASE("class weights: none, inverse frequency, effective number", "[loss][class_weights]") {
  using drolt::ClassWeighting;
  const auto none = drolt::class_weights({100, 10, 1}, ClassWeighting::none);
  REQUIRE(none.scalar_type() == torch::kFloat32);
  CHECK(torch::equal(none, torch::ones({3})));

  const auto inv = drolt::class_weights({100, 10, 1}, ClassWeighting::inverse_frequency);
  // proportional to (0.01, 0.1, 1), scaled to average 1: 3 / 1.11 times that.
  CHECK(inv[0].item<float>() == Approx(0.03 / 1.11));
  CHECK(inv[1].item<float>() == Approx(0.3 / 1.11));
  CHECK(inv[2].item<float>() == Approx(3.0 / 1.11));
  CHECK(inv.mean().item<float>() == Approx(1.0));

  // beta = 0.9, n = (1, 2): E = (1 - 0.9) / (1 - 0.9^n) = (1, 0.1 / 0.19).
  const auto eff = drolt::class_weights({1, 2}, ClassWeighting::effective_number, 0.9);
  const double e2 = 0.1 / 0.19;
  CHECK(eff[0].item<float>() == Approx(2.0 / (1.0 + e2)));
  CHECK(eff[1].item<float>() == Approx(2.0 * e2 / (1.0 + e2)));

  SECTION("effective number spans uniform (beta = 0) to inverse frequency (beta -> 1)") {
    CHECK(torch::allclose(drolt::class_weights({100, 10, 1}, ClassWeighting::effective_number, 0.0),
                          torch::ones({3})));
    CHECK(torch::allclose(
        drolt::class_weights({100, 10, 1}, ClassWeighting::effective_number, 1.0 - 1e-9), inv,
        1e-5));
    // Near beta = 1 the naive 1 - beta^n cancels; the weights stay finite and ordered.
    const auto w = drolt::class_weights({5000, 50}, ClassWeighting::effective_number, 0.9999);
    CHECK(std::isfinite(w[0].item<float>()));
    CHECK(w[1].item<float>() > w[0].item<float>());
  }
  SECTION("re-weighting needs every class to have samples; none does not") {
    CHECK_THROWS_WITH(drolt::class_weights({10, 0, 10}, ClassWeighting::inverse_frequency),
                      Contains("counts > 0") && Contains("got 0 for class 1"));
    CHECK_THROWS_WITH(drolt::class_weights({10, 0, 10}, ClassWeighting::effective_number),
                      Contains("got 0 for class 1"));
    CHECK(torch::equal(drolt::class_weights({10, 0, 10}, ClassWeighting::none), torch::ones({3})));
  }
  SECTION("invalid input") {
    CHECK_THROWS_WITH(drolt::class_weights({}, ClassWeighting::none),
                      Contains("at least one class"));
    CHECK_THROWS_WITH(drolt::class_weights({1, -2}, ClassWeighting::none),
                      Contains("counts >= 0, got -2"));
    CHECK_THROWS_WITH(drolt::class_weights({1, 2}, ClassWeighting::effective_number, 1.0),
                      Contains("beta in [0, 1), got 1"));
  }
}

TEST_CASE("class weights: count_ratio is n_c / n_max (max_one) or n_c scaled to average 1", "[loss][class_weights]") {
  using drolt::ClassWeighting;
  using drolt::ClassWeightScale;
  const std::vector<int64_t> counts{500, 120, 0, 7, 33};
  const auto ratio = drolt::class_weights(counts, ClassWeighting::count_ratio, 0.999, ClassWeightScale::max_one);
  const auto mean = drolt::class_weights(counts, ClassWeighting::count_ratio);
  REQUIRE(ratio.scalar_type() == torch::kFloat32);
  REQUIRE(ratio.numel() == 5);
  double total = 0;
  for (auto n : counts) total += static_cast<double>(n);
  for (size_t c = 0; c < counts.size(); ++c) {
    // float64 definitions, rounded once to float32: bit for bit.
    const double n = static_cast<double>(counts[c]);
    CHECK(ratio[static_cast<int64_t>(c)].item<float>() == static_cast<float>(n / 500.0));
    CHECK(mean[static_cast<int64_t>(c)].item<float>() == static_cast<float>(n * 5.0 / total));
  }
  // max_one on another weighting divides by its largest weight (the rarest class's).
  const auto inv =
      drolt::class_weights({100, 10, 1}, ClassWeighting::inverse_frequency, 0.999, ClassWeightScale::max_one);
  CHECK(inv[0].item<float>() == static_cast<float>(0.01));
  CHECK(inv[1].item<float>() == static_cast<float>(0.1));
  CHECK(inv[2].item<float>() == 1.0f);
  // n_c / n_max divides by 0 when no class has samples.
  CHECK_THROWS_WITH(drolt::class_weights({0, 0}, ClassWeighting::count_ratio),
                    Contains("drolt::class_weights: expected a class with n_c > 0 for count_ratio "
                             "weights, got all counts 0"));
  CHECK_THROWS_WITH(drolt::class_weights({0, 0}, ClassWeighting::count_ratio, 0.999, ClassWeightScale::max_one),
                    Contains("got all counts 0"));
}

TEST_CASE("class weights from long-tail counts weight the DRO-LT loss as docs/math.md says",
          "[loss][class_weights]") {
  // w from the counts of a 4-class long tail; a batch in which class 2 is absent.
  const auto w =
      drolt::class_weights({500, 120, 30, 5}, drolt::ClassWeighting::effective_number, 0.99);
  torch::manual_seed(3);
  const auto z = torch::randn({6, 3});
  const auto y = torch::tensor(std::vector<int64_t>{0, 0, 1, 3, 3, 3}, torch::kInt64);
  const auto mu = torch::randn({4, 3});
  const auto eps = torch::full({4}, 0.1);
  using drolt::functional::RobustCentroidLossFuncOptions;
  const auto per_class = drolt::functional::robust_centroid_loss(
      z, y, mu, eps, RobustCentroidLossFuncOptions().temperature(0.5).reduction(torch::kNone));
  const auto weighted = drolt::functional::robust_centroid_loss(
      z, y, mu, eps, RobustCentroidLossFuncOptions().temperature(0.5).class_weights(w));
  // L = sum_{c in P} w_c l_c / sum_{c in P} w_c  (docs/math.md, "The loss")
  const auto present = torch::tensor({0, 1, 3}, torch::kInt64);
  const double expected =
      (w.index_select(0, present) * per_class.index_select(0, present)).sum().item<double>() /
      w.index_select(0, present).sum().item<double>();
  CHECK(weighted.item<double>() == Approx(expected).epsilon(1e-5));
  // The tail class weighs most: the weighted loss differs from the unweighted mean.
  CHECK(w[3].item<float>() > w[0].item<float>());
  CHECK(weighted.item<double>() !=
        Approx(per_class.index_select(0, present).mean().item<double>()).epsilon(1e-4));
}
