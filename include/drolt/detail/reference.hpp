#pragma once
// The reference composition of the DRO-LT loss: plain LibTorch ops with
// autograd, differentiable to any order (docs/math.md, "The loss" and
// "Normalization::classes"). It is the oracle the fused paths are tested
// against, the path for dtypes and devices they do not take, and what the fused
// function differentiates for second derivatives. Part of drolt/loss.hpp.
#include <torch/torch.h>

#include <limits>

#include "drolt/detail/fused_contract.hpp"
#include "drolt/detail/loss_inputs.hpp"
#include "drolt/loss_options.hpp"
#include "drolt/types.hpp"

namespace drolt {
namespace detail {

/// The loss vector from a [C, B] distance matrix (plain LibTorch ops,
/// differentiable to any order). [C] for batch normalization, [B] for classes.
inline torch::Tensor loss_from_distances(const torch::Tensor& dist, const torch::Tensor& eps,
                                         const torch::Tensor& y, const torch::Tensor& valid,
                                         Normalization norm, double tau, double ratio) {
  const auto dt = dist.scalar_type();
  const int64_t C = dist.size(0), B = dist.size(1);
  auto cls = torch::arange(C, y.options()).unsqueeze(1);  // [C, 1]
  auto pos = (cls == y.unsqueeze(0));                     // [C, B]
  auto posf = pos.to(dt);
  auto eps_col = eps.unsqueeze(1);

  if (norm == Normalization::batch) {
    auto n = posf.sum(1);                         // [C]
    auto rows = (n > 0) & valid;                  // classes present with a centroid
    auto s = (-dist - 2 * eps_col * posf) / tau;  // [C, B]
    auto lse = torch::logsumexp(s, 1);            // [C]
    auto mean_pos = (s * posf).sum(1) / n.clamp_min(1);
    auto l = -ratio * (mean_pos - lse);
    return torch::where(rows, l, torch::zeros_like(l));
  }
  // classes: s[i, c] over valid c
  auto s = ((-dist - eps_col * posf + eps_col * (1 - posf)) / tau).t();  // [B, C]
  s = s.masked_fill(~valid.unsqueeze(0), -std::numeric_limits<double>::infinity());
  auto lse = torch::logsumexp(s, 1);    // [B]
  auto own = valid.index_select(0, y);  // [B]
  auto s_pos = s.gather(1, y.unsqueeze(1)).squeeze(1);
  auto l = -ratio * (s_pos - lse);
  // A sample whose class has no centroid has no positive: excluded (0).
  return torch::where(own, l, torch::zeros({B}, l.options()));
}

/// The [C, B] distance matrix of the reference composition (plain LibTorch ops,
/// in the compute dtype).
inline torch::Tensor reference_distances(const torch::Tensor& features_in,
                                         const torch::Tensor& centroids_in, const CheckedInputs& in,
                                         const functional::RobustCentroidLossFuncOptions& o) {
  const auto dt = in.compute_dtype;
  auto z = features_in.to(dt);
  // Rows without a centroid are excluded from the loss; zero them so that
  // whatever they hold (NaN included) cannot reach the gradients through 0 * NaN.
  auto mu = torch::where(in.valid.unsqueeze(1), centroids_in.to(dt), torch::zeros({}, z.options()));
  switch (o.distance()) {
    case Distance::euclidean:
      return torch::cdist(mu, z, 2.0, /*donot_use_mm_for_euclid_dist=*/2);
    case Distance::squared_euclidean:
      return torch::cdist(mu, z, 2.0, 2).pow(2);
    case Distance::cosine:
      break;
  }
  auto zn = z / z.norm(2, 1, true).clamp_min(1e-12);
  auto mn = mu / mu.norm(2, 1, true).clamp_min(1e-12);
  return 1 - torch::mm(mn, zn.t());
}

/// The loss vector of a [C, B] distance matrix with the options' temperatures.
inline torch::Tensor reference_loss_from_distances(const torch::Tensor& dist, const torch::Tensor& radii,
                                                   const CheckedInputs& in,
                                                   const functional::RobustCentroidLossFuncOptions& o) {
  return loss_from_distances(dist, radii.to(in.compute_dtype), in.labels, in.valid, o.normalization(),
                             o.temperature(), o.temperature() / in.base_temperature);
}

/// Unreduced loss vector by plain LibTorch ops (the oracle). [C] for batch
/// normalization, [B] for classes normalization.
inline torch::Tensor reference_loss_vector(const torch::Tensor& features_in,
                                           const torch::Tensor& centroids_in,
                                           const torch::Tensor& radii_in, const CheckedInputs& in,
                                           const functional::RobustCentroidLossFuncOptions& o) {
  return reference_loss_from_distances(reference_distances(features_in, centroids_in, in, o), radii_in,
                                       in, o);
}

/// The fused function's loss vector recomputed from its own inputs by LibTorch
/// ops that are differentiable to any order (distances from the differences:
/// O(C B D) memory). Used for double backward (create_graph) only.
inline torch::Tensor composed_loss_vector(const torch::Tensor& z_in, const torch::Tensor& mu_in,
                                          const torch::Tensor& eps, const torch::Tensor& y,
                                          const torch::Tensor& valid, const FusedParams& p) {
  const auto dt = eps.scalar_type();
  auto z = z_in.to(dt);
  auto mu = torch::where(valid.unsqueeze(1), mu_in.to(dt), torch::zeros({}, z.options()));
  auto sq = (mu.unsqueeze(1) - z.unsqueeze(0)).pow(2).sum(2);  // [C, B]
  torch::Tensor dist = sq;
  if (p.dist == Distance::euclidean) {
    // d||z - mu|| at z = mu taken as 0, as everywhere else (the inner where keeps sqrt's
    // derivative finite on the branch that is not taken).
    auto pos = sq > 0;
    dist = torch::where(pos, torch::where(pos, sq, torch::ones_like(sq)).sqrt(),
                        torch::zeros_like(sq));
  }
  if (p.dist_scale != 1.0) dist = dist * p.dist_scale;
  return loss_from_distances(dist, eps, y, valid, p.norm, p.temperature,
                             p.temperature / p.base_temperature);
}

}  // namespace detail
}  // namespace drolt
