// Multi-process (data-parallel) training for the example trainer, over
// drolt::dist (c10d: Gloo on CPU, NCCL on CUDA; docs/distributed.md).
//
// drolt_train builds the process's place in the run once from RANK /
// WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (DistContext::from_env())
// and passes it to the trainer, which asks it for its device, its data shard
// and to reduce gradients, statistics and centroids.
// With one process (the default, and every build without drolt::dist) every
// call is the identity and the trainer runs exactly as before.
//
// Gradients (several processes): with --dist-bucket-mb B > 0 (default 25) the
// trainable parameters are split into buckets of about B MB, in reverse
// parameter order (the order backward() produces their gradients, as
// DistributedDataParallel does). A hook on every parameter copies its gradient
// into its bucket's flat buffer; once every gradient of a bucket (and of every
// bucket before it) has arrived, the bucket's all-reduce starts asynchronously,
// while backward() goes on with the layers below. allreduce_gradients() then
// completes the buckets that are still open (parameters that got no gradient
// in this step), waits for all of them and writes the averages into .grad.
// With B = 0 the gradients are all-reduced after backward(), one flat buffer
// per dtype (drolt::dist::allreduce_gradients). Both give the same averages
// (up to the summation order) and treat unused parameters alike (DDP's rule: a
// gradient missing on some ranks counts as zero there, one missing on every
// rank stays missing).
#pragma once

#include <drolt/centroid_bank.hpp>
#include <drolt/distributed.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace drolt_examples {

#if DROLT_HAS_DISTRIBUTED
namespace detail {

/// The bucketed, backward-overlapped gradient all-reduce of one parameter set
/// (see the file comment). Owned through a shared_ptr; the hooks hold a
/// weak_ptr and are removed when it goes.
class GradientBuckets : public std::enable_shared_from_this<GradientBuckets> {
 public:
  struct Stats {
    int64_t buckets = 0;
    int64_t steps = 0;
    /// Bucket all-reduces started from a gradient hook, i.e. during backward()
    /// (the others started in finish(): a parameter without a gradient, or no
    /// arm() before backward()).
    int64_t launched_in_backward = 0;
    int64_t launched_after_backward = 0;
    /// Times the buckets were laid out again (the set of parameters without
    /// any gradient changed).
    int64_t layouts = 0;
  };

  /// `params`: the parameters that require a gradient, in the trainer's order.
  static std::shared_ptr<GradientBuckets> create(const std::vector<torch::Tensor>& params,
                                                 std::shared_ptr<drolt::dist::Group> group,
                                                 int64_t bucket_bytes) {
    std::shared_ptr<GradientBuckets> b(new GradientBuckets(params, std::move(group), bucket_bytes));
    // The buckets' buffers must have the same layout everywhere: a mismatch
    // would otherwise fail inside Gloo (or NCCL) without a usable message.
    std::vector<int64_t> signature{bucket_bytes, static_cast<int64_t>(params.size())};
    for (const auto& p : params) signature.push_back(p.numel());
    drolt::dist::check_same_on_all_ranks(signature, b->group_->pg(), "allreduce_gradients",
                                                 "bucket size (bytes), parameter count and sizes", b->device_);
    b->register_hooks();
    return b;
  }
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;
  ~GradientBuckets() {
    for (size_t i = 0; i < hooks_.size(); ++i) {  // hooks_ is empty when create() failed
      try {
        params_[i].remove_hook(hooks_[i]);
      } catch (const std::exception&) {  // a destructor does not throw
      }
    }
  }

  /// True when this object serves exactly `params` (same tensors, same order).
  bool serves(const std::vector<torch::Tensor>& params) const {
    if (params.size() != params_.size()) return false;
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].is_same(params_[i])) return false;
    }
    return true;
  }

  /// Before backward(): the next gradients that arrive belong to this step.
  void arm() {
    std::lock_guard<std::mutex> lock(mu_);
    reset_step();
    armed_ = true;
  }

  /// After backward(): every bucket reduced, .grad = the average over the ranks.
  void finish() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!armed_) reset_step();  // no arm() before backward(): every bucket starts here
    armed_ = false;
    torch::NoGradGuard no_grad;
    auto& pg = group_->pg();
    // Buckets still open: their missing gradients are this rank's .grad as it
    // is (defined when backward() did not reach the parameter but an earlier
    // step left one, e.g. zeroed), else zero; "used" records which.
    for (size_t b = next_; b < buckets_.size(); ++b) {
      auto& bk = buckets_[b];
      for (size_t i : bk.members) {
        if (arrived_[i]) continue;
        auto slot = slot_of(i);
        const auto& g = params_[i].grad();
        if (g.defined()) {
          check_dense(g);
          slot.copy_(g.reshape({-1}));
          used_[i] = 1;
        } else {
          slot.zero_();
        }
        arrived_[i] = 1;
      }
      bk.pending = 0;
    }
    launch_ready(/*in_backward=*/false);
    // Which parameters have a gradient on some rank (after the buckets, in the
    // same order on every rank).
    auto used = torch::tensor(used_, torch::kLong).to(device_);
    std::vector<torch::Tensor> used_io{used};
    c10d::AllreduceOptions max;
    max.reduceOp = c10d::ReduceOp::MAX;
    auto used_work = pg.allreduce(used_io, max);
    for (auto& bk : buckets_) drolt::dist::wait(bk.work, pg, "allreduce_gradients");
    drolt::dist::wait(used_work, pg, "allreduce_gradients");
    used = used.cpu();
    const int64_t* anywhere = used.data_ptr<int64_t>();
    const double world = static_cast<double>(pg.getSize());
    for (auto& bk : buckets_) {
      bk.flat.div_(world);
      bk.work.reset();
      for (size_t i : bk.members) {
        if (anywhere[i] == 0) continue;  // no gradient on any rank: none here either
        auto& p = params_[i];
        auto avg = slot_of(i).view(p.sizes());
        if (p.grad().defined()) {
          p.mutable_grad().copy_(avg);
        } else {
          p.mutable_grad() = avg.clone();
        }
      }
    }
    ++stats_.steps;
    std::vector<int64_t> unused(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) unused[i] = anywhere[i] == 0 ? 1 : 0;
    if (unused != deferred_) {
      ++stats_.layouts;
      layout(unused);
    }
  }

  const Stats& stats() const { return stats_; }

 private:
  struct Bucket {
    std::vector<size_t> members;  // indices into params_
    torch::Tensor flat;           // their gradients, back to back
    std::vector<torch::Tensor> io;
    size_t pending = 0;  // gradients not yet in `flat`
    c10::intrusive_ptr<c10d::Work> work;
  };

  GradientBuckets(const std::vector<torch::Tensor>& params, std::shared_ptr<drolt::dist::Group> group,
                  int64_t bucket_bytes)
      : params_(params), group_(std::move(group)), bucket_bytes_(bucket_bytes) {
    TORCH_CHECK(bucket_bytes > 0, "gradient buckets: expected a bucket size > 0 bytes, got ", bucket_bytes);
    TORCH_CHECK(!params_.empty(), "gradient buckets: expected at least one parameter");
    for (size_t k = 0; k < params_.size(); ++k) {
      TORCH_CHECK(params_[k].requires_grad(), "gradient buckets: parameter ", k, " does not require a gradient");
    }
    device_ = params_.front().device();
    arrived_.assign(params_.size(), 0);
    used_.assign(params_.size(), 0);
    layout(std::vector<int64_t>(params_.size(), 0));
  }

  /// Splits the parameters into buckets: reverse parameter order, a new
  /// bucket when the next parameter would pass the size or has another dtype
  /// or device (one flat buffer per bucket). The parameters `deferred` marks
  /// (those without a gradient on any rank in the last step, the same on
  /// every rank: e.g. learned radii during the cross-entropy warm-up) go into
  /// the last buckets, so that they do not hold back the others' all-reduces.
  void layout(const std::vector<int64_t>& deferred) {
    deferred_ = deferred;
    buckets_.clear();
    bucket_of_.assign(params_.size(), 0);
    offset_of_.assign(params_.size(), 0);
    for (int64_t pass : {0, 1}) {
      int64_t bytes = 0;
      bool open = false;
      for (size_t k = params_.size(); k-- > 0;) {
        if (deferred_[k] != pass) continue;
        const auto& p = params_[k];
        const int64_t nbytes = p.numel() * static_cast<int64_t>(p.element_size());
        if (!open || bytes + nbytes > bucket_bytes_ ||
            p.scalar_type() != params_[buckets_.back().members.front()].scalar_type() ||
            p.device() != params_[buckets_.back().members.front()].device()) {
          buckets_.emplace_back();
          bytes = 0;
          open = true;
        }
        bucket_of_[k] = buckets_.size() - 1;
        buckets_.back().members.push_back(k);
        bytes += nbytes;
      }
    }
    for (auto& bk : buckets_) {
      int64_t n = 0;
      for (size_t i : bk.members) {
        offset_of_[i] = n;
        n += params_[i].numel();
      }
      const auto& first = params_[bk.members.front()];
      bk.flat = torch::zeros({n}, first.options().requires_grad(false));
      bk.io = {bk.flat};
      bk.pending = bk.members.size();
    }
    stats_.buckets = static_cast<int64_t>(buckets_.size());
  }

  void register_hooks() {
    std::weak_ptr<GradientBuckets> self = shared_from_this();
    hooks_.reserve(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      hooks_.push_back(params_[i].register_hook([self, i](const torch::Tensor& grad) {
        if (auto b = self.lock()) b->on_gradient(i, grad);
      }));
    }
  }

  static void check_dense(const torch::Tensor& g) {
    TORCH_CHECK(g.layout() == torch::kStrided, "drolt::dist::allreduce_gradients: expected dense gradients, got ",
                g.layout());
  }

  torch::Tensor slot_of(size_t i) const {
    return buckets_[bucket_of_[i]].flat.narrow(0, offset_of_[i], params_[i].numel());
  }

  void reset_step() {
    std::fill(arrived_.begin(), arrived_.end(), 0);
    std::fill(used_.begin(), used_.end(), 0);
    for (auto& bk : buckets_) {
      bk.pending = bk.members.size();
      bk.work.reset();
    }
    next_ = 0;
  }

  /// A gradient hook: the gradient `grad` of parameter i, before backward()
  /// adds it to .grad (so the bucket gets .grad + grad: what .grad will hold).
  void on_gradient(size_t i, const torch::Tensor& grad) {
    if (!grad.defined()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!armed_) return;  // a backward() outside a training step
    TORCH_CHECK(!arrived_[i], "gradient buckets: a second gradient for parameter ", i,
                " in one step (one backward() per step, between arming and allreduce_gradients)");
    check_dense(grad);
    torch::NoGradGuard no_grad;
    auto slot = slot_of(i);
    slot.copy_(grad.reshape({-1}));
    const auto& old = params_[i].grad();
    if (old.defined()) slot.add_(old.reshape({-1}));
    arrived_[i] = 1;
    used_[i] = 1;
    --buckets_[bucket_of_[i]].pending;
    launch_ready(/*in_backward=*/true);
  }

  /// Starts the all-reduce of every complete bucket from next_ on, in bucket
  /// order: every rank starts the same collectives in the same order.
  void launch_ready(bool in_backward) {
    auto& pg = group_->pg();
    while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
      auto& bk = buckets_[next_];
      c10d::AllreduceOptions sum;
      sum.reduceOp = c10d::ReduceOp::SUM;
      bk.work = pg.allreduce(bk.io, sum);
      ++(in_backward ? stats_.launched_in_backward : stats_.launched_after_backward);
      ++next_;
    }
  }

  std::vector<torch::Tensor> params_;
  std::shared_ptr<drolt::dist::Group> group_;
  int64_t bucket_bytes_ = 0;
  std::vector<int64_t> deferred_;
  c10::Device device_ = c10::kCPU;
  std::vector<unsigned> hooks_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> offset_of_;
  std::vector<int64_t> arrived_, used_;
  size_t next_ = 0;
  bool armed_ = false;
  Stats stats_;
  std::mutex mu_;
};

}  // namespace detail
#endif

class DistContext {
 public:
  /// The default size of a gradient bucket (--dist-bucket-mb), as DDP's.
  static constexpr double kDefaultBucketMb = 25.0;

  /// One process (rank 0 of 1).
  DistContext() = default;

  /// From the launcher's variables; WORLD_SIZE unset or 1 means one process.
  /// `device` is the trainer's --device ("cpu" or "cuda"): with several
  /// processes "cuda" means cuda:LOCAL_RANK, one GPU per process. `backend`:
  /// "auto" (NCCL for cuda, Gloo for cpu), "gloo" or "nccl". `bucket_mb`:
  /// the gradient buckets' size (0: all-reduce after backward()).
  /// Waits for every rank (at most DROLT_DIST_TIMEOUT seconds, default 300).
  /// Throws std::runtime_error (bad combination, what the build lacks) or
  /// c10::Error (bad variables, a rank that never joins).
  static DistContext from_env(const std::string& device = "cpu", const std::string& backend = "auto",
                              double bucket_mb = kDefaultBucketMb) {
    if (backend != "auto" && backend != "gloo" && backend != "nccl") {
      throw std::runtime_error("--dist-backend: expected auto, gloo or nccl, got '" + backend + "'");
    }
    if (device != "cpu" && device != "cuda") {
      throw std::runtime_error("--device: expected cpu or cuda, got '" + device + "'");
    }
    check_bucket_mb(bucket_mb);
    DistContext d;
    d.bucket_mb_ = bucket_mb;
    const char* ws = std::getenv("WORLD_SIZE");
    if (ws == nullptr || std::string(ws).empty() || std::string(ws) == "1") return d;
    const bool cuda = device == "cuda";
    const std::string chosen = backend == "auto" ? (cuda ? "nccl" : "gloo") : backend;
    const std::string what = std::string("WORLD_SIZE=") + ws + " with --device " + device;
    if (chosen == "nccl" && !cuda) {
      throw std::runtime_error(what + " --dist-backend nccl: NCCL reduces CUDA tensors only; expected --device "
                                      "cuda with nccl, or --dist-backend gloo (or auto) on the CPU");
    }
    if (chosen == "gloo" && cuda) {
      throw std::runtime_error(what + " --dist-backend gloo: the trainer's Gloo groups reduce CPU tensors only; "
                                      "expected --dist-backend nccl (or auto) with --device cuda, or --device cpu");
    }
#if !DROLT_HAS_DISTRIBUTED
    throw std::runtime_error(what + " asks for several processes, but this build has no drolt::dist "
                                    "(DROLT_HAS_DISTRIBUTED is 0: it needs a LibTorch 2.x with c10d, or LibTorch "
                                    "1.13 with Gloo and gloo's headers, e.g. Debian's libtorch-dev + libgloo-dev)");
#else
    if (chosen == "nccl" && !DROLT_HAS_NCCL) {
      throw std::runtime_error(what + " needs an NCCL group, but this build has no NCCL (DROLT_HAS_NCCL is 0: "
                                      "it needs a CUDA LibTorch 2.x built with NCCL and nccl.h; configure drolt "
                                      "with -DDROLT_WITH_NCCL=ON, which finds PyPI's nvidia-nccl)");
    }
    if (chosen == "gloo" && !DROLT_HAS_GLOO) {
      throw std::runtime_error(what + " needs a Gloo group, but this build has no Gloo (DROLT_HAS_GLOO is 0: it "
                                      "needs a LibTorch built with Gloo and gloo's headers, e.g. Debian's "
                                      "libgloo-dev)");
    }
    auto options = drolt::dist::GroupOptions::from_env();
    options.backend = chosen;
    if (cuda) {
      const auto gpus = static_cast<int64_t>(torch::cuda::device_count());
      if (options.local_rank < 0) {
        throw std::runtime_error(what + ": expected LOCAL_RANK (this process's GPU on its machine, 0 to " +
                                 std::to_string(gpus - 1) + "), got none");
      }
      if (options.local_rank >= gpus) {
        throw std::runtime_error(what + ": --device cuda uses cuda:LOCAL_RANK, expected LOCAL_RANK in [0, " +
                                 std::to_string(gpus) + ") (the CUDA devices of this machine), got " +
                                 std::to_string(options.local_rank));
      }
      d.gpu_ = options.local_rank;
    }
    d.group_ = std::make_shared<drolt::dist::Group>(drolt::dist::make_group(options));
    d.rank_ = d.group_->rank();
    d.world_ = d.group_->world_size();
    // Ranks that reduce gradients differently would send buffers of different
    // sizes (Gloo then aborts the process): refuse that here, with a message.
    drolt::dist::check_same_on_all_ranks({bucket_bytes(bucket_mb)}, d.group_->pg(), "DistContext",
                                                 "--dist-bucket-mb (in bytes)", d.group_->device);
    return d;
#endif
  }

  /// A bucket size in bytes (0: no buckets).
  static int64_t bucket_bytes(double mb) {
    return mb <= 0 ? 0 : std::max<int64_t>(1, static_cast<int64_t>(std::llround(mb * 1024.0 * 1024.0)));
  }

  /// Throws std::runtime_error unless `mb` is a bucket size in [0, 1e6] MB.
  static void check_bucket_mb(double mb) {
    if (!(mb >= 0 && mb <= 1e6)) {
      throw std::runtime_error("--dist-bucket-mb: expected a size in [0, 1000000] MB (0: all-reduce after "
                               "backward), got " + std::to_string(mb));
    }
  }

  // Copies share the group, not the gradient buckets (hooks on one Run's parameters).
  DistContext(const DistContext& o)
      : rank_(o.rank_), world_(o.world_), gpu_(o.gpu_), bucket_mb_(o.bucket_mb_)
#if DROLT_HAS_DISTRIBUTED
        , group_(o.group_)
#endif
  {
  }
  DistContext& operator=(const DistContext& o) {
    if (this != &o) {
      DistContext copy(o);
      *this = std::move(copy);
    }
    return *this;
  }
  DistContext(DistContext&&) = default;
  DistContext& operator=(DistContext&&) = default;
  ~DistContext() = default;

#if DROLT_HAS_DISTRIBUTED
  /// Around a group built elsewhere (tests: rank 0 picks a free port first).
  explicit DistContext(std::shared_ptr<drolt::dist::Group> group, double bucket_mb = kDefaultBucketMb)
      : rank_(group->rank()), world_(group->world_size()), bucket_mb_(bucket_mb), group_(std::move(group)) {
    check_bucket_mb(bucket_mb);
    if (group_->device.is_cuda()) gpu_ = group_->device.index();
  }
  /// The process group (only when active()).
  drolt::dist::ProcessGroup& pg() const {
    if (!group_) throw std::logic_error("DistContext::pg(): a single process has no process group");
    return group_->pg();
  }
#endif

  /// This process's device for the trainer's --device: cuda:LOCAL_RANK for
  /// "cuda" in a multi-process run, else `requested` itself.
  torch::Device device(const std::string& requested) const {
    if (requested == "cuda" && gpu_ >= 0) return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(gpu_));
    return torch::Device(requested);
  }
  double bucket_mb() const { return bucket_mb_; }

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

  /// Before backward() in a training step: arms the gradient buckets of
  /// `params` (built, with their hooks, at the first call for this parameter
  /// set), so that their all-reduces start while backward() runs. Nothing with
  /// one process or --dist-bucket-mb 0. Pass the same parameters to
  /// allreduce_gradients() after backward().
  void prepare_gradients(const std::vector<torch::Tensor>& params) const {
#if DROLT_HAS_DISTRIBUTED
    if (auto* b = buckets_for(params)) b->arm();
#else
    (void)params;
#endif
  }

  /// After backward(): averages the gradients of `params` over the ranks (DDP
  /// semantics for unused parameters), through the buckets armed by
  /// prepare_gradients() or, with --dist-bucket-mb 0, one flat buffer per
  /// dtype. Every rank passes the same parameters in the same order.
  void allreduce_gradients(const std::vector<torch::Tensor>& params) const {
#if DROLT_HAS_DISTRIBUTED
    if (!active()) return;
    if (auto* b = buckets_for(params)) {
      b->finish();  // without prepare_gradients(): every bucket starts here
    } else {
      drolt::dist::allreduce_gradients(params, group_->pg());
    }
#else
    (void)params;
#endif
  }

#if DROLT_HAS_DISTRIBUTED
  /// The current gradient buckets' counters (all 0 before the first step through buckets).
  detail::GradientBuckets::Stats bucket_stats() const {
    return buckets_.b ? buckets_.b->stats() : detail::GradientBuckets::Stats{};
  }
#endif

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
      auto t = torch::tensor(v, torch::kDouble).to(group_->device);  // NCCL takes CUDA tensors only
      drolt::dist::allreduce_sum_(t, group_->pg());
      t = t.cpu();
      for (size_t i = 0; i < v.size(); ++i) v[i] = t[static_cast<int64_t>(i)].item<double>();
    }
#endif
    return v;
  }

  /// Refuses ranks that were started with different settings (`settings`: a
  /// canonical text of every setting that changes what a rank computes or
  /// which collectives it runs). They would otherwise train on, silently
  /// apart (each its own lr or loss on all-reduced gradients) or stop in a
  /// mismatched collective. Throws on every rank, naming this rank's settings
  /// so that the ranks' error messages can be compared.
  void check_same_settings(const std::string& settings) const {
#if DROLT_HAS_DISTRIBUTED
    if (!active()) return;
    uint64_t h = 1469598103934665603ULL;  // FNV-1a, 64 bits: the same on every machine
    for (unsigned char ch : settings) h = (h ^ ch) * 1099511628211ULL;
    const auto key = static_cast<int64_t>(h >> 1);  // >= 0: check_same_on_all_ranks negates it
    try {
      drolt::dist::check_same_on_all_ranks({key}, group_->pg(), "DistContext",
                                                   "run settings (their hash)", group_->device);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, e.what_without_backtrace(),
                  "; start every rank with the same flags. This rank's settings: ", settings);
    }
#else
    (void)settings;
#endif
  }

  /// Waits for every rank (e.g. until rank 0 has written a file the others read).
  void barrier() const {
#if DROLT_HAS_DISTRIBUTED
    if (active()) drolt::dist::barrier(group_->pg());
#endif
  }

 private:
#if DROLT_HAS_DISTRIBUTED
  /// The buckets for `params` (rebuilt when the parameter set changes), or
  /// null: one process, or --dist-bucket-mb 0.
  detail::GradientBuckets* buckets_for(const std::vector<torch::Tensor>& params) const {
    if (!active() || bucket_mb_ <= 0) return nullptr;
    std::vector<torch::Tensor> trainable;
    for (const auto& p : params) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    if (trainable.empty()) return nullptr;
    if (!buckets_.b || !buckets_.b->serves(trainable)) {
      buckets_.b.reset();  // removes the old hooks first
      buckets_.b = detail::GradientBuckets::create(trainable, group_, bucket_bytes(bucket_mb_));
    }
    return buckets_.b.get();
  }
#endif

  int rank_ = 0, world_ = 1;
  int64_t gpu_ = -1;  // cuda:gpu_ (LOCAL_RANK) in a multi-process CUDA run
  double bucket_mb_ = kDefaultBucketMb;
#if DROLT_HAS_DISTRIBUTED
  std::shared_ptr<drolt::dist::Group> group_;
  // Not copied with the context: each copy (each Run) hooks its own parameters.
  struct BucketSlot {
    std::shared_ptr<detail::GradientBuckets> b;
  };
  mutable BucketSlot buckets_;
#endif
};

}  // namespace drolt_examples
