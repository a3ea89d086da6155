// Inputs an adversarial user reaches for: each ends in a correct value or a
// c10::Error that says what was expected and what was given, never a crash or a
// silently wrong number. Values are compared with float64 compositions and
// finite differences.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "drolt/drolt.hpp"

using drolt::Backend;
using drolt::Distance;
using drolt::Normalization;
using drolt::functional::robust_centroid_loss;
using Opts = drolt::functional::RobustCentroidLossFuncOptions;
using Catch::Matchers::Contains;

namespace {

std::string tmp_path(const std::string& name) { return std::string(DROLT_TEST_TMPDIR) + "/" + name; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

struct Small {
  torch::Tensor z, y, mu, eps, w;
};

Small small_problem(torch::Dtype dt, uint64_t seed, int64_t B = 9, int64_t C = 4, int64_t D = 3) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(dt);
  Small p;
  p.z = torch::randn({B, D}, o);
  p.mu = torch::randn({C, D}, o);
  p.y = torch::arange(B, torch::kLong).remainder(C);
  p.eps = torch::rand({C}, o) * 0.5 + 0.1;
  p.w = torch::rand({C}, o) + 0.5;
  return p;
}

}  // namespace

TEST_CASE("CPU: a label out of range is an error even with validate_values(false)", "[loss][bad-input]") {
  auto p = small_problem(torch::kFloat, 1);
  for (const auto backend : {Backend::fused, Backend::reference}) {
    for (const int64_t bad : {int64_t(4), int64_t(-1), int64_t(1) << 40}) {
      auto y = p.y.clone();
      y[3] = bad;
      CHECK_THROWS_WITH(robust_centroid_loss(p.z, y, p.mu, p.eps, Opts().backend(backend).validate_values(false)),
                        Contains("expected labels in [0, 4)"));
    }
  }
  // The other value checks run on the CPU too: a negative radius is not a silent wrong loss.
  CHECK_THROWS_WITH(robust_centroid_loss(p.z, p.y, p.mu, -p.eps, Opts().validate_values(false)),
                    Contains("expected radii >= 0"));
}

TEST_CASE("fused path: second derivatives equal finite differences of the gradient", "[loss][bad-input]") {
  const auto dist = GENERATE(Distance::euclidean, Distance::squared_euclidean, Distance::cosine);
  const auto norm = GENERATE(Normalization::batch, Normalization::classes);
  auto p = small_problem(torch::kDouble, 2);
  const auto o = Opts().backend(Backend::fused).distance(dist).normalization(norm).temperature(0.7).class_weights(p.w);
  torch::manual_seed(3);
  auto v = torch::randn_like(p.z);   // direction the gradient is projected on
  auto u = torch::randn_like(p.z);   // direction of the finite difference
  auto ue = torch::randn_like(p.eps);

  // h(z, eps) = <dL/dz, v>: its gradient by double backward.
  auto z = p.z.clone().requires_grad_(true);
  auto eps = p.eps.clone().requires_grad_(true);
  auto l = robust_centroid_loss(z, p.y, p.mu, eps, o);
  auto gz = torch::autograd::grad({l}, {z}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  auto h = (gz * v).sum();
  auto g2 = torch::autograd::grad({h}, {z, eps});
  // The same second derivatives by central differences of the first-order gradient.
  auto first = [&](const torch::Tensor& zz, const torch::Tensor& ee) {
    auto zv = zz.clone().requires_grad_(true);
    auto loss = robust_centroid_loss(zv, p.y, p.mu, ee, o);
    return (torch::autograd::grad({loss}, {zv})[0] * v).sum().item<double>();
  };
  const double t = 1e-6;
  const double fd_z = (first(p.z + t * u, p.eps) - first(p.z - t * u, p.eps)) / (2 * t);
  const double fd_e = (first(p.z, p.eps + t * ue) - first(p.z, p.eps - t * ue)) / (2 * t);
  const double an_z = (g2[0] * u).sum().item<double>();
  const double an_e = (g2[1] * ue).sum().item<double>();
  INFO("distance " << drolt::to_string(dist) << ", normalization " << drolt::to_string(norm));
  CHECK(std::abs(an_z) > 1e-4);  // a zero second derivative would pass a loose comparison
  CHECK(an_z == Approx(fd_z).epsilon(1e-5).margin(1e-7));
  CHECK(an_e == Approx(fd_e).epsilon(1e-5).margin(1e-7));
  // The first-order gradient under create_graph is the fused path's own.
  auto gz_plain = torch::autograd::grad({robust_centroid_loss(z, p.y, p.mu, eps, o)}, {z})[0];
  CHECK(max_abs_diff(gz, gz_plain) < 1e-12);
}

TEST_CASE("fused path: class weights that require grad get the reference's gradient", "[loss][bad-input]") {
  const auto norm = GENERATE(Normalization::batch, Normalization::classes);
  const auto red = GENERATE(as<Opts::reduction_t>{}, torch::kMean, torch::kSum);
  auto p = small_problem(torch::kDouble, 4);
  auto grad_of = [&](Backend b) {
    auto w = p.w.clone().requires_grad_(true);
    auto l = robust_centroid_loss(p.z, p.y, p.mu, p.eps,
                                  Opts().backend(b).normalization(norm).reduction(red).class_weights(w));
    return torch::autograd::grad({l}, {w})[0];
  };
  auto want = grad_of(Backend::reference);
  auto got = grad_of(Backend::fused);
  CHECK(want.abs().max().item<double>() > 1e-3);
  CHECK(max_abs_diff(got, want) < 1e-12);
}

TEST_CASE("a NaN in a centroid row marked invalid changes neither the loss nor the gradients", "[loss][bad-input]") {
  const auto backend = GENERATE(Backend::reference, Backend::fused);
  const auto norm = GENERATE(Normalization::batch, Normalization::classes);
  auto p = small_problem(torch::kDouble, 5);
  auto valid = torch::tensor({true, false, true, true});
  auto run = [&](const torch::Tensor& mu_in) {
    auto z = p.z.clone().requires_grad_(true);
    auto mu = mu_in.clone().requires_grad_(true);
    auto eps = p.eps.clone().requires_grad_(true);
    auto l = robust_centroid_loss(z, p.y, mu, eps, Opts().backend(backend).normalization(norm).valid(valid));
    auto g = torch::autograd::grad({l}, {z, mu, eps});
    return std::vector<torch::Tensor>{l.detach(), g[0], g[1], g[2]};
  };
  auto clean = run(p.mu);
  auto mu_nan = p.mu.clone();
  mu_nan[1].fill_(std::numeric_limits<double>::quiet_NaN());
  auto dirty = run(mu_nan);
  for (size_t k = 0; k < clean.size(); ++k) {
    INFO("output " << k);
    CHECK(torch::isfinite(dirty[k]).all().item<bool>());
    CHECK(max_abs_diff(dirty[k], clean[k]) < 1e-12);
  }
  CHECK(dirty[2][1].abs().sum().item<double>() == 0.0);  // the invalid row gets no gradient
}

TEST_CASE("cosine distance with an all-zero feature or centroid: fused equals reference and docs", "[loss][bad-input]") {
  const auto norm = GENERATE(Normalization::batch, Normalization::classes);
  const auto dt = GENERATE(torch::kFloat, torch::kDouble);
  auto p = small_problem(dt, 6);
  p.z[2].zero_();
  p.mu[3].zero_();
  const auto o = Opts().distance(Distance::cosine).normalization(norm).reduction(torch::kNone);
  auto run = [&](Backend b) {
    auto z = p.z.clone().requires_grad_(true);
    auto mu = p.mu.clone().requires_grad_(true);
    auto l = robust_centroid_loss(z, p.y, mu, p.eps, Opts(o).backend(b));
    auto g = torch::autograd::grad({l.sum()}, {z, mu});
    return std::vector<torch::Tensor>{l.detach(), g[0], g[1]};
  };
  auto ref = run(Backend::reference);
  auto fused = run(Backend::fused);
  const double tol = dt == torch::kFloat ? 1e-5 : 1e-12;
  CHECK(max_abs_diff(fused[0], ref[0]) < tol);
  // Gradients of the non-zero rows (a zero row's gradient is scaled by the clamped 1/1e-12).
  auto keep_z = torch::ones({p.z.size(0)}, torch::kBool);
  keep_z[2] = false;
  auto keep_mu = torch::ones({p.mu.size(0)}, torch::kBool);
  keep_mu[3] = false;
  CHECK(max_abs_diff(fused[1].index({keep_z}), ref[1].index({keep_z})) < tol);
  CHECK(max_abs_diff(fused[2].index({keep_mu}), ref[2].index({keep_mu})) < tol);
  // docs/math.md: cos(z, 0) = 0, so d = 1 for the zero centroid and 0 for the equal one:
  // the sample's loss over the two classes is log(1 + e^-1).
  auto two = robust_centroid_loss(torch::tensor({{1.0, 0.0, 0.0}}, dt), torch::tensor({0}),
                                  torch::tensor({{1.0, 0.0, 0.0}, {0.0, 0.0, 0.0}}, dt), torch::zeros({2}, dt),
                                  Opts(o).backend(Backend::fused).normalization(Normalization::classes));
  CHECK(two.item<double>() == Approx(std::log1p(std::exp(-1.0))).epsilon(tol));
}

TEST_CASE("float32 features near 1e19 overflow: check_finite says so, float64 computes it", "[loss][bad-input]") {
  auto p = small_problem(torch::kFloat, 7);
  auto big = p.z * 3e19f;
  auto mu = p.mu * 3e19f;
  CHECK(torch::isfinite(big).all().item<bool>());
  for (const auto backend : {Backend::fused, Backend::reference}) {
    CHECK_THROWS_WITH(robust_centroid_loss(big, p.y, mu, p.eps, Opts().backend(backend).check_finite(true)),
                      Contains("expected a finite loss from finite inputs") && Contains("overflow"));
    auto l64 = robust_centroid_loss(big.to(torch::kDouble), p.y, mu.to(torch::kDouble),
                                    p.eps.to(torch::kDouble), Opts().backend(backend).check_finite(true));
    CHECK(std::isfinite(l64.item<double>()));
  }
  // A tiny temperature overflows the scores the same way.
  CHECK_THROWS_WITH(robust_centroid_loss(p.z * 1e18f, p.y, p.mu * 1e18f, p.eps, Opts().temperature(1e-30).check_finite(true)),
                    Contains("overflow"));
}

TEST_CASE("finite in and finite out or an error: float32 overflow with the default options", "[loss][bad-input]") {
  auto p = small_problem(torch::kFloat, 7);
  const auto big = (p.z * 3e19f).requires_grad_(true);
  const auto mu = p.mu * 3e19f;
  REQUIRE(torch::isfinite(big).all().item<bool>());
  for (const auto backend : {Backend::fused, Backend::reference}) {
    for (const auto dist : {Distance::euclidean, Distance::squared_euclidean}) {
      for (const auto norm : {Normalization::batch, Normalization::classes}) {
        INFO("backend " << static_cast<int>(backend) << " distance " << static_cast<int>(dist) << " norm "
                        << static_cast<int>(norm));
        const auto o = Opts().backend(backend).distance(dist).normalization(norm);
        try {
          auto l = robust_centroid_loss(big, p.y, mu, p.eps, o);
          // Not refused: then the value and the gradients are finite.
          CHECK(torch::isfinite(l).all().item<bool>());
          auto g = torch::autograd::grad({l}, {big})[0];
          CHECK(torch::isfinite(g).all().item<bool>());
        } catch (const c10::Error& e) {
          CHECK_THAT(e.what(), Contains("overflow") && Contains("below 1.84467e+19"));
        }
      }
    }
  }
  // A NaN feature without check_finite still gives NaN, as LibTorch's losses do.
  auto nan = p.z.clone();
  nan[0][0] = std::nanf("");
  CHECK(std::isnan(robust_centroid_loss(nan, p.y, p.mu, p.eps).item<float>()));
}

TEST_CASE("class counts: negative, NaN or fractional counts are refused", "[loss][radius][bad-input]") {
  drolt::RobustCentroidLoss sq(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::sqrt_n(2.0)));
  CHECK_THROWS_WITH(sq->set_class_counts(torch::tensor({4, -1, 9})), Contains("expected class counts >= 0, got a count of -1"));
  CHECK_THROWS_WITH(sq->set_class_counts(torch::tensor({4.0, std::nan(""), 9.0})), Contains("expected finite class counts"));
  CHECK_THROWS_WITH(sq->set_class_counts(torch::tensor({4.0, 2.5, 9.0})), Contains("expected whole-number class counts"));
  CHECK_THROWS_WITH(sq->set_class_counts(torch::tensor({true, false, true})), Contains("expected integer class counts"));
  CHECK_THROWS_WITH(sq->set_class_counts(torch::tensor({4, 9})), Contains("expected class counts of shape [3]"));
  CHECK_FALSE(sq->has_counts());  // nothing was half-applied
  CHECK_THROWS_WITH(drolt::RobustCentroidLoss(drolt::RobustCentroidLossOptions(3)
                                                  .radius(drolt::RadiusPolicy::sqrt_n(2.0))
                                                  .class_counts(torch::tensor({1, 2, -3}))),
                    Contains("class_counts: expected class counts >= 0"));
  CHECK_THROWS_WITH(drolt::RadiusPolicy::sqrt_n(1.0).fixed_radii(2, torch::tensor({-4, 4}), torch::kFloat),
                    Contains("expected class counts >= 0"));
  sq->set_class_counts(torch::tensor({4.0, 0.0, 9.0}));  // integral floats are fine
  CHECK(sq->radii()[0].item<float>() == Approx(1.0));
}

TEST_CASE("torch::load of a bank or loss of another size is refused and leaves the module intact", "[bank][loss][bad-input]") {
  drolt::CentroidBank small(10, 4);
  small->accumulate(torch::randn({20, 4}), torch::arange(20).remainder(10));
  small->finalize();
  const auto path = tmp_path("bank10x4.pt");
  torch::save(small, path);
  SECTION("another number of classes") {
    drolt::CentroidBank bank(100, 4);
    CHECK_THROWS_WITH(torch::load(bank, path), Contains("drolt::CentroidBank::load") &&
                                                   Contains("expected 'sums' of shape [100, 4]") &&
                                                   Contains("got [10, 4]"));
    CHECK(bank->centroids().sizes() == torch::IntArrayRef({100, 4}));
    CHECK(bank->valid().size(0) == 100);
    bank->accumulate(torch::randn({3, 4}), torch::tensor({99, 0, 50}));  // still usable
    bank->finalize();
    CHECK(bank->valid()[99].item<bool>());
  }
  SECTION("another dimension") {
    drolt::CentroidBank bank(10, 8);
    CHECK_THROWS_WITH(torch::load(bank, path), Contains("expected 'sums' of shape [10, 8]"));
    CHECK(bank->centroids().sizes() == torch::IntArrayRef({10, 8}));
  }
  SECTION("the same size loads") {
    drolt::CentroidBank bank(10, 4);
    torch::load(bank, path);
    CHECK(bank->centroids().equal(small->centroids()));
  }
  drolt::RobustCentroidLoss loss5(drolt::RobustCentroidLossOptions(5));
  const auto lpath = tmp_path("loss5.pt");
  torch::save(loss5, lpath);
  drolt::RobustCentroidLoss loss7(drolt::RobustCentroidLossOptions(7));
  CHECK_THROWS_WITH(torch::load(loss7, lpath), Contains("expected 'radii' of shape [7]"));
  CHECK(loss7->radii().size(0) == 7);
}

TEST_CASE("drolt::save / drolt::load: damaged, truncated and foreign files name the file", "[serialize][bad-input]") {
  drolt::CentroidBank bank(6, 5);
  torch::manual_seed(8);
  bank->accumulate(torch::randn({30, 5}), torch::arange(30).remainder(6));
  bank->finalize();
  const auto path = tmp_path("bank.drolt");
  drolt::save(bank, path);
  drolt::CentroidBank back(6, 5);
  drolt::load(back, path);
  CHECK(back->centroids().equal(bank->centroids()));
  CHECK(back->counts().equal(bank->counts()));
  const std::string good = read_bytes(path);
  REQUIRE(good.size() > 100);

  const auto bad = tmp_path("bank-bad.drolt");
  SECTION("every single flipped byte is caught") {
    // Header bytes, the zip records and the tensor data: a stride through the whole file.
    for (size_t at = 0; at < good.size(); at += std::max<size_t>(1, good.size() / 97)) {
      std::string b = good;
      b[at] = static_cast<char>(b[at] ^ 0x10);
      write_bytes(bad, b);
      drolt::CentroidBank x(6, 5);
      INFO("byte " << at);
      CHECK_THROWS_AS(drolt::load(x, bad), c10::Error);
      CHECK_THROWS_WITH(drolt::load(x, bad), Contains(bad));
      CHECK(x->valid().sum().item<int64_t>() == 0);  // nothing was loaded
    }
  }
  SECTION("truncated") {
    for (size_t keep : {size_t(0), size_t(7), size_t(23), size_t(24), good.size() / 2, good.size() - 1}) {
      write_bytes(bad, good.substr(0, keep));
      drolt::CentroidBank x(6, 5);
      INFO("kept " << keep << " bytes");
      CHECK_THROWS_WITH(drolt::load(x, bad), Contains(bad));
    }
    write_bytes(bad, good.substr(0, good.size() / 2));
    drolt::CentroidBank x(6, 5);
    CHECK_THROWS_WITH(drolt::load(x, bad), Contains("truncated"));
  }
  SECTION("trailing bytes") {
    write_bytes(bad, good + "x");
    drolt::CentroidBank x(6, 5);
    CHECK_THROWS_WITH(drolt::load(x, bad), Contains("trailing bytes"));
  }
  SECTION("a plain torch::save file") {
    torch::save(bank, bad);
    drolt::CentroidBank x(6, 5);
    CHECK_THROWS_WITH(drolt::load(x, bad), Contains("is not a drolt checkpoint") && Contains(bad));
  }
  SECTION("a missing file") {
    drolt::CentroidBank x(6, 5);
    CHECK_THROWS_WITH(drolt::load(x, tmp_path("no-such-file.drolt")), Contains("cannot open") && Contains("no-such-file.drolt"));
  }
  SECTION("a valid file of another module") {
    drolt::CentroidBank other(3, 5);
    drolt::save(other, bad);
    drolt::CentroidBank x(6, 5);
    CHECK_THROWS_WITH(drolt::load(x, bad), Contains(bad) && Contains("expected 'sums' of shape [6, 5]"));
  }
  SECTION("a loss module round-trips with its learned radii") {
    drolt::RobustCentroidLoss loss(drolt::RobustCentroidLossOptions(6));
    {
      torch::NoGradGuard g;
      loss->named_parameters()["radii"].copy_(torch::linspace(0, 1, 6));
    }
    drolt::save(loss, bad);
    drolt::RobustCentroidLoss loss2(drolt::RobustCentroidLossOptions(6));
    drolt::load(loss2, bad);
    CHECK(loss2->radii().equal(loss->radii()));
  }
  SECTION("archives written and read directly") {
    torch::serialize::OutputArchive out;
    out.write("x", torch::arange(5));
    drolt::write_archive(out, bad);
    torch::serialize::InputArchive in;
    drolt::read_archive(in, bad);
    torch::Tensor x;
    in.read("x", x);
    CHECK(x.equal(torch::arange(5)));
    std::FILE* f = std::fopen((bad + ".tmp").c_str(), "rb");
    CHECK(f == nullptr);  // the temporary was renamed away
    if (f) std::fclose(f);
  }
}

TEST_CASE("samplers refuse an epoch too large to hold instead of failing to allocate", "[data][bad-input]") {
  auto targets = torch::tensor({0, 0, 1, 2});
  CHECK_THROWS_WITH(drolt::data::ClassBalancedSampler(targets, drolt::data::ClassSamplerOptions().num_samples(INT64_MAX)),
                    Contains("expected num_samples <= 2^31") && Contains("9223372036854775807"));
  drolt::data::ClassBalancedSampler ok(targets, drolt::data::ClassSamplerOptions().num_samples(10));
  CHECK(ok.epoch_length() == 10u);
}

TEST_CASE("module->to(dtype) converts only floating state: banks and losses keep working", "[bank][loss][bad-input]") {
  drolt::CentroidBank bank(3, 2);
  bank->to(torch::kDouble);
  CHECK(bank->centroids().scalar_type() == torch::kDouble);
  CHECK(bank->counts().scalar_type() == torch::kLong);
  CHECK(bank->valid().scalar_type() == torch::kBool);
  CHECK(bank->pending_sums().scalar_type() == torch::kDouble);
  bank->accumulate(torch::ones({2, 2}), torch::tensor({0, 2}));  // failed with index_add_ dtype errors before
  bank->finalize();
  CHECK(bank->valid().equal(torch::tensor({true, false, true})));
  drolt::RobustCentroidLoss loss(drolt::RobustCentroidLossOptions(3).radius(drolt::RadiusPolicy::sqrt_n(1.0)));
  loss->to(torch::kDouble);
  loss->set_class_counts(torch::tensor({4, 1, 9}));
  CHECK(loss->radii().scalar_type() == torch::kDouble);
  CHECK(loss->radii()[0].item<double>() == Approx(0.5));
  auto l = loss(torch::randn({2, 2}, torch::kDouble), torch::tensor({0, 2}), bank);
  CHECK(std::isfinite(l.item<double>()));
  CHECK_THROWS_WITH(bank->to(torch::kLong), Contains("expected a floating-point dtype"));
}
