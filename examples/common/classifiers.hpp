// Classifier stages on a frozen representation (docs/math.md, "Methods compared"), as scores
// [N, C] from penultimate features:
//   joint    : the classifier trained with the representation;
//   crt      : a re-initialised classifier trained with class-balanced sampling;
//   lws      : the joint classifier with one learned scale per class;
//   tau-norm : w_c / ||w_c||^tau, bias dropped, tau chosen on validation;
//   ncm      : nearest class mean of the normalised features;
//   la       : post-hoc logit adjustment logit_c - tau log pi_c, tau chosen on validation.
// The stages themselves are types in stages/*.hpp (registry.hpp names them);
// the functions here are the math they share.
#pragma once

#include <drolt/centroid_bank.hpp>
#include <drolt/metrics.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "config.hpp"
#include "resnet.hpp"

namespace drolt_examples {

/// LWS logits f_c * (w_c . z + b_c): `joint_logits` [N, C] times `scales` [C].
inline torch::Tensor lws_logits(const torch::Tensor& joint_logits, const torch::Tensor& scales) {
  return joint_logits * scales.to(joint_logits.scalar_type()).unsqueeze(0);
}

/// tau-normalised logits: `inputs` [N, D] (the classifier's input) times
/// (w_c / ||w_c||^tau)^T, bias dropped. tau = 0 is the joint weights without bias.
inline torch::Tensor tau_norm_logits(const torch::Tensor& inputs, const torch::Tensor& weight, double tau) {
  auto w = weight.detach();
  auto norms = w.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
  return torch::matmul(inputs, (w / norms.pow(tau)).t());
}

/// Logits adjusted by the training class prior: logit_c - tau log pi_c.
inline torch::Tensor adjusted_logits(const torch::Tensor& logits, const std::vector<int64_t>& counts, double tau) {
  auto n = torch::tensor(counts, torch::kDouble);
  // A class without training images has prior 0: it gets +inf only if tau > 0;
  // keep it finite (one pseudo-image) so the argmax stays meaningful.
  auto log_prior = (n.clamp_min(1) / n.clamp_min(1).sum()).log().to(logits.scalar_type()).to(logits.device());
  return logits - tau * log_prior.unsqueeze(0);
}

/// Scores of the nearest class mean of L2-normalised features: cosine
/// similarity to each class's mean normalised training feature; a class
/// without training features scores -inf.
inline torch::Tensor ncm_scores(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                                const torch::Tensor& features, int64_t num_classes) {
  namespace F = torch::nn::functional;
  const auto o = F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12);
  drolt::CentroidBank bank(num_classes, train_features.size(1));
  bank->accumulate(F::normalize(train_features.to(torch::kFloat32), o), train_labels);
  bank->finalize();
  auto s = torch::matmul(F::normalize(features.to(torch::kFloat32), o), F::normalize(bank->centroids(), o).t());
  return s.masked_fill(bank->valid().logical_not().unsqueeze(0), -std::numeric_limits<float>::infinity());
}

/// The first tau of `grid` with the highest validation accuracy (ties go to the
/// smaller tau).
inline double choose_tau(const std::vector<double>& grid, const std::function<double(double)>& val_accuracy) {
  double best = grid.front(), best_acc = -1;
  for (double t : grid) {
    const double a = val_accuracy(t);
    if (a > best_acc) {
      best = t;
      best_acc = a;
    }
  }
  return best;
}

inline std::vector<double> tau_norm_grid() {
  std::vector<double> g;
  for (int i = 0; i <= 10; ++i) g.push_back(0.1 * i);
  return g;
}

inline std::vector<double> logit_adjust_grid() {
  std::vector<double> g;
  for (int i = 0; i <= 8; ++i) g.push_back(0.25 * i);
  return g;
}

}  // namespace drolt_examples
