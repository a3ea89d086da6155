#pragma once
/// \file
/// Weight balancing (Alshammari, Wang, Ramanan, Kong, CVPR 2022): the MaxNorm
/// projection of a classifier's per-class weight rows, applied after every
/// optimizer step of the class-balanced classifier stage (docs/math.md,
/// "Weight balancing"):
///
///     drolt::MaxNorm max_norm(fc->weight, 1.0);   // shared threshold r
///     opt.step();
///     max_norm.apply_();                          // w_c <- w_c min(1, r / ||w_c||)
///
/// The bias is not projected. Thresholds are shared (a number) or per class (a
/// [C] tensor); max_norm_threshold gives the authors' relative one.
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "drolt/detail/checks.hpp"
#include "drolt/detail/logit_checks.hpp"

namespace drolt {
namespace detail {

inline void check_weight_rows(const torch::Tensor& weight, const std::string& where) {
  DROLT_CHECK(weight.defined() && weight.dim() == 2 && weight.is_floating_point(), where,
              "expected a floating-point classifier weight [C, D], got ", describe_tensor(weight));
}

/// Per-class thresholds [C] (or one, [1]): finite or +inf, >= 0.
inline void check_thresholds(const torch::Tensor& r, int64_t num_classes, const std::string& where) {
  DROLT_CHECK(r.defined() && r.dim() == 1 && (r.size(0) == num_classes || r.size(0) == 1) &&
                  r.is_floating_point(),
              where, "expected floating-point thresholds [", num_classes, "] (or [1]), got ",
              describe_tensor(r));
  DROLT_CHECK((r >= 0).all().item<bool>(), where, "expected thresholds >= 0, got values in [",
              r.min().item<double>(), ", ", r.max().item<double>(), "]");
}

/// The projection itself, on checked arguments.
inline void project_rows_(const torch::Tensor& weight, const torch::Tensor& thresholds) {
  torch::NoGradGuard no_grad;
  auto norms = weight.norm(2, 1, /*keepdim=*/true);
  auto r = thresholds.to(weight.device(), weight.scalar_type()).unsqueeze(1);
  weight.mul_(torch::where(norms > r, r / norms, torch::ones_like(norms)));
}

}  // namespace detail

/// w_c <- w_c min(1, r_c / ||w_c||) for each row w_c of `weight` [C, D], in place
/// and outside autograd; `thresholds` [C] (per class) or [1] (shared), >= 0
/// (+inf leaves a row). A row already inside its ball is left bit for bit.
inline void max_norm_(const torch::Tensor& weight, const torch::Tensor& thresholds) {
  constexpr const char* where = "drolt::max_norm_";
  detail::check_weight_rows(weight, where);
  detail::check_thresholds(thresholds, weight.size(0), where);
  detail::project_rows_(weight, thresholds);
}

/// max_norm_ with one threshold r >= 0 shared by every class.
inline void max_norm_(const torch::Tensor& weight, double threshold) {
  DROLT_CHECK(threshold >= 0, "drolt::max_norm_", "expected a threshold >= 0, got ", threshold);
  max_norm_(weight, torch::tensor({threshold}, torch::kDouble));
}

/// The authors' relative threshold (their MaxNorm_via_PGD.setPerLayerThresh):
/// min_c ||w_c|| + fraction (max_c ||w_c|| - min_c ||w_c||) of the current rows
/// of `weight` [C, D], fraction in [0, 1] (theirs: 0.1). Call it once, when the
/// stage starts.
inline double max_norm_threshold(const torch::Tensor& weight, double fraction) {
  constexpr const char* where = "drolt::max_norm_threshold";
  detail::check_weight_rows(weight, where);
  DROLT_CHECK(fraction >= 0 && fraction <= 1, where, "expected a fraction in [0, 1], got ", fraction);
  auto norms = weight.detach().norm(2, 1).to(torch::kDouble);
  const double lo = norms.min().item<double>(), hi = norms.max().item<double>();
  return lo + fraction * (hi - lo);
}

/// A classifier weight and its thresholds, for the projection after each step.
class MaxNorm {
 public:
  /// One threshold r >= 0 shared by every class.
  MaxNorm(torch::Tensor weight, double threshold)
      : MaxNorm(std::move(weight), torch::tensor({threshold}, torch::kDouble)) {}
  /// Per-class thresholds [C] (or [1]).
  MaxNorm(torch::Tensor weight, torch::Tensor thresholds)
      : weight_(std::move(weight)), thresholds_(std::move(thresholds)) {
    detail::check_weight_rows(weight_, "drolt::MaxNorm");
    detail::check_thresholds(thresholds_, weight_.size(0), "drolt::MaxNorm");
    // Checked once, and kept where the weight is: no host synchronisation per step.
    thresholds_ = thresholds_.to(weight_.device(), weight_.scalar_type());
  }
  /// Projects the weight's rows (call after every optimizer step).
  void apply_() const { detail::project_rows_(weight_, thresholds_); }
  const torch::Tensor& thresholds() const { return thresholds_; }

 private:
  torch::Tensor weight_, thresholds_;
};

}  // namespace drolt
