#pragma once
// drolt::dist's collectives over a c10d::ProcessGroup: the distributed
// CentroidBank / MultiLayerRobustCentroidLoss finalize and EMA update, gradient
// all-reduce, broadcast, divergence checks, and the two building blocks a
// trainer's own collectives need: wait (a failed or hung collective becomes a
// c10::Error naming the call) and check_same_on_all_ranks. Empty where
// DROLT_HAS_DISTRIBUTED is 0 (drolt/distributed/config.hpp).
#include <torch/torch.h>

#include "drolt/distributed/config.hpp"

#if DROLT_HAS_DISTRIBUTED

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#if DROLT_HAS_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if DROLT_DIST_C10D_V2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#endif

#include <chrono>
#include <cstdint>
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

}  // namespace detail

/// Waits for a collective and turns any failure (a dead or hung peer shows up
/// as a Gloo I/O error or timeout) into a c10::Error that names the call, the
/// rank and the timeout.
inline void wait(const c10::intrusive_ptr<c10d::Work>& work, ProcessGroup& pg, const char* what) {
  const auto timeout = detail::timeout_of(pg);
  try {
    // Gloo enforces the group's timeout inside the collective and fails with the
    // more specific message; the wait's own limit (a little longer) is a second
    // line of defence so a stuck backend can never hang the caller.
    const auto limit = timeout == detail::kNoTimeout ? detail::kNoTimeout : timeout + std::chrono::milliseconds(2000);
    // A backend may report a timed-out wait by returning false (not throwing):
    // the tensors then hold no result, so that is a failure too.
    TORCH_CHECK(work->wait(limit), "the collective did not complete within ", limit.count(), " ms");
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::dist::", what, ": collective failed on rank ", pg.getRank(), " of ",
                pg.getSize(), " (a peer died, hung or never called it; timeout ", timeout.count(),
                " ms): ", detail::message_of(e));
  }
}

namespace detail {

inline void allreduce_(const torch::Tensor& t, ProcessGroup& pg, c10d::ReduceOp::RedOpType op,
                       const char* what) {
  TORCH_CHECK(t.is_contiguous(), "drolt::dist::", what, ": expected a contiguous tensor");
  std::vector<torch::Tensor> v{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = op;
  wait(pg.allreduce(v, opts), pg, what);
}

}  // namespace detail

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
  detail::allreduce_(both, pg, c10d::ReduceOp::MAX, what);
  both = both.cpu();
  const int64_t* r = both.data_ptr<int64_t>();
  std::vector<int64_t> hi(r, r + n), lo(n);
  for (int64_t i = 0; i < n; ++i) lo[i] = -r[n + i];
  TORCH_CHECK(hi == values && lo == values, "drolt::dist::", what, ": expected the same ",
              description, " on every rank, got ", c10::IntArrayRef(values), " on rank ",
              pg.getRank(), " but per-element max ", c10::IntArrayRef(hi), " and min ",
              c10::IntArrayRef(lo), " across ranks");
}

namespace detail {

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

}  // namespace detail

// ------------------------------------------------------------------ collectives

/// Sums `tensor` (contiguous) in place over all processes.
inline void allreduce_sum_(const torch::Tensor& tensor, ProcessGroup& pg) {
  detail::allreduce_(tensor, pg, c10d::ReduceOp::SUM, "allreduce_sum_");
}

/// Blocks until every process has reached it (or fails after the group's timeout).
inline void barrier(ProcessGroup& pg) {
  c10d::BarrierOptions opts;
  dist::wait(pg.barrier(opts), pg, "barrier");
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
  dist::check_same_on_all_ranks({C, D}, pg, "finalize", "bank shape [num_classes, dim]", device);
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
  dist::check_same_on_all_ranks(shape, pg, "finalize", "layer bank shapes [num_classes, dim] per layer",
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
  dist::check_same_on_all_ranks(signature, pg, "broadcast", "tensor count and sizes",
                                  tensors.empty() ? c10::Device(c10::kCPU) : tensors.front().device());
  for (const auto& group : detail::group_by_type(tensors)) {
    // Gloo has no bool type: masks travel as bytes.
    const bool is_bool = group.front().scalar_type() == torch::kBool;
    auto flat = detail::flatten(group);
    if (is_bool) flat = flat.to(torch::kUInt8);
    std::vector<torch::Tensor> v{flat};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    dist::wait(pg.broadcast(v, opts), pg, "broadcast");
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
  dist::check_same_on_all_ranks({local.numel()}, pg, "max_divergence", "element count", device);
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

}  // namespace dist
}  // namespace drolt

#endif  // DROLT_HAS_DISTRIBUTED
