// Tests of the fused CUDA path: they need a CUDA device and the kernels
// (drolt::cuda linked): the fused CUDA path against the reference on fresh
// random inputs, for every dtype, normalization and distance, odd shapes and a
// feature equal to a centroid. Without a device each test says so with WARN and
// passes. (The per-entry math the kernels share with the CPU is tested in
// test_tile_math.cpp.)
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
#include "drolt/drolt.hpp"

#if defined(DROLT_HAS_CUDA_KERNELS)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

using drolt::Backend;
using drolt::Distance;
using drolt::Normalization;
using drolt::functional::robust_centroid_loss;
using Opts = drolt::functional::RobustCentroidLossFuncOptions;

namespace {

bool cuda_kernels_ready() {
  return torch::cuda::is_available() && drolt::detail::cuda_kernels_slot() != nullptr;
}

#define DROLT_SKIP_WITHOUT_CUDA()                                                         \
  do {                                                                                    \
    if (!cuda_kernels_ready()) {                                                          \
      WARN("CUDA test skipped: no CUDA device"                                            \
           << (drolt::detail::cuda_kernels_slot() ? "" : " (and drolt::cuda not linked)")); \
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
  const auto* be = drolt::detail::cuda_kernels_slot();
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
      norm, mean, C, dt);
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
  const auto* be = drolt::detail::cuda_kernels_slot();
  const auto dev = torch::Device(torch::kCUDA);
  const auto p = make_problem({37, 21, 19}, test_seed());
  auto z = p.z.to(torch::kFloat).to(dev);
  auto mu = p.mu.to(torch::kFloat).to(dev);
  auto eps = p.eps.to(torch::kFloat).to(dev);
  auto y = p.y.to(dev);
  auto valid = p.valid.to(dev);
  const auto norm = GENERATE(Normalization::batch, Normalization::classes);
  drolt::detail::FusedParams fp;
  fp.norm = norm;
  fp.temperature = 0.5;
  fp.base_temperature = 0.5;
  fp.centroid_grad = true;
  auto grad_loss =
      torch::rand({norm == Normalization::batch ? 21 : 37}, z.options());

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
