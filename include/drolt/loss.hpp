#pragma once
// RobustCentroidLoss: the DRO-LT loss (Samuel & Chechik, ICCV 2021), exactly as
// docs/math.md defines it.
//
//   functional::robust_centroid_loss(features, labels, centroids, radii, options)
//   RobustCentroidLoss loss(RobustCentroidLossOptions(C).temperature(0.1));
//   auto l = loss(features, labels, bank);
//
// Two implementations sit behind one API: a reference made of plain LibTorch
// ops with autograd (the oracle, detail/reference.hpp), and fused paths (a fast
// CPU path, detail/cpu_fused.hpp, and CUDA kernels, cuda/fused_kernels.cu) as
// one custom autograd function with the analytic backward
// (detail/fused_function.hpp). This file is the public API (its options are in
// drolt/loss_options.hpp); the definition of robust_centroid_loss, which picks
// between them, is at its end.
#include <torch/torch.h>

#include "drolt/centroid_bank.hpp"
#include "drolt/detail/checked_load.hpp"
#include "drolt/detail/floating_state.hpp"
#include "drolt/detail/fused_function.hpp"
#include "drolt/detail/loss_inputs.hpp"
#include "drolt/detail/reduction.hpp"
#include "drolt/detail/reference.hpp"
#include "drolt/detail/seen_tensor.hpp"
#include "drolt/loss_options.hpp"
#include "drolt/radius.hpp"
#include "drolt/types.hpp"

namespace drolt {
namespace functional {

/// The DRO-LT loss. features [B, D], labels [B] (integer), centroids [C, D],
/// radii [C] (the paper's epsilon). See RobustCentroidLossFuncOptions.
inline torch::Tensor robust_centroid_loss(const torch::Tensor& features,
                                          const torch::Tensor& labels,
                                          const torch::Tensor& centroids,
                                          const torch::Tensor& radii,
                                          const RobustCentroidLossFuncOptions& options = {});

}  // namespace functional

/// The DRO-LT loss as a module. It owns its radius policy: a learned radius is
/// the parameter "radii" (shows up in parameters() and in saved state; give it
/// to the feature extractor's optimizer), fixed radii are buffers.
class RobustCentroidLossImpl : public detail::FloatingStateModule<RobustCentroidLossImpl> {
 public:
  explicit RobustCentroidLossImpl(const RobustCentroidLossOptions& options) : options(options) {
    TORCH_CHECK(options.num_classes() > 0,
                "drolt::RobustCentroidLoss: expected num_classes > 0, got ", options.num_classes());
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
      detail::check_class_counts(options.class_counts(), C,
                                 "drolt::RobustCentroidLoss: class_counts");
      counts = options.class_counts().to(torch::kLong).cpu().clone();
    }
    class_counts_ = register_buffer("class_counts", counts);
    counts_seen_.forget();
    bank_seen_.forget();
    if (policy.kind() == RadiusPolicy::Kind::sqrt_n && has_counts()) refresh_fixed_radii();
  }

  /// Whether training-set class counts are known (given, set, or taken from a bank).
  /// Read from the counts only when they changed (they may live on a GPU: a
  /// host synchronisation per call otherwise).
  bool has_counts() const {
    if (!counts_seen_.same(class_counts_)) {
      known_ = class_counts_.sum().item<int64_t>() > 0;
      counts_seen_.remember(class_counts_);
    }
    return known_;
  }

  /// Sets the training-set class counts (sqrtn policy).
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

  /// Loss with centroids (and, for sqrtn without explicit counts, the class counts) from a bank.
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& labels,
                        const CentroidBank& bank) {
    TORCH_CHECK(bank->num_classes() == options.num_classes(),
                "drolt::RobustCentroidLoss: expected a CentroidBank with ", options.num_classes(),
                " classes, got ", bank->num_classes());
    use_bank_counts(bank);
    return compute(features, labels, bank->centroids().to(features.scalar_type()), bank->valid());
  }

  /// For sqrt-n radii without explicit counts: takes the class counts from the
  /// bank, as forward(features, labels, bank) does. Every method that computes
  /// with a bank's radii (forward, drolt::bound_tightness) calls it first.
  void use_bank_counts(const CentroidBank& bank) {
    if (options.radius().kind() == RadiusPolicy::Kind::sqrt_n &&
        !options.class_counts().defined()) {
      // No explicit training counts: the bank's counts (a full pass sees every
      // sample), copied and checked only when they changed since the last call:
      // another bank, or these counts written since (finalize, load, copy_).
      const auto& counts = bank->counts();
      if (!bank_seen_.same(counts)) {
        set_class_counts(counts.cpu());
        bank_seen_.remember(counts);
      }
    }
  }

  /// The radii forward uses: radii(), after checking that a sqrt-n policy has
  /// its class counts (never eps0 standing in for them).
  torch::Tensor forward_radii() const {
    TORCH_CHECK(options.radius().kind() != RadiusPolicy::Kind::sqrt_n || has_counts(),
                "drolt::RobustCentroidLoss: the sqrt-n policy needs the training-set class counts "
                "(RobustCentroidLossOptions::class_counts, set_class_counts, or a finalized "
                "CentroidBank passed to forward)");
    return radii();
  }

  /// Loss with explicit centroids [C, D] and an optional valid mask [C]. (Not an
  /// overload of forward(): ModuleHolder::operator() needs a single forward.)
  torch::Tensor compute(const torch::Tensor& features, const torch::Tensor& labels,
                        const torch::Tensor& centroids, const torch::Tensor& valid = {}) {
    return functional::robust_centroid_loss(features, labels, centroids, forward_radii(),
                                            func_options(valid));
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

  /// to(dtype) (detail/floating_state.hpp) converts only the radii: the class
  /// counts stay int64.
  static constexpr const char* kToName = "drolt::RobustCentroidLoss::to";
  void convert_floating_state(torch::Dtype dtype, bool non_blocking) {
    raw_radii_.set_data(raw_radii_.to(dtype, non_blocking));
  }

  /// Module::load that refuses an archive of another number of classes (the
  /// module is left as it was). torch::load calls it.
  void load(torch::serialize::InputArchive& archive) override {
    const int64_t C = options.num_classes();
    detail::checked_load(*this, {{"radii", {C}, c10::nullopt}, {"class_counts", {C}, torch::kLong}},
                         "drolt::RobustCentroidLoss", [&] { torch::nn::Module::load(archive); });
    counts_seen_.forget();  // the archive's counts: neither cache holds any more
    bank_seen_.forget();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::RobustCentroidLoss(num_classes=" << options.num_classes()
           << ", temperature=" << options.temperature() << ", radius=" << options.radius().name()
           << "(" << options.radius().eps0()
           << "), normalization=" << to_string(options.normalization())
           << ", distance=" << to_string(options.distance()) << ")";
  }

  RobustCentroidLossOptions options;

 private:
  void refresh_fixed_radii() {
    torch::NoGradGuard g;
    raw_radii_.copy_(options.radius().fixed_radii(options.num_classes(), class_counts_,
                                                  raw_radii_.options().device(torch::kCPU)));
  }
  torch::Tensor raw_radii_, class_counts_;
  // has_counts() as of the class_counts_ counts_seen_ remembers.
  mutable bool known_ = false;
  mutable detail::SeenTensor counts_seen_;
  // The bank counts forward() last copied into class_counts_.
  detail::SeenTensor bank_seen_;
};

TORCH_MODULE(RobustCentroidLoss);

}  // namespace drolt

// ------------------------------------------------------------------ implementation
namespace drolt {
namespace functional {

inline torch::Tensor robust_centroid_loss(const torch::Tensor& features,
                                          const torch::Tensor& labels,
                                          const torch::Tensor& centroids,
                                          const torch::Tensor& radii,
                                          const RobustCentroidLossFuncOptions& options) {
  auto in = detail::check_inputs(features, labels, centroids, radii, options);
  const int64_t C = centroids.size(0);
  bool fused = false;
  switch (options.backend()) {
    case Backend::reference:
      break;
    case Backend::fused:
      DROLT_CHECK(detail::fused_available(features), detail::kLossFn,
                  "the fused backend does not support ", features.device(), " tensors of dtype ",
                  features.scalar_type(),
                  features.is_cuda() ? " (no CUDA kernels registered: link drolt::cuda)"
                                     : " (CPU: float32 or float64)");
      fused = true;
      break;
    case Backend::automatic:
      fused = detail::fused_available(features);
      if (!fused && features.is_cuda()) detail::warn_cuda_fallback_once();
      break;
  }
  // The reduction, the same for both paths: the reduced loss is sum_k v[k] l[k]
  // (detail/reduction.hpp); v is empty for reduction none (an undefined tensor
  // cannot be a Function input in LibTorch 1.13).
  const auto red = torch::enumtype::reduction_get_enum(options.reduction());
  const auto opts = torch::TensorOptions().dtype(in.compute_dtype).device(features.device());
  const torch::Tensor v =
      red == at::Reduction::None
          ? torch::empty({0}, opts)
          : detail::reduction_weights(in, options.normalization(), red, C, opts);
  torch::Tensor l;
  if (!fused) {
    l = detail::reference_loss_vector(features, centroids, radii, in, options);
    if (red != at::Reduction::None) l = detail::weighted_sum(v, l);
  } else {
    detail::FusedParams p;
    p.norm = options.normalization();
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
      p.dist = Distance::squared_euclidean;
      p.dist_scale = 0.5;
    } else {
      p.dist = options.distance();
    }
    p.centroid_grad = mu.requires_grad() && torch::GradMode::is_enabled();
    // Class weights and the reduction happen inside the fused function.
    l = detail::FusedFunction::apply(z, mu, radii.to(in.compute_dtype), in.labels, in.valid, v, p);
  }
  // Finite in, finite out, or an error: on the CPU always (a look at the C or
  // B loss values, no synchronisation), on CUDA with check_finite (docs/math.md).
  if (options.check_finite() || features.is_cpu())
    detail::check_finite_result(l, features, centroids, in, options.temperature(),
                                options.check_finite());
  return l;
}

}  // namespace functional
}  // namespace drolt
