#pragma once
// How tight DRO-LT's bound is on a batch (the paper's Appendix B).
//
// The triangle inequality that turns the worst centroid in a ball of radius
// eps_c into the margin of the DRO-LT loss bounds the true-centroid loss from
// above; applied the other way it bounds it from below: the same expression
// with the sign of every margin reversed (+2 eps_c on the positive entry for
// batch normalization; +eps_c on the positive and -eps_c on the negatives for
// classes normalization), i.e. the loss at radii -eps. The diagnostic is the
// relative gap (upper - lower) / upper per row of the loss, averaged over the
// rows of the batch: 0 at eps = 0, growing with the radii.
//
//   auto t = drolt::functional::bound_tightness(features, labels, centroids, radii, opts);
//   double gap = t.mean_relative_gap.item<double>();
#include <torch/torch.h>

#include "drolt/loss.hpp"

namespace drolt {

/// Upper and lower bound of a batch's DRO-LT loss, per row, and their gap.
struct BoundTightness {
  torch::Tensor upper;              ///< [C] (batch normalization) or [B] (classes): the DRO-LT loss rows
  torch::Tensor lower;              ///< same shape: the rows with every margin's sign reversed
  torch::Tensor rows;               ///< bool, same shape: rows that are part of the loss
  torch::Tensor relative_gap;       ///< (upper - lower) / upper on `rows`, 0 elsewhere
  torch::Tensor mean_relative_gap;  ///< 0-dim: mean of relative_gap over `rows` (0 when there is none)
};

namespace functional {

/// The bound's tightness for one batch, with the inputs and options of
/// robust_centroid_loss (its reduction, class weights and backend are not used:
/// rows are reported unreduced, computed by the reference composition in the
/// compute dtype, without gradients).
inline BoundTightness bound_tightness(const torch::Tensor& features, const torch::Tensor& labels,
                                      const torch::Tensor& centroids, const torch::Tensor& radii,
                                      const RobustCentroidLossFuncOptions& options = {}) {
  torch::NoGradGuard no_grad;
  auto in = detail::check_inputs(features, labels, centroids, radii, options);
  auto o = options;
  o.reduction(torch::kNone);
  BoundTightness t;
  // One distance matrix for both bounds: only the margins' signs differ.
  const auto dist = detail::reference_distances(features, centroids, in, o);
  t.upper = detail::reference_loss_from_distances(dist, radii, in, o);
  t.lower = detail::reference_loss_from_distances(dist, -radii, in, o);
  const int64_t C = centroids.size(0);
  if (options.normalization() == Normalization::batch) {
    auto n = torch::zeros({C}, in.labels.options()).index_add_(0, in.labels, torch::ones_like(in.labels));
    t.rows = (n > 0) & in.valid;
  } else {
    t.rows = in.valid.index_select(0, in.labels);
  }
  // upper > 0 on every row (a log-sum-exp exceeds the mean it contains), but
  // guard the division anyway so an underflowed row reads 0, not NaN.
  auto ok = t.rows & (t.upper > 0);
  auto safe = torch::where(ok, t.upper, torch::ones_like(t.upper));
  t.relative_gap = torch::where(ok, (t.upper - t.lower) / safe, torch::zeros_like(t.upper));
  auto count = t.rows.sum();
  t.mean_relative_gap =
      t.relative_gap.sum() / torch::where(count > 0, count, torch::ones_like(count)).to(t.upper.scalar_type());
  return t;
}

}  // namespace functional
}  // namespace drolt

namespace drolt {

/// The bound's tightness for a loss module and its bank (the module's radii,
/// temperature, normalization and distance; the bank's centroids and valid mask).
/// The radii are those forward(features, labels, bank) uses: sqrt-n radii
/// without explicit counts take the bank's counts, as forward does.
inline BoundTightness bound_tightness(RobustCentroidLoss& loss, const torch::Tensor& features,
                                      const torch::Tensor& labels, const CentroidBank& bank) {
  loss->use_bank_counts(bank);
  return functional::bound_tightness(features, labels, bank->centroids().to(features.scalar_type()),
                                     loss->forward_radii(), loss->func_options(bank->valid()));
}

}  // namespace drolt
