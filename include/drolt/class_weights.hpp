#pragma once
/// \file
/// Per-class loss weights from training-set class counts, for the `w_c` of the
/// DRO-LT loss (docs/math.md, "The loss") or torch::nn::CrossEntropyLoss's `weight`.
///
///     auto w = drolt::class_weights(lt.counts, drolt::ClassWeighting::effective_number, 0.999);
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace drolt {

enum class ClassWeighting {
  none,               ///< w_c = 1
  inverse_frequency,  ///< w_c proportional to 1 / n_c
  effective_number,   ///< w_c proportional to (1 - beta) / (1 - beta^n_c) (Cui et al., CVPR 2019)
};

/// Class weights as a float32 [C] tensor, normalised so that they average to 1
/// (their sum is C, Cui et al.'s convention), which keeps the weighted loss on
/// the scale of the unweighted one.
///
/// inverse_frequency and effective_number need n_c > 0 for every class: a class
/// without training samples has no defined weight (1 / 0), and the DRO-LT loss
/// requires every weight to be positive. `none` accepts any counts.
/// `beta` is used only by effective_number and must be in [0, 1); beta = 0 gives
/// uniform weights, beta -> 1 approaches inverse frequency.
inline torch::Tensor class_weights(const std::vector<int64_t>& counts, ClassWeighting weighting,
                                   double beta = 0.999) {
  constexpr const char* caller = "drolt::class_weights";
  TORCH_CHECK(!counts.empty(), caller, ": expected at least one class count, got none");
  for (size_t c = 0; c < counts.size(); ++c) {
    TORCH_CHECK(counts[c] >= 0, caller, ": expected counts >= 0, got ", counts[c], " for class ",
                c);
  }
  const auto num_classes = static_cast<int64_t>(counts.size());
  if (weighting == ClassWeighting::none) return torch::ones({num_classes}, torch::kFloat32);
  TORCH_CHECK(weighting == ClassWeighting::inverse_frequency ||
                  weighting == ClassWeighting::effective_number,
              caller, ": unknown ClassWeighting");
  for (size_t c = 0; c < counts.size(); ++c) {
    TORCH_CHECK(counts[c] > 0, caller, ": expected counts > 0 for re-weighting, got 0 for class ",
                c, " (a class without training samples has no defined weight)");
  }
  if (weighting == ClassWeighting::effective_number) {
    TORCH_CHECK(beta >= 0.0 && beta < 1.0, caller, ": expected beta in [0, 1), got ", beta);
  }
  std::vector<double> w(counts.size());
  double total = 0.0;
  for (size_t c = 0; c < counts.size(); ++c) {
    const double n = static_cast<double>(counts[c]);
    if (weighting == ClassWeighting::inverse_frequency) {
      w[c] = 1.0 / n;
    } else {
      // -expm1(n log beta) = 1 - beta^n without cancellation for beta near 1.
      w[c] = beta == 0.0 ? 1.0 : (1.0 - beta) / -std::expm1(n * std::log(beta));
    }
    total += w[c];
  }
  auto out = torch::empty({num_classes}, torch::kFloat32);
  auto* p = out.data_ptr<float>();
  for (size_t c = 0; c < counts.size(); ++c) {
    p[c] = static_cast<float>(w[c] * static_cast<double>(num_classes) / total);
  }
  return out;
}

}  // namespace drolt
