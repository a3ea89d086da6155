#pragma once
// Device dispatch of the fused paths, in one place: which kernels (a
// FusedKernels table, detail/fused_contract.hpp) serve tensors of a device, and
// whether the fused path takes a tensor at all. The CPU table is
// detail/cpu_fused.hpp's; the CUDA table is whatever cuda/fused_kernels.cu
// registered in cuda_kernels_slot() (nothing when drolt::cuda is not linked).
#include <torch/torch.h>

#include "drolt/detail/cpu_fused.hpp"
#include "drolt/detail/fused_contract.hpp"

namespace drolt {
namespace detail {

/// The fused kernels of `device`, or nullptr when it has none.
inline const FusedKernels* kernels_of_device(const torch::Device& device) {
  if (device.is_cpu()) return &cpu::kernels();
  if (device.is_cuda()) return cuda_kernels_slot();
  return nullptr;
}

/// Whether the fused path can take these features: their device has kernels,
/// and on the CPU they are float32 or float64.
inline bool fused_available(const torch::Tensor& features) {
  if (features.is_cpu() && features.scalar_type() != torch::kFloat &&
      features.scalar_type() != torch::kDouble)
    return false;
  return kernels_of_device(features.device()) != nullptr;
}

}  // namespace detail
}  // namespace drolt
