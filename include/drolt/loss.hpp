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
  /// finite and > 0. On CUDA this costs one device-to-host synchronisation.
  TORCH_ARG(bool, validate_values) = true;
  /// Check features and valid centroids for NaN/Inf and name the offending rows
  /// (off by default: it synchronises with the device). Without it a non-finite
  /// feature gives a NaN loss, as in LibTorch's own losses.
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

  if (o.validate_values()) {
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

/// Unreduced loss vector by plain LibTorch ops (the oracle). [C] for batch
/// normalization, [B] for classes normalization.
inline torch::Tensor reference_loss_vector(const torch::Tensor& features_in,
                                           const torch::Tensor& centroids_in,
                                           const torch::Tensor& radii_in, const CheckedInputs& in,
                                           const functional::RobustCentroidLossFuncOptions& o) {
  const auto dt = in.compute_dtype;
  auto z = features_in.to(dt);
  auto mu = centroids_in.to(dt);
  auto eps = radii_in.to(dt);
  const auto& y = in.labels;
  const int64_t B = z.size(0), C = mu.size(0);
  const double tau = o.temperature(), ratio = tau / in.base_temperature;

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
  auto cls = torch::arange(C, y.options()).unsqueeze(1);  // [C, 1]
  auto pos = (cls == y.unsqueeze(0));                     // [C, B]
  auto posf = pos.to(dt);
  auto eps_col = eps.unsqueeze(1);

  if (o.normalization() == Normalization::batch) {
    auto n = posf.sum(1);                            // [C]
    auto rows = (n > 0) & in.valid;                  // classes present with a centroid
    auto s = (-dist - 2 * eps_col * posf) / tau;     // [C, B]
    auto lse = torch::logsumexp(s, 1);               // [C]
    auto mean_pos = (s * posf).sum(1) / n.clamp_min(1);
    auto l = -ratio * (mean_pos - lse);
    return torch::where(rows, l, torch::zeros_like(l));
  }
  // classes: s[i, c] over valid c
  auto s = ((-dist - eps_col * posf + eps_col * (1 - posf)) / tau).t();  // [B, C]
  s = s.masked_fill(~in.valid.unsqueeze(0), -std::numeric_limits<double>::infinity());
  auto lse = torch::logsumexp(s, 1);                                      // [B]
  auto own = in.valid.index_select(0, y);                                 // [B]
  auto s_pos = s.gather(1, y.unsqueeze(1)).squeeze(1);
  auto l = -ratio * (s_pos - lse);
  // A sample whose class has no centroid has no positive: excluded (0).
  return torch::where(own, l, torch::zeros({B}, l.options()));
}

/// Applies class weights and the reduction to a loss vector (plain ops, no
/// host synchronisation).
inline torch::Tensor reduce_loss_vector(const torch::Tensor& l, const CheckedInputs& in,
                                        Normalization norm, const LossReduction& reduction,
                                        int64_t num_classes) {
  const auto red = torch::enumtype::reduction_get_enum(reduction);
  if (red == at::Reduction::None) return l;
  const auto& y = in.labels;
  auto opts = l.options();
  torch::Tensor w, mask;
  if (norm == Normalization::batch) {
    auto n = torch::zeros({num_classes}, opts).index_add_(0, y, torch::ones({y.size(0)}, opts));
    mask = ((n > 0) & in.valid).to(opts.dtype());
    w = in.weights.defined() ? in.weights * mask : mask;
  } else {
    mask = in.valid.index_select(0, y).to(opts.dtype());
    w = in.weights.defined() ? in.weights.index_select(0, y) * mask : mask;
  }
  auto num = (w * l).sum();
  if (red == at::Reduction::Sum) return num;
  auto den = w.sum();
  // No row at all (e.g. no class of the batch has a centroid): the loss is 0.
  return num / torch::where(den > 0, den, torch::ones_like(den));
}

/// Per-entry weights of the mean / sum reductions, so that the reduced loss is
/// sum_k v[k] l[k] (v already divided by sum of weights for the mean). CPU:
/// loops; other devices: plain ops without host synchronisation.
inline torch::Tensor reduction_weights(const CheckedInputs& in, Normalization norm,
                                       at::Reduction::Reduction red, int64_t num_classes,
                                       const torch::TensorOptions& opts) {
  const auto& y = in.labels;
  const int64_t B = y.size(0);
  if (!y.is_cpu()) {
    if (y.is_cuda()) {
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
    torch::Tensor w, mask;
    if (norm == Normalization::batch) {
      auto n = torch::zeros({num_classes}, opts).index_add_(0, y, torch::ones({B}, opts));
      mask = ((n > 0) & in.valid).to(opts.dtype());
      w = in.weights.defined() ? in.weights * mask : mask;
    } else {
      mask = in.valid.index_select(0, y).to(opts.dtype());
      w = in.weights.defined() ? in.weights.index_select(0, y) * mask : mask;
    }
    if (red == at::Reduction::Sum) return w;
    auto den = w.sum();
    return w / torch::where(den > 0, den, torch::ones_like(den));
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
/// of spec section 4, computed by the CPU path or the registered CUDA kernels.
struct FusedFunction : public torch::autograd::Function<FusedFunction> {
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
    // Entry 5: the reduction weights (empty for reduction none).
    std::vector<torch::Tensor> to_save{z, mu, eps, y, v, reduce_weights};
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
    std::vector<torch::Tensor> extra(saved.begin() + 6, saved.end());
    const FusedBackend& be = pick(saved[0]);
    const auto& rw = saved[5];
    auto g = rw.numel() > 0 ? (rw * grad_outputs[0]).contiguous() : grad_outputs[0].contiguous();
    auto r = be.backward(g, saved[0], saved[3], saved[1], saved[2], saved[4], extra, p);
    return {r.grad_features, p.centroid_grad ? r.grad_centroids : torch::Tensor(), r.grad_radii,
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
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
  } else {
    detail::FusedParams p;
    p.norm = options.normalization() == Normalization::batch ? detail::NormKind::batch
                                                             : detail::NormKind::classes;
    p.temperature = options.temperature();
    p.base_temperature = in.base_temperature;
    torch::Tensor z = features, mu = centroids;
    if (options.distance() == Distance::cosine) {
      // 1 - cos(z, mu) = 0.5 * ||z/|z| - mu/|mu|||^2: the kernels see normalised inputs.
      z = features / features.norm(2, 1, true).clamp_min(1e-12);
      mu = centroids / centroids.norm(2, 1, true).clamp_min(1e-12);
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
    return detail::FusedFunction::apply(z, mu, eps, in.labels, in.valid, rw, p);
  }
  return detail::reduce_loss_vector(l, in, options.normalization(), options.reduction(), C);
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
      TORCH_CHECK(options.class_counts().dim() == 1 && options.class_counts().size(0) == C,
                  "drolt::RobustCentroidLoss: expected class_counts of shape [", C, "], got ",
                  options.class_counts().sizes());
      TORCH_CHECK(!c10::isFloatingType(options.class_counts().scalar_type()) ||
                      options.class_counts().ge(0).all().item<bool>(),
                  "drolt::RobustCentroidLoss: expected class_counts >= 0");
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
    TORCH_CHECK(counts.dim() == 1 && counts.size(0) == C,
                "drolt::RobustCentroidLoss::set_class_counts: expected shape [", C, "], got ",
                counts.sizes());
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
