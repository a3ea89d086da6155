#pragma once
// drolt::dist: the centroid bank, gradients and parameters across processes,
// over a c10d process group (LibTorch's own distributed engine: Gloo on CPU,
// NCCL on GPU). docs/math.md, "The centroid bank": every process of a distributed run must hold
// the same centroids, those of one process that saw all the data, so the bank's
// per-class float64 sums and counts are all-reduced before the means are taken.
//
//   auto group = drolt::dist::make_group(drolt::dist::GroupOptions::from_env());
//   // NCCL on a CUDA build with a GPU (model, bank and loss on group.device), else Gloo
//   drolt::dist::broadcast_parameters(*model, group.pg());      // same start everywhere
//   ...each epoch: bank->clear_sums(); bank->accumulate(z, y) over this rank's shard;
//   drolt::dist::finalize(bank, group.pg());                    // global centroids
//   ...each step: loss.backward(); drolt::dist::allreduce_gradients(params, group.pg());
//
// Availability. The collectives take any c10d::ProcessGroup (1.13: the group
// itself; 2.x: the ProcessGroup whose collectives dispatch to the Backend
// registered for the tensors' device, e.g. ProcessGroupNCCL for CUDA tensors;
// as_process_group() wraps a bare Backend). Group creation:
//   Gloo (CPU): LibTorch built with Gloo (USE_C10D_GLOO, set by Torch's CMake
//     targets) plus gloo's headers, which only ProcessGroupGloo.hpp's
//     declarations need (Debian: libgloo-dev; see docs/distributed.md for why
//     Debian's headers also serve the PyPI LibTorch 2.x);
//   NCCL (GPU): LibTorch 2.x built with NCCL (USE_C10D_NCCL) plus nccl.h
//     (PyPI: the nvidia-nccl package; drolt's CMake adds it).
// DROLT_HAS_DISTRIBUTED says whether drolt::dist is compiled at all (LibTorch
// 1.13 with Gloo, or any 2.x with c10d); DROLT_HAS_GLOO and DROLT_HAS_NCCL say
// which backends make_gloo_group / make_nccl_group can build (without one, the
// function still exists and throws a c10::Error naming what is missing).
// Define DROLT_HAS_DISTRIBUTED=0 to turn it all off. Everything else in drolt
// builds the same without it.
#include <torch/torch.h>
#include <torch/version.h>

#if defined(__has_include)
#define DROLT_DETAIL_HAS_INCLUDE(x) __has_include(x)
#else
#define DROLT_DETAIL_HAS_INCLUDE(x) 0
#endif

#if TORCH_VERSION_MAJOR >= 2
#define DROLT_DIST_C10D_V2 1  // ProcessGroup dispatching to Backends
#else
#define DROLT_DIST_C10D_V2 0
#endif

#ifndef DROLT_HAS_GLOO
#if DROLT_DETAIL_HAS_INCLUDE(<gloo/algorithm.h>) && \
    DROLT_DETAIL_HAS_INCLUDE(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>) && \
    defined(USE_C10D_GLOO) && \
    ((TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR == 13) || TORCH_VERSION_MAJOR >= 2)
#define DROLT_HAS_GLOO 1
#else
#define DROLT_HAS_GLOO 0
#endif
#endif

#ifndef DROLT_HAS_NCCL
#if DROLT_DIST_C10D_V2 && defined(USE_C10D_NCCL) && DROLT_DETAIL_HAS_INCLUDE(<nccl.h>) && \
    DROLT_DETAIL_HAS_INCLUDE(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#define DROLT_HAS_NCCL 1
#else
#define DROLT_HAS_NCCL 0
#endif
#endif

#ifndef DROLT_HAS_DISTRIBUTED
// 1.13's c10d is used only with Gloo (the tested combination); every 2.x
// LibTorch ships c10d's ProcessGroup, Backend and TCPStore headers.
#if (DROLT_DIST_C10D_V2 && defined(USE_DISTRIBUTED)) || \
    (TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR == 13 && DROLT_HAS_GLOO)
#define DROLT_HAS_DISTRIBUTED 1
#else
#define DROLT_HAS_DISTRIBUTED 0
#endif
#endif

#if !DROLT_HAS_DISTRIBUTED
#undef DROLT_HAS_GLOO
#define DROLT_HAS_GLOO 0
#undef DROLT_HAS_NCCL
#define DROLT_HAS_NCCL 0
#endif

#if DROLT_HAS_DISTRIBUTED

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if DROLT_HAS_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if DROLT_DIST_C10D_V2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#endif
#if DROLT_HAS_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "drolt/centroid_bank.hpp"
#include "drolt/multi_layer.hpp"

namespace drolt {
namespace dist {

using ProcessGroup = c10d::ProcessGroup;

namespace detail {

inline std::string message_of(const std::exception& e) {
  // c10::Error::what() carries a C++ backtrace; the short form reads better nested.
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

// c10d's "wait forever" (::kNoTimeout in LibTorch 1.13's Work.hpp, at global scope).
constexpr std::chrono::milliseconds kNoTimeout{0};

/// The collective timeout a process group was built with (kNoTimeout when unknown).
inline std::chrono::milliseconds timeout_of(ProcessGroup& pg) {
#if DROLT_DIST_C10D_V2
  // Gloo and NCCL both report their options; other backends may throw here.
  try {
    return pg.getDefaultBackend()->getBackendOptions()->timeout;
  } catch (const std::exception&) {
    return kNoTimeout;
  }
#else
  if (auto* gloo = dynamic_cast<c10d::ProcessGroupGloo*>(&pg)) return gloo->getOptions()->timeout;
  return kNoTimeout;
#endif
}

/// Waits for a collective and turns any failure (a dead or hung peer shows up
/// as a Gloo I/O error or timeout) into a c10::Error that names the call, the
/// rank and the timeout.
inline void wait(const c10::intrusive_ptr<c10d::Work>& work, ProcessGroup& pg, const char* what) {
  const auto timeout = timeout_of(pg);
  try {
    // Gloo enforces the group's timeout inside the collective and fails with the
    // more specific message; the wait's own limit (a little longer) is a second
    // line of defence so a stuck backend can never hang the caller.
    const auto limit = timeout == kNoTimeout ? kNoTimeout : timeout + std::chrono::milliseconds(2000);
    // A backend may report a timed-out wait by returning false (not throwing):
    // the tensors then hold no result, so that is a failure too.
    TORCH_CHECK(work->wait(limit), "the collective did not complete within ", limit.count(), " ms");
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::dist::", what, ": collective failed on rank ", pg.getRank(), " of ",
                pg.getSize(), " (a peer died, hung or never called it; timeout ", timeout.count(),
                " ms): ", message_of(e));
  }
}

inline void allreduce_(const torch::Tensor& t, ProcessGroup& pg, c10d::ReduceOp::RedOpType op,
                       const char* what) {
  TORCH_CHECK(t.is_contiguous(), "drolt::dist::", what, ": expected a contiguous tensor");
  std::vector<torch::Tensor> v{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = op;
  wait(pg.allreduce(v, opts), pg, what);
}

/// Checks that every rank passed the same integers (shapes, counts) before a
/// collective whose buffer sizes depend on them: mismatched sizes would
/// otherwise fail obscurely inside the backend, or only at the timeout. The
/// check travels on `device`, the data's device (NCCL takes only CUDA tensors).
inline void check_same_on_all_ranks(const std::vector<int64_t>& values, ProcessGroup& pg,
                                    const char* what, const char* description,
                                    c10::Device device = c10::kCPU) {
  if (pg.getSize() == 1) return;
  const auto n = static_cast<int64_t>(values.size());
  auto local = torch::tensor(values, torch::kLong);
  auto both = torch::cat({local, -local}).to(device);  // max of v and of -v: the max and the min
  allreduce_(both, pg, c10d::ReduceOp::MAX, what);
  both = both.cpu();
  const int64_t* r = both.data_ptr<int64_t>();
  std::vector<int64_t> hi(r, r + n), lo(n);
  for (int64_t i = 0; i < n; ++i) lo[i] = -r[n + i];
  TORCH_CHECK(hi == values && lo == values, "drolt::dist::", what, ": expected the same ",
              description, " on every rank, got ", c10::IntArrayRef(values), " on rank ",
              pg.getRank(), " but per-element max ", c10::IntArrayRef(hi), " and min ",
              c10::IntArrayRef(lo), " across ranks");
}

/// Groups tensors by (dtype, device), keeping first-seen order, so each group
/// travels as one flat buffer: one collective per group instead of per tensor.
inline std::vector<std::vector<torch::Tensor>> group_by_type(const std::vector<torch::Tensor>& ts) {
  std::vector<std::vector<torch::Tensor>> groups;
  std::vector<std::pair<c10::ScalarType, c10::Device>> keys;
  for (const auto& t : ts) {
    const auto key = std::make_pair(t.scalar_type(), t.device());
    size_t g = 0;
    while (g < keys.size() && keys[g] != key) ++g;
    if (g == keys.size()) {
      keys.push_back(key);
      groups.emplace_back();
    }
    groups[g].push_back(t);
  }
  return groups;
}

inline torch::Tensor flatten(const std::vector<torch::Tensor>& ts) {
  std::vector<torch::Tensor> flat;
  flat.reserve(ts.size());
  for (const auto& t : ts) flat.push_back(t.reshape({-1}));
  return torch::cat(flat);
}

inline void unflatten_into(const torch::Tensor& flat, const std::vector<torch::Tensor>& ts) {
  int64_t offset = 0;
  for (const auto& t : ts) {
    const int64_t n = t.numel();
    t.copy_(flat.slice(0, offset, offset + n).view(t.sizes()));
    offset += n;
  }
}

inline std::string getenv_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

inline int64_t parse_int(const std::string& text, const char* name) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(used == text.size() && !text.empty(), "drolt::dist: expected ", name,
              " to be an integer, got '", text, "'");
  return v;
}

inline bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace detail

// ------------------------------------------------------------------ collectives

/// Sums `tensor` (contiguous) in place over all processes.
inline void allreduce_sum_(const torch::Tensor& tensor, ProcessGroup& pg) {
  detail::allreduce_(tensor, pg, c10d::ReduceOp::SUM, "allreduce_sum_");
}

/// Blocks until every process has reached it (or fails after the group's timeout).
inline void barrier(ProcessGroup& pg) {
  c10d::BarrierOptions opts;
  detail::wait(pg.barrier(opts), pg, "barrier");
}

/// Distributed CentroidBank::finalize(): all-reduces the per-class float64 sums
/// and the pending counts accumulated since clear_sums() on every rank, then
/// publishes the means. Afterwards every rank holds the centroids, counts and
/// valid mask of one process that accumulated all ranks' data (equal up to the
/// float64 summation order, far below float32 rounding). Collective: every rank
/// must call it, with banks of the same shape.
/// With one process the collective still runs (an identity), so a one-process
/// group exercises its backend.
inline void finalize(CentroidBank& bank, ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  const int64_t C = bank->num_classes(), D = bank->dim();
  const auto device = bank->pending_sums().device();
  detail::check_same_on_all_ranks({C, D}, pg, "finalize", "bank shape [num_classes, dim]", device);
  // One collective for both: counts travel as float64, exact up to 2^53 samples.
  auto flat = torch::cat(
      {bank->pending_sums().reshape({-1}), bank->pending_counts().to(torch::kFloat64)});
  detail::allreduce_(flat, pg, c10d::ReduceOp::SUM, "finalize");
  bank->finalize_from(flat.slice(0, 0, C * D).view({C, D}), flat.slice(0, C * D, C * D + C));
}

/// Distributed MultiLayerRobustCentroidLoss::finalize(): every layer's bank as
/// finalize(bank, pg) does, all layers' sums and counts in one collective.
inline void finalize(MultiLayerRobustCentroidLoss& loss, ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  if (loss->num_layers() == 0) return;
  std::vector<int64_t> shape;
  std::vector<torch::Tensor> parts;
  for (size_t l = 0; l < loss->num_layers(); ++l) {
    auto& b = loss->bank(l);
    shape.push_back(b->num_classes());
    shape.push_back(b->dim());
    parts.push_back(b->pending_sums().reshape({-1}));
    parts.push_back(b->pending_counts().to(torch::kFloat64));
  }
  detail::check_same_on_all_ranks(shape, pg, "finalize", "layer bank shapes [num_classes, dim] per layer",
                                  parts.front().device());
  auto flat = torch::cat(parts);
  detail::allreduce_(flat, pg, c10d::ReduceOp::SUM, "finalize");
  int64_t at = 0;
  for (size_t l = 0; l < loss->num_layers(); ++l) {
    auto& b = loss->bank(l);
    const int64_t C = b->num_classes(), D = b->dim();
    auto sums = flat.slice(0, at, at + C * D).view({C, D});
    auto counts = flat.slice(0, at + C * D, at + C * D + C);
    b->finalize_from(sums, counts);
    at += C * D + C;
  }
}

/// Distributed CentroidBank::ema_update(): the per-class sums and counts of this
/// step's features are all-reduced, so every class's EMA moves towards the mean
/// over the global batch (all ranks), exactly as one process fed the union of
/// the batches would do. Collective: every rank must call it each step, even
/// with an empty local batch ([0, D] features).
inline void ema_update(CentroidBank& bank, const torch::Tensor& features,
                       const torch::Tensor& labels, ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  const int64_t C = bank->num_classes(), D = bank->dim();
  TORCH_CHECK(features.dim() == 2 && features.size(1) == D,
              "drolt::dist::ema_update: expected features of shape [N, ", D, "], got ",
              features.sizes());
  TORCH_CHECK(c10::isFloatingType(features.scalar_type()),
              "drolt::dist::ema_update: expected floating-point features, got ",
              features.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == features.size(0),
              "drolt::dist::ema_update: expected labels of shape [", features.size(0), "], got ",
              labels.sizes());
  TORCH_CHECK(c10::isIntegralType(labels.scalar_type(), /*includeBool=*/false),
              "drolt::dist::ema_update: expected integer labels, got ", labels.scalar_type());
  const auto device = bank->centroids().device();
  auto y = labels.to(device, torch::kLong);
  drolt::detail::check_label_range(y, C, "drolt::dist::ema_update");
  // [C*D sums | C counts] in float64, one collective.
  auto flat = torch::zeros({C * D + C}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  auto s = flat.slice(0, 0, C * D).view({C, D});
  auto n = flat.slice(0, C * D, C * D + C);
  s.index_add_(0, y, features.detach().to(device, torch::kFloat64));
  n.index_add_(0, y, torch::ones({y.size(0)}, flat.options()));
  detail::allreduce_(flat, pg, c10d::ReduceOp::SUM, "ema_update");  // with one process too
  bank->ema_update_from_sums(s, n);  // the bank's own EMA rule on the global batch
}

/// Averages the gradients of `parameters` over all processes (sum, then divide
/// by the world size), as DistributedDataParallel does: with the same
/// parameters and optimizer state everywhere, every rank then takes the same
/// step. Unused parameters follow DDP too: a parameter without a gradient on
/// some ranks counts as a zero gradient there (it gets one), and one without a
/// gradient on every rank keeps none, so the optimizer skips it everywhere
/// (e.g. learned radii during a cross-entropy warm-up). Collective: every rank
/// passes the same parameters in the same order.
inline void allreduce_gradients(const std::vector<torch::Tensor>& parameters, ProcessGroup& pg) {
  if (pg.getSize() == 1) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> trainable;
  for (const auto& p : parameters) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  if (trainable.empty()) return;
  // Which parameters have a gradient anywhere (one small collective first: the
  // flat buffers below must have the same layout on every rank).
  auto used = torch::zeros({static_cast<int64_t>(trainable.size())}, torch::kLong);
  auto used_acc = used.accessor<int64_t, 1>();
  for (size_t i = 0; i < trainable.size(); ++i) used_acc[i] = trainable[i].grad().defined() ? 1 : 0;
  {
    auto on_device = used.to(trainable.front().device());  // NCCL takes only CUDA tensors
    detail::allreduce_(on_device, pg, c10d::ReduceOp::MAX, "allreduce_gradients");
    used.copy_(on_device);
  }
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < trainable.size(); ++i) {
    const auto& p = trainable[i];
    if (used_acc[i] == 0) continue;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    TORCH_CHECK(p.grad().layout() == torch::kStrided,
                "drolt::dist::allreduce_gradients: expected dense gradients, got ",
                p.grad().layout());
    grads.push_back(p.grad());
  }
  const double world = static_cast<double>(pg.getSize());
  for (const auto& group : detail::group_by_type(grads)) {
    auto flat = detail::flatten(group);
    detail::allreduce_(flat, pg, c10d::ReduceOp::SUM, "allreduce_gradients");
    flat.div_(world);
    detail::unflatten_into(flat, group);
  }
}

inline void allreduce_gradients(const torch::nn::Module& module, ProcessGroup& pg) {
  allreduce_gradients(module.parameters(), pg);
}

/// Copies `root`'s values of `tensors` to every rank, in place (e.g. the initial
/// weights, so that all ranks start from the same model). Collective; checks
/// first that every rank passed tensors of the same sizes.
inline void broadcast_(const std::vector<torch::Tensor>& tensors, ProcessGroup& pg, int root = 0) {
  TORCH_CHECK(root >= 0 && root < pg.getSize(), "drolt::dist::broadcast: expected root in [0, ",
              pg.getSize(), "), got ", root);
  if (pg.getSize() == 1) return;
  torch::NoGradGuard no_grad;
  std::vector<int64_t> signature{static_cast<int64_t>(tensors.size())};
  for (const auto& t : tensors) signature.push_back(t.numel());
  detail::check_same_on_all_ranks(signature, pg, "broadcast", "tensor count and sizes",
                                  tensors.empty() ? c10::Device(c10::kCPU) : tensors.front().device());
  for (const auto& group : detail::group_by_type(tensors)) {
    // Gloo has no bool type: masks travel as bytes.
    const bool is_bool = group.front().scalar_type() == torch::kBool;
    auto flat = detail::flatten(group);
    if (is_bool) flat = flat.to(torch::kUInt8);
    std::vector<torch::Tensor> v{flat};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    detail::wait(pg.broadcast(v, opts), pg, "broadcast");
    detail::unflatten_into(is_bool ? flat.to(torch::kBool) : flat, group);
  }
}

/// Copies rank `root`'s parameters (and, by default, buffers: a CentroidBank's
/// state, fixed radii, batch-norm statistics) to every rank.
inline void broadcast_parameters(torch::nn::Module& module, ProcessGroup& pg, int root = 0,
                                 bool include_buffers = true) {
  auto tensors = module.parameters();
  if (include_buffers) {
    for (const auto& b : module.buffers()) tensors.push_back(b);
  }
  broadcast_(tensors, pg, root);
}

/// Largest difference between ranks over all elements of `tensors` (0 when
/// every rank holds the same values): a cheap check that data-parallel
/// replicas have not drifted apart. Collective.
inline double max_divergence(const std::vector<torch::Tensor>& tensors, ProcessGroup& pg) {
  if (pg.getSize() == 1 || tensors.empty()) return 0.0;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  // On the first tensor's device (the group's: NCCL takes only CUDA tensors).
  const auto device = tensors.front().device();
  for (const auto& t : tensors) flat.push_back(t.detach().reshape({-1}).to(device, torch::kFloat64));
  auto local = torch::cat(flat);
  detail::check_same_on_all_ranks({local.numel()}, pg, "max_divergence", "element count", device);
  auto both = torch::cat({local, -local});
  detail::allreduce_(both, pg, c10d::ReduceOp::MAX, "max_divergence");
  const int64_t n = local.numel();
  auto spread = both.slice(0, 0, n) + both.slice(0, n, 2 * n);  // max - min per element
  return n == 0 ? 0.0 : spread.max().item<double>();
}

inline double max_divergence(const torch::nn::Module& module, ProcessGroup& pg) {
  auto tensors = module.parameters();
  for (const auto& b : module.buffers()) tensors.push_back(b);
  return max_divergence(tensors, pg);
}

// ------------------------------------------------------------- process groups

/// How to build a process group: a c10d::TCPStore on `master_addr:port`
/// (served by rank 0) for the rendezvous, then the backend's own connections
/// (Gloo: TCP between all ranks; NCCL: its communicator, one GPU per process).
struct GroupOptions {
  int64_t rank = 0;
  int64_t world_size = 1;
  /// This process's index on its machine: the GPU an NCCL group uses
  /// (cuda:local_rank). -1 (LOCAL_RANK unset): rank % the number of GPUs.
  int64_t local_rank = -1;
  std::string master_addr = "127.0.0.1";
  /// 0: rank 0 picks a free port (read it back with Group::port() and pass
  /// it to the other ranks); the other ranks need the real port.
  int64_t port = 29500;
  /// Limit for the rendezvous and for every collective: a peer that never joins,
  /// dies or hangs makes the others fail with a c10::Error after this long.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  /// Network interface for Gloo's traffic (like GLOO_SOCKET_IFNAME); empty:
  /// 127.0.0.1 when master_addr is a loopback address, else the address this
  /// machine's hostname resolves to (Gloo's default). NCCL reads its own
  /// NCCL_SOCKET_IFNAME.
  std::string interface;
  /// make_group's backend: "gloo", "nccl", or "" (NCCL when this build has it
  /// and a CUDA device is present, else Gloo).
  std::string backend;

  /// From the variables PyTorch's launchers set: RANK, WORLD_SIZE, LOCAL_RANK,
  /// MASTER_ADDR, MASTER_PORT, plus GLOO_SOCKET_IFNAME, DROLT_DIST_BACKEND and
  /// DROLT_DIST_TIMEOUT (seconds). Unset RANK / WORLD_SIZE mean a single
  /// process (0 of 1).
  static GroupOptions from_env() {
    GroupOptions o;
    o.rank = detail::parse_int(detail::getenv_or("RANK", "0"), "RANK");
    o.world_size = detail::parse_int(detail::getenv_or("WORLD_SIZE", "1"), "WORLD_SIZE");
    o.local_rank = detail::parse_int(detail::getenv_or("LOCAL_RANK", "-1"), "LOCAL_RANK");
    o.master_addr = detail::getenv_or("MASTER_ADDR", o.master_addr);
    o.port = detail::parse_int(detail::getenv_or("MASTER_PORT", std::to_string(o.port)),
                               "MASTER_PORT");
    o.interface = detail::getenv_or("GLOO_SOCKET_IFNAME", "");
    o.backend = detail::getenv_or("DROLT_DIST_BACKEND", "");
    const auto t = detail::getenv_or("DROLT_DIST_TIMEOUT", "");
    if (!t.empty()) {
      const int64_t seconds = detail::parse_int(t, "DROLT_DIST_TIMEOUT");
      TORCH_CHECK(seconds > 0, "drolt::dist: expected DROLT_DIST_TIMEOUT > 0 seconds, got ", seconds);
      o.timeout = std::chrono::seconds(seconds);
    }
    return o;
  }
};
/// The name of GroupOptions before NCCL groups existed.
using GlooGroupOptions = GroupOptions;

/// True when the environment describes a run of more than one process.
inline bool env_is_distributed() {
  return detail::parse_int(detail::getenv_or("WORLD_SIZE", "1"), "WORLD_SIZE") > 1;
}

/// A process group and the store it met through (kept alive with it).
struct Group {
  c10::intrusive_ptr<c10d::Store> store;  // declared first: destroyed after the group
  c10::intrusive_ptr<ProcessGroup> group;
  int64_t bound_port = 0;
  /// Where this group's tensors live: CPU for Gloo, cuda:local_rank for NCCL.
  c10::Device device = c10::kCPU;
  /// "gloo" or "nccl".
  std::string backend;

  ProcessGroup& pg() const { return *group; }
  int rank() const { return group->getRank(); }
  int world_size() const { return group->getSize(); }
  /// The rendezvous port (the one picked when GroupOptions::port was 0).
  int64_t port() const { return bound_port; }
};
/// The name of Group before NCCL groups existed.
using GlooGroup = Group;

namespace detail {
inline void check_options(const GroupOptions& o, const char* fn) {
  TORCH_CHECK(o.world_size >= 1, "drolt::dist::", fn, ": expected WORLD_SIZE >= 1, got ",
              o.world_size);
  TORCH_CHECK(o.rank >= 0 && o.rank < o.world_size, "drolt::dist::", fn,
              ": expected RANK in [0, ", o.world_size, "), got ", o.rank);
  TORCH_CHECK(o.port >= 0 && o.port <= 65535, "drolt::dist::", fn,
              ": expected MASTER_PORT in [0, 65535], got ", o.port);
  TORCH_CHECK(o.timeout.count() > 0, "drolt::dist::", fn, ": expected a timeout > 0 ms, got ",
              o.timeout.count());
  TORCH_CHECK(!o.master_addr.empty(), "drolt::dist::", fn, ": expected a MASTER_ADDR, got ''");
}
inline std::string who(const GroupOptions& o) {
  return "rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size);
}
inline std::string join_hint() {
  return " (do all processes use the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, and did each "
         "start?): ";
}
}  // namespace detail

/// The rendezvous store: rank 0 serves a c10d::TCPStore on
/// master_addr:port, the other ranks connect to it (retrying until
/// options.timeout). With port 0, rank 0 binds a free port: read it with
/// getPort() and hand it to the other ranks before make_gloo_group, which
/// waits for them.
inline c10::intrusive_ptr<c10d::TCPStore> make_store(const GroupOptions& options) {
  const auto& o = options;
  detail::check_options(o, "make_store");
  TORCH_CHECK(o.port != 0 || o.rank == 0, "drolt::dist::make_store: expected a real MASTER_PORT on ",
              detail::who(o), ", got 0 (only rank 0 can pick a free port)");
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.port);
    so.isServer = o.rank == 0;
    so.numWorkers = static_cast<std::size_t>(o.world_size);
    // The group factories wait for every rank (with the timeout); waiting here
    // too would keep rank 0 from handing out a port it picked itself.
    so.waitWorkers = false;
    so.timeout = o.timeout;
    return c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::dist::make_store: ", detail::who(o), " could not ",
                o.rank == 0 ? "serve" : "reach", " the rendezvous store at ", o.master_addr, ":",
                o.port, " within ", o.timeout.count(), " ms (",
                o.rank == 0 ? "is the port in use?" : "is rank 0 up?", "): ", detail::message_of(e));
  }
  return {};  // not reached: TORCH_CHECK(false) throws
}

#if DROLT_DIST_C10D_V2
/// LibTorch 2.x: a c10d::ProcessGroup around a bare Backend (e.g. a
/// ProcessGroupNCCL built by hand), so the drolt::dist functions can use it;
/// `device_type` is the device its tensors live on (CUDA for NCCL). The
/// backend keeps its own store; `store` (default: an empty HashStore) is only
/// what ProcessGroup's constructor asks for.
inline c10::intrusive_ptr<ProcessGroup> as_process_group(
    const c10::intrusive_ptr<c10d::Backend>& backend, c10::DeviceType device_type,
    c10::intrusive_ptr<c10d::Store> store = {}) {
  TORCH_CHECK(backend, "drolt::dist::as_process_group: expected a backend, got none");
  if (!store) store = c10::make_intrusive<c10d::HashStore>();
  auto pg = c10::make_intrusive<ProcessGroup>(store, backend->getRank(), backend->getSize());
  const auto type = ProcessGroup::strToBackendType(backend->getBackendName());
  pg->setBackend(device_type, type, backend);
  pg->setDefaultBackend(type);
  return pg;
}
#endif

namespace detail {
[[noreturn]] inline void missing_backend(const char* fn, const char* what) {
  TORCH_CHECK(false, "drolt::dist::", fn, ": this build has no ", what);
  std::abort();  // not reached
}

/// Every rank checks in under drolt/join/<rank> and waits for all the others,
/// at most options.timeout: NCCL's communicator set-up itself has no timeout.
inline void join(c10d::Store& store, const GroupOptions& o) {
  const std::string prefix = "drolt/join/";
  store.set(prefix + std::to_string(o.rank), std::vector<uint8_t>{1});
  std::vector<std::string> keys;
  for (int64_t r = 0; r < o.world_size; ++r) keys.push_back(prefix + std::to_string(r));
  store.wait(keys, o.timeout);
}

/// Gives group `g` its store (make_store(o) unless the caller passed one) and
/// backend name; returns "address:port" for messages.
inline std::string attach_store(Group& g, c10::intrusive_ptr<c10d::Store>& store, const GroupOptions& o,
                                const char* backend) {
  if (!store) store = make_store(o);
  g.store = store;
  g.backend = backend;
  auto* tcp = dynamic_cast<c10d::TCPStore*>(store.get());
  g.bound_port = tcp != nullptr ? tcp->getPort() : o.port;
  return o.master_addr + ":" + std::to_string(g.bound_port);
}

}  // namespace detail

/// Builds a Gloo process group (CPU tensors): every rank meets in `store` (by
/// default make_store(options)) and Gloo connects all ranks pairwise over TCP.
/// Fails with a c10::Error when the master cannot be reached or not every rank
/// joins within options.timeout; never waits longer.
inline Group make_gloo_group(const GroupOptions& options, c10::intrusive_ptr<c10d::Store> store = {}) {
  const auto& o = options;
  detail::check_options(o, "make_gloo_group");
#if !DROLT_HAS_GLOO
  (void)store;
  detail::missing_backend("make_gloo_group",
                          "Gloo (it needs a LibTorch built with Gloo and gloo's headers, e.g. "
                          "Debian's libgloo-dev)");
#else
  Group g;
  const std::string where = detail::attach_store(g, store, o, "gloo");

  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
    if (!o.interface.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(o.interface));
    } else if (detail::is_loopback(o.master_addr)) {
      // All ranks are on this machine: keep the traffic on loopback.
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(o.rank),
                                                            static_cast<int>(o.world_size), opts);
#if DROLT_DIST_C10D_V2
    g.group = as_process_group(gloo, c10::DeviceType::CPU, store);
#else
    g.group = gloo;
#endif
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::dist::make_gloo_group: ", detail::who(o), " at ", where,
                ": not every rank joined within ", o.timeout.count(), " ms", detail::join_hint(),
                detail::message_of(e));
  }
  return g;
#endif
}

/// Builds an NCCL process group (CUDA tensors, one GPU per process): this
/// process uses cuda:local_rank (rank % the number of GPUs when local_rank is
/// -1) and makes it the current device. Every rank first meets in `store` (by
/// default make_store(options)), then one all-reduce sets up the NCCL
/// communicator, so a rank that never joins fails here, after options.timeout,
/// not at the first collective. LibTorch 2.x built with NCCL only.
inline Group make_nccl_group(const GroupOptions& options, c10::intrusive_ptr<c10d::Store> store = {}) {
  const auto& o = options;
  // The prologue of make_gloo_group: the options checked, then the backend, or
  // the error that names what this build lacks.
  detail::check_options(o, "make_nccl_group");
#if !DROLT_HAS_NCCL
  (void)store;
  detail::missing_backend("make_nccl_group",
                          "NCCL (it needs a CUDA LibTorch 2.x built with NCCL, and nccl.h: drolt's "
                          "CMake finds it in PyPI's nvidia-nccl package)");
#else
  TORCH_CHECK(torch::cuda::is_available(), "drolt::dist::make_nccl_group: expected a CUDA device on ",
              detail::who(o), ", got none (NCCL needs one GPU per process)");
  const auto gpus = static_cast<int64_t>(torch::cuda::device_count());
  const int64_t local = o.local_rank >= 0 ? o.local_rank : o.rank % gpus;
  TORCH_CHECK(local < gpus, "drolt::dist::make_nccl_group: expected LOCAL_RANK in [0, ", gpus,
              ") (the GPUs on this machine), got ", local, " on ", detail::who(o));
  Group g;
  g.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local));
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(local));
  const std::string where = detail::attach_store(g, store, o, "nccl");
  try {
    detail::join(*store, o);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = o.timeout;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(o.rank),
                                                            static_cast<int>(o.world_size), opts);
    auto pg = c10::make_intrusive<ProcessGroup>(store, static_cast<int>(o.rank),
                                                static_cast<int>(o.world_size));
    pg->setBoundDeviceId(g.device);  // barrier() and NCCL's set-up use this GPU
    pg->setBackend(c10::DeviceType::CUDA, ProcessGroup::BackendType::NCCL,
                   c10::intrusive_ptr<c10d::Backend>(nccl));
    pg->setDefaultBackend(ProcessGroup::BackendType::NCCL);
    g.group = pg;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::dist::make_nccl_group: ", detail::who(o), " at ", where,
                ": not every rank joined within ", o.timeout.count(), " ms", detail::join_hint(),
                detail::message_of(e));
  }
  // Sets up the communicator now; its failure names the collective and the timeout.
  allreduce_sum_(torch::zeros({1}, torch::TensorOptions().device(g.device)), g.pg());
  return g;
#endif
}

/// make_nccl_group or make_gloo_group, by options.backend ("nccl", "gloo";
/// empty: NCCL when this build has it and a CUDA device is present, else Gloo).
inline Group make_group(const GroupOptions& options, c10::intrusive_ptr<c10d::Store> store = {}) {
  std::string backend = options.backend;
  if (backend.empty()) backend = DROLT_HAS_NCCL && torch::cuda::is_available() ? "nccl" : "gloo";
  TORCH_CHECK(backend == "nccl" || backend == "gloo",
              "drolt::dist::make_group: expected backend 'nccl', 'gloo' or '', got '", backend, "'");
  return backend == "nccl" ? make_nccl_group(options, std::move(store))
                           : make_gloo_group(options, std::move(store));
}

}  // namespace dist
}  // namespace drolt

#endif  // DROLT_HAS_DISTRIBUTED
