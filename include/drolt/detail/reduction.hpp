#pragma once
// The mean / sum reductions of the loss vector (docs/math.md, "The loss": class
// weights and the weighted mean over rows), written as weights v so that the
// reduced loss is sum_k v[k] l[k]. Both paths use them: the reference composes
// (v * l).sum(), the fused function takes v as an input. Part of drolt/loss.hpp.
#include <ATen/Dispatch.h>
#include <torch/torch.h>

#include <vector>

#include "drolt/detail/dispatch.hpp"
#include "drolt/detail/fused_contract.hpp"
#include "drolt/detail/loss_inputs.hpp"
#include "drolt/types.hpp"

namespace drolt {
namespace detail {

/// Per-entry weights v of the mean / sum reductions, so that the reduced loss is
/// sum_k v[k] l[k] (v already divided by the sum of weights for the mean), by
/// plain LibTorch ops: no host synchronisation, and differentiable in the class
/// weights.
inline torch::Tensor reduction_weights_ops(const CheckedInputs& in, Normalization norm,
                                           at::Reduction::Reduction red, int64_t num_classes,
                                           const torch::TensorOptions& opts) {
  const auto& y = in.labels;
  torch::Tensor w, mask;
  if (norm == Normalization::batch) {
    auto n = torch::zeros({num_classes}, opts).index_add_(0, y, torch::ones({y.size(0)}, opts));
    mask = ((n > 0) & in.valid).to(opts.dtype());
    w = in.weights.defined() ? in.weights * mask : mask;
  } else {
    mask = in.valid.index_select(0, y).to(opts.dtype());
    w = in.weights.defined() ? in.weights.index_select(0, y) * mask : mask;
  }
  if (red == at::Reduction::Sum) return w;
  // No row at all (e.g. no class of the batch has a centroid): the loss is 0.
  auto den = w.sum();
  return w / torch::where(den > 0, den, torch::ones_like(den));
}

/// The weights v of `red` (mean or sum), for either path. reduction_weights_ops
/// is the definition; this computes the same values with plain loops on the CPU
/// and one kernel on CUDA (a dozen small ops cost more than the loss at training
/// sizes), and falls back to it elsewhere and whenever the class weights need a
/// gradient. (The loops and the kernel are the deliberate second and third
/// copies; tests compare them with reduction_weights_ops.)
inline torch::Tensor reduction_weights(const CheckedInputs& in, Normalization norm,
                                       at::Reduction::Reduction red, int64_t num_classes,
                                       const torch::TensorOptions& opts) {
  const auto& y = in.labels;
  const int64_t B = y.size(0);
  const bool weight_grad =
      in.weights.defined() && in.weights.requires_grad() && torch::GradMode::is_enabled();
  if (weight_grad || !y.is_cpu()) {
    if (!weight_grad && y.is_cuda()) {
      // One kernel instead of a dozen small ops (their launch cost dominates at small sizes).
      const FusedKernels* be = kernels_of_device(y.device());
      if (be != nullptr && be->reduction_weights != nullptr) {
        auto v = be->reduction_weights(y, in.valid, in.weights, norm, red == at::Reduction::Mean,
                                       num_classes, opts.dtype().toScalarType());
        if (v.defined()) return v;
      }
    }
    return reduction_weights_ops(in, norm, red, num_classes, opts);
  }
  auto yc = y.contiguous();
  auto vc = in.valid.contiguous();
  auto wc = in.weights.defined() ? in.weights.to(torch::kDouble).contiguous() : torch::Tensor();
  const int64_t* yp = yc.data_ptr<int64_t>();
  const bool* vp = vc.data_ptr<bool>();
  const double* wp = wc.defined() ? wc.data_ptr<double>() : nullptr;
  std::vector<double> v;
  if (norm == Normalization::batch) {
    v.assign(num_classes, 0.0);
    std::vector<char> present(num_classes, 0);
    for (int64_t i = 0; i < B; ++i) present[yp[i]] = 1;
    for (int64_t c = 0; c < num_classes; ++c)
      if (present[c] && vp[c]) v[c] = wp ? wp[c] : 1.0;
  } else {
    v.assign(B, 0.0);
    for (int64_t i = 0; i < B; ++i)
      if (vp[yp[i]]) v[i] = wp ? wp[yp[i]] : 1.0;
  }
  if (red == at::Reduction::Mean) {
    double den = 0;
    for (double x : v) den += x;
    if (den > 0)
      for (double& x : v) x /= den;
  }
  return torch::from_blob(v.data(), {static_cast<int64_t>(v.size())}, torch::kDouble)
      .to(opts.dtype(), /*non_blocking=*/false, /*copy=*/true);
}

/// sum_k v[k] l[k], the reduced loss: a plain loop on the CPU when no graph is
/// recorded (inside the fused function's forward, or under NoGradGuard),
/// LibTorch ops otherwise.
inline torch::Tensor weighted_sum(const torch::Tensor& v, const torch::Tensor& l) {
  const bool graph = torch::GradMode::is_enabled() && (v.requires_grad() || l.requires_grad());
  if (graph || !l.is_cpu() || !v.is_cpu()) return (v * l).sum();
  auto vc = v.contiguous(), lc = l.contiguous();
  auto out = torch::empty({}, l.options());
  AT_DISPATCH_FLOATING_TYPES(l.scalar_type(), "drolt_weighted_sum", [&] {
    const scalar_t* vp = vc.data_ptr<scalar_t>();
    const scalar_t* lp = lc.data_ptr<scalar_t>();
    scalar_t acc = 0;
    for (int64_t k = 0; k < lc.numel(); ++k) acc += vp[k] * lp[k];
    *out.data_ptr<scalar_t>() = acc;
  });
  return out;
}

}  // namespace detail
}  // namespace drolt
