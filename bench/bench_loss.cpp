// drolt benchmarks (Google Benchmark).
//
//   loss/<shape>/<path>/<device>     one forward + backward of the DRO-LT loss
//                                    (features and radii get gradients; centroids
//                                    are constant, as in the paper's protocol).
//                                    Paths: drolt's `reference` and `fused`, and two
//                                    anchors: `matmul_composition` (what a user would
//                                    write: distances from ||z||^2 + ||mu||^2 - 2 z.mu,
//                                    then logsumexp, by LibTorch ops with autograd)
//                                    and `matmul_floor` (only the three matrix
//                                    products of a forward + backward: [C,D]x[D,B],
//                                    [B,C]x[C,D] and [C,B]x[B,D])
//   bank/<mode>/<device>             centroid-bank refresh over a CIFAR-100-LT epoch
//                                    of features (10847 x 64)
//   module_sqrtn/<counts>/<device>   one forward + backward of the RobustCentroidLoss
//                                    module (sqrt-n radii, cifar100lt shape, fused
//                                    path) with the class counts given in its options,
//                                    taken from the CentroidBank passed to forward(),
//                                    or re-read from that bank on every call (what
//                                    forward() did before it remembered them)
//   resnet32_step/<loss>/<device>    one SGD step of ResNet-32 on a batch of 128
//                                    CIFAR images, CE alone or CE + DRO-LT
//
// Shapes: cifar100lt (B=128, C=100, D=64), imagenetlt (B=256, C=1000, D=2048),
// inat (B=256, C=8142, D=2048); float32, batch normalization, Euclidean
// distance, labels uniform over the classes.
//
// Counters
//   GFLOP/s         nominal 6*K*B*D floating-point operations per forward+backward
//                   (one [K,B,D] distance product forward, two backward; K = rows
//                   of docs/math.md's loss) over the wall time; the same nominal count
//                   for every path, so it compares paths, not algorithms.
//   bytes           nominal minimum traffic per forward+backward: features and the
//                   K used centroids read twice, feature gradients written once.
//                   bytes_per_second follows from it.
//   peak_extra_MiB  memory allocated on top of the inputs during one
//                   forward+backward, at its peak. CUDA: the caching allocator's
//                   peak allocated bytes; CPU: LibTorch's CPU allocator wrapped
//                   with a counter for that one run (tensors only: not the
//                   allocator's or the thread pool's own overhead).
//
// Threads: torch::set_num_threads(N), N from --threads=N or DROLT_BENCH_THREADS,
// default 2. Times are wall-clock (UseRealTime); CUDA iterations end with a
// device synchronisation.
#include <benchmark/benchmark.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/resnet.hpp"
#include "drolt/drolt.hpp"

#if defined(DROLT_HAS_CUDA_KERNELS)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

using drolt::Backend;
using drolt::functional::robust_centroid_loss;
using Opts = drolt::functional::RobustCentroidLossFuncOptions;

// ------------------------------------------------------------------ memory

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define DROLT_ALLOCATE_CONST
#define DROLT_ALLOCATOR_HAS_COPY_DATA 1
#else
#define DROLT_ALLOCATE_CONST const
#define DROLT_ALLOCATOR_HAS_COPY_DATA 0
#endif

/// Wraps LibTorch's CPU allocator and counts the bytes it hands out. The data
/// pointer doubles as the deleter context (raw_allocate() requires that), and
/// the wrapped allocation is kept in a map until it is freed.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) DROLT_ALLOCATE_CONST override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const auto bytes = static_cast<int64_t>(n);
    if (data != nullptr) {
      std::lock_guard<std::mutex> lock(mutex());
      live().emplace(data, Block{std::move(inner), bytes});
      current_ += bytes;
      if (current_ > peak_) peak_ = current_;
    }
    return {data, data, &CountingCpuAllocator::release, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingCpuAllocator::release; }
#if DROLT_ALLOCATOR_HAS_COPY_DATA
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
#endif

  static void reset() {
    std::lock_guard<std::mutex> lock(mutex());
    current_ = 0;
    peak_ = 0;
  }
  static int64_t peak() {
    std::lock_guard<std::mutex> lock(mutex());
    return peak_;
  }

 private:
  struct Block {
    c10::DataPtr inner;
    int64_t bytes;
  };
  static void release(void* p) {
    if (p == nullptr) return;
    Block b;
    {
      std::lock_guard<std::mutex> lock(mutex());
      auto it = live().find(p);
      if (it == live().end()) return;
      b = std::move(it->second);
      live().erase(it);
      current_ -= b.bytes;
    }
    // b.inner frees through the wrapped allocator's deleter, outside the lock.
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::unordered_map<void*, Block>& live() {
    static std::unordered_map<void*, Block> m;
    return m;
  }
  c10::Allocator* base_;
  static int64_t current_;
  static int64_t peak_;
};
int64_t CountingCpuAllocator::current_ = 0;
int64_t CountingCpuAllocator::peak_ = 0;

/// Peak bytes allocated while fn runs, on top of what was allocated before.
int64_t peak_extra_bytes(const torch::Device& dev, const std::function<void()>& fn) {
  if (dev.is_cuda()) {
#if defined(DROLT_HAS_CUDA_KERNELS)
    namespace ca = c10::cuda::CUDACachingAllocator;
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    torch::cuda::synchronize();
    ca::resetPeakStats(dev.index() < 0 ? 0 : dev.index());
    const int64_t before = ca::getDeviceStats(dev.index() < 0 ? 0 : dev.index()).allocated_bytes[agg].current;
    fn();
    torch::cuda::synchronize();
    return ca::getDeviceStats(dev.index() < 0 ? 0 : dev.index()).allocated_bytes[agg].peak - before;
#else
    fn();
    return -1;
#endif
  }
  // Static: a storage keeps a pointer to its allocator (for resizing) and may
  // outlive this call.
  c10::Allocator* base = c10::GetCPUAllocator();
  static CountingCpuAllocator counting(base);
  CountingCpuAllocator::reset();
  c10::SetCPUAllocator(&counting);
  fn();
  c10::SetCPUAllocator(base);
  return CountingCpuAllocator::peak();
}

// ------------------------------------------------------------------ helpers

struct LossShape {
  const char* name;
  int64_t B, C, D;
};
const LossShape kShapes[] = {{"cifar100lt", 128, 100, 64},
                             {"imagenetlt", 256, 1000, 2048},
                             {"inat", 256, 8142, 2048}};

/// Returns false (and marks the run skipped) when the device or path is missing.
bool device_ready(benchmark::State& state, const torch::Device& dev, bool needs_cuda_kernels) {
  if (!dev.is_cuda()) return true;
  if (!torch::cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return false;
  }
  if (needs_cuda_kernels && drolt::detail::cuda_kernels_slot() == nullptr) {
    state.SkipWithError("fused CUDA kernels not linked (build with DROLT_WITH_CUDA=ON)");
    return false;
  }
  return true;
}

void sync(const torch::Device& dev) {
  if (dev.is_cuda()) torch::cuda::synchronize();
}

// ------------------------------------------------------------------ loss

enum class LossPath { reference, fused, matmul_composition, matmul_floor };

const char* path_name(LossPath p) {
  switch (p) {
    case LossPath::reference:
      return "reference";
    case LossPath::fused:
      return "fused";
    case LossPath::matmul_composition:
      return "matmul_composition";
    case LossPath::matmul_floor:
      return "matmul_floor";
  }
  return "?";
}

/// The loss as a user would compose it without drolt (batch normalization,
/// Euclidean distance, tau = 1, mean over the classes present): distances by the
/// matrix-product expansion, scores with the margin on the positives, a
/// logsumexp per class over the batch.
torch::Tensor composed_by_hand(const torch::Tensor& z, const torch::Tensor& y, const torch::Tensor& mu,
                               const torch::Tensor& eps) {
  const int64_t C = mu.size(0);
  auto d2 = mu.pow(2).sum(1, true) + z.pow(2).sum(1).unsqueeze(0) - 2 * torch::mm(mu, z.t());  // [C, B]
  auto dist = d2.clamp_min(1e-12).sqrt();
  auto pos = (torch::arange(C, y.options()).unsqueeze(1) == y.unsqueeze(0)).to(z.scalar_type());
  auto s = -dist - 2 * eps.unsqueeze(1) * pos;
  auto n = pos.sum(1);
  auto l = torch::logsumexp(s, 1) - (s * pos).sum(1) / n.clamp_min(1);
  auto present = (n > 0).to(z.scalar_type());
  return (l * present).sum() / present.sum();
}

void bench_loss(benchmark::State& state, LossShape shape, LossPath path, torch::Device dev) {
  if (!device_ready(state, dev, path == LossPath::fused)) return;
  torch::manual_seed(0);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  const double scale = 2.0 / std::sqrt(static_cast<double>(shape.D));
  auto z = (torch::randn({shape.B, shape.D}, f32) * scale).requires_grad_();
  auto mu = torch::randn({shape.C, shape.D}, f32) * scale;
  auto y = torch::randint(0, shape.C, {shape.B}, torch::TensorOptions().dtype(torch::kLong).device(dev));
  auto eps = torch::full({shape.C}, 0.5, f32).requires_grad_();
  // The floor's operands and outputs, allocated once: only the products are timed.
  torch::Tensor w, zd, gz, gmu, scores;
  if (path == LossPath::matmul_floor) {
    w = torch::randn({shape.C, shape.B}, f32);
    zd = z.detach();
    scores = torch::empty({shape.C, shape.B}, f32);
    gz = torch::empty({shape.B, shape.D}, f32);
    gmu = torch::empty({shape.C, shape.D}, f32);
  }
  // No per-call value checks (they cost a host synchronisation on CUDA).
  const auto opts = Opts()
                        .temperature(1.0)
                        .backend(path == LossPath::fused ? Backend::fused : Backend::reference)
                        .validate_values(false);
  auto step = [&] {
    if (path == LossPath::matmul_floor) {
      torch::mm_out(scores, mu, zd.t());  // forward: [C, D] x [D, B]
      torch::mm_out(gz, w.t(), mu);       // dL/dz:   [B, C] x [C, D]
      torch::mm_out(gmu, w, zd);          // dL/dmu:  [C, B] x [B, D]
      benchmark::DoNotOptimize(gmu.data_ptr());
      return;
    }
    auto l = path == LossPath::matmul_composition ? composed_by_hand(z, y, mu, eps)
                                                  : robust_centroid_loss(z, y, mu, eps, opts);
    auto g = torch::autograd::grad({l}, {z, eps});
    benchmark::DoNotOptimize(g[0].data_ptr());
  };
  step();  // warm-up: first-use allocations, kernel loading
  sync(dev);
  const int64_t peak = peak_extra_bytes(dev, step);
  const int64_t K = (torch::bincount(y.cpu()) > 0).sum().item<int64_t>();  // rows: classes present

  for (auto _ : state) {
    step();
    sync(dev);
  }
  const double flops = 6.0 * K * shape.B * shape.D;
  const double bytes = 4.0 * (2.0 * (shape.B + K) * shape.D + shape.B * shape.D);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes"] = bytes;
  state.counters["rows_K"] = static_cast<double>(K);
  state.counters["peak_extra_MiB"] = static_cast<double>(peak) / (1024.0 * 1024.0);
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
}

// ------------------------------------------------------------------ module, sqrt-n radii

enum class CountsFrom { options, bank, bank_every_call };

void bench_module_sqrtn(benchmark::State& state, CountsFrom from, torch::Device dev) {
  if (!device_ready(state, dev, true)) return;
  torch::manual_seed(0);
  const LossShape shape = kShapes[0];
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  auto z = (torch::randn({shape.B, shape.D}, f32) * (2.0 / std::sqrt(static_cast<double>(shape.D)))).requires_grad_();
  auto y = torch::randint(0, shape.C, {shape.B}, torch::TensorOptions().dtype(torch::kLong).device(dev));
  drolt::CentroidBank bank(shape.C, shape.D);
  bank->to(dev);
  bank->accumulate(z.detach(), y);
  bank->finalize();
  auto o = drolt::RobustCentroidLossOptions(shape.C)
               .radius(drolt::RadiusPolicy::sqrt_n(1.0))
               .backend(Backend::fused)
               .validate_values(false);
  if (from == CountsFrom::options) o.class_counts(bank->counts().cpu());
  drolt::RobustCentroidLoss loss(o);
  loss->to(dev);
  auto step = [&] {
    if (from == CountsFrom::bank_every_call) loss->set_class_counts(bank->counts().cpu());
    auto l = loss(z, y, bank);
    auto g = torch::autograd::grad({l}, {z});
    benchmark::DoNotOptimize(g[0].data_ptr());
  };
  step();
  sync(dev);
  for (auto _ : state) {
    step();
    sync(dev);
  }
}

// ------------------------------------------------------------------ centroid bank

/// CIFAR-100-LT, rho = 100: n_c = floor(500 * 100^(-c / 99)), 10847 samples.
torch::Tensor cifar100lt_labels() {
  std::vector<int64_t> y;
  for (int64_t c = 0; c < 100; ++c) {
    const auto n = static_cast<int64_t>(std::floor(500.0 * std::pow(100.0, -c / 99.0)));
    y.insert(y.end(), n, c);
  }
  return torch::tensor(y, torch::kLong);
}

enum class BankMode { full_pass_batched, full_pass_one_call, ema_batched };

void bench_bank(benchmark::State& state, BankMode mode, torch::Device dev) {
  if (!device_ready(state, dev, false)) return;
  torch::manual_seed(0);
  auto y = cifar100lt_labels();
  y = y.index_select(0, torch::randperm(y.size(0))).to(dev);
  const int64_t N = y.size(0), D = 64, batch = 128;
  auto feats = torch::randn({N, D}, torch::TensorOptions().device(dev));
  drolt::CentroidBank bank(drolt::CentroidBankOptions(100, D));
  bank->to(dev);
  auto epoch = [&] {
    if (mode == BankMode::full_pass_one_call) {
      bank->clear_sums();
      bank->accumulate(feats, y);
      bank->finalize();
    } else if (mode == BankMode::full_pass_batched) {
      bank->clear_sums();
      for (int64_t s = 0; s < N; s += batch)
        bank->accumulate(feats.slice(0, s, s + batch), y.slice(0, s, s + batch));
      bank->finalize();
    } else {
      for (int64_t s = 0; s < N; s += batch)
        bank->ema_update(feats.slice(0, s, s + batch), y.slice(0, s, s + batch));
    }
    benchmark::DoNotOptimize(bank->centroids().data_ptr());
  };
  epoch();
  sync(dev);
  const int64_t peak = peak_extra_bytes(dev, epoch);
  for (auto _ : state) {
    epoch();
    sync(dev);
  }
  state.counters["bytes"] = 4.0 * N * D;
  state.counters["peak_extra_MiB"] = static_cast<double>(peak) / (1024.0 * 1024.0);
  state.SetBytesProcessed(static_cast<int64_t>(4.0 * N * D) * state.iterations());
  state.SetItemsProcessed(N * state.iterations());
}

// ------------------------------------------------------------------ ResNet-32 step

/// with_drolt: 0 CE alone, 1 CE + DRO-LT with the module's defaults (value checks
/// on: one host synchronisation per step on CUDA), 2 CE + DRO-LT with
/// validate_values(false).
void bench_resnet_step(benchmark::State& state, int with_drolt, torch::Device dev) {
  if (!device_ready(state, dev, false)) return;
  torch::manual_seed(0);
  const int64_t B = 128, C = 100;
  drolt_examples::ResNet net(drolt_examples::ResNetOptions(32, 3, C));
  net->to(dev);
  drolt::RobustCentroidLoss dro(
      drolt::RobustCentroidLossOptions(C).temperature(1.0).validate_values(with_drolt != 2));
  dro->to(dev);
  auto params = net->parameters();
  if (with_drolt) {
    auto r = dro->parameters();  // the learned radii train with the feature extractor
    params.insert(params.end(), r.begin(), r.end());
  }
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(5e-4));
  auto x = torch::randn({B, 3, 32, 32}, torch::TensorOptions().device(dev));
  auto y = torch::randint(0, C, {B}, torch::TensorOptions().dtype(torch::kLong).device(dev));
  drolt::CentroidBank bank(drolt::CentroidBankOptions(C, 64));  // last epoch's centroids
  bank->to(dev);
  bank->set(torch::randn({C, 64}, torch::TensorOptions().device(dev)),
            torch::ones({C}, torch::TensorOptions().dtype(torch::kBool).device(dev)));
  const double lambda = 0.5;
  net->train();
  auto step = [&] {
    opt.zero_grad();
    auto out = net->forward(x);
    auto loss = torch::nn::functional::cross_entropy(out.logits, y);
    if (with_drolt)
      loss = (1 - lambda) * loss + lambda * dro(out.features, y, bank);
    loss.backward();
    opt.step();
    dro->project_();
  };
  step();
  sync(dev);
  const int64_t peak = peak_extra_bytes(dev, step);
  for (auto _ : state) {
    step();
    sync(dev);
  }
  state.counters["peak_extra_MiB"] = static_cast<double>(peak) / (1024.0 * 1024.0);
  state.SetItemsProcessed(B * state.iterations());
}

// ------------------------------------------------------------------ registration

int threads_from(int* argc, char** argv) {
  int n = 2;
  if (const char* e = std::getenv("DROLT_BENCH_THREADS")) n = std::atoi(e);
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      n = std::atoi(argv[i] + 10);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return n > 0 ? n : 2;
}

void register_all() {
  const std::pair<const char*, torch::Device> devices[] = {{"cpu", torch::Device(torch::kCPU)},
                                                           {"cuda", torch::Device(torch::kCUDA, 0)}};
  for (const auto& d : devices) {
    for (const auto& s : kShapes) {
      for (auto path : {LossPath::reference, LossPath::fused, LossPath::matmul_composition,
                        LossPath::matmul_floor}) {
        const std::string name = std::string("loss/") + s.name + "/" + path_name(path) + "/" + d.first;
        benchmark::RegisterBenchmark(name.c_str(), bench_loss, s, path, d.second)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
    const std::pair<const char*, BankMode> modes[] = {{"full_pass_batched128", BankMode::full_pass_batched},
                                                      {"full_pass_one_call", BankMode::full_pass_one_call},
                                                      {"ema_batched128", BankMode::ema_batched}};
    for (const auto& m : modes) {
      benchmark::RegisterBenchmark((std::string("bank/") + m.first + "/" + d.first).c_str(),
                                   bench_bank, m.second, d.second)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    const std::pair<const char*, CountsFrom> counts[] = {{"options", CountsFrom::options},
                                                         {"bank", CountsFrom::bank},
                                                         {"bank_every_call", CountsFrom::bank_every_call}};
    for (const auto& c : counts) {
      benchmark::RegisterBenchmark((std::string("module_sqrtn/") + c.first + "/" + d.first).c_str(),
                                   bench_module_sqrtn, c.second, d.second)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
    const char* step_names[] = {"ce", "ce+drolt", "ce+drolt_nocheck"};
    for (int with = 0; with < 3; ++with) {
      benchmark::RegisterBenchmark(
          (std::string("resnet32_step/") + step_names[with] + "/" + d.first).c_str(),
          bench_resnet_step, with, d.second)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = threads_from(&argc, argv);
  torch::set_num_threads(threads);
  benchmark::AddCustomContext("torch_threads", std::to_string(threads));
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::AddCustomContext("cuda_available", torch::cuda::is_available() ? "yes" : "no");
  benchmark::AddCustomContext("drolt_cuda_kernels",
                              drolt::detail::cuda_kernels_slot() ? "linked" : "not linked");
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
