// The long-tail baselines (drolt/longtail_losses.hpp, drolt/posthoc.hpp,
// drolt/weight_balancing.hpp) against float64 transcriptions of their
// definitions in docs/math.md ("Long-tail baselines"), gradients against
// central finite differences of those transcriptions, and every bad argument.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "drolt/drolt.hpp"

using Catch::Matchers::Contains;
namespace dfn = drolt::functional;

namespace {

using Matrix = std::vector<std::vector<double>>;

Matrix to_matrix(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  Matrix m(c.size(0), std::vector<double>(c.size(1)));
  for (int64_t i = 0; i < c.size(0); ++i)
    for (int64_t j = 0; j < c.size(1); ++j) m[i][j] = c[i][j].item<double>();
  return m;
}

std::vector<double> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<int64_t> to_labels(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

/// log softmax(x)_c, with the max subtracted.
double log_softmax_at(const std::vector<double>& x, int64_t c) {
  const double m = *std::max_element(x.begin(), x.end());
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return x[c] - m - std::log(s);
}

/// sum_i w_i l_i / sum_i w_i (mean), or sum_i w_i l_i (sum); w empty: w_i = 1.
double reduce_ref(const std::vector<double>& l, const std::vector<double>& w, bool mean) {
  double num = 0, den = 0;
  for (size_t i = 0; i < l.size(); ++i) {
    const double wi = w.empty() ? 1.0 : w[i];
    num += wi * l[i];
    den += wi;
  }
  return mean ? num / den : num;
}

struct Problem {
  torch::Tensor x, y, w;  // float64 logits [N, C], labels [N], class weights [C]
  std::vector<int64_t> counts;
};

Problem make_problem(uint64_t seed, int64_t N = 7, int64_t C = 5) {
  torch::manual_seed(seed);
  Problem p;
  p.x = torch::randn({N, C}, torch::kDouble) * 2;
  p.y = torch::randint(0, C, {N}, torch::kLong);
  p.w = torch::rand({C}, torch::kDouble) + 0.5;
  for (int64_t c = 0; c < C; ++c) p.counts.push_back(100 / (c + 1) + c % 2);
  return p;
}

/// Per-sample weights w_{y_i} of class weights `w` (empty if undefined).
std::vector<double> sample_weights(const torch::Tensor& w, const std::vector<int64_t>& y) {
  std::vector<double> out;
  if (!w.defined()) return out;
  const auto wc = to_vec(w);
  for (int64_t c : y) out.push_back(wc[c]);
  return out;
}

// ---- float64 transcriptions of docs/math.md

double focal_ref(const Matrix& x, const std::vector<int64_t>& y, double gamma, const std::vector<double>& w,
                 bool mean) {
  std::vector<double> l;
  for (size_t i = 0; i < x.size(); ++i) {
    const double lp = log_softmax_at(x[i], y[i]);
    l.push_back(-std::pow(1.0 - std::exp(lp), gamma) * lp);
  }
  return reduce_ref(l, w, mean);
}

/// cross-entropy of logits x + shift(c, y_i) (an additive change of logit c of sample i).
double shifted_ce_ref(const Matrix& x, const std::vector<int64_t>& y, const std::vector<double>& w,
                      const std::function<double(size_t, int64_t)>& shift) {
  std::vector<double> l;
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<double> z = x[i];
    for (size_t c = 0; c < z.size(); ++c) z[c] += shift(i, static_cast<int64_t>(c));
    l.push_back(-log_softmax_at(z, y[i]));
  }
  return reduce_ref(l, w, true);
}

std::vector<double> ldam_margins_ref(const std::vector<int64_t>& counts, double m) {
  std::vector<double> d;
  for (int64_t n : counts) d.push_back(std::pow(static_cast<double>(n), -0.25));
  const double top = *std::max_element(d.begin(), d.end());
  for (auto& v : d) v = m * v / top;
  return d;
}

double ldam_ref(const Matrix& x, const std::vector<int64_t>& y, const std::vector<double>& w,
                const std::vector<double>& margins, double s) {
  return shifted_ce_ref(x, y, w, [&](size_t i, int64_t c) { return c == y[i] ? -s * margins[c] : 0.0; });
}

/// Balanced Softmax written as Ren et al. do: -log(n_y e^{x_y} / sum_c n_c e^{x_c}).
double balanced_softmax_ref(const Matrix& x, const std::vector<int64_t>& y, const std::vector<int64_t>& n) {
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double den = 0;
    for (size_t c = 0; c < n.size(); ++c) den += static_cast<double>(n[c]) * std::exp(x[i][c]);
    total += -std::log(static_cast<double>(n[y[i]]) * std::exp(x[i][y[i]]) / den);
  }
  return total / static_cast<double>(x.size());
}

double log_prior_ref(const std::vector<int64_t>& n, size_t c) {
  double s = 0;
  for (int64_t v : n) s += static_cast<double>(std::max<int64_t>(v, 1));
  return std::log(static_cast<double>(std::max<int64_t>(n[c], 1)) / s);
}

/// Central finite differences of f at x (float64 [N, C]) against autograd's
/// gradient of the library's loss.
void check_gradient(const torch::Tensor& x0, const std::function<torch::Tensor(const torch::Tensor&)>& loss,
                    const std::function<double(const Matrix&)>& ref) {
  auto x = x0.clone().requires_grad_(true);
  loss(x).backward();
  const auto g = to_matrix(x.grad());
  Matrix m = to_matrix(x0);
  const double h = 1e-6;
  double max_err = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    for (size_t c = 0; c < m[i].size(); ++c) {
      const double keep = m[i][c];
      m[i][c] = keep + h;
      const double up = ref(m);
      m[i][c] = keep - h;
      const double down = ref(m);
      m[i][c] = keep;
      max_err = std::max(max_err, std::abs((up - down) / (2 * h) - g[i][c]));
    }
  }
  INFO("max |finite difference - autograd| = " << max_err);
  CHECK(max_err < 1e-7);
}

}  // namespace

// ------------------------------------------------------------------ focal

TEST_CASE("focal loss equals its definition, weighted or not, for every reduction", "[baselines][focal]") {
  const auto p = make_problem(1);
  const auto x = to_matrix(p.x);
  const auto y = to_labels(p.y);
  const double gamma = GENERATE(0.5, 1.0, 2.0);
  const bool weighted = GENERATE(false, true);
  const auto w = weighted ? p.w : torch::Tensor();
  const auto sw = sample_weights(w, y);
  auto o = dfn::FocalLossFuncOptions().gamma(gamma).weight(w);
  CHECK(dfn::focal_loss(p.x, p.y, o).item<double>() == Approx(focal_ref(x, y, gamma, sw, true)).epsilon(1e-12));
  CHECK(dfn::focal_loss(p.x, p.y, o.reduction(torch::kSum)).item<double>() ==
        Approx(focal_ref(x, y, gamma, sw, false)).epsilon(1e-12));
  auto none = dfn::focal_loss(p.x, p.y, o.reduction(torch::kNone));
  REQUIRE(none.sizes() == torch::IntArrayRef{p.x.size(0)});
  CHECK(none.sum().item<double>() == Approx(focal_ref(x, y, gamma, sw, false)).epsilon(1e-12));
  // The module computes the function.
  drolt::FocalLoss module(drolt::FocalLossOptions().gamma(gamma).weight(w));
  CHECK(module(p.x, p.y).item<double>() == dfn::focal_loss(p.x, p.y, o.reduction(torch::kMean)).item<double>());
}

TEST_CASE("focal loss with gamma 0 is cross-entropy, weighted or not", "[baselines][focal]") {
  namespace F = torch::nn::functional;
  const auto p = make_problem(2);
  CHECK(dfn::focal_loss(p.x, p.y, dfn::FocalLossFuncOptions().gamma(0)).item<double>() ==
        Approx(F::cross_entropy(p.x, p.y).item<double>()).epsilon(1e-14));
  CHECK(dfn::focal_loss(p.x, p.y, dfn::FocalLossFuncOptions().gamma(0).weight(p.w)).item<double>() ==
        Approx(F::cross_entropy(p.x, p.y, F::CrossEntropyFuncOptions().weight(p.w)).item<double>()).epsilon(1e-14));
}

TEST_CASE("focal loss gradient matches finite differences", "[baselines][focal]") {
  const auto p = make_problem(3);
  const auto y = to_labels(p.y);
  const auto sw = sample_weights(p.w, y);
  const double gamma = GENERATE(0.5, 2.0);
  check_gradient(
      p.x, [&](const torch::Tensor& x) { return dfn::focal_loss(x, p.y, dfn::FocalLossFuncOptions().gamma(gamma).weight(p.w)); },
      [&](const Matrix& x) { return focal_ref(x, y, gamma, sw, true); });
}

TEST_CASE("focal loss has a finite gradient at a saturated probability", "[baselines][focal]") {
  auto x = torch::tensor({{200.0, 0.0, 0.0}}, torch::kDouble).requires_grad_(true);
  dfn::focal_loss(x, torch::tensor({0}, torch::kLong), dfn::FocalLossFuncOptions().gamma(0.5)).backward();
  CHECK(torch::isfinite(x.grad()).all().item<bool>());
}

// ------------------------------------------------------------------ LDAM + DRW

TEST_CASE("LDAM margins are m / n_c^(1/4) with the largest equal to m", "[baselines][ldam]") {
  const std::vector<int64_t> counts{500, 120, 31, 5};
  const auto got = to_vec(drolt::ldam_margins(counts, 0.5));
  const auto want = ldam_margins_ref(counts, 0.5);
  for (size_t c = 0; c < counts.size(); ++c) CHECK(got[c] == Approx(want[c]).epsilon(1e-7));
  CHECK(got.back() == Approx(0.5).epsilon(1e-7));
}

TEST_CASE("LDAM loss equals cross-entropy with s Delta_y off the target logit", "[baselines][ldam]") {
  const auto p = make_problem(4);
  const auto x = to_matrix(p.x);
  const auto y = to_labels(p.y);
  const bool weighted = GENERATE(false, true);
  const auto w = weighted ? p.w : torch::Tensor();
  const double s = 30.0;
  // Margins in float64 here, so that the reference sees the library's exact margins.
  const auto margins = drolt::ldam_margins(p.counts, 0.5).to(torch::kDouble);
  auto o = dfn::LDAMLossFuncOptions().scale(s).weight(w);
  const double want = ldam_ref(x, y, sample_weights(w, y), to_vec(margins), s);
  CHECK(dfn::ldam_loss(p.x, p.y, margins, o).item<double>() == Approx(want).epsilon(1e-12));
  drolt::LDAMLoss module(drolt::LDAMLossOptions(p.counts).max_margin(0.5).scale(s).weight(w));
  CHECK(module(p.x, p.y).item<double>() == Approx(want).epsilon(1e-6));  // float32 margins
  SECTION("gradient") {
    check_gradient(
        p.x, [&](const torch::Tensor& xx) { return dfn::ldam_loss(xx, p.y, margins, o); },
        [&](const Matrix& xx) { return ldam_ref(xx, y, sample_weights(w, y), to_vec(margins), s); });
  }
}

TEST_CASE("LDAM with margin 0 is cross-entropy", "[baselines][ldam]") {
  const auto p = make_problem(5);
  drolt::LDAMLoss module(drolt::LDAMLossOptions(p.counts).max_margin(0.0));
  CHECK(module(p.x, p.y).item<double>() ==
        Approx(torch::nn::functional::cross_entropy(p.x, p.y).item<double>()).epsilon(1e-14));
}

TEST_CASE("DRW gives no weights before its start and effective-number weights from it", "[baselines][ldam]") {
  const std::vector<int64_t> counts{400, 40, 4};
  CHECK_FALSE(drolt::drw_class_weights(counts, 159, 160).defined());
  const auto w = drolt::drw_class_weights(counts, 160, 160, 0.9999);
  REQUIRE(w.defined());
  // (1 - beta) / (1 - beta^n_c), normalised to sum to C.
  std::vector<double> want;
  double total = 0;
  for (int64_t n : counts) {
    want.push_back((1 - 0.9999) / (1 - std::pow(0.9999, static_cast<double>(n))));
    total += want.back();
  }
  const auto got = to_vec(w);
  for (size_t c = 0; c < counts.size(); ++c) CHECK(got[c] == Approx(want[c] * 3 / total).epsilon(1e-6));
}

// ------------------------------------------------------------------ logit-adjusted loss

TEST_CASE("logit-adjusted loss with tau 1 is Balanced Softmax and with tau 0 cross-entropy",
          "[baselines][la]") {
  const auto p = make_problem(6);
  const auto x = to_matrix(p.x);
  const auto y = to_labels(p.y);
  drolt::LogitAdjustedLoss bs(drolt::LogitAdjustedLossOptions(p.counts).tau(1.0));
  CHECK(bs(p.x, p.y).item<double>() == Approx(balanced_softmax_ref(x, y, p.counts)).epsilon(1e-12));
  drolt::LogitAdjustedLoss ce(drolt::LogitAdjustedLossOptions(p.counts).tau(0.0));
  CHECK(ce(p.x, p.y).item<double>() == torch::nn::functional::cross_entropy(p.x, p.y).item<double>());
}

TEST_CASE("logit-adjusted loss equals cross-entropy of logits + tau log pi, and its gradient",
          "[baselines][la]") {
  auto p = make_problem(7);
  p.counts[2] = 0;  // floored to one sample
  const auto x = to_matrix(p.x);
  const auto y = to_labels(p.y);
  const double tau = GENERATE(0.5, 1.5);
  const auto sw = sample_weights(p.w, y);
  const auto ref = [&](const Matrix& xx) {
    return shifted_ce_ref(xx, y, sw, [&](size_t, int64_t c) { return tau * log_prior_ref(p.counts, c); });
  };
  const auto lp = drolt::log_class_prior(p.counts);
  auto o = dfn::LogitAdjustedLossFuncOptions().tau(tau).weight(p.w);
  CHECK(dfn::logit_adjusted_loss(p.x, p.y, lp, o).item<double>() == Approx(ref(x)).epsilon(1e-12));
  check_gradient(
      p.x, [&](const torch::Tensor& xx) { return dfn::logit_adjusted_loss(xx, p.y, lp, o); }, ref);
}

// ------------------------------------------------------------------ post-hoc

TEST_CASE("logit_adjust subtracts tau log pi, a class without samples counting as one", "[baselines][posthoc]") {
  const auto p = make_problem(8);
  std::vector<int64_t> counts = p.counts;
  counts[1] = 0;
  const double tau = 0.75;
  const auto got = to_matrix(drolt::logit_adjust(p.x, counts, tau));
  const auto x = to_matrix(p.x);
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t c = 0; c < counts.size(); ++c)
      CHECK(got[i][c] == Approx(x[i][c] - tau * log_prior_ref(counts, c)).epsilon(1e-13));
  CHECK(torch::equal(drolt::logit_adjust(p.x, counts, 0.0), p.x));
}

TEST_CASE("tau_normalize divides each class's weight row by its norm to the tau", "[baselines][posthoc]") {
  torch::manual_seed(9);
  auto w = torch::randn({4, 3}, torch::kDouble);
  const double tau = GENERATE(0.0, 0.4, 1.0);
  const auto got = to_matrix(drolt::tau_normalize(w, tau));
  const auto m = to_matrix(w);
  for (size_t c = 0; c < m.size(); ++c) {
    double n = 0;
    for (double v : m[c]) n += v * v;
    for (size_t d = 0; d < m[c].size(); ++d)
      CHECK(got[c][d] == Approx(m[c][d] / std::pow(std::sqrt(n), tau)).epsilon(1e-13));
  }
}

TEST_CASE("LWS scales each class's logit and learns the scales", "[baselines][posthoc]") {
  torch::manual_seed(10);
  drolt::LWS lws(3);
  REQUIRE(lws->parameters().size() == 1);
  CHECK(torch::equal(lws->scales, torch::ones({3})));
  {
    torch::NoGradGuard g;
    lws->scales.copy_(torch::tensor({2.0f, 0.5f, -1.0f}));
  }
  auto z = torch::randn({4, 3});
  auto out = lws(z);
  const auto zz = to_matrix(z), got = to_matrix(out);
  const double f[3] = {2.0, 0.5, -1.0};
  for (size_t i = 0; i < zz.size(); ++i)
    for (size_t c = 0; c < 3; ++c) CHECK(got[i][c] == zz[i][c] * f[c]);
  // d/df_c sum_i z_ic f_c = sum_i z_ic.
  out.sum().backward();
  const auto g = to_vec(lws->scales.grad());
  const auto col = to_vec(z.sum(0));
  for (size_t c = 0; c < 3; ++c) CHECK(g[c] == Approx(col[c]).epsilon(1e-6));
}

TEST_CASE("NearestClassMean scores the cosine to each class's mean normalised feature", "[baselines][posthoc]") {
  torch::manual_seed(11);
  const int64_t C = 4, D = 3;
  auto train = torch::randn({20, D}, torch::kDouble);
  auto labels = torch::randint(0, C - 1, {20}, torch::kLong);  // class 3 has no sample
  labels[0] = 0;
  labels[1] = 1;
  labels[2] = 2;
  auto test = torch::randn({5, D}, torch::kDouble);
  drolt::NearestClassMean ncm(drolt::NearestClassMeanOptions(C, D).dtype(torch::kFloat64));
  ncm->fit(train, labels);
  const auto got = to_matrix(ncm(test));
  // Class means of the normalised training features, then cosines.
  const auto tr = to_matrix(train), te = to_matrix(test);
  const auto y = to_labels(labels);
  Matrix mean(C, std::vector<double>(D, 0.0));
  std::vector<int> n(C, 0);
  auto norm = [](const std::vector<double>& v) {
    double s = 0;
    for (double a : v) s += a * a;
    return std::sqrt(s);
  };
  for (size_t i = 0; i < tr.size(); ++i) {
    const double r = norm(tr[i]);
    for (int64_t d = 0; d < D; ++d) mean[y[i]][d] += tr[i][d] / r;
    ++n[y[i]];
  }
  for (size_t i = 0; i < te.size(); ++i) {
    for (int64_t c = 0; c < C; ++c) {
      if (n[c] == 0) {
        CHECK(got[i][c] == -std::numeric_limits<double>::infinity());
        continue;
      }
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += te[i][d] * mean[c][d];
      CHECK(got[i][c] == Approx(dot / (norm(te[i]) * norm(mean[c]))).epsilon(1e-12));
    }
  }
}

TEST_CASE("choose_tau takes the first best tau of the grid", "[baselines][posthoc]") {
  CHECK(drolt::choose_tau({0.0, 0.5, 1.0, 1.5}, [](double t) { return t == 1.0 || t == 1.5 ? 0.9 : 0.1; }) == 1.0);
  CHECK(drolt::choose_tau({0.0, 0.5}, [](double) { return std::nan(""); }) == 0.0);
  // Two classes, priors 0.9 / 0.1: logit_adjust predicts class 1 when
  // x_0 - x_1 < tau log 9. Rows of class 1 at differences 0.3 and 1.0 need
  // tau > 0.455; the row of class 0 at 1.5 needs tau < 0.683: only 0.5 of the
  // grid gets all three.
  auto logits = torch::tensor({{0.3, 0.0}, {1.0, 0.0}, {1.5, 0.0}}, torch::kDouble);
  auto labels = torch::tensor({1, 1, 0}, torch::kLong);
  CHECK(drolt::choose_logit_adjust_tau(logits, labels, {90, 10}) == 0.5);
  CHECK(drolt::logit_adjust_grid().size() == 9);
  // tau-norm: inputs along each class's weight; the large-norm class 0 wins
  // every row until tau reaches 1 (the weights' norms 4 and 1).
  auto weight = torch::tensor({{4.0, 0.0}, {0.0, 1.0}}, torch::kDouble);
  auto inputs = torch::tensor({{1.0, 0.0}, {0.7, 0.8}}, torch::kDouble);
  CHECK(drolt::choose_tau_normalize_tau(inputs, weight, torch::tensor({0, 1}, torch::kLong)) == Approx(1.0));
}

// ------------------------------------------------------------------ weight balancing

TEST_CASE("max_norm_ projects each class's weight row onto its ball", "[baselines][weight-balancing]") {
  torch::manual_seed(12);
  auto w = torch::randn({5, 4}, torch::kDouble) * 2;
  const auto before = to_matrix(w);
  SECTION("per-class thresholds") {
    auto r = torch::tensor({0.5, 10.0, 1.0, std::numeric_limits<double>::infinity(), 0.0}, torch::kDouble);
    drolt::max_norm_(w, r);
    const auto rv = to_vec(r);
    const auto got = to_matrix(w);
    for (size_t c = 0; c < before.size(); ++c) {
      double n = 0;
      for (double v : before[c]) n += v * v;
      n = std::sqrt(n);
      for (size_t d = 0; d < before[c].size(); ++d) {
        if (n <= rv[c]) {
          CHECK(got[c][d] == before[c][d]);  // inside the ball: untouched
        } else {
          CHECK(got[c][d] == Approx(before[c][d] * rv[c] / n).epsilon(1e-13).margin(1e-300));
        }
      }
    }
  }
  SECTION("shared threshold, through MaxNorm after an optimizer step") {
    auto p = w.clone().requires_grad_(true);
    torch::optim::SGD opt(std::vector<torch::Tensor>{p}, torch::optim::SGDOptions(0.1));
    drolt::MaxNorm projection(p, 1.0);
    p.sum().backward();
    opt.step();
    projection.apply_();
    CHECK((p.detach().norm(2, 1) <= 1.0 + 1e-12).all().item<bool>());
    CHECK(p.requires_grad());
  }
  SECTION("the authors' relative threshold") {
    const double r = drolt::max_norm_threshold(w, 0.1);
    const auto n = to_vec(w.norm(2, 1));
    const double lo = *std::min_element(n.begin(), n.end()), hi = *std::max_element(n.begin(), n.end());
    CHECK(r == Approx(lo + 0.1 * (hi - lo)).epsilon(1e-13));
  }
}

// ------------------------------------------------------------------ bad arguments

TEST_CASE("the baselines name what they expected and what they got", "[baselines][bad-input]") {
  const auto p = make_problem(13);
  const auto lp = drolt::log_class_prior(p.counts);
  const auto margins = drolt::ldam_margins(p.counts, 0.5);
  CHECK_THROWS_WITH(dfn::focal_loss(p.x, p.y, dfn::FocalLossFuncOptions().gamma(-1)),
                    Contains("drolt::focal_loss: expected gamma >= 0 and finite, got -1"));
  CHECK_THROWS_WITH(drolt::FocalLoss(drolt::FocalLossOptions().gamma(std::nan(""))),
                    Contains("drolt::FocalLoss: expected gamma >= 0 and finite, got nan"));
  CHECK_THROWS_WITH(drolt::ldam_margins(p.counts, -0.5),
                    Contains("drolt::ldam_margins: expected a margin >= 0 and finite, got -0.5"));
  CHECK_THROWS_WITH(drolt::ldam_margins({10, 0, 3}, 0.5),
                    Contains("drolt::ldam_margins: expected every class to have training samples, got 0 for "
                             "class 1 (LDAM's margin n_c^(-1/4) is undefined)"));
  CHECK_THROWS_WITH(drolt::ldam_margins({}, 0.5), Contains("drolt::ldam_margins: expected class counts, got none"));
  CHECK_THROWS_WITH(drolt::drw_class_weights({10, 0}, 0, 5),
                    Contains("drolt::drw_class_weights: expected every class to have training samples, got 0 "
                             "for class 1"));
  CHECK_THROWS_WITH(drolt::LDAMLoss(drolt::LDAMLossOptions(p.counts).scale(0)),
                    Contains("drolt::LDAMLoss: expected scale > 0 and finite, got 0"));
  CHECK_THROWS_WITH(dfn::ldam_loss(p.x, p.y, margins.slice(0, 0, 3)),
                    Contains("drolt::ldam_loss: expected floating-point margins [5], got [3] Float"));
  CHECK_THROWS_WITH(dfn::logit_adjusted_loss(p.x, p.y, lp, dfn::LogitAdjustedLossFuncOptions().tau(-0.1)),
                    Contains("drolt::logit_adjusted_loss: expected tau >= 0 and finite, got -0.1"));
  CHECK_THROWS_WITH(drolt::LogitAdjustedLoss(drolt::LogitAdjustedLossOptions({3, -1})),
                    Contains("drolt::log_class_prior: expected class counts >= 0, got -1 for class 1"));
  CHECK_THROWS_WITH(dfn::logit_adjusted_loss(p.x, p.y, lp.slice(0, 0, 4)),
                    Contains("drolt::logit_adjusted_loss: expected a floating-point log prior [5], got [4] Double"));
  // Labels, shapes, dtypes and weights (one check shared by the three losses).
  auto bad_y = p.y.clone();
  bad_y[0] = 5;
  CHECK_THROWS_WITH(dfn::focal_loss(p.x, bad_y), Contains("drolt::focal_loss: expected targets in [0, 5), got values in"));
  CHECK_THROWS_WITH(dfn::ldam_loss(p.x, p.y.slice(0, 0, 3), margins),
                    Contains("drolt::ldam_loss: expected as many targets as logit rows (7), got 3"));
  CHECK_THROWS_WITH(dfn::focal_loss(p.x, p.y.to(torch::kFloat)),
                    Contains("drolt::focal_loss: expected integer targets [N], got [7] Float"));
  CHECK_THROWS_WITH(dfn::focal_loss(p.x.select(1, 0), p.y),
                    Contains("drolt::focal_loss: expected floating-point logits [N, C], got [7] Double"));
  CHECK_THROWS_WITH(dfn::focal_loss(p.x, p.y, dfn::FocalLossFuncOptions().weight(p.w.slice(0, 0, 2))),
                    Contains("drolt::focal_loss: expected a floating-point class weight [5], got [2] Double"));
  CHECK_THROWS_WITH(dfn::logit_adjusted_loss(p.x, p.y, lp, dfn::LogitAdjustedLossFuncOptions().weight(p.w - 1.0)),
                    Contains("drolt::logit_adjusted_loss: expected class weights finite and > 0"));
  // Post-hoc.
  CHECK_THROWS_WITH(drolt::logit_adjust(p.x, {1, 2, 3}, 1.0),
                    Contains("drolt::logit_adjust: expected 5 class counts (one per logit column), got 3"));
  CHECK_THROWS_WITH(drolt::logit_adjust(p.x, p.counts, std::numeric_limits<double>::infinity()),
                    Contains("drolt::logit_adjust: expected tau >= 0 and finite, got inf"));
  CHECK_THROWS_WITH(drolt::tau_normalize(p.x, -1), Contains("drolt::tau_normalize: expected tau >= 0 and finite, got -1"));
  CHECK_THROWS_WITH(drolt::tau_normalize(p.w, 0.5),
                    Contains("drolt::tau_normalize: expected a floating-point classifier weight [C, D], got [5] Double"));
  CHECK_THROWS_WITH(drolt::LWS(4)(p.x), Contains("drolt::LWS: expected floating-point logits [N, 4], got [7, 5] Double"));
  drolt::NearestClassMean ncm(5, 3);
  CHECK_THROWS_WITH(ncm(p.x), Contains("drolt::nearest_class_mean: expected floating-point features [N, 3], got [7, 5] "
                                       "Double"));
  CHECK_THROWS_WITH(drolt::choose_tau({}, [](double) { return 0.0; }),
                    Contains("drolt::choose_tau: expected a non-empty grid of tau, got none"));
  // Weight balancing.
  auto w = torch::randn({5, 3});
  CHECK_THROWS_WITH(drolt::max_norm_(w, -1.0), Contains("drolt::max_norm_: expected a threshold >= 0, got -1"));
  CHECK_THROWS_WITH(drolt::max_norm_(w, torch::ones({4})),
                    Contains("drolt::max_norm_: expected floating-point thresholds [5] (or [1]), got [4] Float"));
  CHECK_THROWS_WITH(drolt::MaxNorm(w, torch::tensor({1.0, -2.0, 1.0, 1.0, 1.0})),
                    Contains("drolt::MaxNorm: expected thresholds >= 0, got values in [-2, 1]"));
  CHECK_THROWS_WITH(drolt::max_norm_threshold(w, 1.5),
                    Contains("drolt::max_norm_threshold: expected a fraction in [0, 1], got 1.5"));
}
