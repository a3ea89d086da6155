// Checkpoint files of the example trainer: archive I/O (drolt's checksummed
// container: a flipped byte or a truncated file is refused, naming the file),
// the pieces that are not modules (strings, the torch CPU generator) and the
// fingerprint check that refuses a checkpoint written with other settings.
//
// The archive of a run holds its epoch, elapsed time, fingerprint, log lines,
// model, optimizers, centroid bank, DRO-LT loss, samplers and the torch CPU
// generator (trainer.hpp: Run::save_checkpoint lists them).
#pragma once

#include <drolt/serialize.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace drolt_examples {
namespace checkpoint {

/// Writes `archive` to `path` in drolt's checksummed container, atomically (a
/// temporary file renamed into place): a crash mid-write leaves the previous
/// checkpoint.
inline void write(torch::serialize::OutputArchive& archive, const std::string& path) {
  drolt::write_archive(archive, path);
}

/// Reads the archive at `path`; a damaged, truncated or foreign file is a
/// c10::Error naming it (drolt::read_archive checks the container first).
inline void read(torch::serialize::InputArchive& archive, const std::string& path) {
  drolt::read_archive(archive, path);
}

/// Runs `f` (reading the parts of a checkpoint already read from `path`) so
/// that any failure is a c10::Error naming the file.
template <typename F>
void reading(const std::string& path, F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint '", path, "': ", e.what_without_backtrace());
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "checkpoint '", path, "': ", e.what());
  }
}

inline torch::Tensor string_tensor(const std::string& s) {
  auto t = torch::empty({static_cast<int64_t>(s.size())}, torch::kUInt8);
  std::copy(s.begin(), s.end(), t.data_ptr<uint8_t>());
  return t;
}

inline std::string tensor_string(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kUInt8);
  const auto* p = c.data_ptr<uint8_t>();
  return std::string(p, p + c.numel());
}

/// The string stored under `key`.
inline std::string read_string(torch::serialize::InputArchive& ar, const std::string& key) {
  torch::Tensor t;
  ar.read(key, t);
  return tensor_string(t);
}

inline torch::Tensor read_tensor(torch::serialize::InputArchive& ar, const std::string& key) {
  torch::Tensor t;
  ar.read(key, t);
  return t;
}

/// State of torch's default CPU generator: data order and augmentation draw from it.
inline torch::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

inline void set_cpu_rng_state(const torch::Tensor& s) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
}

/// Throws when `theirs` (a checkpoint's fingerprint) differs from `ours` in one
/// of `keys`, naming the file, the key and both values; `what` starts the message.
inline void require_same(const nlohmann::json& theirs, const nlohmann::json& ours,
                         const std::vector<std::string>& keys, const std::string& what, const std::string& path) {
  for (const auto& k : keys) {
    const auto a = theirs.value(k, nlohmann::json()), b = ours.value(k, nlohmann::json());
    if (a != b) {
      throw std::runtime_error(what + "checkpoint '" + path + "' differs in '" + k + "': " + a.dump() + " vs " +
                               b.dump());
    }
  }
}

/// The LibTorch that writes a checkpoint, "MAJOR.MINOR": its optimizer state
/// is keyed differently by other versions (1.13 by a pointer's string, 2.x by
/// the pointer), and read by another LibTorch it can land on the wrong parameters.
inline std::string libtorch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR);
}

/// Refuses a checkpoint written by another LibTorch (one that says which).
inline void require_same_libtorch(torch::serialize::InputArchive& ar, const std::string& path) {
  torch::Tensor t;
  if (!ar.try_read("libtorch", t)) return;  // older checkpoints: require_matching_state checks them
  const std::string theirs = tensor_string(t);
  if (theirs != libtorch_version()) {
    throw std::runtime_error("checkpoint '" + path + "' was written by LibTorch " + theirs + ", this is LibTorch " +
                             libtorch_version() + ": optimizer states do not carry across LibTorch versions; "
                             "resume with the LibTorch that wrote it");
  }
}

/// After an optimizer's state was loaded: every SGD momentum buffer must have its
/// parameter's shape (a state read across LibTorch versions may be paired with
/// the wrong parameters; `what` names the optimizer in the error).
inline void require_matching_state(torch::optim::Optimizer& opt, const std::string& path, const std::string& what) {
  for (auto& group : opt.param_groups()) {
    for (auto& p : group.params()) {
#if TORCH_VERSION_MAJOR >= 2
      auto it = opt.state().find(p.unsafeGetTensorImpl());
#else
      auto it = opt.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
#endif
      if (it == opt.state().end()) continue;
      const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(it->second.get());
      if (sgd == nullptr || !sgd->momentum_buffer().defined()) continue;
      if (sgd->momentum_buffer().sizes() != p.sizes()) {
        std::ostringstream msg;
        msg << "checkpoint '" << path << "': the " << what << "'s momentum buffer of a parameter of shape "
            << p.sizes() << " has shape " << sgd->momentum_buffer().sizes()
            << " (written by another LibTorch version? optimizer states do not carry across versions)";
        throw std::runtime_error(msg.str());
      }
    }
  }
}

}  // namespace checkpoint
}  // namespace drolt_examples
