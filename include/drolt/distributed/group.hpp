#pragma once
// drolt::dist's process groups: GroupOptions (from the environment or by hand),
// the rendezvous store, and make_gloo_group / make_nccl_group / make_group,
// which build a Group (the c10d process group and its store). Empty where
// DROLT_HAS_DISTRIBUTED is 0 (drolt/distributed/config.hpp); a factory whose
// backend is missing still exists and throws a c10::Error naming what is missing.
#include <torch/torch.h>

#include "drolt/distributed/collectives.hpp"
#include "drolt/distributed/config.hpp"

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
#include <memory>
#include <string>
#include <utility>

namespace drolt {
namespace dist {
namespace detail {

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
/// The name of GroupOptions before NCCL groups existed (deprecated).
using GlooGroupOptions [[deprecated("use drolt::dist::GroupOptions")]] = GroupOptions;

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
/// The name of Group before NCCL groups existed (deprecated).
using GlooGroup [[deprecated("use drolt::dist::Group")]] = Group;

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
