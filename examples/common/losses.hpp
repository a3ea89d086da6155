// Representation losses of the example trainer (docs/math.md, "Training protocol" and "The authors' published recipe" and "Methods compared"):
// cross-entropy (optionally class-weighted), focal loss, LDAM (+ DRW), the
// logit-adjusted loss, each optionally plus DRO-LT, mixed with lambda or summed.
// The losses themselves are the library's (drolt/longtail_losses.hpp); this file
// picks one per epoch. dro_loss_options() is the one place the DRO-LT loss is
// configured.
#pragma once

#include <drolt/class_weights.hpp>
#include <drolt/drolt.hpp>
#include <drolt/longtail_losses.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "config.hpp"

namespace drolt_examples {

/// The DRO-LT loss of a run: policy, temperature and class counts from the
/// configuration (docs/math.md, "The loss" and "Radius policies").
inline drolt::RobustCentroidLossOptions dro_loss_options(const TrainConfig& cfg, const std::vector<int64_t>& counts,
                                                         const torch::Device& device) {
  return drolt::RobustCentroidLossOptions(static_cast<int64_t>(counts.size()))
      .temperature(cfg.temperature)
      .radius(cfg.radius)
      .class_counts(torch::tensor(counts, torch::kLong))
      // Labels were checked when the data was read; on CUDA the per-call
      // checks would cost a host sync.
      .validate_values(!device.is_cuda());
}

/// Class weights, float32 [C]; undefined for ClassWeighting::none. Inverse
/// frequency and effective number average to 1; count_ratio ("nmax") is the
/// authors' n_c / n_max (a weighted mean does not depend on the scale).
inline torch::Tensor weights_of(drolt::ClassWeighting w, const std::vector<int64_t>& counts, double beta) {
  if (w == drolt::ClassWeighting::none) return {};
  return drolt::class_weights(counts, w, beta,
                              w == drolt::ClassWeighting::count_ratio ? drolt::ClassWeightScale::max_one
                                                                       : drolt::ClassWeightScale::mean_one);
}

/// What one representation epoch minimises (built by the method, methods/method.hpp).
struct LossSpec {
  BaseLoss base = BaseLoss::ce;
  torch::Tensor class_weights;  // undefined: unweighted
  double focal_gamma = 0;
  torch::Tensor ldam_margins;  // LDAM: Delta_c (drolt::ldam_margins), [C]
  double ldam_scale = 0;       // LDAM: s (the margin of the target logit is s * Delta_y)
  /// The logit-adjusted loss's log pi_c (drolt::log_class_prior), [C]; undefined: none.
  torch::Tensor log_prior;
  double la_tau = 0;  // ... and its tau
  bool dro = false;
  double lambda = 0;  // (1 - lambda) base + lambda DRO-LT
  bool sum = false;   // base + DRO-LT (the authors' code)
};

struct LossValue {
  torch::Tensor total, base, dro;  // dro undefined outside DRO-LT epochs
};

/// The base (classifier) term of a LossSpec on `logits`. Labels were checked
/// when the data was read: no per-call value checks (a host sync on CUDA).
inline torch::Tensor base_loss(const LossSpec& spec, const torch::Tensor& logits, const torch::Tensor& y) {
  namespace F = torch::nn::functional;
  namespace dfn = drolt::functional;
  switch (spec.base) {
    case BaseLoss::focal:
      return dfn::focal_loss(
          logits, y,
          dfn::FocalLossFuncOptions().gamma(spec.focal_gamma).weight(spec.class_weights).validate_values(false));
    case BaseLoss::ldam:
      // The model's logits are s * cos: LDAM's s * (cos - Delta_y) on the target entry.
      return dfn::ldam_loss(
          logits, y, spec.ldam_margins,
          dfn::LDAMLossFuncOptions().scale(spec.ldam_scale).weight(spec.class_weights).validate_values(false));
    case BaseLoss::ce:
      break;
  }
  if (spec.log_prior.defined()) {
    TORCH_CHECK(!spec.class_weights.defined(), "base_loss: expected a log prior or class weights, got both");
    return dfn::logit_adjusted_loss(logits, y, spec.log_prior,
                                    dfn::LogitAdjustedLossFuncOptions().tau(spec.la_tau).validate_values(false));
  }
  if (!spec.class_weights.defined()) return F::cross_entropy(logits, y);
  return F::cross_entropy(logits, y,
                          F::CrossEntropyFuncOptions().weight(spec.class_weights.to(logits.device(), logits.scalar_type())));
}

/// (1 - lambda) base + lambda DRO, or base + DRO (spec.sum: the authors' code).
inline torch::Tensor combined(const LossSpec& spec, const torch::Tensor& base, const torch::Tensor& dro) {
  return spec.sum ? base + dro : (1.0 - spec.lambda) * base + spec.lambda * dro;
}

/// The loss of one batch: the base term on the logits, plus, when spec.dro,
/// the DRO-LT term on the features of every tapped layer (in the layers'
/// order), each against its own bank, weighted as the module says:
/// sum_l w_l L_DRO(z^(l)) (docs/math.md, "Several layers").
inline LossValue compute_loss(const LossSpec& spec, const torch::Tensor& logits,
                              const std::vector<torch::Tensor>& features, const torch::Tensor& y,
                              drolt::MultiLayerRobustCentroidLoss& dro) {
  LossValue v;
  v.base = base_loss(spec, logits, y);
  v.total = v.base;
  if (spec.dro) {
    TORCH_CHECK(!dro.is_empty(), "compute_loss: a DRO-LT loss spec needs a DRO-LT module, got none");
    v.dro = dro->forward(features, y);
    v.total = combined(spec, v.base, v.dro);
  }
  return v;
}

/// One layer (the penultimate features) with its loss and bank.
inline LossValue compute_loss(const LossSpec& spec, const torch::Tensor& logits, const torch::Tensor& features,
                              const torch::Tensor& y, drolt::RobustCentroidLoss& dro_loss,
                              const drolt::CentroidBank& bank) {
  LossValue v;
  v.base = base_loss(spec, logits, y);
  v.total = v.base;
  if (spec.dro) {
    v.dro = dro_loss->forward(features, y, bank);
    v.total = combined(spec, v.base, v.dro);
  }
  return v;
}

}  // namespace drolt_examples
