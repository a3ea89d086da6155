// drolt's operators in PyTorch's operator registry (torch.ops.drolt.* from
// Python, TorchScript and torch::Dispatcher): the loss and the centroid bank's
// accumulate / finalize, computed by the header API (include/drolt), which
// stays the primary C++ interface. Built by python/setup.py into the package
// drolt (docs/python.md).
//
//   robust_centroid_loss           CPU / CUDA: the header's functional::robust_centroid_loss
//                                  (fused path, or the reference with backend="reference").
//                                  Autograd: see below. Meta (torch < 2.4; from 2.4 the fake
//                                  kernel is registered from Python, drolt/_ops.py).
//   robust_centroid_loss_backward  its gradients (features, centroids, radii, class
//                                  weights), for the traced autograd path below
//   bank_accumulate_, bank_finalize_  CentroidBank::accumulate / finalize on the
//                                  bank's buffers (in place)
//   metrics_*, data_*              drolt::metrics and drolt::data (the package's
//                                  drolt.metrics and drolt.data)
//   focal_loss, ldam_loss, ...     the long-tail baselines (drolt/longtail_losses.hpp,
//                                  posthoc.hpp, weight_balancing.hpp): compositions of
//                                  tensor ops, registered CompositeImplicitAutograd
//   _header_loss_and_grads, _bench_header_loss  the header API called directly,
//                                  for python/tests and python/bench.py
//
// The Autograd kernel, in C++ so that the op differentiates the same from every
// front end, has two paths with the same analytic gradients:
//  - plain CPU / CUDA tensors (eager use): it calls the header function, whose
//    fused autograd function keeps the kernels' saved state (no recomputation)
//    and supports second derivatives;
//  - tensors seen by a tracer (FakeTensor, functionalisation, any Python
//    dispatch mode: torch.compile, torch.library.opcheck): TracedLoss, an
//    autograd function whose forward is the op below autograd and whose backward
//    is robust_centroid_loss_backward, so the graph holds two opaque operators
//    with meta kernels. Its backward recomputes the forward (the kernels' saved
//    state has a data-dependent size); it is not differentiable again.
//
// No Python bindings: the library is loaded with torch.ops.load_library, so
// torch/torch.h must not pull in torch/extension.h (pybind11), which
// torch.utils.cpp_extension asks for with this macro.
#undef TORCH_API_INCLUDE_EXTENSION_H
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <array>
#include <chrono>
#include <string>
#include <tuple>
#include <vector>

#include "drolt/centroid_bank.hpp"
#include "drolt/data/longtail.hpp"
#include "drolt/data/samplers.hpp"
#include "drolt/detail/checks.hpp"
#include "drolt/longtail_losses.hpp"
#include "drolt/loss.hpp"
#include "drolt/metrics.hpp"
#include "drolt/posthoc.hpp"
#include "drolt/weight_balancing.hpp"

#if TORCH_VERSION_MAJOR < 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 4)
#define DROLT_OPS_CPP_META 1
#else
#define DROLT_OPS_CPP_META 0
#endif

namespace drolt {
namespace ops {
namespace {

using torch::Tensor;
using OptTensor = c10::optional<Tensor>;
using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor>;

constexpr const char* kOp = "drolt::robust_centroid_loss";

std::string str(c10::string_view s) { return std::string(s.data(), s.size()); }

Normalization parse_normalization(c10::string_view s) {
  if (s == "batch") return Normalization::batch;
  if (s == "classes") return Normalization::classes;
  DROLT_CHECK(false, kOp, "expected normalization 'batch' or 'classes', got '", str(s), "'");
  return Normalization::batch;
}

Distance parse_distance(c10::string_view s) {
  if (s == "euclidean") return Distance::euclidean;
  if (s == "squared_euclidean") return Distance::squared_euclidean;
  if (s == "cosine") return Distance::cosine;
  DROLT_CHECK(false, kOp, "expected distance 'euclidean', 'squared_euclidean' or 'cosine', got '",
              str(s), "'");
  return Distance::euclidean;
}

LossReduction parse_reduction(c10::string_view s) {
  if (s == "mean") return torch::kMean;
  if (s == "sum") return torch::kSum;
  if (s == "none") return torch::kNone;
  DROLT_CHECK(false, kOp, "expected reduction 'mean', 'sum' or 'none', got '", str(s), "'");
  return torch::kMean;
}

Backend parse_backend(c10::string_view s) {
  if (s == "auto") return Backend::automatic;
  if (s == "reference") return Backend::reference;
  if (s == "fused") return Backend::fused;
  DROLT_CHECK(false, kOp, "expected backend 'auto', 'fused' or 'reference', got '", str(s), "'");
  return Backend::automatic;
}

/// The loss's scalar arguments, as the schema lists them after the tensors.
struct Scalars {
  double temperature;
  c10::optional<double> base_temperature;
  std::string normalization, distance, reduction, backend;
  bool validate_values, check_finite;
};

functional::RobustCentroidLossFuncOptions func_options(const Tensor& class_weights,
                                                       const Tensor& valid, const Scalars& s) {
  return functional::RobustCentroidLossFuncOptions()
      .temperature(s.temperature)
      .base_temperature(s.base_temperature)
      .class_weights(class_weights)
      .valid(valid)
      .normalization(parse_normalization(s.normalization))
      .distance(parse_distance(s.distance))
      .reduction(parse_reduction(s.reduction))
      .backend(parse_backend(s.backend))
      .validate_values(s.validate_values)
      .check_finite(s.check_finite);
}

Tensor or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }

/// The header function on these arguments (differentiable, as the header is).
Tensor header_loss(const Tensor& features, const Tensor& labels, const Tensor& centroids,
                   const Tensor& radii, const Tensor& class_weights, const Tensor& valid,
                   const Scalars& s) {
  return functional::robust_centroid_loss(features, labels, centroids, radii,
                                          func_options(class_weights, valid, s));
}

#define DROLT_LOSS_PARAMS                                                                       \
  const Tensor &features, const Tensor &labels, const Tensor &centroids, const Tensor &radii,   \
      const OptTensor &class_weights, const OptTensor &valid, double temperature,               \
      c10::optional<double> base_temperature, c10::string_view normalization,                   \
      c10::string_view distance, c10::string_view reduction, c10::string_view backend,          \
      bool validate_values, bool check_finite
#define DROLT_LOSS_SCALARS                                                                      \
  Scalars {                                                                                     \
    temperature, base_temperature, str(normalization), str(distance), str(reduction),           \
        str(backend), validate_values, check_finite                                             \
  }

// ------------------------------------------------------------------ CPU / CUDA kernels

/// The loss value (below autograd: no graph is recorded).
Tensor loss_kernel(DROLT_LOSS_PARAMS) {
  torch::NoGradGuard no_grad;
  return header_loss(features, labels, centroids, radii, or_undefined(class_weights),
                     or_undefined(valid), DROLT_LOSS_SCALARS);
}

/// Re-enables autograd inside a kernel reached below the Autograd key (the
/// dispatcher then excludes the autograd keys from the thread's dispatch set),
/// so that the header's autograd function can compute the gradients.
struct AutogradInsideKernel {
  AutogradInsideKernel() : saved_(c10::impl::tls_local_dispatch_key_set()), grad_mode_(true) {
    auto now = saved_;
    now.excluded_ = now.excluded_ - c10::autograd_dispatch_keyset_with_ADInplaceOrView;
    c10::impl::_force_tls_local_dispatch_key_set(now);
  }
  ~AutogradInsideKernel() { c10::impl::_force_tls_local_dispatch_key_set(saved_); }
  AutogradInsideKernel(const AutogradInsideKernel&) = delete;
  AutogradInsideKernel& operator=(const AutogradInsideKernel&) = delete;

 private:
  c10::impl::LocalDispatchKeySet saved_;
  torch::AutoGradMode grad_mode_;
};

/// Gradients of sum(grad * loss) for the inputs output_mask asks for (features,
/// centroids, radii, class weights); zeros for the others, and an empty tensor
/// for absent class weights.
Grads loss_backward_kernel(const Tensor& grad, DROLT_LOSS_PARAMS,
                           std::array<bool, 4> output_mask) {
  AutogradInsideKernel autograd_on;
  const Tensor w = or_undefined(class_weights);
  std::array<Tensor, 4> in = {features.detach(), centroids.detach(), radii.detach(),
                              w.defined() ? w.detach() : Tensor()};
  std::vector<Tensor> wanted;
  for (size_t k = 0; k < in.size(); ++k) {
    if (output_mask[k] && in[k].defined()) {
      in[k].requires_grad_(true);
      wanted.push_back(in[k]);
    }
  }
  std::array<Tensor, 4> out;
  if (!wanted.empty()) {
    auto loss = header_loss(in[0], labels, in[1], in[2], in[3], or_undefined(valid),
                            DROLT_LOSS_SCALARS);
    auto g = torch::autograd::grad({loss}, wanted, {grad}, /*retain_graph=*/false,
                                   /*create_graph=*/false, /*allow_unused=*/true);
    size_t j = 0;
    for (size_t k = 0; k < in.size(); ++k)
      if (output_mask[k] && in[k].defined()) out[k] = g[j++];
  }
  for (size_t k = 0; k < 3; ++k)
    if (!out[k].defined()) out[k] = torch::zeros_like(in[k]);
  if (!w.defined())
    out[3] = torch::empty({0}, radii.options());
  else if (!out[3].defined())
    out[3] = torch::zeros_like(w);
  return {out[0], out[1], out[2], out[3]};
}

// ------------------------------------------------------------------ meta kernels

#if DROLT_OPS_CPP_META
/// Shapes and dtypes only (the checks that need values run on the real call).
Tensor loss_meta(DROLT_LOSS_PARAMS) {
  const auto dt = features.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  const auto o = features.options().dtype(dt);
  if (parse_reduction(reduction).index() != LossReduction(torch::kNone).index())
    return torch::empty({}, o);
  const bool batch = parse_normalization(normalization) == Normalization::batch;
  return torch::empty({batch ? centroids.size(0) : features.size(0)}, o);
}

Grads loss_backward_meta(const Tensor& /*grad*/, DROLT_LOSS_PARAMS,
                         std::array<bool, 4> /*output_mask*/) {
  const Tensor w = or_undefined(class_weights);
  return {torch::empty_like(features), torch::empty_like(centroids), torch::empty_like(radii),
          w.defined() ? torch::empty_like(w) : torch::empty({0}, radii.options())};
}
#endif

// ------------------------------------------------------------------ autograd

const c10::TypedOperatorHandle<Tensor(DROLT_LOSS_PARAMS)>& loss_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("drolt::robust_centroid_loss", "")
                             .typed<Tensor(DROLT_LOSS_PARAMS)>();
  return op;
}

const c10::TypedOperatorHandle<Grads(const Tensor&, DROLT_LOSS_PARAMS, std::array<bool, 4>)>&
loss_backward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("drolt::robust_centroid_loss_backward", "")
          .typed<Grads(const Tensor&, DROLT_LOSS_PARAMS, std::array<bool, 4>)>();
  return op;
}

/// The traced path's autograd function: forward and backward are operators.
struct TracedLoss : public torch::autograd::Function<TracedLoss> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& features,
                        const Tensor& labels, const Tensor& centroids, const Tensor& radii,
                        const OptTensor& class_weights, const OptTensor& valid, Scalars s) {
    Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      out = loss_op().call(features, labels, centroids, radii, class_weights, valid,
                           s.temperature, s.base_temperature, s.normalization, s.distance,
                           s.reduction, s.backend, s.validate_values, s.check_finite);
    }
    ctx->save_for_backward(
        {features, labels, centroids, radii, or_undefined(class_weights), or_undefined(valid)});
    ctx->saved_data["temperature"] = s.temperature;
    ctx->saved_data["base_temperature"] = s.base_temperature;
    ctx->saved_data["strings"] =
        std::vector<std::string>{s.normalization, s.distance, s.reduction, s.backend};
    ctx->saved_data["validate_values"] = s.validate_values;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto v = ctx->get_saved_variables();
    const auto strings = ctx->saved_data["strings"].toList();
    auto text = [&](size_t k) { return strings.get(k).toStringRef(); };
    const OptTensor w = v[4].defined() ? OptTensor(v[4]) : OptTensor();
    const OptTensor valid = v[5].defined() ? OptTensor(v[5]) : OptTensor();
    // Without a reduction the class weights are not used: no gradient (as on
    // the eager path, where autograd leaves it undefined).
    const std::array<bool, 4> mask = {
        ctx->needs_input_grad(0), ctx->needs_input_grad(2), ctx->needs_input_grad(3),
        w.has_value() && ctx->needs_input_grad(4) && text(2) != "none"};
    const auto b = ctx->saved_data["base_temperature"];
    auto g = loss_backward_op().call(
        grads[0], v[0], v[1], v[2], v[3], w, valid, ctx->saved_data["temperature"].toDouble(),
        b.isNone() ? c10::optional<double>() : c10::optional<double>(b.toDouble()), text(0),
        text(1), text(2), text(3), ctx->saved_data["validate_values"].toBool(),
        /*check_finite=*/false, mask);
    torch::autograd::variable_list out(7);
    if (mask[0]) out[0] = std::get<0>(g);
    if (mask[1]) out[2] = std::get<1>(g);
    if (mask[2]) out[3] = std::get<2>(g);
    if (mask[3]) out[4] = std::get<3>(g);
    return out;
  }
};

/// Whether a tensor is an ordinary tensor (not a FakeTensor, a functional or
/// batched wrapper, a Python subclass).
bool plain(const Tensor& t) {
  if (!t.defined()) return true;
  const auto ks = t.key_set();
  for (auto k : {c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                 c10::DispatchKey::Functionalize, c10::DispatchKey::FuncTorchBatched,
                 c10::DispatchKey::FuncTorchGradWrapper})
    if (ks.has(k)) return false;
  return true;
}

Tensor loss_autograd(DROLT_LOSS_PARAMS) {
  // Inputs on mixed devices take the eager path too: the header's checks name them.
  const bool eager = !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::Python) &&
                     (features.is_cpu() || features.is_cuda()) && plain(features) && plain(labels) && plain(centroids) && plain(radii) &&
                     plain(or_undefined(class_weights)) && plain(or_undefined(valid));
  if (eager)
    return header_loss(features, labels, centroids, radii, or_undefined(class_weights),
                       or_undefined(valid), DROLT_LOSS_SCALARS);
  return TracedLoss::apply(features, labels, centroids, radii, class_weights, valid,
                           DROLT_LOSS_SCALARS);
}

// ------------------------------------------------------------------ the bank

void bank_accumulate(Tensor& sums, Tensor& pending_counts, const Tensor& features,
                     const Tensor& labels) {
  torch::NoGradGuard no_grad;
  auto y = detail::bank_check_batch(features, labels, sums.size(0), sums.size(1), sums.device(),
                                    "accumulate");
  detail::bank_accumulate(sums, pending_counts, y, features);
}

void bank_finalize(Tensor& sums, Tensor& pending_counts, Tensor& centroids, Tensor& counts,
                   Tensor& valid, Tensor& ema) {
  torch::NoGradGuard no_grad;
  detail::bank_finalize(sums, pending_counts, centroids, counts, valid, ema);
}

// ------------------------------------------------------------------ metrics and data

/// [many, medium, few, overall, class_mean] of metrics::split_accuracy.
std::vector<double> split_accuracy(const Tensor& predictions, const Tensor& targets,
                                   std::vector<int64_t> train_counts, int64_t many_above,
                                   int64_t few_below) {
  metrics::SplitThresholds th;
  th.many_above = many_above;
  th.few_below = few_below;
  const auto a = metrics::split_accuracy(predictions, targets, train_counts, th);
  return {a.many, a.medium, a.few, a.overall, a.class_mean};
}

Tensor nearest_centroid_predict(const Tensor& features, const Tensor& centroids,
                                const OptTensor& valid, c10::string_view similarity) {
  return metrics::nearest_centroid_predict(features, centroids, or_undefined(valid),
                                           parse_distance(similarity));
}

double nearest_centroid_accuracy(const Tensor& features, const Tensor& targets,
                                 const Tensor& centroids, const OptTensor& valid,
                                 c10::string_view similarity) {
  return metrics::nearest_centroid_accuracy(features, targets, centroids, or_undefined(valid),
                                            parse_distance(similarity));
}

data::Profile parse_profile(c10::string_view s) {
  if (s == "exp") return data::Profile::exp;
  if (s == "step") return data::Profile::step;
  DROLT_CHECK(false, "drolt::data", "expected profile 'exp' or 'step', got '", str(s), "'");
  return data::Profile::exp;
}

std::vector<int64_t> longtail_counts(int64_t n_max, int64_t num_classes, double rho,
                                     c10::string_view profile) {
  return data::longtail_counts(n_max, num_classes, rho, parse_profile(profile));
}

/// The kept dataset indices of data::make_longtail (grouped by class).
Tensor make_longtail(const Tensor& targets, int64_t num_classes, int64_t n_max, double rho,
                     c10::string_view profile, int64_t seed) {
  auto sub = data::make_longtail(targets, num_classes, n_max, rho, parse_profile(profile),
                                 static_cast<uint64_t>(seed));
  return torch::tensor(sub.indices, torch::kLong);
}

/// The indices of epoch `epoch` of a sampler built from (targets, seed,
/// num_samples): the C++ sampler replayed from its first epoch, so that a
/// Python Sampler holding only these arguments (and so picklable) draws the
/// same stream as the C++ one. kind: "class_balanced", "sqrt" or "class_aware"
/// (k images per class in turn).
Tensor sampler_epoch(c10::string_view kind, const Tensor& targets, int64_t seed,
                     int64_t num_samples, int64_t k, int64_t epoch) {
  DROLT_CHECK(epoch >= 0, "drolt::data::sampler_epoch", "expected epoch >= 0, got ", epoch);
  const auto o = data::ClassSamplerOptions().seed(static_cast<uint64_t>(seed)).num_samples(
      num_samples);
  auto draw = [&](torch::data::samplers::Sampler<>& s) {
    for (int64_t e = 0; e <= epoch; ++e) s.reset(c10::nullopt);
    std::vector<int64_t> out;
    while (auto batch = s.next(4096))
      for (size_t i : *batch) out.push_back(static_cast<int64_t>(i));
    return torch::tensor(out, torch::kLong);
  };
  if (kind == "class_balanced") {
    data::ClassBalancedSampler s(targets, o);
    return draw(s);
  }
  if (kind == "sqrt") {
    data::SqrtSampler s(targets, o);
    return draw(s);
  }
  DROLT_CHECK(kind == "class_aware", "drolt::data::sampler_epoch",
              "expected kind 'class_balanced', 'sqrt' or 'class_aware', got '", str(kind), "'");
  data::ClassAwareSampler s(targets, k, o);
  return draw(s);
}

// ------------------------------------------------------------------ long-tail baselines

/// The classification losses' reduction, as the C++ options spell it.
functional::ClassificationReduction classification_reduction(c10::string_view s) {
  if (s == "mean") return torch::kMean;
  if (s == "sum") return torch::kSum;
  if (s == "none") return torch::kNone;
  DROLT_CHECK(false, "drolt", "expected reduction 'mean', 'sum' or 'none', got '", str(s), "'");
  return torch::kMean;
}

Tensor focal_loss(const Tensor& logits, const Tensor& targets, double gamma,
                  const OptTensor& weight, c10::string_view reduction, bool validate_values) {
  return functional::focal_loss(logits, targets,
                                functional::FocalLossFuncOptions()
                                    .gamma(gamma)
                                    .weight(or_undefined(weight))
                                    .reduction(classification_reduction(reduction))
                                    .validate_values(validate_values));
}

Tensor ldam_loss(const Tensor& logits, const Tensor& targets, const Tensor& margins, double scale,
                 const OptTensor& weight, c10::string_view reduction, bool validate_values) {
  return functional::ldam_loss(logits, targets, margins,
                               functional::LDAMLossFuncOptions()
                                   .scale(scale)
                                   .weight(or_undefined(weight))
                                   .reduction(classification_reduction(reduction))
                                   .validate_values(validate_values));
}

Tensor logit_adjusted_loss(const Tensor& logits, const Tensor& targets, const Tensor& log_prior,
                           double tau, const OptTensor& weight, c10::string_view reduction,
                           bool validate_values) {
  return functional::logit_adjusted_loss(logits, targets, log_prior,
                                         functional::LogitAdjustedLossFuncOptions()
                                             .tau(tau)
                                             .weight(or_undefined(weight))
                                             .reduction(classification_reduction(reduction))
                                             .validate_values(validate_values));
}

/// drw_class_weights: an empty tensor before start_epoch (no weights).
Tensor drw_class_weights(std::vector<int64_t> counts, int64_t epoch, int64_t start_epoch,
                         double beta) {
  auto w = drolt::drw_class_weights(counts, epoch, start_epoch, beta);
  return w.defined() ? w : torch::empty({0});
}

Tensor nearest_class_mean(const Tensor& features, const Tensor& centroids, const OptTensor& valid) {
  return functional::nearest_class_mean(features, centroids, or_undefined(valid));
}

void max_norm(Tensor& weight, const Tensor& thresholds) { drolt::max_norm_(weight, thresholds); }

// ------------------------------------------------------------------ test helper

/// The header API called directly, for python/tests (bitwise equality with the
/// op): loss and the gradients of loss.sum() for features, centroids, radii and
/// the class weights (an empty tensor when there are none), then the loss
/// computed without a graph (with class weights that require grad, the header
/// composes the reduction weights from tensor ops, which can round the last
/// bit differently from its loops). Options are built
/// from integers (the enums' values), independently of the op's string parsing.
std::vector<Tensor> header_loss_and_grads(const Tensor& features, const Tensor& labels,
                                          const Tensor& centroids, const Tensor& radii,
                                          const OptTensor& class_weights, const OptTensor& valid,
                                          double temperature,
                                          c10::optional<double> base_temperature,
                                          int64_t normalization, int64_t distance,
                                          int64_t reduction, int64_t backend) {
  torch::AutoGradMode grad_on(true);
  auto z = features.detach().requires_grad_(true);
  auto mu = centroids.detach().requires_grad_(true);
  auto eps = radii.detach().requires_grad_(true);
  auto w = class_weights.has_value() ? class_weights->detach().requires_grad_(true) : Tensor();
  functional::RobustCentroidLossFuncOptions o;
  o.temperature(temperature).base_temperature(base_temperature).class_weights(w);
  if (valid.has_value()) o.valid(*valid);
  o.normalization(static_cast<Normalization>(normalization));
  o.distance(static_cast<Distance>(distance));
  if (reduction == 0) o.reduction(torch::kNone);
  if (reduction == 2) o.reduction(torch::kSum);
  o.backend(static_cast<Backend>(backend));
  auto loss = functional::robust_centroid_loss(z, labels, mu, eps, o);
  std::vector<Tensor> inputs{z, mu, eps};
  if (w.defined()) inputs.push_back(w);
  auto g = torch::autograd::grad({loss.sum()}, inputs, {}, false, false, true);
  for (size_t k = 0; k < g.size(); ++k)
    if (!g[k].defined()) g[k] = torch::zeros_like(inputs[k]);
  torch::Tensor no_graph;
  {
    torch::NoGradGuard no_grad;
    no_graph = functional::robust_centroid_loss(z, labels, mu, eps, o);
  }
  return {loss.detach(), g[0], g[1], g[2], w.defined() ? g[3] : torch::empty({0}), no_graph};
}

/// Seconds of each of `iters` forward + backward calls of the header API
/// (features and radii get gradients, centroids are constant; docs/math.md's
/// defaults), timed in C++ after `warmup` calls: python/bench.py's "header API"
/// column (its median), against which the operator's own overhead is measured.
std::vector<double> bench_header_loss(const Tensor& features, const Tensor& labels,
                                      const Tensor& centroids, const Tensor& radii,
                                      int64_t warmup, int64_t iters) {
  torch::AutoGradMode grad_on(true);
  auto z = features.detach().requires_grad_(true);
  auto eps = radii.detach().requires_grad_(true);
  auto once = [&] {
    functional::robust_centroid_loss(z, labels, centroids, eps).backward();
    z.mutable_grad().reset();
    eps.mutable_grad().reset();
  };
  for (int64_t k = 0; k < warmup; ++k) once();
  std::vector<double> seconds;
  for (int64_t k = 0; k < iters; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    seconds.push_back(dt.count());
  }
  return seconds;
}

}  // namespace
}  // namespace ops
}  // namespace drolt

TORCH_LIBRARY(drolt, m) {
  m.def(
      "robust_centroid_loss(Tensor features, Tensor labels, Tensor centroids, Tensor radii, "
      "Tensor? class_weights=None, Tensor? valid=None, float temperature=1.0, "
      "float? base_temperature=None, str normalization=\"batch\", str distance=\"euclidean\", "
      "str reduction=\"mean\", str backend=\"auto\", bool validate_values=True, "
      "bool check_finite=False) -> Tensor");
  m.def(
      "robust_centroid_loss_backward(Tensor grad, Tensor features, Tensor labels, "
      "Tensor centroids, Tensor radii, Tensor? class_weights, Tensor? valid, float temperature, "
      "float? base_temperature, str normalization, str distance, str reduction, str backend, "
      "bool validate_values, bool check_finite, bool[4] output_mask) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "bank_accumulate_(Tensor(a!) sums, Tensor(b!) pending_counts, Tensor features, "
      "Tensor labels) -> ()",
      &drolt::ops::bank_accumulate);
  m.def(
      "bank_finalize_(Tensor(a!) sums, Tensor(b!) pending_counts, Tensor(c!) centroids, "
      "Tensor(d!) counts, Tensor(e!) valid, Tensor(f!) ema) -> ()",
      &drolt::ops::bank_finalize);
  m.def(
      "metrics_split_accuracy(Tensor predictions, Tensor targets, int[] train_counts, "
      "int many_above=100, int few_below=20) -> float[]",
      &drolt::ops::split_accuracy);
  m.def("metrics_expected_calibration_error(Tensor probabilities, Tensor targets, int bins=15) "
        "-> float",
        [](const torch::Tensor& p, const torch::Tensor& t, int64_t bins) {
          return drolt::metrics::expected_calibration_error(p, t, bins);
        });
  m.def(
      "metrics_nearest_centroid_predict(Tensor features, Tensor centroids, Tensor? valid=None, "
      "str similarity=\"euclidean\") -> Tensor",
      &drolt::ops::nearest_centroid_predict);
  m.def(
      "metrics_nearest_centroid_accuracy(Tensor features, Tensor targets, Tensor centroids, "
      "Tensor? valid=None, str similarity=\"euclidean\") -> float",
      &drolt::ops::nearest_centroid_accuracy);
  m.def(
      "data_longtail_counts(int n_max, int num_classes, float imbalance_ratio, "
      "str profile=\"exp\") -> int[]",
      &drolt::ops::longtail_counts);
  m.def(
      "data_make_longtail(Tensor targets, int num_classes, int n_max, float imbalance_ratio, "
      "str profile=\"exp\", int seed=0) -> Tensor",
      &drolt::ops::make_longtail);
  m.def(
      "data_sampler_epoch(str kind, Tensor targets, int seed, int num_samples, int k, "
      "int epoch) -> Tensor",
      &drolt::ops::sampler_epoch);
  m.def(
      "focal_loss(Tensor logits, Tensor targets, float gamma=1.0, Tensor? weight=None, "
      "str reduction=\"mean\", bool validate_values=True) -> Tensor",
      &drolt::ops::focal_loss);
  m.def(
      "ldam_loss(Tensor logits, Tensor targets, Tensor margins, float scale=30.0, "
      "Tensor? weight=None, str reduction=\"mean\", bool validate_values=True) -> Tensor",
      &drolt::ops::ldam_loss);
  m.def(
      "logit_adjusted_loss(Tensor logits, Tensor targets, Tensor log_prior, float tau=1.0, "
      "Tensor? weight=None, str reduction=\"mean\", bool validate_values=True) -> Tensor",
      &drolt::ops::logit_adjusted_loss);
  m.def("ldam_margins(int[] counts, float max_margin=0.5) -> Tensor",
        [](std::vector<int64_t> counts, double m) { return drolt::ldam_margins(counts, m); });
  m.def(
      "drw_class_weights(int[] counts, int epoch, int start_epoch, float beta=0.9999) -> Tensor",
      &drolt::ops::drw_class_weights);
  m.def("log_class_prior(int[] counts) -> Tensor",
        [](std::vector<int64_t> counts) { return drolt::log_class_prior(counts); });
  m.def("logit_adjust(Tensor logits, int[] counts, float tau=1.0) -> Tensor",
        [](const torch::Tensor& logits, std::vector<int64_t> counts, double tau) {
          return drolt::logit_adjust(logits, counts, tau);
        });
  m.def("tau_normalize(Tensor weight, float tau) -> Tensor",
        [](const torch::Tensor& w, double tau) { return drolt::tau_normalize(w, tau); });
  m.def("nearest_class_mean(Tensor features, Tensor centroids, Tensor? valid=None) -> Tensor",
        &drolt::ops::nearest_class_mean);
  m.def("max_norm_(Tensor(a!) weight, Tensor thresholds) -> ()", &drolt::ops::max_norm);
  m.def(
      "_header_loss_and_grads(Tensor features, Tensor labels, Tensor centroids, Tensor radii, "
      "Tensor? class_weights, Tensor? valid, float temperature, float? base_temperature, "
      "int normalization, int distance, int reduction, int backend) -> Tensor[]",
      &drolt::ops::header_loss_and_grads);
  m.def(
      "_bench_header_loss(Tensor features, Tensor labels, Tensor centroids, Tensor radii, "
      "int warmup, int iters) -> float[]",
      &drolt::ops::bench_header_loss);
}

TORCH_LIBRARY_IMPL(drolt, CPU, m) {
  m.impl("robust_centroid_loss", &drolt::ops::loss_kernel);
  m.impl("robust_centroid_loss_backward", &drolt::ops::loss_backward_kernel);
}

TORCH_LIBRARY_IMPL(drolt, CUDA, m) {
  m.impl("robust_centroid_loss", &drolt::ops::loss_kernel);
  m.impl("robust_centroid_loss_backward", &drolt::ops::loss_backward_kernel);
}

TORCH_LIBRARY_IMPL(drolt, Autograd, m) {
  m.impl("robust_centroid_loss", &drolt::ops::loss_autograd);
}

#if DROLT_OPS_CPP_META
TORCH_LIBRARY_IMPL(drolt, Meta, m) {
  m.impl("robust_centroid_loss", &drolt::ops::loss_meta);
  m.impl("robust_centroid_loss_backward", &drolt::ops::loss_backward_meta);
}
#endif
