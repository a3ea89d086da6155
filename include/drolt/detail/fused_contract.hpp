#pragma once
// The contract between the fused autograd function (detail/fused_function.hpp)
// and the fused kernels of one device: the CPU loops (detail/cpu_fused.hpp) and
// the CUDA kernels (cuda/fused_kernels.cu). "Backend" is the user's choice
// (drolt::Backend); FusedKernels is the table of functions one device provides.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "drolt/types.hpp"

namespace drolt {
namespace detail {

/// Scalars of one fused call. `dist` is euclidean or squared_euclidean: cosine
/// distance arrives as squared_euclidean with dist_scale = 0.5 on L2-normalised
/// inputs.
struct FusedParams {
  Normalization norm = Normalization::batch;
  Distance dist = Distance::euclidean;
  double dist_scale = 1.0;
  double temperature = 1.0;
  double base_temperature = 1.0;
  bool centroid_grad = false;  ///< compute dL/dmu in backward

  /// All of it as one list of numbers (what the autograd context keeps), and back.
  std::vector<double> pack() const {
    return {static_cast<double>(norm), static_cast<double>(dist), dist_scale, temperature,
            base_temperature,          centroid_grad ? 1.0 : 0.0};
  }
  static FusedParams unpack(const std::vector<double>& v) {
    TORCH_CHECK(v.size() == 6, "drolt: fused parameters of ", v.size(), " numbers, expected 6");
    FusedParams p;
    p.norm = static_cast<Normalization>(static_cast<int>(v[0]));
    p.dist = static_cast<Distance>(static_cast<int>(v[1]));
    p.dist_scale = v[2];
    p.temperature = v[3];
    p.base_temperature = v[4];
    p.centroid_grad = v[5] != 0.0;
    return p;
  }
};

/// Forward result: the unreduced loss vector ([C] for batch normalization, 0 for
/// classes not in the batch or without a centroid; [B] for classes
/// normalization, 0 for samples whose class has no centroid) and whatever the
/// kernels need to keep for their backward (each implementation documents its
/// own list; for the CUDA path one log-sum-exp per row, never a [K, B] matrix).
struct FusedForwardResult {
  torch::Tensor loss;
  std::vector<torch::Tensor> saved;
};

struct FusedBackwardResult {
  torch::Tensor grad_features;   ///< [B, D], dtype of features
  torch::Tensor grad_centroids;  ///< [C, D] or undefined when !centroid_grad
  torch::Tensor grad_radii;      ///< [C], float32 (float64 when features are float64)
};

/// Inputs, all on one device, already validated and contiguous:
///   features  [B, D]  float32 / float64 / bfloat16 / float16
///   labels    [B]     int64, in [0, C)
///   centroids [C, D]  same dtype as features
///   radii     [C]     float32 (float64 when features are float64)
///   valid     [C]     bool
/// grad_loss has the shape of FusedForwardResult::loss and dtype of radii.
struct FusedKernels {
  FusedForwardResult (*forward)(const torch::Tensor& features, const torch::Tensor& labels,
                                const torch::Tensor& centroids, const torch::Tensor& radii,
                                const torch::Tensor& valid, const FusedParams& params);
  FusedBackwardResult (*backward)(const torch::Tensor& grad_loss, const torch::Tensor& features,
                                  const torch::Tensor& labels, const torch::Tensor& centroids,
                                  const torch::Tensor& radii, const torch::Tensor& valid,
                                  const std::vector<torch::Tensor>& saved,
                                  const FusedParams& params);
  /// Optional (may be null): the weights v of the mean / sum reduction, so that
  /// the reduced loss is sum_k v[k] l[k] ([C] for batch normalization, [B] for
  /// classes normalization; divided by their sum for the mean). class_weights is
  /// [C] in radii's dtype or undefined. Returns an undefined tensor when it cannot
  /// take the inputs (the caller then composes LibTorch ops).
  torch::Tensor (*reduction_weights)(const torch::Tensor& labels, const torch::Tensor& valid,
                                     const torch::Tensor& class_weights, Normalization norm,
                                     bool mean, int64_t num_classes, c10::ScalarType dtype);
};

/// Slot filled by cuda/fused_kernels.cu at static-initialisation time when a
/// consumer links drolt::cuda. An inline function's static is one object per
/// program, whichever translation unit asks.
inline const FusedKernels*& cuda_kernels_slot() {
  static const FusedKernels* kernels = nullptr;
  return kernels;
}

/// Registers the CUDA kernels from a static initialiser: `static CudaRegistrar r{&kernels};`
struct CudaRegistrar {
  explicit CudaRegistrar(const FusedKernels* k) { cuda_kernels_slot() = k; }
};

}  // namespace detail
}  // namespace drolt
