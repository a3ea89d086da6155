// Representation losses of the example trainer (docs/math.md, "Training protocol" and "The authors' published recipe" and "Methods compared"):
// cross-entropy (optionally class-weighted), focal loss, LDAM (+ DRW), each
// optionally plus DRO-LT, mixed with lambda or summed. dro_loss_options() is
// the one place the DRO-LT loss is configured.
#pragma once

#include <drolt/class_weights.hpp>
#include <drolt/drolt.hpp>
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

/// Class weights, float32 [C]; undefined for Weighting::none. inverse and
/// effective average to 1 (drolt::class_weights); n_c / n_max is the authors'
/// (a weighted mean does not depend on the scale).
inline torch::Tensor weights_of(Weighting w, const std::vector<int64_t>& counts, double beta) {
  switch (w) {
    case Weighting::none:
      return {};
    case Weighting::inverse:
      return drolt::class_weights(counts, drolt::ClassWeighting::inverse_frequency);
    case Weighting::effective:
      return drolt::class_weights(counts, drolt::ClassWeighting::effective_number, beta);
    case Weighting::max_ratio: {
      const int64_t n_max = *std::max_element(counts.begin(), counts.end());
      TORCH_CHECK(n_max > 0, "weights_of: expected a class with training samples, got none");
      return torch::tensor(counts, torch::kDouble).div(static_cast<double>(n_max)).to(torch::kFloat32);
    }
  }
  return {};
}

/// Focal loss -(1 - p_y)^gamma log p_y (Lin et al. 2017). With class weights
/// the mean is weighted as cross_entropy's, sum_i w_yi l_i / sum_i w_yi, so
/// gamma = 0 is cross-entropy, weighted or not.
inline torch::Tensor focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double gamma,
                                const torch::Tensor& weight = {}) {
  TORCH_CHECK(gamma >= 0 && std::isfinite(gamma), "focal_loss: expected gamma >= 0, got ", gamma);
  auto logp = torch::log_softmax(logits, 1).gather(1, targets.unsqueeze(1)).squeeze(1);
  // 1 - p_y as -expm1(log p_y), kept off 0: at a saturated p_y = 1 the factor's
  // derivative gamma (1 - p)^(gamma - 1) is infinite for gamma < 1, and times
  // log p_y = 0 it would make the gradient NaN (the true limit is 0, which the
  // clamp gives).
  auto l = -(-torch::expm1(logp)).clamp_min(1e-30).pow(gamma) * logp;
  if (!weight.defined()) return l.mean();
  auto w = weight.to(logits.device(), logits.scalar_type()).index_select(0, targets);
  return (w * l).sum() / w.sum();
}

/// LDAM margins Delta_c = m / n_c^(1/4), scaled so the largest is m (Cao et al.
/// 2019; their code), float32 [C]. Every class needs training samples.
inline torch::Tensor ldam_margins(const std::vector<int64_t>& counts, double max_margin) {
  TORCH_CHECK(!counts.empty(), "ldam_margins: expected class counts, got none");
  TORCH_CHECK(max_margin > 0 && std::isfinite(max_margin), "ldam_margins: expected a margin > 0, got ", max_margin);
  std::vector<double> d;
  for (size_t c = 0; c < counts.size(); ++c) {
    TORCH_CHECK(counts[c] > 0, "ldam_margins: expected every class to have training samples, got 0 for class ", c,
                " (LDAM's margin n_c^(-1/4) is undefined)");
    d.push_back(1.0 / std::sqrt(std::sqrt(static_cast<double>(counts[c]))));
  }
  const double top = *std::max_element(d.begin(), d.end());
  for (auto& x : d) x *= max_margin / top;
  return torch::tensor(d, torch::kDouble).to(torch::kFloat32);
}

/// What one representation epoch minimises (built by the method, methods/method.hpp).
struct LossSpec {
  BaseLoss base = BaseLoss::ce;
  torch::Tensor class_weights;  // undefined: unweighted
  double focal_gamma = 0;
  torch::Tensor ldam_offsets;  // LDAM: s * Delta_c, [C]
  /// Added to the logits of the cross-entropy term (the logit-adjusted loss's tau log pi_c), [C]; undefined: none.
  torch::Tensor logit_offsets;
  bool dro = false;
  double lambda = 0;  // (1 - lambda) base + lambda DRO-LT
  bool sum = false;   // base + DRO-LT (the authors' code)
};

struct LossValue {
  torch::Tensor total, base, dro;  // dro undefined outside DRO-LT epochs
};

/// The base (classifier) term of a LossSpec on `logits`.
inline torch::Tensor base_loss(const LossSpec& spec, const torch::Tensor& logits, const torch::Tensor& y) {
  namespace F = torch::nn::functional;
  switch (spec.base) {
    case BaseLoss::focal:
      return focal_loss(logits, y, spec.focal_gamma, spec.class_weights);
    case BaseLoss::ldam: {
      // s * (cos - Delta_y) on the target entry: the model's logits are s * cos.
      auto off = torch::zeros_like(logits).scatter_(
          1, y.unsqueeze(1), spec.ldam_offsets.to(logits.device(), logits.scalar_type()).index_select(0, y).unsqueeze(1));
      auto o = F::CrossEntropyFuncOptions();
      if (spec.class_weights.defined()) o.weight(spec.class_weights.to(logits.device(), logits.scalar_type()));
      return F::cross_entropy(logits - off, y, o);
    }
    case BaseLoss::ce:
      break;
  }
  if (spec.logit_offsets.defined()) {
    TORCH_CHECK(!spec.class_weights.defined(), "base_loss: expected logit offsets or class weights, got both");
    return F::cross_entropy(logits + spec.logit_offsets.to(logits.device(), logits.scalar_type()).unsqueeze(0), y);
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
