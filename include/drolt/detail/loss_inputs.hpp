#pragma once
// Input checks of functional::robust_centroid_loss (docs/math.md, "Input
// checks"). Part of drolt/loss.hpp.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>

#include "drolt/detail/checks.hpp"
#include "drolt/loss_options.hpp"
#include "drolt/types.hpp"

namespace drolt {
namespace detail {

/// Every error of the loss function starts with this.
constexpr const char* kLossFn = "drolt::robust_centroid_loss";

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
  DROLT_CHECK(t.device() == ref.device(), kLossFn, "expected ", name, " on the features' device ",
              ref.device(), ", got ", t.device());
}

inline CheckedInputs check_inputs(const torch::Tensor& features, const torch::Tensor& labels,
                                  const torch::Tensor& centroids, const torch::Tensor& radii,
                                  const functional::RobustCentroidLossFuncOptions& o) {
  const char* fn = kLossFn;
  DROLT_CHECK(features.defined() && labels.defined() && centroids.defined() && radii.defined(), fn,
              "expected defined features, labels, centroids and radii");
  DROLT_CHECK(features.dim() == 2, fn, "expected features of shape [B, D], got ",
              describe(features));
  DROLT_CHECK(c10::isFloatingType(features.scalar_type()), fn,
              "expected floating-point features, got ", features.scalar_type());
  const int64_t B = features.size(0), D = features.size(1);
  DROLT_CHECK(B > 0, fn, "expected a non-empty batch, got features of shape ", describe(features));
  DROLT_CHECK(D > 0, fn, "expected a feature dimension D > 0, got features of shape ",
              describe(features));
  DROLT_CHECK(centroids.dim() == 2 && centroids.size(1) == D, fn,
              "expected centroids of shape [C, ", D, "] (D of the features), got ",
              describe(centroids));
  const int64_t C = centroids.size(0);
  DROLT_CHECK(C > 0, fn, "expected at least one centroid, got centroids of shape ",
              describe(centroids));
  DROLT_CHECK(centroids.scalar_type() == features.scalar_type(), fn,
              "expected centroids of the features' dtype ", features.scalar_type(), ", got ",
              centroids.scalar_type());
  DROLT_CHECK(labels.dim() == 1 && labels.size(0) == B, fn, "expected labels of shape [", B,
              "], got ", describe(labels));
  DROLT_CHECK(c10::isIntegralType(labels.scalar_type(), /*includeBool=*/false), fn,
              "expected integer labels, got ", labels.scalar_type());
  DROLT_CHECK(radii.dim() == 1 && radii.size(0) == C, fn, "expected radii of shape [", C,
              "] (one per class), got ", describe(radii));
  DROLT_CHECK(c10::isFloatingType(radii.scalar_type()), fn, "expected floating-point radii, got ",
              radii.scalar_type());
  check_same_device(features, labels, "labels");
  check_same_device(features, centroids, "centroids");
  check_same_device(features, radii, "radii");
  const double tau = o.temperature();
  DROLT_CHECK(std::isfinite(tau) && tau > 0, fn, "expected temperature > 0, got ", tau);
  const double tau_b = o.base_temperature().has_value() ? *o.base_temperature() : tau;
  DROLT_CHECK(std::isfinite(tau_b) && tau_b > 0, fn, "expected base_temperature > 0, got ", tau_b);

  CheckedInputs out;
  out.compute_dtype = features.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  out.base_temperature = tau_b;
  out.labels = labels.scalar_type() == torch::kLong ? labels : labels.to(torch::kLong);
  if (o.valid().defined()) {
    const auto& v = o.valid();
    DROLT_CHECK(v.dim() == 1 && v.size(0) == C, fn, "expected a valid-centroid mask of shape [", C,
                "], got ", describe(v));
    DROLT_CHECK(v.scalar_type() == torch::kBool ||
                    c10::isIntegralType(v.scalar_type(), /*includeBool=*/false),
                fn, "expected a bool valid-centroid mask, got ", v.scalar_type());
    check_same_device(features, v, "the valid-centroid mask");
    out.valid = v.scalar_type() == torch::kBool ? v : v.ne(0);
  } else {
    out.valid =
        torch::ones({C}, torch::TensorOptions().dtype(torch::kBool).device(features.device()));
  }
  if (o.class_weights().defined()) {
    const auto& w = o.class_weights();
    DROLT_CHECK(w.dim() == 1 && w.size(0) == C, fn, "expected class_weights of shape [", C,
                "], got ", describe(w));
    DROLT_CHECK(c10::isFloatingType(w.scalar_type()), fn,
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
    check_label_bounds(static_cast<int64_t>(s[0]), static_cast<int64_t>(s[1]), C, fn);
    DROLT_CHECK(s[3] == 1.0, fn, "expected finite radii, got a NaN or Inf radius");
    DROLT_CHECK(s[2] >= 0, fn, "expected radii >= 0, got a radius of ", s[2]);
    DROLT_CHECK(s[5] == 1.0, fn, "expected finite class_weights, got a NaN or Inf weight");
    DROLT_CHECK(s[4] > 0, fn, "expected class_weights > 0, got a weight of ", s[4]);
  }
  if (o.check_finite()) {
    auto bad = (~torch::isfinite(features.detach()).all(1)).nonzero().view(-1).cpu();
    if (bad.numel() > 0) {
      std::ostringstream rows;
      for (int64_t i = 0; i < std::min<int64_t>(bad.numel(), 8); ++i)
        rows << (i ? ", " : "") << bad[i].item<int64_t>();
      if (bad.numel() > 8) rows << ", ...";
      DROLT_CHECK(false, fn, "expected finite features, got NaN or Inf in ", bad.numel(),
                  " row(s): ", rows.str());
    }
    auto badc =
        ((~torch::isfinite(centroids.detach()).all(1)) & out.valid).nonzero().view(-1).cpu();
    DROLT_CHECK(badc.numel() == 0, fn, "expected finite centroids, got NaN or Inf in ",
                badc.numel(),
                " valid centroid row(s), first: ", badc.numel() ? badc[0].item<int64_t>() : -1);
  }
  return out;
}

/// A non-finite loss from finite inputs is an overflow (float32 squared
/// distances pass 3.4e38 once |z - mu| passes ~1.8e19, or a tiny temperature):
/// say so, naming the finite range, instead of returning NaN. Without
/// `inputs_checked` (check_finite off) a NaN or Inf input is let through to a
/// NaN loss, as in LibTorch's own losses. Costs one isfinite over the loss
/// values; the inputs are looked at only when the loss is not finite.
inline void check_finite_result(const torch::Tensor& loss, const torch::Tensor& features,
                                const torch::Tensor& centroids, const CheckedInputs& in,
                                double temperature, bool inputs_checked) {
  if (torch::isfinite(loss.detach()).all().item<bool>()) return;
  const double zmax = features.detach().abs().max().to(torch::kDouble).item<double>();
  const double mmax = torch::where(in.valid.unsqueeze(1), centroids.detach().abs(),
                                   torch::zeros({}, centroids.options()))
                          .max()
                          .to(torch::kDouble)
                          .item<double>();
  if (!inputs_checked && !(std::isfinite(zmax) && std::isfinite(mmax))) return;
  const double range = in.compute_dtype == torch::kDouble
                           ? std::sqrt(std::numeric_limits<double>::max())
                           : std::sqrt(static_cast<double>(std::numeric_limits<float>::max()));
  DROLT_CHECK(false, kLossFn, "expected a finite loss from finite inputs, got ",
              "NaN or Inf: the distances or scores overflow ", in.compute_dtype,
              " (largest |feature| ", zmax, ", largest |centroid| ", mmax, ", temperature ",
              temperature, "; squared distances are finite only for |feature - centroid| below ",
              range, "); scale the features down, raise the temperature or use float64");
}

}  // namespace detail
}  // namespace drolt
