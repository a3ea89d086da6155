#pragma once
/// \file
/// Classifiers on a trained (frozen) representation, the second stage of the
/// long-tail methods drolt is compared with (docs/math.md, "Long-tail
/// baselines"):
///
///     auto z = drolt::logit_adjust(logits, counts, tau);                // post-hoc logit adjustment
///     auto w = drolt::tau_normalize(fc->weight, tau);                   // tau-normalisation
///     drolt::LWS lws(num_classes);         auto z = lws(joint_logits);  // learnable weight scaling
///     drolt::NearestClassMean ncm(C, D);   ncm->fit(train_f, train_y);  // NCM, cosine
///
/// and choose_tau, which picks tau on a validation split for logit_adjust and
/// tau_normalize.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <ostream>
#include <vector>

#include "drolt/centroid_bank.hpp"
#include "drolt/detail/checks.hpp"
#include "drolt/detail/logit_checks.hpp"
#include "drolt/longtail_losses.hpp"
#include "drolt/metrics.hpp"

namespace drolt {

/// Post-hoc logit adjustment (Menon et al. 2021): logits [N, C] - tau log pi,
/// pi the training class prior of `counts` (log_class_prior: a class without
/// training samples counts as one). tau >= 0; 1 is the Bayes-optimal rule for
/// the balanced error, 0 leaves the logits.
inline torch::Tensor logit_adjust(const torch::Tensor& logits, const std::vector<int64_t>& counts,
                                  double tau) {
  constexpr const char* where = "drolt::logit_adjust";
  detail::check_non_negative(tau, "tau", where);
  DROLT_CHECK(logits.defined() && logits.dim() == 2 && logits.is_floating_point(), where,
              "expected floating-point logits [N, C], got ", detail::describe_tensor(logits));
  DROLT_CHECK(logits.size(1) == static_cast<int64_t>(counts.size()), where, "expected ",
              logits.size(1), " class counts (one per logit column), got ", counts.size());
  auto log_prior = log_class_prior(counts).to(logits.scalar_type()).to(logits.device());
  return logits - tau * log_prior.unsqueeze(0);
}

/// tau-normalisation (Kang et al. 2020): each class's weight row w_c / ||w_c||^tau
/// (norms floored at 1e-12) of a classifier weight [C, D]; use it without the
/// bias: logits = z (w / ||w||^tau)^T. tau >= 0; 0 returns the weights.
inline torch::Tensor tau_normalize(const torch::Tensor& weight, double tau) {
  constexpr const char* where = "drolt::tau_normalize";
  detail::check_non_negative(tau, "tau", where);
  DROLT_CHECK(weight.defined() && weight.dim() == 2 && weight.is_floating_point(), where,
              "expected a floating-point classifier weight [C, D], got ",
              detail::describe_tensor(weight));
  auto norms = weight.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
  return weight / norms.pow(tau);
}

/// The first tau of `grid` with the highest `validation_accuracy(tau)` (ties go
/// to the earlier tau; a NaN accuracy never wins).
inline double choose_tau(const std::vector<double>& grid,
                         const std::function<double(double)>& validation_accuracy) {
  DROLT_CHECK(!grid.empty(), "drolt::choose_tau", "expected a non-empty grid of tau, got none");
  double best = grid.front(), best_acc = -1;
  for (double t : grid) {
    const double a = validation_accuracy(t);
    if (a > best_acc) {
      best = t;
      best_acc = a;
    }
  }
  return best;
}

/// Kang et al.'s grid for tau-normalisation: 0, 0.1, ..., 1.
inline std::vector<double> tau_normalize_grid() {
  std::vector<double> g;
  for (int i = 0; i <= 10; ++i) g.push_back(0.1 * i);
  return g;
}

/// A grid for post-hoc logit adjustment: 0, 0.25, ..., 2.
inline std::vector<double> logit_adjust_grid() {
  std::vector<double> g;
  for (int i = 0; i <= 8; ++i) g.push_back(0.25 * i);
  return g;
}

/// The tau of `grid` with the best validation top-1 accuracy of logit_adjust
/// on validation logits [N, C] and labels [N].
inline double choose_logit_adjust_tau(const torch::Tensor& val_logits, const torch::Tensor& val_labels,
                                      const std::vector<int64_t>& counts,
                                      const std::vector<double>& grid = logit_adjust_grid()) {
  return choose_tau(grid, [&](double t) {
    return metrics::accuracy(logit_adjust(val_logits, counts, t), val_labels);
  });
}

/// The tau of `grid` with the best validation top-1 accuracy of tau-normalised
/// logits val_inputs [N, D] (tau_normalize(weight, tau))^T, labels [N].
inline double choose_tau_normalize_tau(const torch::Tensor& val_inputs, const torch::Tensor& weight,
                                       const torch::Tensor& val_labels,
                                       const std::vector<double>& grid = tau_normalize_grid()) {
  return choose_tau(grid, [&](double t) {
    return metrics::accuracy(torch::matmul(val_inputs, tau_normalize(weight, t).t()), val_labels);
  });
}

// ------------------------------------------------------------------ LWS

struct LWSOptions {
  /* implicit */ LWSOptions(int64_t num_classes) : num_classes_(num_classes) {}
  TORCH_ARG(int64_t, num_classes);
};

/// Learnable weight scaling (Kang et al. 2020): logits f_c (w_c . z + b_c) of a
/// frozen classifier's logits, one learned scale f_c per class (the parameter
/// "scales", float32 [C], initialised to 1). Train it, alone, with
/// class-balanced sampling.
class LWSImpl : public torch::nn::Cloneable<LWSImpl> {
 public:
  explicit LWSImpl(const LWSOptions& options) : options(options) {
    DROLT_CHECK(options.num_classes() > 0, "drolt::LWS", "expected num_classes > 0, got ",
                options.num_classes());
    reset();
  }
  void reset() override { scales = register_parameter("scales", torch::ones({options.num_classes()})); }
  /// joint_logits [N, C] times the scales.
  torch::Tensor forward(const torch::Tensor& joint_logits) {
    DROLT_CHECK(joint_logits.defined() && joint_logits.dim() == 2 &&
                    joint_logits.is_floating_point() && joint_logits.size(1) == options.num_classes(),
                "drolt::LWS", "expected floating-point logits [N, ", options.num_classes(), "], got ",
                detail::describe_tensor(joint_logits));
    return joint_logits * scales.to(joint_logits.scalar_type()).unsqueeze(0);
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::LWS(num_classes=" << options.num_classes() << ")";
  }
  LWSOptions options;
  torch::Tensor scales;
};
TORCH_MODULE(LWS);

// ------------------------------------------------------------------ nearest class mean

namespace functional {

/// Cosine nearest-class-mean scores [N, C]: cos(z_i, mu_c) for each class with
/// a centroid, -inf for the others (`valid` [C] bool; undefined: all valid).
/// Features are compared in the centroids' dtype.
inline torch::Tensor nearest_class_mean(const torch::Tensor& features, const torch::Tensor& centroids,
                                        const torch::Tensor& valid = {}) {
  namespace F = torch::nn::functional;
  constexpr const char* where = "drolt::nearest_class_mean";
  DROLT_CHECK(centroids.defined() && centroids.dim() == 2 && centroids.is_floating_point(), where,
              "expected floating-point centroids [C, D], got ", detail::describe_tensor(centroids));
  DROLT_CHECK(features.defined() && features.dim() == 2 && features.is_floating_point() &&
                  features.size(1) == centroids.size(1),
              where, "expected floating-point features [N, ", centroids.size(1), "], got ",
              detail::describe_tensor(features));
  DROLT_CHECK(!valid.defined() || (valid.dim() == 1 && valid.size(0) == centroids.size(0) &&
                                   valid.scalar_type() == torch::kBool),
              where, "expected a bool valid mask [", centroids.size(0), "], got ",
              detail::describe_tensor(valid));
  const auto o = F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12);
  auto s = torch::matmul(F::normalize(features.to(centroids.scalar_type()), o),
                         F::normalize(centroids, o).t());
  if (!valid.defined()) return s;
  return s.masked_fill(valid.to(s.device()).logical_not().unsqueeze(0),
                       -std::numeric_limits<float>::infinity());
}

}  // namespace functional

struct NearestClassMeanOptions {
  NearestClassMeanOptions(int64_t num_classes, int64_t dim) : num_classes_(num_classes), dim_(dim) {}
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, dim);
  /// dtype of the class means (and of the comparison).
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
};

/// Nearest class mean (cosine): the means of the L2-normalised training
/// features, kept in the CentroidBank "bank"; forward gives
/// functional::nearest_class_mean's scores. Fill it with fit(), or with
/// accumulate() over batches then finalize().
class NearestClassMeanImpl : public torch::nn::Cloneable<NearestClassMeanImpl> {
 public:
  NearestClassMeanImpl(int64_t num_classes, int64_t dim)
      : NearestClassMeanImpl(NearestClassMeanOptions(num_classes, dim)) {}
  explicit NearestClassMeanImpl(const NearestClassMeanOptions& options) : options(options) { reset(); }
  void reset() override {
    bank = register_module(
        "bank", CentroidBank(CentroidBankOptions(options.num_classes(), options.dim()).dtype(options.dtype())));
  }
  /// Adds a batch of training features [B, D] (normalised here) and labels [B].
  void accumulate(const torch::Tensor& features, const torch::Tensor& labels) {
    namespace F = torch::nn::functional;
    DROLT_CHECK(features.defined() && features.is_floating_point(), "drolt::NearestClassMean::accumulate",
                "expected floating-point features [B, ", options.dim(), "], got ",
                detail::describe_tensor(features));
    const auto o = F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12);
    bank->accumulate(F::normalize(features.to(options.dtype()), o), labels);
  }
  /// Publishes the class means of everything accumulated since the last finalize().
  void finalize() { bank->finalize(); }
  /// The class means of one set of training features [N, D] and labels [N].
  void fit(const torch::Tensor& features, const torch::Tensor& labels) {
    bank->clear_sums();
    accumulate(features, labels);
    finalize();
  }
  /// Scores [N, C] of features [N, D].
  torch::Tensor forward(const torch::Tensor& features) {
    return functional::nearest_class_mean(features, bank->centroids(), bank->valid());
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::NearestClassMean(num_classes=" << options.num_classes() << ", dim=" << options.dim()
           << ")";
  }
  NearestClassMeanOptions options;
  CentroidBank bank = nullptr;
};
TORCH_MODULE(NearestClassMean);

}  // namespace drolt
