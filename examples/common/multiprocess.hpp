// Multi-process (data-parallel) training for the example trainer, over
// drolt::dist (c10d Gloo; docs/distributed.md).
//
// drolt_train builds the process's place in the run once from RANK /
// WORLD_SIZE / MASTER_ADDR / MASTER_PORT (DistContext::from_env()) and passes
// it to the trainer, which asks it for its data shard and to reduce gradients,
// statistics and centroids.
// With one process (the default, and every build without drolt::dist) every
// call is the identity and the trainer runs exactly as before.
#pragma once

#include <drolt/centroid_bank.hpp>
#include <drolt/distributed.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace drolt_examples {

class DistContext {
 public:
  /// One process (rank 0 of 1).
  DistContext() = default;

  /// From the launcher's variables; WORLD_SIZE unset or 1 means one process.
  /// Waits for every rank (at most DROLT_DIST_TIMEOUT seconds, default 300).
  static DistContext from_env() {
    DistContext d;
    const char* ws = std::getenv("WORLD_SIZE");
    if (ws == nullptr || std::string(ws).empty() || std::string(ws) == "1") return d;
#if DROLT_HAS_DISTRIBUTED
    auto options = drolt::dist::GlooGroupOptions::from_env();
    d.group_ = std::make_shared<drolt::dist::GlooGroup>(drolt::dist::make_gloo_group(options));
    d.rank_ = d.group_->rank();
    d.world_ = d.group_->world_size();
    return d;
#else
    throw std::runtime_error(std::string("WORLD_SIZE=") + ws +
                             " asks for several processes, but this build has no drolt::dist (it needs "
                             "LibTorch 1.13 with gloo headers: Debian's libtorch-dev + libgloo-dev)");
#endif
  }

#if DROLT_HAS_DISTRIBUTED
  /// Around a group built elsewhere (tests: rank 0 picks a free port first).
  explicit DistContext(std::shared_ptr<drolt::dist::GlooGroup> group)
      : rank_(group->rank()), world_(group->world_size()), group_(std::move(group)) {}
  /// The process group (only when active()).
  drolt::dist::ProcessGroup& pg() const {
    if (!group_) throw std::logic_error("DistContext::pg(): a single process has no process group");
    return group_->pg();
  }
#endif

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool active() const { return world_ > 1; }
  /// The process that writes checkpoints, metrics and reports.
  bool is_main() const { return rank_ == 0; }

  /// This rank's positions in epoch `epoch`'s order: a permutation of [0, n)
  /// drawn from (seed, epoch) alone, so the same on every rank without any
  /// communication, padded by wrapping around to a multiple of the world size
  /// (every rank gets as many samples, hence as many steps), then taken every
  /// world-th element from this rank on. `real` marks the non-padding rows.
  struct Shard {
    torch::Tensor idx;   // [n_local] int64 sample indices
    torch::Tensor real;  // [n_local] bool
  };
  Shard epoch_shard(int64_t n, int64_t seed, int64_t epoch) const {
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) * 1000003ULL +
                                              static_cast<uint64_t>(epoch) + 1);
    auto perm = torch::randperm(n, gen, torch::kLong);
    const int64_t padded = (n + world_ - 1) / world_ * world_;
    auto pos = torch::arange(rank_, padded, world_, torch::kLong);
    return {perm.index_select(0, pos % n), pos < n};
  }

  /// Rows [rank, rank + world, ...) of [0, n): this rank's part of a full pass.
  torch::Tensor rows(int64_t n) const { return torch::arange(rank_, n, world_, torch::kLong); }

  /// Per-rank batch for a global batch of `global` (the learning rate stays
  /// that of the global batch).
  int64_t local_batch(int64_t global) const {
    if (global % world_ != 0) {
      throw std::runtime_error("--batch " + std::to_string(global) + " is not divisible by WORLD_SIZE " +
                               std::to_string(world_) + " (each process takes batch / WORLD_SIZE samples)");
    }
    return global / world_;
  }

  /// Rank 0's parameters and buffers everywhere.
  void broadcast(torch::nn::Module& m) const {
#if DROLT_HAS_DISTRIBUTED
    if (active()) drolt::dist::broadcast_parameters(m, group_->pg());
#else
    (void)m;
#endif
  }

  /// Averages gradients over the ranks (DDP semantics for unused parameters).
  void allreduce_gradients(const std::vector<torch::Tensor>& params) const {
#if DROLT_HAS_DISTRIBUTED
    if (active()) drolt::dist::allreduce_gradients(params, group_->pg());
#else
    (void)params;
#endif
  }

  /// Averages the floating-point buffers (batch-norm running statistics) over
  /// the ranks: each rank updates them from its own shard, and evaluation,
  /// centroid refreshes and checkpoints need one model.
  void average_buffers(torch::nn::Module& m) const {
#if DROLT_HAS_DISTRIBUTED
    if (!active()) return;
    torch::NoGradGuard g;
    for (auto& b : m.buffers()) {
      if (!c10::isFloatingType(b.scalar_type())) continue;
      auto t = b.contiguous();
      drolt::dist::allreduce_sum_(t, group_->pg());
      b.copy_(t.div_(static_cast<double>(world_)));
    }
#else
    (void)m;
#endif
  }

  /// The bank's finalize() over the sums and counts of every rank.
  void finalize(drolt::CentroidBank& bank) const {
#if DROLT_HAS_DISTRIBUTED
    if (active()) return drolt::dist::finalize(bank, group_->pg());
#endif
    bank->finalize();
  }

  /// The bank's ema_update() with each class's mean over the global batch.
  void ema_update(drolt::CentroidBank& bank, const torch::Tensor& features, const torch::Tensor& labels) const {
#if DROLT_HAS_DISTRIBUTED
    if (active()) return drolt::dist::ema_update(bank, features, labels, group_->pg());
#endif
    bank->ema_update(features, labels);
  }

  /// Element-wise sum over the ranks (epoch statistics).
  std::vector<double> sum(std::vector<double> v) const {
#if DROLT_HAS_DISTRIBUTED
    if (active() && !v.empty()) {
      auto t = torch::tensor(v, torch::kDouble);
      drolt::dist::allreduce_sum_(t, group_->pg());
      for (size_t i = 0; i < v.size(); ++i) v[i] = t[static_cast<int64_t>(i)].item<double>();
    }
#endif
    return v;
  }

  /// Waits for every rank (e.g. until rank 0 has written a file the others read).
  void barrier() const {
#if DROLT_HAS_DISTRIBUTED
    if (active()) drolt::dist::barrier(group_->pg());
#endif
  }

 private:
  int rank_ = 0, world_ = 1;
#if DROLT_HAS_DISTRIBUTED
  std::shared_ptr<drolt::dist::GlooGroup> group_;
#endif
};

}  // namespace drolt_examples
