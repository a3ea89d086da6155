// Mixed precision for the example trainer (--amp, --channels-last; CUDA only,
// config.hpp refuses them on the CPU): the network runs under bf16 autocast,
// and what leaves it (logits, features) is cast back to float32, so the
// classifier losses, DRO-LT and the centroid banks stay in float32. bf16 has
// float32's exponent range: no loss scaling is needed.
//
// LibTorch's autocast API: LibTorch 1.13 has CUDA-only functions
// (at::autocast::set_enabled, set_autocast_gpu_dtype), 2.4 and later take the
// device type (set_autocast_enabled(kCUDA, ...), set_autocast_dtype) and
// deprecate the old ones.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

namespace drolt_examples {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define DROLT_EXAMPLES_AUTOCAST_BY_DEVICE 1
#endif

/// bf16 autocast on CUDA while alive (nothing when `on` is false). Per thread,
/// as autocast is; restores the previous state and clears the cast cache.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool on) : on_(on) {
    if (!on_) return;
#ifdef DROLT_EXAMPLES_AUTOCAST_BY_DEVICE
    prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    prev_enabled_ = at::autocast::is_enabled();
    prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~AutocastGuard() {
    if (!on_) return;
#ifdef DROLT_EXAMPLES_AUTOCAST_BY_DEVICE
    at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
#else
    at::autocast::set_enabled(prev_enabled_);
    at::autocast::set_autocast_gpu_dtype(prev_dtype_);
#endif
    at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

/// How the network is run: autocast and the memory order of its input.
struct Precision {
  bool amp = false;
  bool channels_last = false;
  /// The network's input on the device, channels-last when asked for.
  torch::Tensor input(const torch::Tensor& x, const torch::Device& device) const {
    auto y = x.to(device);
    return channels_last ? y.contiguous(torch::MemoryFormat::ChannelsLast) : y;
  }
  /// float32, whatever autocast computed in.
  static torch::Tensor float32(const torch::Tensor& t) {
    return t.defined() && t.scalar_type() != torch::kFloat32 ? t.to(torch::kFloat32) : t;
  }
};

}  // namespace drolt_examples
