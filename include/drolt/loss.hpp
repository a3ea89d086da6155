#pragma once
// RobustCentroidLoss: the DRO-LT loss (Samuel & Chechik, ICCV 2021), exactly as
// ../docs/math.md and the project spec define it.
//
//   functional::robust_centroid_loss(features, labels, centroids, radii, options)
//   RobustCentroidLoss loss(RobustCentroidLossOptions(C).temperature(0.1));
//   auto l = loss(features, labels, bank);
//
// Two implementations sit behind one API: a reference made of plain LibTorch
// ops with autograd (the oracle), and fused paths (a fast CPU path here, CUDA
// kernels in drolt/cuda/fused_kernels.cu) as a custom autograd function with
// the analytic backward.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <ATen/Dispatch.h>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "drolt/centroid_bank.hpp"
#include "drolt/detail/backend.hpp"
#include "drolt/detail/checked_load.hpp"
#include "drolt/detail/cpu_fused.hpp"
#include "drolt/radius.hpp"

namespace drolt {

/// Axis of the softmax: over the batch (the paper's Eq. 18, default) or over
/// the class centroids (spec section 3).
enum class Normalization { batch, classes };
/// Distance between a feature and a centroid. Cosine is 1 - cos(z, mu).
enum class Distance { euclidean, squared_euclidean, cosine };
/// Which implementation computes the loss. `automatic` picks the fused path
/// (CPU float32/float64; CUDA when drolt::cuda is linked) and the reference
/// composition otherwise.
enum class Backend { automatic, reference, fused };

inline const char* to_string(Normalization n) { return n == Normalization::batch ? "batch" : "classes"; }
inline const char* to_string(Distance d) {
  return d == Distance::euclidean ? "euclidean"
         : d == Distance::squared_euclidean ? "squared_euclidean"
                                            : "cosine";
}

using LossReduction = torch::nn::L1LossOptions::reduction_t;

namespace functional {

struct RobustCentroidLossFuncOptions {
  using reduction_t = LossReduction;
  /// tau > 0: scores are -d / tau.
  TORCH_ARG(double, temperature) = 1.0;
  /// tau_b > 0: the loss is scaled by tau / tau_b. Unset means tau_b = tau.
  TORCH_ARG(c10::optional<double>, base_temperature) = c10::nullopt;
  /// Optional [C] positive class weights w_c.
  TORCH_ARG(torch::Tensor, class_weights) = {};
  /// Optional [C] bool mask of classes that have a centroid (default: all).
  TORCH_ARG(torch::Tensor, valid) = {};
  TORCH_ARG(Normalization, normalization) = Normalization::batch;
  TORCH_ARG(Distance, distance) = Distance::euclidean;
  /// mean (weighted mean over rows), sum, or none ([C] per class for batch
  /// normalization, [B] per sample for classes normalization).
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(Backend, backend) = Backend::automatic;
  /// Check that labels are in [0, C), radii are finite and >= 0 and weights
  /// finite and > 0. On CUDA this costs one device-to-host synchronisation, and
  /// turning it off makes out-of-range values the caller's responsibility. On
  /// the CPU the checks cost nothing measurable and always run.
  TORCH_ARG(bool, validate_values) = true;
  /// Check features and valid centroids for NaN/Inf and name the offending rows,
  /// and check that the loss itself is finite (float32 distances overflow for
  /// features around 1e19). Off by default: it synchronises with the device.
  /// Without it a non-finite feature gives a NaN loss, as in LibTorch's own losses.
  TORCH_ARG(bool, check_finite) = false;
};

}  // namespace functional

namespace detail {

inline std::string describe(const torch::Tensor& t) {
  std::ostringstream o;
  o << t.sizes();
  return o.str();
}

/// Validated and normalised inputs (labels int64, valid bool, weights in the
/// compute dtype), all on the features' device.
struct CheckedInputs {
  torch::Tensor labels;
  torch::Tensor valid;
  torch::Tensor weights;  // undefined = all ones
  torch::ScalarType compute_dtype;
  double base_temperature;
};

/// min / max of the labels, min and finiteness of radii and weights, for CPU tensors.
inline void value_stats_cpu(const torch::Tensor& labels, const torch::Tensor& radii,
                            const torch::Tensor& weights, double* s) {
  auto y = labels.contiguous();
  const int64_t* yp = y.data_ptr<int64_t>();
  int64_t lo = yp[0], hi = yp[0];
  for (int64_t i = 1; i < y.numel(); ++i) {
    lo = std::min(lo, yp[i]);
    hi = std::max(hi, yp[i]);
  }
  s[0] = static_cast<double>(lo);
  s[1] = static_cast<double>(hi);
  auto scan = [](const torch::Tensor& t, double* mn, double* finite) {
    auto d = t.scalar_type() == torch::kDouble ? t.contiguous() : t.to(torch::kDouble).contiguous();
    const double* p = d.data_ptr<double>();
    double m = std::numeric_limits<double>::infinity();
    bool ok = true;
    for (int64_t i = 0; i < d.numel(); ++i) {
      ok = ok && std::isfinite(p[i]);
      m = std::min(m, p[i]);
    }
    *mn = m;
    *finite = ok ? 1.0 : 0.0;
  };
  scan(radii, &s[2], &s[3]);
  s[4] = 1.0;
  s[5] = 1.0;
  if (weights.defined()) scan(weights, &s[4], &s[5]);
}

inline void check_same_device(const torch::Tensor& ref, const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "drolt::robust_centroid_loss: expected ", name,
              " on the features' device ", ref.device(), ", got ", t.device());
}

inline CheckedInputs check_inputs(const torch::Tensor& features, const torch::Tensor& labels,
                                  const torch::Tensor& centroids, const torch::Tensor& radii,
                                  const functional::RobustCentroidLossFuncOptions& o) {
  const char* fn = "drolt::robust_centroid_loss: ";
  TORCH_CHECK(features.defined() && labels.defined() && centroids.defined() && radii.defined(),
              fn, "expected defined features, labels, centroids and radii");
  TORCH_CHECK(features.dim() == 2, fn, "expected features of shape [B, D], got ",
              describe(features));
  TORCH_CHECK(c10::isFloatingType(features.scalar_type()), fn,
              "expected floating-point features, got ", features.scalar_type());
  const int64_t B = features.size(0), D = features.size(1);
  TORCH_CHECK(B > 0, fn, "expected a non-empty batch, got features of shape ", describe(features));
  TORCH_CHECK(D > 0, fn, "expected a feature dimension D > 0, got features of shape ",
              describe(features));
  TORCH_CHECK(centroids.dim() == 2 && centroids.size(1) == D, fn,
              "expected centroids of shape [C, ", D, "] (D of the features), got ",
              describe(centroids));
  const int64_t C = centroids.size(0);
  TORCH_CHECK(C > 0, fn, "expected at least one centroid, got centroids of shape ",
              describe(centroids));
  TORCH_CHECK(centroids.scalar_type() == features.scalar_type(), fn,
              "expected centroids of the features' dtype ", features.scalar_type(), ", got ",
              centroids.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == B, fn, "expected labels of shape [", B,
              "], got ", describe(labels));
  TORCH_CHECK(c10::isIntegralType(labels.scalar_type(), /*includeBool=*/false), fn,
              "expected integer labels, got ", labels.scalar_type());
  TORCH_CHECK(radii.dim() == 1 && radii.size(0) == C, fn, "expected radii of shape [", C,
              "] (one per class), got ", describe(radii));
  TORCH_CHECK(c10::isFloatingType(radii.scalar_type()), fn, "expected floating-point radii, got ",
              radii.scalar_type());
  check_same_device(features, labels, "labels");
  check_same_device(features, centroids, "centroids");
  check_same_device(features, radii, "radii");
  const double tau = o.temperature();
  TORCH_CHECK(std::isfinite(tau) && tau > 0, fn, "expected temperature > 0, got ", tau);
  const double tau_b = o.base_temperature().has_value() ? *o.base_temperature() : tau;
  TORCH_CHECK(std::isfinite(tau_b) && tau_b > 0, fn, "expected base_temperature > 0, got ", tau_b);

  CheckedInputs out;
  out.compute_dtype =
      features.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  out.base_temperature = tau_b;
  out.labels = labels.scalar_type() == torch::kLong ? labels : labels.to(torch::kLong);
  if (o.valid().defined()) {
    const auto& v = o.valid();
    TORCH_CHECK(v.dim() == 1 && v.size(0) == C, fn, "expected a valid-centroid mask of shape [",
                C, "], got ", describe(v));
    TORCH_CHECK(v.scalar_type() == torch::kBool ||
                    c10::isIntegralType(v.scalar_type(), /*includeBool=*/false),
                fn, "expected a bool valid-centroid mask, got ", v.scalar_type());
    check_same_device(features, v, "the valid-centroid mask");
    out.valid = v.scalar_type() == torch::kBool ? v : v.ne(0);
  } else {
    out.valid = torch::ones({C}, torch::TensorOptions().dtype(torch::kBool).device(features.device()));
  }
  if (o.class_weights().defined()) {
    const auto& w = o.class_weights();
    TORCH_CHECK(w.dim() == 1 && w.size(0) == C, fn, "expected class_weights of shape [", C,
                "], got ", describe(w));
    TORCH_CHECK(c10::isFloatingType(w.scalar_type()), fn,
                "expected floating-point class_weights, got ", w.scalar_type());
    check_same_device(features, w, "class_weights");
    out.weights = w.to(out.compute_dtype);
  }

  // On the CPU the value checks are a few plain loops: always on, since the
  // fused CPU path indexes memory by label.
  if (o.validate_values() || features.is_cpu()) {
    double s[6];  // label min, label max, radius min, radii finite, weight min, weights finite
    if (features.is_cpu()) {
      // Plain loops: a handful of LibTorch ops would cost more than the loss itself.
      value_stats_cpu(out.labels, radii.detach(), out.weights, s);
    } else {
      // One combined reduction: a single synchronisation on the device.
      auto y = out.labels;
      auto one = torch::ones({}, torch::TensorOptions().dtype(torch::kDouble).device(y.device()));
      auto w = out.weights.defined() ? out.weights.detach() : torch::Tensor();
      auto stats = torch::stack({y.min().to(torch::kDouble), y.max().to(torch::kDouble),
                                 radii.detach().min().to(torch::kDouble),
                                 torch::isfinite(radii.detach()).all().to(torch::kDouble),
                                 w.defined() ? w.min().to(torch::kDouble) : one,
                                 w.defined() ? torch::isfinite(w).all().to(torch::kDouble) : one})
                       .cpu();
      for (int k = 0; k < 6; ++k) s[k] = stats[k].item<double>();
    }
    TORCH_CHECK(s[0] >= 0 && s[1] < static_cast<double>(C), fn, "expected labels in [0, ", C,
                "), got values in [", static_cast<int64_t>(s[0]), ", ", static_cast<int64_t>(s[1]),
                "]");
    TORCH_CHECK(s[3] == 1.0, fn, "expected finite radii, got a NaN or Inf radius");
    TORCH_CHECK(s[2] >= 0, fn, "expected radii >= 0, got a radius of ", s[2]);
    TORCH_CHECK(s[5] == 1.0, fn, "expected finite class_weights, got a NaN or Inf weight");
    TORCH_CHECK(s[4] > 0, fn, "expected class_weights > 0, got a weight of ", s[4]);
  }
  if (o.check_finite()) {
    auto bad = (~torch::isfinite(features.detach()).all(1)).nonzero().view(-1).cpu();
    if (bad.numel() > 0) {
      std::ostringstream rows;
      for (int64_t i = 0; i < std::min<int64_t>(bad.numel(), 8); ++i)
        rows << (i ? ", " : "") << bad[i].item<int64_t>();
      if (bad.numel() > 8) rows << ", ...";
      TORCH_CHECK(false, fn, "expected finite features, got NaN or Inf in ", bad.numel(),
                  " row(s): ", rows.str());
    }
    auto badc = ((~torch::isfinite(centroids.detach()).all(1)) & out.valid).nonzero().view(-1).cpu();
    TORCH_CHECK(badc.numel() == 0, fn, "expected finite centroids, got NaN or Inf in ",
                badc.numel(), " valid centroid row(s), first: ",
                badc.numel() ? badc[0].item<int64_t>() : -1);
  }
  return out;
}

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
    auto n = posf.sum(1);                            // [C]
    auto rows = (n > 0) & valid;                     // classes present with a centroid
    auto s = (-dist - 2 * eps_col * posf) / tau;     // [C, B]
    auto lse = torch::logsumexp(s, 1);               // [C]
    auto mean_pos = (s * posf).sum(1) / n.clamp_min(1);
    auto l = -ratio * (mean_pos - lse);
    return torch::where(rows, l, torch::zeros_like(l));
  }
  // classes: s[i, c] over valid c
  auto s = ((-dist - eps_col * posf + eps_col * (1 - posf)) / tau).t();  // [B, C]
  s = s.masked_fill(~valid.unsqueeze(0), -std::numeric_limits<double>::infinity());
  auto lse = torch::logsumexp(s, 1);                                      // [B]
  auto own = valid.index_select(0, y);                                    // [B]
  auto s_pos = s.gather(1, y.unsqueeze(1)).squeeze(1);
  auto l = -ratio * (s_pos - lse);
  // A sample whose class has no centroid has no positive: excluded (0).
  return torch::where(own, l, torch::zeros({B}, l.options()));
}

/// Unreduced loss vector by plain LibTorch ops (the oracle). [C] for batch
/// normalization, [B] for classes normalization.
inline torch::Tensor reference_loss_vector(const torch::Tensor& features_in,
                                           const torch::Tensor& centroids_in,
                                           const torch::Tensor& radii_in, const CheckedInputs& in,
                                           const functional::RobustCentroidLossFuncOptions& o) {
  const auto dt = in.compute_dtype;
  auto z = features_in.to(dt);
  // Rows without a centroid are excluded from the loss; zero them so that
  // whatever they hold (NaN included) cannot reach the gradients through 0 * NaN.
  auto mu = torch::where(in.valid.unsqueeze(1), centroids_in.to(dt), torch::zeros({}, z.options()));
  auto eps = radii_in.to(dt);
  torch::Tensor dist;  // [C, B]
  switch (o.distance()) {
    case Distance::euclidean:
      dist = torch::cdist(mu, z, 2.0, /*donot_use_mm_for_euclid_dist=*/2);
      break;
    case Distance::squared_euclidean:
      dist = torch::cdist(mu, z, 2.0, 2).pow(2);
      break;
    case Distance::cosine: {
      auto zn = z / z.norm(2, 1, true).clamp_min(1e-12);
      auto mn = mu / mu.norm(2, 1, true).clamp_min(1e-12);
      dist = 1 - torch::mm(mn, zn.t());
      break;
    }
  }
  return loss_from_distances(dist, eps, in.labels, in.valid, o.normalization(), o.temperature(),
                             o.temperature() / in.base_temperature);
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
  if (p.dist == DistKind::euclidean) {
    // d||z - mu|| at z = mu taken as 0, as everywhere else (the inner where keeps sqrt's
    // derivative finite on the branch that is not taken).
    auto pos = sq > 0;
    dist = torch::where(pos, torch::where(pos, sq, torch::ones_like(sq)).sqrt(), torch::zeros_like(sq));
  }
  if (p.dist_scale != 1.0) dist = dist * p.dist_scale;
  return loss_from_distances(dist, eps, y, valid,
                             p.norm == NormKind::batch ? Normalization::batch : Normalization::classes,
                             p.temperature, p.temperature / p.base_temperature);
}

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

/// Applies class weights and the reduction to a loss vector (the reference path).
inline torch::Tensor reduce_loss_vector(const torch::Tensor& l, const CheckedInputs& in,
                                        Normalization norm, const LossReduction& reduction,
                                        int64_t num_classes) {
  const auto red = torch::enumtype::reduction_get_enum(reduction);
  if (red == at::Reduction::None) return l;
  return (reduction_weights_ops(in, norm, red, num_classes, l.options()) * l).sum();
}

/// reduction_weights_ops for the fused paths: plain loops on the CPU, one kernel
/// on CUDA, LibTorch ops elsewhere and whenever the class weights need a gradient.
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
      const FusedBackend* be = cuda_backend_slot();
      if (be != nullptr && be->reduction_weights != nullptr) {
        auto v = be->reduction_weights(y, in.valid, in.weights,
                                       norm == Normalization::batch ? NormKind::batch
                                                                    : NormKind::classes,
                                       red == at::Reduction::Mean, num_classes,
                                       opts.dtype().toScalarType());
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

/// The fused paths as one autograd function: forward and the analytic backward
/// of docs/math.md, computed by the CPU path or the registered CUDA kernels.
/// Differentiating the gradient again (create_graph) recomputes the loss from
/// the saved inputs by LibTorch ops and differentiates that, so second
/// derivatives are exact too (at the composition's speed).
struct FusedFunction : public torch::autograd::Function<FusedFunction> {
  /// Positions of the saved tensors; the backend's own state follows kExtra.
  enum Saved : size_t { kZ, kMu, kEps, kY, kValid, kReduceWeights, kLossVector, kExtra };

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& features,
                               const torch::Tensor& centroids, const torch::Tensor& radii,
                               const torch::Tensor& labels, const torch::Tensor& valid,
                               const torch::Tensor& reduce_weights, FusedParams params) {
    const FusedBackend& be = pick(features);
    auto z = features.contiguous();
    auto mu = centroids.contiguous();
    auto eps = radii.contiguous();
    auto y = labels.contiguous();
    auto v = valid.contiguous();
    auto res = be.forward(z, y, mu, eps, v, params);
    // The reduction weights are empty for reduction none.
    std::vector<torch::Tensor> to_save{z, mu, eps, y, v, reduce_weights, res.loss};
    for (auto& t : res.saved) to_save.push_back(t);
    ctx->save_for_backward(to_save);
    ctx->saved_data["norm"] = static_cast<int64_t>(params.norm);
    ctx->saved_data["dist"] = static_cast<int64_t>(params.dist);
    ctx->saved_data["dist_scale"] = params.dist_scale;
    ctx->saved_data["tau"] = params.temperature;
    ctx->saved_data["tau_b"] = params.base_temperature;
    ctx->saved_data["centroid_grad"] = params.centroid_grad;
    if (reduce_weights.numel() == 0) return res.loss;
    if (res.loss.is_cpu()) return reduce_cpu(reduce_weights, res.loss);
    return (reduce_weights * res.loss).sum();
  }

  /// sum_k v[k] l[k] as a plain loop (CPU).
  static torch::Tensor reduce_cpu(const torch::Tensor& v, const torch::Tensor& l) {
    auto out = torch::empty({}, l.options());
    AT_DISPATCH_FLOATING_TYPES(l.scalar_type(), "drolt_reduce", [&] {
      const scalar_t* vp = v.data_ptr<scalar_t>();
      const scalar_t* lp = l.data_ptr<scalar_t>();
      scalar_t acc = 0;
      for (int64_t k = 0; k < l.numel(); ++k) acc += vp[k] * lp[k];
      *out.data_ptr<scalar_t>() = acc;
    });
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    FusedParams p;
    p.norm = static_cast<NormKind>(ctx->saved_data["norm"].toInt());
    p.dist = static_cast<DistKind>(ctx->saved_data["dist"].toInt());
    p.dist_scale = ctx->saved_data["dist_scale"].toDouble();
    p.temperature = ctx->saved_data["tau"].toDouble();
    p.base_temperature = ctx->saved_data["tau_b"].toDouble();
    p.centroid_grad = ctx->saved_data["centroid_grad"].toBool();
    const auto& rw = saved[kReduceWeights];
    const bool rw_grad = rw.numel() > 0 && ctx->needs_input_grad(kReduceWeights);
    if (torch::GradMode::is_enabled()) return backward_composed(ctx, saved, grad_outputs[0], p, rw_grad);

    std::vector<torch::Tensor> extra(saved.begin() + kExtra, saved.end());
    const FusedBackend& be = pick(saved[kZ]);
    auto g = rw.numel() > 0 ? (rw * grad_outputs[0]).contiguous() : grad_outputs[0].contiguous();
    auto r = be.backward(g, saved[kZ], saved[kY], saved[kMu], saved[kEps], saved[kValid], extra, p);
    // d(sum_k v_k l_k)/dv = l: the class weights' gradient flows on through v.
    auto grad_rw = rw_grad ? saved[kLossVector] * grad_outputs[0] : torch::Tensor();
    return {r.grad_features, p.centroid_grad ? r.grad_centroids : torch::Tensor(), r.grad_radii,
            torch::Tensor(), torch::Tensor(), grad_rw, torch::Tensor()};
  }

  /// Backward with create_graph: the gradient of the composed loss, itself differentiable.
  static torch::autograd::variable_list backward_composed(torch::autograd::AutogradContext* ctx,
                                                          const torch::autograd::variable_list& saved,
                                                          const torch::Tensor& grad_output,
                                                          const FusedParams& p, bool rw_grad) {
    const auto& rw = saved[kReduceWeights];
    auto l = composed_loss_vector(saved[kZ], saved[kMu], saved[kEps], saved[kY], saved[kValid], p);
    auto out = rw.numel() > 0 ? (rw * l).sum() : l;
    const size_t which[] = {kZ, kMu, kEps, kReduceWeights};
    std::vector<torch::Tensor> inputs;
    std::vector<size_t> slots;
    for (size_t k : which) {
      const bool wanted = k == kReduceWeights ? rw_grad : ctx->needs_input_grad(k);
      if (wanted && saved[k].requires_grad()) {
        inputs.push_back(saved[k]);
        slots.push_back(k);
      }
    }
    torch::autograd::variable_list result(7);
    if (inputs.empty()) return result;
    auto grads = torch::autograd::grad({out}, inputs, {grad_output}, /*retain_graph=*/true,
                                       /*create_graph=*/true, /*allow_unused=*/true);
    for (size_t j = 0; j < slots.size(); ++j) result[slots[j]] = grads[j];
    return result;
  }

  static const FusedBackend& pick(const torch::Tensor& t) {
    if (t.is_cuda()) {
      const FusedBackend* b = cuda_backend_slot();
      TORCH_CHECK(b != nullptr, "drolt: no CUDA kernels registered (link drolt::cuda)");
      return *b;
    }
    return cpu::backend();
  }
};

/// Cosine distance on the fused paths: 1 - cos(z, mu) = 0.5 ||z' - mu'||^2 when
/// z', mu' are unit vectors with z' . mu' = cos(z, mu). L2-normalised rows are
/// unit vectors except an all-zero row (its norm is clamped, so it stays zero,
/// and its cosine is 0); two extra columns make every row a unit vector without
/// changing any dot product: z' = [z, e_z, 0], mu' = [mu, 0, e_mu] with
/// e = sqrt(1 - |row|^2) for rows far from unit length and 0 otherwise.
inline torch::Tensor cosine_pad(const torch::Tensor& xn, bool first_slot) {
  auto n2 = xn.detach().to(torch::kFloat).pow(2).sum(1, /*keepdim=*/true);
  auto e = torch::where(n2 < 0.5, (1 - n2).clamp_min(0).sqrt(), torch::zeros_like(n2)).to(xn.scalar_type());
  auto zero = torch::zeros_like(e);
  return torch::cat({xn, first_slot ? e : zero, first_slot ? zero : e}, 1);
}

/// Whether an L2-normalised CPU tensor has a row far from unit length (an
/// all-zero row): only then does the CPU path need cosine_pad.
inline bool needs_cosine_pad_cpu(const torch::Tensor& xn) {
  auto x = xn.detach().contiguous();
  bool any = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "drolt_cosine_pad", [&] {
    const scalar_t* p = x.data_ptr<scalar_t>();
    const int64_t N = x.size(0), D = x.size(1);
    for (int64_t r = 0; r < N && !any; ++r) {
      scalar_t acc = 0;
      for (int64_t d = 0; d < D; ++d) acc += p[r * D + d] * p[r * D + d];
      any = !(acc >= scalar_t(0.5));
    }
  });
  return any;
}

/// With check_finite: a non-finite loss from inputs that passed the finiteness
/// checks is an overflow (float32 squared distances pass 3.4e38 near |z| ~ 1e19,
/// or a tiny temperature): say so instead of returning NaN.
inline void check_finite_result(const torch::Tensor& loss, const torch::Tensor& features,
                                const torch::Tensor& centroids, const CheckedInputs& in,
                                double temperature) {
  if (torch::isfinite(loss.detach()).all().item<bool>()) return;
  const double zmax = features.detach().abs().max().to(torch::kDouble).item<double>();
  const double mmax = torch::where(in.valid.unsqueeze(1), centroids.detach().abs(),
                                   torch::zeros({}, centroids.options()))
                          .max()
                          .to(torch::kDouble)
                          .item<double>();
  TORCH_CHECK(false, "drolt::robust_centroid_loss: expected a finite loss from finite inputs, got ",
              "NaN or Inf: the distances or scores overflow ", features.scalar_type(),
              " (largest |feature| ", zmax, ", largest |centroid| ", mmax, ", temperature ",
              temperature, "); scale the features down, raise the temperature or use float64");
}
/// Whether the fused path can take these inputs.
inline bool fused_available(const torch::Tensor& features) {
  if (features.is_cpu())
    return features.scalar_type() == torch::kFloat || features.scalar_type() == torch::kDouble;
  if (features.is_cuda()) return cuda_backend_slot() != nullptr;
  return false;
}

inline void warn_cuda_fallback_once() {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    TORCH_WARN("drolt: CUDA tensors but no fused CUDA kernels in this build (link drolt::cuda); "
               "using the LibTorch reference composition");
}

}  // namespace detail

namespace functional {

/// The DRO-LT loss. features [B, D], labels [B] (integer), centroids [C, D],
/// radii [C] (the paper's epsilon). See RobustCentroidLossFuncOptions.
inline torch::Tensor robust_centroid_loss(const torch::Tensor& features, const torch::Tensor& labels,
                                          const torch::Tensor& centroids, const torch::Tensor& radii,
                                          const RobustCentroidLossFuncOptions& options = {}) {
  auto in = detail::check_inputs(features, labels, centroids, radii, options);
  const int64_t C = centroids.size(0);
  bool fused = false;
  switch (options.backend()) {
    case Backend::reference:
      break;
    case Backend::fused:
      TORCH_CHECK(detail::fused_available(features),
                  "drolt::robust_centroid_loss: the fused backend does not support ",
                  features.device(), " tensors of dtype ", features.scalar_type(),
                  features.is_cuda() ? " (no CUDA kernels registered: link drolt::cuda)"
                                     : " (CPU: float32 or float64)");
      fused = true;
      break;
    case Backend::automatic:
      fused = detail::fused_available(features);
      if (!fused && features.is_cuda()) detail::warn_cuda_fallback_once();
      break;
  }
  torch::Tensor l;
  if (!fused) {
    l = detail::reference_loss_vector(features, centroids, radii, in, options);
    l = detail::reduce_loss_vector(l, in, options.normalization(), options.reduction(), C);
  } else {
    detail::FusedParams p;
    p.norm = options.normalization() == Normalization::batch ? detail::NormKind::batch
                                                             : detail::NormKind::classes;
    p.temperature = options.temperature();
    p.base_temperature = in.base_temperature;
    torch::Tensor z = features, mu = centroids;
    if (options.distance() == Distance::cosine) {
      // 1 - cos(z, mu) = 0.5 * ||z/|z| - mu/|mu|||^2: the kernels see normalised inputs,
      // padded where a row is all zeros (cosine_pad; on CUDA always, to avoid a sync).
      z = features / features.norm(2, 1, true).clamp_min(1e-12);
      mu = centroids / centroids.norm(2, 1, true).clamp_min(1e-12);
      if (!z.is_cpu() || detail::needs_cosine_pad_cpu(z) || detail::needs_cosine_pad_cpu(mu)) {
        z = detail::cosine_pad(z, /*first_slot=*/true);
        mu = detail::cosine_pad(mu, /*first_slot=*/false);
      }
      p.dist = detail::DistKind::squared;
      p.dist_scale = 0.5;
    } else {
      p.dist = options.distance() == Distance::euclidean ? detail::DistKind::euclidean
                                                         : detail::DistKind::squared;
    }
    p.centroid_grad = mu.requires_grad() && torch::GradMode::is_enabled();
    auto eps = radii.to(in.compute_dtype);
    const auto red = torch::enumtype::reduction_get_enum(options.reduction());
    // Empty for reduction none (an undefined tensor cannot be a Function input in LibTorch 1.13).
    torch::Tensor rw = torch::empty({0}, eps.options());
    if (red != at::Reduction::None)
      rw = detail::reduction_weights(in, options.normalization(), red, C,
                                     eps.options());
    // Class weights and the reduction happen inside the fused function.
    l = detail::FusedFunction::apply(z, mu, eps, in.labels, in.valid, rw, p);
  }
  if (options.check_finite()) detail::check_finite_result(l, features, centroids, in, options.temperature());
  return l;
}

}  // namespace functional

// ------------------------------------------------------------------ module form

struct RobustCentroidLossOptions {
  using reduction_t = LossReduction;
  /* implicit */ RobustCentroidLossOptions(int64_t num_classes) : num_classes_(num_classes) {}
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(c10::optional<double>, base_temperature) = c10::nullopt;
  /// Radius policy; the paper's best variant (learned, initial margin 2 * 0.5) by default.
  TORCH_ARG(RadiusPolicy, radius) = RadiusPolicy::learned(0.5);
  /// [C] training-set counts for the sqrt-n policy; when undefined the counts
  /// of the CentroidBank passed to forward() are used.
  TORCH_ARG(torch::Tensor, class_counts) = {};
  TORCH_ARG(torch::Tensor, class_weights) = {};
  TORCH_ARG(Normalization, normalization) = Normalization::batch;
  TORCH_ARG(Distance, distance) = Distance::euclidean;
  TORCH_ARG(reduction_t, reduction) = torch::kMean;
  TORCH_ARG(Backend, backend) = Backend::automatic;
  TORCH_ARG(bool, validate_values) = true;
  TORCH_ARG(bool, check_finite) = false;
};

/// The DRO-LT loss as a module. It owns its radius policy: a learned radius is
/// the parameter "radii" (shows up in parameters() and in saved state; give it
/// to the feature extractor's optimizer), fixed radii are buffers.
class RobustCentroidLossImpl : public torch::nn::Cloneable<RobustCentroidLossImpl> {
 public:
  explicit RobustCentroidLossImpl(const RobustCentroidLossOptions& options) : options(options) {
    TORCH_CHECK(options.num_classes() > 0, "drolt::RobustCentroidLoss: expected num_classes > 0, got ",
                options.num_classes());
    reset();
  }

  void reset() override {
    const int64_t C = options.num_classes();
    const auto& policy = options.radius();
    if (policy.is_learned()) {
      raw_radii_ = register_parameter("radii", torch::full({C}, policy.eps0()));
    } else {
      raw_radii_ = register_buffer("radii", torch::full({C}, policy.eps0()));
    }
    auto counts = torch::zeros({C}, torch::kLong);
    if (options.class_counts().defined()) {
      detail::check_class_counts(options.class_counts(), C, "drolt::RobustCentroidLoss: class_counts");
      counts = options.class_counts().to(torch::kLong).cpu().clone();
    }
    class_counts_ = register_buffer("class_counts", counts);
    if (policy.kind() == RadiusPolicy::Kind::sqrt_n && has_counts()) refresh_fixed_radii();
  }

  /// Whether training-set class counts are known (given, set, or taken from a bank).
  bool has_counts() const { return class_counts_.sum().item<int64_t>() > 0; }

  /// Sets the training-set class counts (sqrt-n policy).
  void set_class_counts(const torch::Tensor& counts) {
    const int64_t C = options.num_classes();
    detail::check_class_counts(counts, C, "drolt::RobustCentroidLoss::set_class_counts");
    torch::NoGradGuard g;
    class_counts_.copy_(counts.to(torch::kLong));
    if (options.radius().kind() == RadiusPolicy::Kind::sqrt_n) refresh_fixed_radii();
  }

  /// Effective per-class radii [C] (non-negative; differentiable for the learned policy).
  torch::Tensor radii() const {
    if (options.radius().is_learned()) return raw_radii_.clamp_min(0);
    return raw_radii_;
  }

  /// Clamps a learned radius's raw parameter to >= 0 in place (optional: the
  /// effective radius is non-negative anyway; this keeps momentum from
  /// accumulating below zero).
  void project_() {
    if (!options.radius().is_learned()) return;
    torch::NoGradGuard g;
    raw_radii_.clamp_min_(0);
  }

  /// Loss with centroids (and, for sqrt-n without explicit counts, the class counts) from a bank.
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& labels,
                        const CentroidBank& bank) {
    TORCH_CHECK(bank->num_classes() == options.num_classes(),
                "drolt::RobustCentroidLoss: expected a CentroidBank with ", options.num_classes(),
                " classes, got ", bank->num_classes());
    if (options.radius().kind() == RadiusPolicy::Kind::sqrt_n &&
        !options.class_counts().defined()) {
      // No explicit training counts: the bank's counts (a full pass sees every sample).
      set_class_counts(bank->counts().cpu());
    }
    return compute(features, labels, bank->centroids().to(features.scalar_type()), bank->valid());
  }

  /// Loss with explicit centroids [C, D] and an optional valid mask [C]. (Not an
  /// overload of forward(): ModuleHolder::operator() needs a single forward.)
  torch::Tensor compute(const torch::Tensor& features, const torch::Tensor& labels,
                        const torch::Tensor& centroids, const torch::Tensor& valid = {}) {
    TORCH_CHECK(options.radius().kind() != RadiusPolicy::Kind::sqrt_n || has_counts(),
                "drolt::RobustCentroidLoss: the sqrt-n policy needs the training-set class counts "
                "(RobustCentroidLossOptions::class_counts, set_class_counts, or a finalized "
                "CentroidBank passed to forward)");
    return functional::robust_centroid_loss(features, labels, centroids, radii(), func_options(valid));
  }

  functional::RobustCentroidLossFuncOptions func_options(const torch::Tensor& valid = {}) const {
    return functional::RobustCentroidLossFuncOptions()
        .temperature(options.temperature())
        .base_temperature(options.base_temperature())
        .class_weights(options.class_weights().defined()
                           ? options.class_weights().to(raw_radii_.device())
                           : torch::Tensor())
        .valid(valid)
        .normalization(options.normalization())
        .distance(options.distance())
        .reduction(options.reduction())
        .backend(options.backend())
        .validate_values(options.validate_values())
        .check_finite(options.check_finite());
  }

  /// Module::load that refuses an archive of another number of classes (the
  /// module is left as it was). torch::load calls it.
  void load(torch::serialize::InputArchive& archive) override {
    const int64_t C = options.num_classes();
    detail::checked_load(*this, {{"radii", {C}, c10::nullopt}, {"class_counts", {C}, torch::kLong}},
                         "drolt::RobustCentroidLoss", [&] { torch::nn::Module::load(archive); });
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::RobustCentroidLoss(num_classes=" << options.num_classes()
           << ", temperature=" << options.temperature() << ", radius=" << options.radius().name()
           << "(" << options.radius().eps0() << "), normalization="
           << to_string(options.normalization()) << ", distance=" << to_string(options.distance())
           << ")";
  }

  RobustCentroidLossOptions options;

 private:
  void refresh_fixed_radii() {
    torch::NoGradGuard g;
    raw_radii_.copy_(options.radius().fixed_radii(options.num_classes(), class_counts_,
                                                  raw_radii_.options().device(torch::kCPU)));
  }
  torch::Tensor raw_radii_, class_counts_;
};

TORCH_MODULE(RobustCentroidLoss);

}  // namespace drolt
