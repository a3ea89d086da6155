#pragma once
// The contract between the autograd function in loss.hpp and the fused
// implementations (CPU in detail/cpu_fused.hpp, CUDA in cuda/fused_kernels.cu).
#include <torch/torch.h>

#include <vector>

#include "drolt/detail/tile_math.hpp"

namespace drolt {
namespace detail {

/// Scalars of one fused call. Cosine distance arrives here as `squared` with
/// dist_scale = 0.5 on L2-normalised inputs.
struct FusedParams {
  NormKind norm = NormKind::batch;
  DistKind dist = DistKind::euclidean;
  double dist_scale = 1.0;
  double temperature = 1.0;
  double base_temperature = 1.0;
  bool centroid_grad = false;  ///< compute dL/dmu in backward
};

/// Forward result: the unreduced loss vector ([C] for batch normalization, 0 for
/// classes not in the batch or without a centroid; [B] for classes
/// normalization, 0 for samples whose class has no centroid) and whatever the
/// backend needs to keep for its backward (for the CUDA path: one log-sum-exp
/// per row, never a [K, B] matrix).
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
struct FusedBackend {
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
                                     const torch::Tensor& class_weights, NormKind norm, bool mean,
                                     int64_t num_classes, c10::ScalarType dtype);
};

/// Slot filled by cuda/fused_kernels.cu at static-initialisation time when a
/// consumer links drolt::cuda. An inline function's static is one object per
/// program, whichever translation unit asks.
inline const FusedBackend*& cuda_backend_slot() {
  static const FusedBackend* backend = nullptr;
  return backend;
}

/// Registers a backend from a static initialiser: `static CudaRegistrar r{&backend};`
struct CudaRegistrar {
  explicit CudaRegistrar(const FusedBackend* b) { cuda_backend_slot() = b; }
};

}  // namespace detail
}  // namespace drolt
