#pragma once
// Radius policies: how the robustness radius eps_c of each class is chosen
// (docs/math.md, "Radius policies").
//
// A policy is a small value type rather than a template parameter: trainers pick
// the policy from a command line or a config file at run time, and a value type
// lets one RobustCentroidLoss type (and one checkpoint format) serve all three.
#include <torch/torch.h>

#include <cmath>
#include <string>

namespace drolt {
namespace detail {

/// Training-set class counts: [C], integer (or integral-valued floating), >= 0.
/// A negative or NaN count would otherwise silently give its class eps0.
inline void check_class_counts(const torch::Tensor& counts, int64_t num_classes, const char* fn) {
  TORCH_CHECK(counts.defined(), fn, ": expected class counts of shape [", num_classes, "], got an undefined tensor");
  TORCH_CHECK(counts.dim() == 1 && counts.size(0) == num_classes, fn,
              ": expected class counts of shape [", num_classes, "], got ", counts.sizes());
  TORCH_CHECK(counts.scalar_type() != torch::kBool && !c10::isComplexType(counts.scalar_type()), fn,
              ": expected integer class counts, got ", counts.scalar_type());
  if (counts.numel() == 0) return;
  if (!c10::isFloatingType(counts.scalar_type())) {  // the common case: a plain loop
    auto ci = counts.detach().to(torch::kCPU, torch::kLong).contiguous();
    const int64_t* p = ci.data_ptr<int64_t>();
    int64_t lo = p[0];
    for (int64_t i = 1; i < ci.numel(); ++i) lo = p[i] < lo ? p[i] : lo;
    TORCH_CHECK(lo >= 0, fn, ": expected class counts >= 0, got a count of ", lo);
    return;
  }
  auto c = counts.detach().to(torch::kCPU, torch::kDouble);
  TORCH_CHECK(torch::isfinite(c).all().item<bool>(), fn,
              ": expected finite class counts, got a NaN or Inf count");
  const double lo = c.min().item<double>();
  TORCH_CHECK(lo >= 0, fn, ": expected class counts >= 0, got a count of ", lo);
  TORCH_CHECK(c.eq(c.round()).all().item<bool>(), fn,
              ": expected whole-number class counts, got a fractional count");
}

}  // namespace detail

class RadiusPolicy {
 public:
  enum class Kind { shared, sqrt_n, learned };

  /// eps_c = eps0 for every class. shared(0) is the paper's "ERM" row (no margin).
  static RadiusPolicy shared(double eps0) { return RadiusPolicy(Kind::shared, eps0); }
  /// eps_c = eps0 / sqrt(n_c), n_c the training-set count of class c.
  static RadiusPolicy sqrt_n(double eps0) { return RadiusPolicy(Kind::sqrt_n, eps0); }
  /// One trainable radius per class, initialised to eps0 and kept non-negative:
  /// the effective radius is max(raw, 0), whose gradient equals the paper's
  /// while the radius is positive, so SGD behaves exactly as in the reference
  /// recipe and a radius that would cross zero stays at zero.
  static RadiusPolicy learned(double eps0) { return RadiusPolicy(Kind::learned, eps0); }

  /// Parses "erm" (shared, eps0 = 0), "shared", "sqrtn" (also "sqrt_n", "sqrt-n"), "learned".
  static RadiusPolicy parse(const std::string& name, double eps0) {
    if (name == "erm") return shared(0.0);
    if (name == "shared") return shared(eps0);
    if (name == "sqrtn" || name == "sqrt_n" || name == "sqrt-n") return sqrt_n(eps0);
    if (name == "learned") return learned(eps0);
    TORCH_CHECK(false, "drolt::RadiusPolicy::parse: expected one of erm, shared, sqrtn, learned; got '",
                name, "'");
  }

  RadiusPolicy() : RadiusPolicy(Kind::shared, 0.0) {}

  Kind kind() const { return kind_; }
  double eps0() const { return eps0_; }
  bool is_learned() const { return kind_ == Kind::learned; }
  std::string name() const {
    switch (kind_) {
      case Kind::shared:
        return eps0_ == 0.0 ? "erm" : "shared";
      case Kind::sqrt_n:
        return "sqrtn";
      case Kind::learned:
        return "learned";
    }
    return "?";
  }

  /// Radii of a non-learned policy as a [C] tensor. `counts` (training-set counts,
  /// [C]) is needed for sqrt_n only; classes with no samples get eps0.
  torch::Tensor fixed_radii(int64_t num_classes, const torch::Tensor& counts,
                            const torch::TensorOptions& options) const {
    TORCH_CHECK(kind_ != Kind::learned,
                "drolt::RadiusPolicy::fixed_radii: a learned policy has no fixed radii");
    if (kind_ == Kind::shared) return torch::full({num_classes}, eps0_, options);
    TORCH_CHECK(counts.defined(),
                "drolt::RadiusPolicy(sqrt_n) needs the training-set class counts: pass "
                "RobustCentroidLossOptions::class_counts or a CentroidBank that has been finalized");
    detail::check_class_counts(counts, num_classes, "drolt::RadiusPolicy(sqrt_n)");
    auto n = counts.to(options.dtype()).to(options.device());
    return torch::where(n > 0, eps0_ / n.clamp_min(1).sqrt(), torch::full_like(n, eps0_));
  }

 private:
  RadiusPolicy(Kind kind, double eps0) : kind_(kind), eps0_(eps0) {
    TORCH_CHECK(std::isfinite(eps0) && eps0 >= 0,
                "drolt::RadiusPolicy: expected a finite radius eps0 >= 0, got ", eps0);
  }
  Kind kind_;
  double eps0_;
};

}  // namespace drolt
