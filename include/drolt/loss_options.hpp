#pragma once
// The options of the DRO-LT loss (drolt/loss.hpp), in their own header as
// LibTorch keeps torch/nn/options/loss.h apart from its modules: the function's
// RobustCentroidLossFuncOptions and the module's RobustCentroidLossOptions. The
// loss's input checks and reference composition (detail/loss_inputs.hpp,
// detail/reference.hpp) need only these.
#include <torch/torch.h>

#include <cstdint>

#include "drolt/radius.hpp"
#include "drolt/types.hpp"

namespace drolt {

using LossReduction = torch::nn::L1LossOptions::reduction_t;

namespace functional {

struct RobustCentroidLossFuncOptions {
  using reduction_t = LossReduction;
  /// tau > 0: scores are -d / tau.
  TORCH_ARG(double, temperature) = 1.0;
  /// tau_b > 0: the loss is scaled by tau / tau_b. Unset means tau_b = tau.
  TORCH_ARG(c10::optional<double>, base_temperature) = c10::nullopt;
  /// Optional [C] positive class weights w_c.
  TORCH_ARG(torch::Tensor, class_weights) = {};
  /// Optional [C] bool mask of classes that have a centroid (default: all).
  TORCH_ARG(torch::Tensor, valid) = {};
  TORCH_ARG(Normalization, normalization) = Normalization::batch;
  TORCH_ARG(Distance, distance) = Distance::euclidean;
  /// mean (weighted mean over rows), sum, or none ([C] per class for batch
  /// normalization, [B] per sample for classes normalization).
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(Backend, backend) = Backend::automatic;
  /// Check that labels are in [0, C), radii are finite and >= 0 and weights
  /// finite and > 0. On CUDA this costs one device-to-host synchronisation, and
  /// turning it off makes out-of-range values the caller's responsibility. On
  /// the CPU the checks cost nothing measurable and always run.
  TORCH_ARG(bool, validate_values) = true;
  /// Check features and valid centroids for NaN/Inf and name the offending rows,
  /// and check that the loss itself is finite (float32 distances overflow for
  /// features around 1e19). Off by default: it synchronises with the device.
  /// Without it a non-finite feature gives a NaN loss, as in LibTorch's own losses.
  TORCH_ARG(bool, check_finite) = false;
};

}  // namespace functional

/// Options of the module form: the function's options plus the radius policy
/// and the class count. (The shared fields are repeated on purpose: TORCH_ARG
/// setters return their own struct, so neither options struct can inherit the
/// other's and still chain.)
struct RobustCentroidLossOptions {
  using reduction_t = LossReduction;
  /* implicit */ RobustCentroidLossOptions(int64_t num_classes) : num_classes_(num_classes) {}
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(c10::optional<double>, base_temperature) = c10::nullopt;
  /// Radius policy; the paper's best variant (learned, initial margin 2 * 0.5) by default.
  TORCH_ARG(RadiusPolicy, radius) = RadiusPolicy::learned(0.5);
  /// [C] training-set counts for the sqrtn policy; when undefined the counts
  /// of the CentroidBank passed to forward() are used.
  TORCH_ARG(torch::Tensor, class_counts) = {};
  TORCH_ARG(torch::Tensor, class_weights) = {};
  TORCH_ARG(Normalization, normalization) = Normalization::batch;
  TORCH_ARG(Distance, distance) = Distance::euclidean;
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(Backend, backend) = Backend::automatic;
  TORCH_ARG(bool, validate_values) = true;
  TORCH_ARG(bool, check_finite) = false;
};

}  // namespace drolt
