#pragma once
// Argument checks shared by the long-tail baselines (drolt/longtail_losses.hpp,
// drolt/posthoc.hpp, drolt/weight_balancing.hpp): logits and targets of a
// classifier, per-class vectors, class counts and scalar hyper-parameters.
// Messages follow detail/checks.hpp: "<where>: expected <what>, got <given>".
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "drolt/detail/checks.hpp"

namespace drolt {
namespace detail {

/// "[2, 3] float" for a defined tensor, "an undefined tensor" otherwise.
inline std::string describe_tensor(const torch::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::ostringstream o;
  o << t.sizes() << " " << t.scalar_type();
  return o.str();
}

/// logits [N, C] floating point, targets [N] integer on the logits' device.
/// Target values are checked to lie in [0, C) on the CPU always and elsewhere
/// when `validate` (one device synchronisation). Returns the targets as int64.
inline torch::Tensor check_logits_targets(const torch::Tensor& logits, const torch::Tensor& targets,
                                          bool validate, const std::string& where) {
  DROLT_CHECK(logits.defined() && logits.dim() == 2 && logits.is_floating_point(), where,
              "expected floating-point logits [N, C], got ", describe_tensor(logits));
  DROLT_CHECK(logits.size(1) > 0, where, "expected logits with at least one class, got ",
              describe_tensor(logits));
  DROLT_CHECK(targets.defined() && targets.dim() == 1 &&
                  c10::isIntegralType(targets.scalar_type(), /*includeBool=*/false),
              where, "expected integer targets [N], got ", describe_tensor(targets));
  DROLT_CHECK(targets.size(0) == logits.size(0), where, "expected as many targets as logit rows (",
              logits.size(0), "), got ", targets.size(0));
  DROLT_CHECK(targets.device() == logits.device(), where, "expected targets on ", logits.device(),
              " (the logits' device), got ", targets.device());
  if (validate || targets.is_cpu()) check_label_range(targets, logits.size(1), where, "targets");
  return targets.to(torch::kLong);
}

/// An optional per-class vector (class weights): undefined, or floating point
/// [C]; its values finite and > 0 (checked on the CPU always, elsewhere when
/// `validate`).
inline void check_class_weight(const torch::Tensor& weight, int64_t num_classes, bool validate,
                               const std::string& where) {
  if (!weight.defined()) return;
  DROLT_CHECK(weight.dim() == 1 && weight.size(0) == num_classes && weight.is_floating_point(),
              where, "expected a floating-point class weight [", num_classes, "], got ",
              describe_tensor(weight));
  if (validate || weight.is_cpu()) {
    DROLT_CHECK(torch::isfinite(weight).all().item<bool>() && (weight > 0).all().item<bool>(),
                where, "expected class weights finite and > 0, got values in [",
                weight.min().item<double>(), ", ", weight.max().item<double>(), "]");
  }
}

/// Class counts: at least one, each >= 0, and > 0 when `positive` (`why` says
/// what a zero count would break).
inline void check_counts(const std::vector<int64_t>& counts, bool positive, const std::string& where,
                         const char* why = "") {
  DROLT_CHECK(!counts.empty(), where, "expected class counts, got none");
  for (size_t c = 0; c < counts.size(); ++c) {
    DROLT_CHECK(counts[c] >= 0, where, "expected class counts >= 0, got ", counts[c], " for class ",
                c);
    DROLT_CHECK(!positive || counts[c] > 0, where,
                "expected every class to have training samples, got 0 for class ", c, why);
  }
}

/// A finite scalar hyper-parameter >= 0 ("gamma", "tau", ...).
inline void check_non_negative(double value, const char* name, const std::string& where) {
  DROLT_CHECK(value >= 0 && std::isfinite(value), where, "expected ", name, " >= 0 and finite, got ",
              value);
}

/// A finite scalar hyper-parameter > 0 ("scale", ...).
inline void check_positive(double value, const char* name, const std::string& where) {
  DROLT_CHECK(value > 0 && std::isfinite(value), where, "expected ", name, " > 0 and finite, got ",
              value);
}

/// sum_i w_i l_i / sum_i w_i (kMean), sum_i w_i l_i (kSum) or w_i l_i (kNone),
/// w_i = 1 when `w` is undefined: cross_entropy's reduction with class weights.
template <typename Reduction>
torch::Tensor reduce_weighted(const torch::Tensor& l, const torch::Tensor& w, const Reduction& r) {
  const auto red = torch::enumtype::reduction_get_enum(r);
  if (!w.defined()) {
    if (red == at::Reduction::Mean) return l.mean();
    return red == at::Reduction::Sum ? l.sum() : l;
  }
  auto wl = w * l;
  if (red == at::Reduction::Mean) return wl.sum() / w.sum();
  return red == at::Reduction::Sum ? wl.sum() : wl;
}

}  // namespace detail
}  // namespace drolt
