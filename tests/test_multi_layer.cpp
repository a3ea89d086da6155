// Tests of DRO-LT on several layers (MultiLayerRobustCentroidLoss) and of the
// bound's tightness (functional::bound_tightness).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "drolt/drolt.hpp"

using drolt::Normalization;
using Catch::Matchers::Contains;

namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// A two-layer net whose hidden and output activations are both tapped.
struct TinyNet {
  torch::Tensor w1, w2;
  std::vector<torch::Tensor> features(const torch::Tensor& x) const {
    auto h1 = torch::tanh(x.mm(w1));
    auto h2 = torch::tanh(h1.mm(w2));
    return {h1, h2};
  }
};

drolt::MultiLayerRobustCentroidLossOptions two_layers(int64_t C, drolt::RadiusPolicy policy) {
  return drolt::MultiLayerRobustCentroidLossOptions(drolt::RobustCentroidLossOptions(C).radius(policy).temperature(0.5))
      .add_layer("hidden", 4, 0.3)
      .add_layer("out", 5, 0.7);
}

}  // namespace

TEST_CASE("multi-layer loss with one layer equals the single loss, values and gradients", "[multilayer]") {
  torch::manual_seed(0);
  const int64_t B = 12, C = 3, D = 6;
  auto z = torch::randn({B, D}, torch::kDouble);
  auto y = torch::arange(B).remainder(C);
  drolt::MultiLayerRobustCentroidLoss multi(
      drolt::MultiLayerRobustCentroidLossOptions(drolt::RobustCentroidLossOptions(C)).add_layer("penultimate", D, 0.5));
  drolt::RobustCentroidLoss single{drolt::RobustCentroidLossOptions(C)};
  drolt::CentroidBank bank(drolt::CentroidBankOptions(C, D).dtype(torch::kDouble));
  multi->to(torch::kDouble);
  single->to(torch::kDouble);
  multi->clear_sums();
  multi->accumulate({z}, y);
  multi->finalize();
  bank->accumulate(z, y);
  bank->finalize();
  auto z1 = z.clone().requires_grad_(true);
  auto z2 = z.clone().requires_grad_(true);
  auto lm = multi->forward({z1}, y);
  auto ls = single(z2, y, bank);
  CHECK(lm.item<double>() == Approx(0.5 * ls.item<double>()).epsilon(1e-12));
  auto gm = torch::autograd::grad({lm}, {z1, multi->loss(0)->named_parameters()["radii"]});
  auto gs = torch::autograd::grad({ls}, {z2, single->named_parameters()["radii"]});
  CHECK(max_abs_diff(gm[0], 0.5 * gs[0]) < 1e-14);
  CHECK(max_abs_diff(gm[1], 0.5 * gs[1]) < 1e-14);
  CHECK(gs[0].abs().max().item<double>() > 1e-3);
}

TEST_CASE("multi-layer gradients reach every tapped layer (finite differences)", "[multilayer]") {
  torch::manual_seed(1);
  const int64_t B = 16, C = 4;
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  TinyNet net{torch::randn({3, 4}, o) * 0.8, torch::randn({4, 5}, o) * 0.8};
  auto x = torch::randn({B, 3}, o);
  auto y = torch::arange(B).remainder(C);
  drolt::MultiLayerRobustCentroidLoss dro(two_layers(C, drolt::RadiusPolicy::shared(0.2)));
  dro->to(torch::kDouble);
  {
    torch::NoGradGuard g;
    dro->clear_sums();
    dro->accumulate(net.features(x), y);
    dro->finalize();
  }
  auto value = [&](const TinyNet& n) { return dro->forward(n.features(x), y).item<double>(); };
  auto w1 = net.w1.clone().requires_grad_(true);
  auto w2 = net.w2.clone().requires_grad_(true);
  auto l = dro->forward(TinyNet{w1, w2}.features(x), y);
  auto g = torch::autograd::grad({l}, {w1, w2});
  auto u1 = torch::randn_like(net.w1), u2 = torch::randn_like(net.w2);
  const double t = 1e-6;
  const double fd1 = (value({net.w1 + t * u1, net.w2}) - value({net.w1 - t * u1, net.w2})) / (2 * t);
  const double fd2 = (value({net.w1, net.w2 + t * u2}) - value({net.w1, net.w2 - t * u2})) / (2 * t);
  CHECK(std::abs(fd1) > 1e-4);
  CHECK((g[0] * u1).sum().item<double>() == Approx(fd1).epsilon(1e-6));
  CHECK((g[1] * u2).sum().item<double>() == Approx(fd2).epsilon(1e-6));
  // The first layer's gradient has a part from its own loss, not only from the second's:
  // with the second layer's weight at zero it is still non-zero.
  drolt::MultiLayerRobustCentroidLoss first_only(
      drolt::MultiLayerRobustCentroidLossOptions(drolt::RobustCentroidLossOptions(C).radius(drolt::RadiusPolicy::shared(0.2)))
          .add_layer("hidden", 4, 1.0)
          .add_layer("out", 5, 0.0));
  first_only->to(torch::kDouble);
  {
    torch::NoGradGuard ng;
    first_only->accumulate(net.features(x), y);
    first_only->finalize();
  }
  auto w1b = net.w1.clone().requires_grad_(true);
  auto gb = torch::autograd::grad({first_only->forward(TinyNet{w1b, net.w2}.features(x), y)}, {w1b});
  CHECK(gb[0].abs().max().item<double>() > 1e-4);
  auto terms = dro->terms(net.features(x), y);
  CHECK(l.item<double>() == Approx(0.3 * terms[0].item<double>() + 0.7 * terms[1].item<double>()).epsilon(1e-12));
}

TEST_CASE("multi-layer: every layer's bank and radii resume bit-identically", "[multilayer][serialize]") {
  torch::manual_seed(2);
  const int64_t C = 5;
  drolt::MultiLayerRobustCentroidLoss a(two_layers(C, drolt::RadiusPolicy::learned(0.4)));
  a->accumulate({torch::randn({20, 4}), torch::randn({20, 5})}, torch::arange(20).remainder(C));
  a->finalize();
  {
    torch::NoGradGuard g;
    a->loss("out")->named_parameters()["radii"].copy_(torch::rand({C}));
  }
  CHECK(a->parameters().size() == 2);  // one learned radius vector per layer
  const auto path = std::string(DROLT_TEST_TMPDIR) + "/multi.drolt";
  drolt::save(a, path);
  drolt::MultiLayerRobustCentroidLoss b(two_layers(C, drolt::RadiusPolicy::learned(0.4)));
  drolt::load(b, path);
  for (const auto& name : {"hidden", "out"}) {
    INFO(name);
    CHECK(b->bank(name)->centroids().equal(a->bank(name)->centroids()));
    CHECK(b->bank(name)->counts().equal(a->bank(name)->counts()));
    CHECK(b->bank(name)->valid().equal(a->bank(name)->valid()));
    CHECK(b->loss(name)->radii().equal(a->loss(name)->radii()));
  }
  auto f = std::vector<torch::Tensor>{torch::randn({7, 4}), torch::randn({7, 5})};
  auto y = torch::arange(7).remainder(C);
  CHECK(b->forward(f, y).item<float>() == a->forward(f, y).item<float>());
  // A module with other layers refuses the file, naming it.
  drolt::MultiLayerRobustCentroidLoss other(
      drolt::MultiLayerRobustCentroidLossOptions(drolt::RobustCentroidLossOptions(C)).add_layer("hidden", 8));
  CHECK_THROWS_WITH(drolt::load(other, path), Contains(path));
}

TEST_CASE("multi-layer: bad layers and features are named errors", "[multilayer][bad-input]") {
  using O = drolt::MultiLayerRobustCentroidLossOptions;
  const drolt::RobustCentroidLossOptions base(3);
  CHECK_THROWS_WITH(drolt::MultiLayerRobustCentroidLoss(O(base)), Contains("expected at least one layer"));
  CHECK_THROWS_WITH(drolt::MultiLayerRobustCentroidLoss(O(base).add_layer("a", 0)), Contains("expected dim > 0 for layer 'a'"));
  CHECK_THROWS_WITH(drolt::MultiLayerRobustCentroidLoss(O(base).add_layer("a", 2).add_layer("a", 3)), Contains("used twice"));
  CHECK_THROWS_WITH(drolt::MultiLayerRobustCentroidLoss(O(base).add_layer("a", 2, -1.0)), Contains("expected a finite weight >= 0"));
  drolt::MultiLayerRobustCentroidLoss m(O(base).add_layer("a", 2).add_layer("b", 3));
  auto y = torch::tensor({0, 1});
  CHECK_THROWS_WITH(m->forward({torch::randn({2, 2})}, y), Contains("expected 2 feature tensors (one per layer), got 1"));
  CHECK_THROWS_WITH(m->accumulate({torch::randn({2, 2}), torch::randn({2, 4})}, y),
                    Contains("expected features of layer 'b' of shape [B, 3], got [2, 4]"));
  CHECK_THROWS_WITH(m->bank("c"), Contains("expected one of the layers a, b; got 'c'"));
  CHECK(drolt::pooled_features(torch::ones({2, 3, 4, 4})).sizes() == torch::IntArrayRef({2, 3}));
}

namespace {

/// docs/math.md's loss rows written out with loops in float64, with margin
/// sign `sign` (+1: the DRO-LT loss, -1: the lower bound).
std::vector<double> rows_direct(const torch::Tensor& z_in, const torch::Tensor& y_in, const torch::Tensor& mu_in,
                                const torch::Tensor& eps_in, double tau, Normalization norm, double sign) {
  auto z = z_in.to(torch::kDouble).contiguous(), mu = mu_in.to(torch::kDouble).contiguous();
  auto eps = eps_in.to(torch::kDouble).contiguous();
  const int64_t B = z.size(0), C = mu.size(0), D = z.size(1);
  auto d = [&](int64_t i, int64_t c) {
    double s = 0;
    for (int64_t k = 0; k < D; ++k) {
      const double diff = z[i][k].item<double>() - mu[c][k].item<double>();
      s += diff * diff;
    }
    return std::sqrt(s);
  };
  auto y = [&](int64_t i) { return y_in[i].item<int64_t>(); };
  auto lse = [](const std::vector<double>& v) {
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (double x : v) m = std::max(m, x);
    for (double x : v) s += std::exp(x - m);
    return m + std::log(s);
  };
  std::vector<double> out;
  if (norm == Normalization::batch) {
    for (int64_t c = 0; c < C; ++c) {
      std::vector<double> s(B);
      double pos = 0;
      int64_t n = 0;
      for (int64_t i = 0; i < B; ++i) {
        s[i] = (-d(i, c) - sign * 2 * eps[c].item<double>() * (y(i) == c)) / tau;
        if (y(i) == c) pos += s[i], ++n;
      }
      out.push_back(n ? -(pos / n - lse(s)) : 0.0);
    }
  } else {
    for (int64_t i = 0; i < B; ++i) {
      std::vector<double> s(C);
      for (int64_t c = 0; c < C; ++c)
        s[c] = (-d(i, c) - sign * eps[c].item<double>() * (y(i) == c ? 1 : -1)) / tau;
      out.push_back(-(s[y(i)] - lse(s)));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("bound tightness: upper and lower rows equal a float64 composition; gap 0 at eps 0", "[bound]") {
  const auto norm = GENERATE(Normalization::batch, Normalization::classes);
  const auto dt = GENERATE(torch::kFloat, torch::kDouble);
  torch::manual_seed(3);
  const int64_t B = 10, C = 4, D = 3;
  auto o = torch::TensorOptions().dtype(dt);
  auto z = torch::randn({B, D}, o), mu = torch::randn({C, D}, o);
  auto y = torch::arange(B).remainder(C - 1);  // class C-1 absent from the batch
  auto eps = torch::rand({C}, o) * 0.5;
  const double tau = 0.8;
  auto opts = drolt::functional::RobustCentroidLossFuncOptions().temperature(tau).normalization(norm);
  auto t = drolt::functional::bound_tightness(z, y, mu, eps, opts);
  auto up = rows_direct(z, y, mu, eps, tau, norm, +1), lo = rows_direct(z, y, mu, eps, tau, norm, -1);
  const double tol = dt == torch::kFloat ? 1e-5 : 1e-12;
  double gap_sum = 0;
  int64_t n = 0;
  for (size_t k = 0; k < up.size(); ++k) {
    INFO("row " << k);
    const bool row = t.rows[static_cast<int64_t>(k)].item<bool>();
    CHECK(row == (norm == Normalization::classes || static_cast<int64_t>(k) < C - 1));
    if (!row) continue;
    CHECK(t.upper[static_cast<int64_t>(k)].item<double>() == Approx(up[k]).epsilon(tol));
    CHECK(t.lower[static_cast<int64_t>(k)].item<double>() == Approx(lo[k]).epsilon(tol));
    CHECK(lo[k] < up[k]);
    gap_sum += (up[k] - lo[k]) / up[k];
    ++n;
  }
  CHECK(t.mean_relative_gap.item<double>() == Approx(gap_sum / n).epsilon(tol));
  // The upper rows are the loss itself.
  auto loss = drolt::functional::robust_centroid_loss(z, y, mu, eps, opts.reduction(torch::kNone));
  CHECK(max_abs_diff(loss, t.upper) < tol);
  // No radius, no gap; larger radii, larger gap.
  CHECK(drolt::functional::bound_tightness(z, y, mu, torch::zeros_like(eps), opts).mean_relative_gap.item<double>() == 0.0);
  CHECK(drolt::functional::bound_tightness(z, y, mu, 2 * eps, opts).mean_relative_gap.item<double>() >
        t.mean_relative_gap.item<double>());
}

TEST_CASE("bound tightness of a module and its bank", "[bound]") {
  torch::manual_seed(4);
  drolt::RobustCentroidLoss loss(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::shared(0.3)));
  drolt::CentroidBank bank(3, 2);
  auto z = torch::randn({9, 2});
  auto y = torch::arange(9).remainder(3);
  bank->accumulate(z, y);
  bank->finalize();
  auto t = drolt::bound_tightness(loss, z, y, bank);
  CHECK(max_abs_diff(t.upper, drolt::functional::robust_centroid_loss(z, y, bank->centroids(), loss->radii(),
                                                                      loss->func_options(bank->valid()).reduction(torch::kNone))) < 1e-6);
  CHECK(t.mean_relative_gap.item<double>() > 0.0);
}

TEST_CASE("multi-layer: a checkpoint damaged in its last layer leaves every layer as it was",
          "[multilayer][serialize]") {
  torch::manual_seed(3);
  const int64_t C = 5;
  drolt::MultiLayerRobustCentroidLoss a(two_layers(C, drolt::RadiusPolicy::learned(0.4)));
  a->accumulate({torch::randn({20, 4}), torch::randn({20, 5})}, torch::arange(20).remainder(C));
  a->finalize();
  {
    torch::NoGradGuard g;
    a->loss("hidden")->named_parameters()["radii"].copy_(torch::rand({C}) + 1);
  }
  const auto path = std::string(DROLT_TEST_TMPDIR) + "/multi_damaged.drolt";
  drolt::save(a, path);
  // The same first layer, but the last bank (the archive's last child) has
  // another dimension, so loading fails there, after the first layer was read.
  drolt::MultiLayerRobustCentroidLoss b(
      drolt::MultiLayerRobustCentroidLossOptions(
          drolt::RobustCentroidLossOptions(C).radius(drolt::RadiusPolicy::learned(0.4)).temperature(0.5))
          .add_layer("hidden", 4, 0.3)
          .add_layer("out", 6, 0.7));
  const auto radius = b->loss("hidden")->named_parameters()["radii"];
  const auto centroids = b->bank("hidden")->centroids().clone();
  const auto counts = b->bank("hidden")->counts().clone();
  const auto valid = b->bank("hidden")->valid().clone();
  const auto radii = radius.detach().clone();
  REQUIRE_FALSE(a->bank("hidden")->counts().equal(counts));  // the archive differs
  CHECK_THROWS_WITH(drolt::load(b, path), Contains(path) && Contains("drolt::CentroidBank::load"));
  CHECK(b->bank("hidden")->centroids().equal(centroids));
  CHECK(b->bank("hidden")->counts().equal(counts));
  CHECK(b->bank("hidden")->valid().equal(valid));
  CHECK(b->loss("hidden")->radii().equal(radii));
  CHECK(b->bank("out")->centroids().size(1) == 6);
  // A good archive still loads, into the very parameter objects an optimizer holds.
  drolt::MultiLayerRobustCentroidLoss c(two_layers(C, drolt::RadiusPolicy::learned(0.4)));
  const auto held = c->loss("hidden")->named_parameters()["radii"];
  drolt::load(c, path);
  CHECK(held.equal(a->loss("hidden")->radii()));
  CHECK(c->bank("hidden")->counts().equal(a->bank("hidden")->counts()));
}

TEST_CASE("bound tightness uses the radii forward uses (sqrt-n from the bank's counts)", "[bound]") {
  torch::manual_seed(5);
  const auto policy = drolt::RadiusPolicy::sqrt_n(0.5);
  drolt::RobustCentroidLoss loss(drolt::RobustCentroidLossOptions(3).radius(policy));
  drolt::CentroidBank bank(3, 2);
  auto z = torch::randn({12, 2});
  auto y = torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2}, torch::kLong);
  bank->accumulate(z, y);
  bank->finalize();
  // No forward call yet: the bound must still use eps0 / sqrt(n_c), not eps0.
  auto t = drolt::bound_tightness(loss, z, y, bank);
  const auto radii = policy.fixed_radii(3, bank->counts(), torch::TensorOptions().dtype(torch::kFloat32));
  REQUIRE(radii[0].item<float>() != radii[2].item<float>());
  const auto opts = loss->func_options(bank->valid()).reduction(torch::kNone);
  CHECK(max_abs_diff(t.upper, drolt::functional::robust_centroid_loss(z, y, bank->centroids(), radii, opts)) < 1e-6);
  // ... and forward agrees.
  CHECK(max_abs_diff(loss->radii(), radii) == 0.0);
}
