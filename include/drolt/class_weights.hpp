#pragma once
/// \file
/// Per-class loss weights from training-set class counts, for the `w_c` of the
/// DRO-LT loss (spec section 1) or torch::nn::CrossEntropyLoss's `weight`.
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

/// Class weights as a float32 [C] tensor, normalised so that the weights of the
/// classes with samples average to 1 (their sum is the number of such classes,
/// Cui et al.'s convention), which keeps the loss scale comparable to the
/// unweighted loss. Classes with n_c = 0 get weight 0: they never occur as
/// targets, and 1 / 0 would poison the normalisation.
///
/// `beta` is used only by effective_number and must be in [0, 1); beta = 0 gives
/// uniform weights, beta -> 1 approaches inverse frequency.
inline torch::Tensor class_weights(const std::vector<int64_t>& counts, ClassWeighting weighting,
                                   double beta = 0.999) {
  constexpr const char* caller = "drolt::class_weights";
  TORCH_CHECK(!counts.empty(), caller, ": expected at least one class count, got none");
  int64_t present = 0;
  for (size_t c = 0; c < counts.size(); ++c) {
    TORCH_CHECK(counts[c] >= 0, caller, ": expected counts >= 0, got ", counts[c], " for class ", c);
    present += counts[c] > 0 ? 1 : 0;
  }
  TORCH_CHECK(present > 0, caller, ": expected at least one class with samples, got all counts 0");
  if (weighting == ClassWeighting::effective_number) {
    TORCH_CHECK(beta >= 0.0 && beta < 1.0, caller, ": expected beta in [0, 1), got ", beta);
  }
  std::vector<double> w(counts.size(), 0.0);
  double total = 0.0;
  for (size_t c = 0; c < counts.size(); ++c) {
    if (counts[c] == 0) continue;
    const double n = static_cast<double>(counts[c]);
    switch (weighting) {
      case ClassWeighting::none: w[c] = 1.0; break;
      case ClassWeighting::inverse_frequency: w[c] = 1.0 / n; break;
      case ClassWeighting::effective_number:
        // -expm1(n log beta) = 1 - beta^n without cancellation for beta near 1.
        w[c] = beta == 0.0 ? 1.0 : (1.0 - beta) / -std::expm1(n * std::log(beta));
        break;
      default: TORCH_CHECK(false, caller, ": unknown ClassWeighting");
    }
    total += w[c];
  }
  auto out = torch::empty({static_cast<int64_t>(counts.size())}, torch::kFloat32);
  auto* p = out.data_ptr<float>();
  for (size_t c = 0; c < counts.size(); ++c) {
    p[c] = static_cast<float>(w[c] * static_cast<double>(present) / total);
  }
  return out;
}

}  // namespace drolt
