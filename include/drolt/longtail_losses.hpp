#pragma once
/// \file
/// Training losses of long-tailed recognition that drolt is compared with
/// (docs/math.md, "Long-tail baselines"), each as LibTorch's options / module /
/// functional triple:
///
///     drolt::FocalLoss focal(drolt::FocalLossOptions().gamma(1.0));
///     drolt::LDAMLoss ldam(drolt::LDAMLossOptions(counts).max_margin(0.5).scale(30));
///     drolt::LogitAdjustedLoss la(drolt::LogitAdjustedLossOptions(counts).tau(1.0));
///     auto l = focal(logits, targets);
///
/// plus the class-count helpers they use: ldam_margins, drw_class_weights
/// (LDAM's deferred re-weighting) and log_class_prior. Targets are integer class
/// indices; every reduction is cross_entropy's (a class-weighted mean divides by
/// the sum of the samples' weights).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "drolt/class_weights.hpp"
#include "drolt/detail/checks.hpp"
#include "drolt/detail/logit_checks.hpp"

namespace drolt {

// ------------------------------------------------------------------ class-count helpers

/// LDAM's margins Delta_c = m / n_c^(1/4), scaled so that the largest is
/// `max_margin` (Cao et al. 2019), float32 [C]. Every class needs n_c > 0.
inline torch::Tensor ldam_margins(const std::vector<int64_t>& counts, double max_margin) {
  constexpr const char* where = "drolt::ldam_margins";
  detail::check_counts(counts, /*positive=*/true, where, " (LDAM's margin n_c^(-1/4) is undefined)");
  detail::check_non_negative(max_margin, "a margin", where);
  std::vector<double> d;
  for (int64_t n : counts) d.push_back(1.0 / std::sqrt(std::sqrt(static_cast<double>(n))));
  const double top = *std::max_element(d.begin(), d.end());
  for (auto& x : d) x *= max_margin / top;
  return torch::tensor(d, torch::kDouble).to(torch::kFloat32);
}

/// Deferred re-weighting (DRW, Cao et al. 2019): no class weights (an undefined
/// tensor) before `start_epoch`, class-balanced effective-number weights
/// (drolt::class_weights, `beta`) from it on. Counts are checked on every call,
/// before the start too.
inline torch::Tensor drw_class_weights(const std::vector<int64_t>& counts, int64_t epoch,
                                       int64_t start_epoch, double beta = 0.9999) {
  constexpr const char* where = "drolt::drw_class_weights";
  DROLT_CHECK(epoch >= 0, where, "expected epoch >= 0, got ", epoch);
  DROLT_CHECK(start_epoch >= 0, where, "expected start_epoch >= 0, got ", start_epoch);
  detail::check_counts(counts, /*positive=*/true, where,
                       " (its effective-number weight divides by 1 - beta^0 = 0)");
  auto w = class_weights(counts, ClassWeighting::effective_number, beta);
  return epoch < start_epoch ? torch::Tensor() : w;
}

/// log pi_c of the training class prior pi_c = n_c / sum_k n_k, float64 [C]. A
/// class without training samples counts as one (n_c floored to 1) so that its
/// log-prior stays finite.
inline torch::Tensor log_class_prior(const std::vector<int64_t>& counts) {
  detail::check_counts(counts, /*positive=*/false, "drolt::log_class_prior");
  auto n = torch::tensor(counts, torch::kDouble);
  return (n.clamp_min(1) / n.clamp_min(1).sum()).log();
}

namespace functional {

using ClassificationReduction = torch::nn::CrossEntropyLossOptions::reduction_t;

// ------------------------------------------------------------------ focal loss

struct FocalLossFuncOptions {
  using reduction_t = ClassificationReduction;
  /// gamma >= 0; 0 is cross-entropy.
  TORCH_ARG(double, gamma) = 1.0;
  /// Optional [C] class weights w_c > 0 (as cross_entropy's `weight`).
  TORCH_ARG(torch::Tensor, weight) = {};
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  /// Check target and weight values off the CPU too (one device synchronisation;
  /// on the CPU they are always checked).
  TORCH_ARG(bool, validate_values) = true;
};

/// Focal loss l_i = -(1 - p_{i,y_i})^gamma log p_{i,y_i} (Lin et al. 2017), p
/// the softmax of `logits` [N, C]; `targets` [N] integer. Reduced as
/// cross_entropy: mean sum_i w_{y_i} l_i / sum_i w_{y_i}, sum, or none (w_{y_i} l_i).
inline torch::Tensor focal_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                const FocalLossFuncOptions& options = {}) {
  constexpr const char* where = "drolt::focal_loss";
  detail::check_non_negative(options.gamma(), "gamma", where);
  auto y = detail::check_logits_targets(logits, targets, options.validate_values(), where);
  detail::check_class_weight(options.weight(), logits.size(1), options.validate_values(), where);
  auto logp = torch::log_softmax(logits, 1).gather(1, y.unsqueeze(1)).squeeze(1);
  // 1 - p_y as -expm1(log p_y), kept off 0: at a saturated p_y = 1 the factor's
  // derivative gamma (1 - p)^(gamma - 1) is infinite for gamma < 1, and times
  // log p_y = 0 it would make the gradient NaN (the true limit is 0, which the
  // clamp gives).
  auto l = -(-torch::expm1(logp)).clamp_min(1e-30).pow(options.gamma()) * logp;
  torch::Tensor w;
  if (options.weight().defined())
    w = options.weight().to(logits.device(), logits.scalar_type()).index_select(0, y);
  return detail::reduce_weighted(l, w, options.reduction());
}

// ------------------------------------------------------------------ LDAM

struct LDAMLossFuncOptions {
  using reduction_t = ClassificationReduction;
  /// s > 0: the margin subtracted from the target logit is s * Delta_y.
  TORCH_ARG(double, scale) = 30.0;
  /// Optional [C] class weights w_c > 0 (DRW: drw_class_weights).
  TORCH_ARG(torch::Tensor, weight) = {};
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(bool, validate_values) = true;
};

/// LDAM (Cao et al. 2019): cross_entropy(logits - s Delta_y e_y, targets). For
/// their cosine classifier the logits are s cos(w_c, z), so this is their
/// cross_entropy(s (cos - Delta_y e_y)). `margins` [C] are the Delta_c
/// (ldam_margins).
inline torch::Tensor ldam_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                               const torch::Tensor& margins, const LDAMLossFuncOptions& options = {}) {
  namespace F = torch::nn::functional;
  constexpr const char* where = "drolt::ldam_loss";
  detail::check_positive(options.scale(), "scale", where);
  auto y = detail::check_logits_targets(logits, targets, options.validate_values(), where);
  const int64_t C = logits.size(1);
  DROLT_CHECK(margins.defined() && margins.dim() == 1 && margins.size(0) == C &&
                  margins.is_floating_point(),
              where, "expected floating-point margins [", C, "], got ",
              detail::describe_tensor(margins));
  detail::check_class_weight(options.weight(), C, options.validate_values(), where);
  auto offsets = (margins * options.scale()).to(logits.device(), logits.scalar_type());
  auto off = torch::zeros_like(logits).scatter_(1, y.unsqueeze(1), offsets.index_select(0, y).unsqueeze(1));
  auto o = F::CrossEntropyFuncOptions().reduction(options.reduction());
  if (options.weight().defined()) o.weight(options.weight().to(logits.device(), logits.scalar_type()));
  return F::cross_entropy(logits - off, y, o);
}

// ------------------------------------------------------------------ logit-adjusted loss

struct LogitAdjustedLossFuncOptions {
  using reduction_t = ClassificationReduction;
  /// tau >= 0: 1 is Balanced Softmax, 0 cross-entropy.
  TORCH_ARG(double, tau) = 1.0;
  TORCH_ARG(torch::Tensor, weight) = {};
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(bool, validate_values) = true;
};

/// The logit-adjusted loss (Menon et al. 2021): cross_entropy(logits + tau log
/// pi, targets), `log_prior` [C] = log pi (log_class_prior). Predictions use the
/// plain logits.
inline torch::Tensor logit_adjusted_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                         const torch::Tensor& log_prior,
                                         const LogitAdjustedLossFuncOptions& options = {}) {
  namespace F = torch::nn::functional;
  constexpr const char* where = "drolt::logit_adjusted_loss";
  detail::check_non_negative(options.tau(), "tau", where);
  auto y = detail::check_logits_targets(logits, targets, options.validate_values(), where);
  const int64_t C = logits.size(1);
  DROLT_CHECK(log_prior.defined() && log_prior.dim() == 1 && log_prior.size(0) == C &&
                  log_prior.is_floating_point(),
              where, "expected a floating-point log prior [", C, "], got ",
              detail::describe_tensor(log_prior));
  detail::check_class_weight(options.weight(), C, options.validate_values(), where);
  auto lp = log_prior.to(logits.scalar_type()).to(logits.device());
  auto o = F::CrossEntropyFuncOptions().reduction(options.reduction());
  if (options.weight().defined()) o.weight(options.weight().to(logits.device(), logits.scalar_type()));
  return F::cross_entropy(logits + options.tau() * lp.unsqueeze(0), y, o);
}

}  // namespace functional

// ------------------------------------------------------------------ modules

struct FocalLossOptions {
  using reduction_t = functional::ClassificationReduction;
  TORCH_ARG(double, gamma) = 1.0;
  TORCH_ARG(torch::Tensor, weight) = {};
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(bool, validate_values) = true;
};

/// Focal loss as a module (functional::focal_loss).
class FocalLossImpl : public torch::nn::Cloneable<FocalLossImpl> {
 public:
  explicit FocalLossImpl(const FocalLossOptions& options = {}) : options(options) {
    detail::check_non_negative(options.gamma(), "gamma", "drolt::FocalLoss");
    reset();
  }
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& logits, const torch::Tensor& targets) {
    return functional::focal_loss(logits, targets,
                                  functional::FocalLossFuncOptions()
                                      .gamma(options.gamma())
                                      .weight(options.weight())
                                      .reduction(options.reduction())
                                      .validate_values(options.validate_values()));
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::FocalLoss(gamma=" << options.gamma() << ")";
  }
  FocalLossOptions options;
};
TORCH_MODULE(FocalLoss);

struct LDAMLossOptions {
  using reduction_t = functional::ClassificationReduction;
  /* implicit */ LDAMLossOptions(std::vector<int64_t> class_counts)
      : class_counts_(std::move(class_counts)) {}
  /// Training-set class counts n_c, all > 0.
  TORCH_ARG(std::vector<int64_t>, class_counts);
  /// m >= 0: the largest margin (that of the rarest class).
  TORCH_ARG(double, max_margin) = 0.5;
  TORCH_ARG(double, scale) = 30.0;
  /// Optional [C] class weights; for DRW set them each epoch from drw_class_weights.
  TORCH_ARG(torch::Tensor, weight) = {};
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(bool, validate_values) = true;
};

/// LDAM as a module: the margins of its class counts are the buffer "margins".
class LDAMLossImpl : public torch::nn::Cloneable<LDAMLossImpl> {
 public:
  explicit LDAMLossImpl(const LDAMLossOptions& options) : options(options) {
    detail::check_positive(options.scale(), "scale", "drolt::LDAMLoss");
    reset();
  }
  void reset() override {
    margins = register_buffer("margins", ldam_margins(options.class_counts(), options.max_margin()));
  }
  torch::Tensor forward(const torch::Tensor& logits, const torch::Tensor& targets) {
    return functional::ldam_loss(logits, targets, margins,
                                 functional::LDAMLossFuncOptions()
                                     .scale(options.scale())
                                     .weight(options.weight())
                                     .reduction(options.reduction())
                                     .validate_values(options.validate_values()));
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::LDAMLoss(num_classes=" << options.class_counts().size()
           << ", max_margin=" << options.max_margin() << ", scale=" << options.scale() << ")";
  }
  LDAMLossOptions options;
  /// Delta_c, float32 [C].
  torch::Tensor margins;
};
TORCH_MODULE(LDAMLoss);

struct LogitAdjustedLossOptions {
  using reduction_t = functional::ClassificationReduction;
  /* implicit */ LogitAdjustedLossOptions(std::vector<int64_t> class_counts)
      : class_counts_(std::move(class_counts)) {}
  /// Training-set class counts n_c (a count of 0 is floored to 1: log_class_prior).
  TORCH_ARG(std::vector<int64_t>, class_counts);
  TORCH_ARG(double, tau) = 1.0;
  TORCH_ARG(torch::Tensor, weight) = {};
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(bool, validate_values) = true;
};

/// The logit-adjusted loss as a module: log pi is the float64 buffer "log_prior".
class LogitAdjustedLossImpl : public torch::nn::Cloneable<LogitAdjustedLossImpl> {
 public:
  explicit LogitAdjustedLossImpl(const LogitAdjustedLossOptions& options) : options(options) {
    detail::check_non_negative(options.tau(), "tau", "drolt::LogitAdjustedLoss");
    reset();
  }
  void reset() override {
    log_prior = register_buffer("log_prior", log_class_prior(options.class_counts()));
  }
  torch::Tensor forward(const torch::Tensor& logits, const torch::Tensor& targets) {
    return functional::logit_adjusted_loss(logits, targets, log_prior,
                                           functional::LogitAdjustedLossFuncOptions()
                                               .tau(options.tau())
                                               .weight(options.weight())
                                               .reduction(options.reduction())
                                               .validate_values(options.validate_values()));
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::LogitAdjustedLoss(num_classes=" << options.class_counts().size()
           << ", tau=" << options.tau() << ")";
  }
  LogitAdjustedLossOptions options;
  torch::Tensor log_prior;
};
TORCH_MODULE(LogitAdjustedLoss);

}  // namespace drolt
