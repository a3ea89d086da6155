#pragma once
/// \file
/// Per-class loss weights from training-set class counts, for the `w_c` of the
/// DRO-LT loss (docs/math.md, "The loss") or torch::nn::CrossEntropyLoss's `weight`.
///
///     auto w = drolt::class_weights(lt.counts, drolt::ClassWeighting::effective_number, 0.999);
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace drolt {

enum class ClassWeighting {
  none,               ///< w_c = 1
  inverse_frequency,  ///< w_c proportional to 1 / n_c
  effective_number,   ///< w_c proportional to (1 - beta) / (1 - beta^n_c) (Cui et al., CVPR 2019)
  count_ratio,        ///< w_c proportional to n_c: n_c / n_max with ClassWeightScale::max_one
                      ///< (the DRO-LT authors' published recipe)
};

/// How class_weights scales its weights.
enum class ClassWeightScale {
  mean_one,  ///< the weights average to 1 (they sum to C, Cui et al.'s convention)
  max_one,   ///< the largest weight is 1 (count_ratio: n_c / n_max)
};

/// Class weights as a float32 [C] tensor, by default normalised so that they
/// average to 1 (their sum is C), which keeps the weighted loss on the scale of
/// the unweighted one; `scale` max_one divides by the largest weight instead
/// (one division in float64, then rounding to float32). A weighted mean does
/// not depend on the scale.
///
/// inverse_frequency and effective_number need n_c > 0 for every class: a class
/// without training samples has no defined weight (1 / 0), and the DRO-LT loss
/// requires every weight to be positive. count_ratio gives such a class weight
/// 0 and needs one class with n_c > 0 (it divides by n_max or sum_c n_c).
/// `none` accepts any counts (and ignores `scale`).
/// `beta` is used only by effective_number and must be in [0, 1); beta = 0 gives
/// uniform weights, beta -> 1 approaches inverse frequency.
inline torch::Tensor class_weights(const std::vector<int64_t>& counts, ClassWeighting weighting,
                                   double beta = 0.999,
                                   ClassWeightScale scale = ClassWeightScale::mean_one) {
  constexpr const char* caller = "drolt::class_weights";
  TORCH_CHECK(!counts.empty(), caller, ": expected at least one class count, got none");
  for (size_t c = 0; c < counts.size(); ++c) {
    TORCH_CHECK(counts[c] >= 0, caller, ": expected counts >= 0, got ", counts[c], " for class ",
                c);
  }
  const auto num_classes = static_cast<int64_t>(counts.size());
  if (weighting == ClassWeighting::none) return torch::ones({num_classes}, torch::kFloat32);
  TORCH_CHECK(weighting == ClassWeighting::inverse_frequency ||
                  weighting == ClassWeighting::effective_number ||
                  weighting == ClassWeighting::count_ratio,
              caller, ": unknown ClassWeighting");
  TORCH_CHECK(scale == ClassWeightScale::mean_one || scale == ClassWeightScale::max_one, caller,
              ": unknown ClassWeightScale");
  if (weighting == ClassWeighting::count_ratio) {
    TORCH_CHECK(*std::max_element(counts.begin(), counts.end()) > 0, caller,
                ": expected a class with n_c > 0 for count_ratio weights, got all counts 0 (n_c / n_max "
                "divides by 0)");
  } else {
    for (size_t c = 0; c < counts.size(); ++c) {
      TORCH_CHECK(counts[c] > 0, caller, ": expected counts > 0 for re-weighting, got 0 for class ",
                  c, " (a class without training samples has no defined weight)");
    }
  }
  if (weighting == ClassWeighting::effective_number) {
    TORCH_CHECK(beta >= 0.0 && beta < 1.0, caller, ": expected beta in [0, 1), got ", beta);
  }
  std::vector<double> w(counts.size());
  double total = 0.0, top = 0.0;
  for (size_t c = 0; c < counts.size(); ++c) {
    const double n = static_cast<double>(counts[c]);
    if (weighting == ClassWeighting::inverse_frequency) {
      w[c] = 1.0 / n;
    } else if (weighting == ClassWeighting::count_ratio) {
      w[c] = n;
    } else {
      // -expm1(n log beta) = 1 - beta^n without cancellation for beta near 1.
      w[c] = beta == 0.0 ? 1.0 : (1.0 - beta) / -std::expm1(n * std::log(beta));
    }
    total += w[c];
    top = std::max(top, w[c]);
  }
  auto out = torch::empty({num_classes}, torch::kFloat32);
  auto* p = out.data_ptr<float>();
  for (size_t c = 0; c < counts.size(); ++c) {
    p[c] = static_cast<float>(scale == ClassWeightScale::max_one
                                  ? w[c] / top
                                  : w[c] * static_cast<double>(num_classes) / total);
  }
  return out;
}

}  // namespace drolt
