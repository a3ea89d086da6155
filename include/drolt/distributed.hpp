#pragma once
// drolt::dist: the centroid bank, gradients and parameters across processes,
// over a c10d process group (LibTorch's own distributed engine: Gloo on CPU,
// NCCL on GPU). Spec section 6: every process of a distributed run must hold
// the same centroids, those of one process that saw all the data, so the bank's
// per-class float64 sums and counts are all-reduced before the means are taken.
//
//   auto group = drolt::dist::make_gloo_group(drolt::dist::GlooGroupOptions::from_env());
//   drolt::dist::broadcast_parameters(*model, group.pg());      // same start everywhere
//   ...each epoch: bank->clear_sums(); bank->accumulate(z, y) over this rank's shard;
//   drolt::dist::finalize(bank, group.pg());                    // global centroids
//   ...each step: loss.backward(); drolt::dist::allreduce_gradients(params, group.pg());
//
// Availability: c10d's C++ API differs between LibTorch releases (1.13 has one
// ProcessGroup class, 2.x splits ProcessGroup and Backend) and the Gloo header
// needs gloo's own headers, which the PyPI LibTorch does not ship. The code
// below is therefore compiled only for LibTorch 1.13 built with Gloo
// (USE_C10D_GLOO, set by Torch's CMake targets) and with gloo's headers
// (Debian: libtorch-dev + libgloo-dev), and DROLT_HAS_DISTRIBUTED says whether
// it was. Define DROLT_HAS_DISTRIBUTED=0 to turn it off explicitly. Everything
// else in drolt builds the same without it.
#include <torch/torch.h>
#include <torch/version.h>

#ifndef DROLT_HAS_DISTRIBUTED
#if defined(__has_include)
#if __has_include(<gloo/algorithm.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
// USE_C10D_GLOO comes with Torch's CMake targets of a LibTorch built with Gloo
// (ProcessGroupGloo.hpp is empty without it).
#if TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR == 13 && defined(USE_C10D_GLOO)
#define DROLT_HAS_DISTRIBUTED 1
#endif
#endif
#endif
#ifndef DROLT_HAS_DISTRIBUTED
#define DROLT_HAS_DISTRIBUTED 0
#endif
#endif

#if DROLT_HAS_DISTRIBUTED

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

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
  if (auto* gloo = dynamic_cast<c10d::ProcessGroupGloo*>(&pg)) return gloo->getOptions()->timeout;
  return kNoTimeout;
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
    work->wait(timeout == kNoTimeout ? kNoTimeout : timeout + std::chrono::milliseconds(2000));
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
/// otherwise fail obscurely inside Gloo, or only at the timeout.
inline void check_same_on_all_ranks(const std::vector<int64_t>& values, ProcessGroup& pg,
                                    const char* what, const char* description) {
  if (pg.getSize() == 1) return;
  const auto n = static_cast<int64_t>(values.size());
  auto local = torch::tensor(values, torch::kLong);
  auto both = torch::cat({local, -local});  // max of v and of -v: the max and the min
  allreduce_(both, pg, c10d::ReduceOp::MAX, what);
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
/// and the pending counts accumulated since reset() on every rank, then
/// publishes the means. Afterwards every rank holds the centroids, counts and
/// valid mask of one process that accumulated all ranks' data (equal up to the
/// float64 summation order, far below float32 rounding). Collective: every rank
/// must call it, with banks of the same shape.
inline void finalize(CentroidBank& bank, ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  if (pg.getSize() > 1) {
    const int64_t C = bank->num_classes(), D = bank->dim();
    detail::check_same_on_all_ranks({C, D}, pg, "finalize", "bank shape [num_classes, dim]");
    // One collective for both: counts travel as float64, exact up to 2^53 samples.
    auto flat = torch::cat(
        {bank->pending_sums().reshape({-1}), bank->pending_counts().to(torch::kFloat64)});
    detail::allreduce_(flat, pg, c10d::ReduceOp::SUM, "finalize");
    bank->finalize_from(flat.slice(0, 0, C * D).view({C, D}), flat.slice(0, C * D, C * D + C));
    return;
  }
  bank->finalize();
}

/// Distributed MultiLayerRobustCentroidLoss::finalize(): every layer's bank as
/// finalize(bank, pg) does, all layers' sums and counts in one collective.
inline void finalize(MultiLayerRobustCentroidLoss& loss, ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  if (pg.getSize() <= 1) {
    loss->finalize();
    return;
  }
  std::vector<int64_t> shape;
  std::vector<torch::Tensor> parts;
  for (size_t l = 0; l < loss->num_layers(); ++l) {
    auto& b = loss->bank(l);
    shape.push_back(b->num_classes());
    shape.push_back(b->dim());
    parts.push_back(b->pending_sums().reshape({-1}));
    parts.push_back(b->pending_counts().to(torch::kFloat64));
  }
  detail::check_same_on_all_ranks(shape, pg, "finalize", "layer bank shapes [num_classes, dim] per layer");
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
  if (y.numel() > 0) {
    const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < C, "drolt::dist::ema_update: expected labels in [0, ", C,
                "), got values in [", lo, ", ", hi, "]");
  }
  // [C*D sums | C counts] in float64, one collective.
  auto flat = torch::zeros({C * D + C}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  auto s = flat.slice(0, 0, C * D).view({C, D});
  auto n = flat.slice(0, C * D, C * D + C);
  s.index_add_(0, y, features.detach().to(device, torch::kFloat64));
  n.index_add_(0, y, torch::ones({y.size(0)}, flat.options()));
  if (pg.getSize() > 1) detail::allreduce_(flat, pg, c10d::ReduceOp::SUM, "ema_update");
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
  detail::allreduce_(used, pg, c10d::ReduceOp::MAX, "allreduce_gradients");
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
  detail::check_same_on_all_ranks(signature, pg, "broadcast", "tensor count and sizes");
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
  for (const auto& t : tensors) flat.push_back(t.detach().reshape({-1}).to(torch::kCPU, torch::kFloat64));
  auto local = torch::cat(flat);
  detail::check_same_on_all_ranks({local.numel()}, pg, "max_divergence", "element count");
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

/// How to build a Gloo process group: a c10d::TCPStore on `master_addr:port`
/// (served by rank 0) for the rendezvous, then Gloo's TCP transport.
struct GlooGroupOptions {
  int64_t rank = 0;
  int64_t world_size = 1;
  std::string master_addr = "127.0.0.1";
  /// 0: rank 0 picks a free port (read it back with GlooGroup::port() and pass
  /// it to the other ranks); the other ranks need the real port.
  int64_t port = 29500;
  /// Limit for the rendezvous and for every collective: a peer that never joins,
  /// dies or hangs makes the others fail with a c10::Error after this long.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  /// Network interface for Gloo's traffic (like GLOO_SOCKET_IFNAME); empty:
  /// 127.0.0.1 when master_addr is a loopback address, else the address this
  /// machine's hostname resolves to (Gloo's default).
  std::string interface;

  /// From the variables PyTorch's launchers set: RANK, WORLD_SIZE, MASTER_ADDR,
  /// MASTER_PORT, plus GLOO_SOCKET_IFNAME and DROLT_DIST_TIMEOUT (seconds).
  /// Unset RANK / WORLD_SIZE mean a single process (0 of 1).
  static GlooGroupOptions from_env() {
    GlooGroupOptions o;
    o.rank = detail::parse_int(detail::getenv_or("RANK", "0"), "RANK");
    o.world_size = detail::parse_int(detail::getenv_or("WORLD_SIZE", "1"), "WORLD_SIZE");
    o.master_addr = detail::getenv_or("MASTER_ADDR", o.master_addr);
    o.port = detail::parse_int(detail::getenv_or("MASTER_PORT", std::to_string(o.port)),
                               "MASTER_PORT");
    o.interface = detail::getenv_or("GLOO_SOCKET_IFNAME", "");
    const auto t = detail::getenv_or("DROLT_DIST_TIMEOUT", "");
    if (!t.empty()) {
      const int64_t seconds = detail::parse_int(t, "DROLT_DIST_TIMEOUT");
      TORCH_CHECK(seconds > 0, "drolt::dist: expected DROLT_DIST_TIMEOUT > 0 seconds, got ", seconds);
      o.timeout = std::chrono::seconds(seconds);
    }
    return o;
  }
};

/// True when the environment describes a run of more than one process.
inline bool env_is_distributed() {
  return detail::parse_int(detail::getenv_or("WORLD_SIZE", "1"), "WORLD_SIZE") > 1;
}

/// A Gloo process group and the store it met through (kept alive with it).
struct GlooGroup {
  c10::intrusive_ptr<c10d::Store> store;  // declared first: destroyed after the group
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  int64_t bound_port = 0;

  ProcessGroup& pg() const { return *group; }
  int rank() const { return group->getRank(); }
  int world_size() const { return group->getSize(); }
  /// The rendezvous port (the one picked when GlooGroupOptions::port was 0).
  int64_t port() const { return bound_port; }
};

namespace detail {
inline void check_options(const GlooGroupOptions& o, const char* fn) {
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
inline std::string who(const GlooGroupOptions& o) {
  return "rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size);
}
}  // namespace detail

/// The rendezvous store: rank 0 serves a c10d::TCPStore on
/// master_addr:port, the other ranks connect to it (retrying until
/// options.timeout). With port 0, rank 0 binds a free port: read it with
/// getPort() and hand it to the other ranks before make_gloo_group, which
/// waits for them.
inline c10::intrusive_ptr<c10d::TCPStore> make_store(const GlooGroupOptions& options) {
  const auto& o = options;
  detail::check_options(o, "make_store");
  TORCH_CHECK(o.port != 0 || o.rank == 0, "drolt::dist::make_store: expected a real MASTER_PORT on ",
              detail::who(o), ", got 0 (only rank 0 can pick a free port)");
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.port);
    so.isServer = o.rank == 0;
    so.numWorkers = static_cast<std::size_t>(o.world_size);
    // make_gloo_group waits for every rank (with the timeout); waiting here too
    // would keep rank 0 from handing out a port it picked itself.
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

/// Builds a Gloo process group: every rank meets in `store` (by default
/// make_store(options)) and Gloo connects all ranks pairwise over TCP. Fails
/// with a c10::Error when the master cannot be reached or not every rank joins
/// within options.timeout; never waits longer.
inline GlooGroup make_gloo_group(const GlooGroupOptions& options,
                                 c10::intrusive_ptr<c10d::Store> store = {}) {
  const auto& o = options;
  detail::check_options(o, "make_gloo_group");
  GlooGroup g;
  if (!store) store = make_store(o);
  g.store = store;
  auto* tcp = dynamic_cast<c10d::TCPStore*>(store.get());
  g.bound_port = tcp != nullptr ? tcp->getPort() : o.port;
  const std::string where = o.master_addr + ":" + std::to_string(g.bound_port);
  const std::string who = detail::who(o);

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
    g.group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(o.rank),
                                                          static_cast<int>(o.world_size), opts);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::dist::make_gloo_group: ", who, " at ", where,
                ": not every rank joined within ", o.timeout.count(),
                " ms (do all processes use the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, "
                "and did each start?): ",
                detail::message_of(e));
  }
  return g;
}

}  // namespace dist
}  // namespace drolt

#endif  // DROLT_HAS_DISTRIBUTED
