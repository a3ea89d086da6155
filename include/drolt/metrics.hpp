#pragma once
/// \file
/// Evaluation metrics for long-tailed classification, kept apart from training
/// code: confusion matrix, per-class / overall / top-k accuracy, Many / Medium /
/// Few split accuracy (docs/math.md, "Long-tailed data and evaluation"), nearest-centroid accuracy, expected
/// calibration error (docs/math.md, "Methods compared"), and a summary
/// that prints as text or JSON.
///
/// "predictions" arguments accept either predicted labels (1-D integer [N]) or
/// scores / logits (2-D floating [N, C], reduced with argmax).
///
///     auto s = drolt::metrics::summarize(logits, test_targets, lt.counts);
///     std::cout << s.to_text();
///     std::ofstream("eval.json") << s.to_json();
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <locale>
#include <sstream>
#include <string>
#include <vector>

#include "drolt/detail/checks.hpp"
#include "drolt/types.hpp"

namespace drolt {
namespace metrics {

/// Training-count thresholds of the splits: Many n > many_above, Few n < few_below,
/// Medium few_below <= n <= many_above (the paper's 100 and 20: a class with
/// exactly 20 or exactly 100 training samples is Medium).
struct SplitThresholds {
  int64_t many_above = 100;
  int64_t few_below = 20;
};

/// Accuracies in [0, 1] by training-count split.
struct SplitAccuracy {
  /// Mean of the per-class accuracies of the split's classes; NaN when the split
  /// has no class with test samples.
  double many = std::numeric_limits<double>::quiet_NaN();
  double medium = std::numeric_limits<double>::quiet_NaN();
  double few = std::numeric_limits<double>::quiet_NaN();
  /// Top-1 accuracy over all test samples (the paper's "All"; on a
  /// class-balanced test set it equals class_mean). NaN without test samples.
  double overall = std::numeric_limits<double>::quiet_NaN();
  /// Mean per-class accuracy over all classes with test samples.
  double class_mean = std::numeric_limits<double>::quiet_NaN();
  /// Classes that entered each split's mean (those with test samples).
  int64_t many_classes = 0;
  int64_t medium_classes = 0;
  int64_t few_classes = 0;
  /// Classes with no test samples: reported here, excluded from every mean.
  std::vector<int64_t> classes_without_test_samples;
};

/// How nearest_centroid_predict compares a feature with a centroid: the loss's
/// Distance (Similarity::euclidean and Similarity::cosine as before;
/// squared_euclidean ranks centroids as euclidean does).
using Similarity = Distance;

namespace detail {

inline torch::Tensor check_targets(const torch::Tensor& targets, int64_t num_classes,
                                   const char* caller) {
  TORCH_CHECK(targets.defined() && targets.dim() == 1, caller, ": expected 1-D targets [N], got ",
              targets.defined() ? targets.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(!targets.is_floating_point() && !targets.is_complex() &&
                  targets.scalar_type() != torch::kBool,
              caller, ": expected integer targets, got ", targets.scalar_type());
  const torch::Tensor t = targets.to(torch::kCPU, torch::kInt64).contiguous();
  if (t.numel() > 0 && num_classes > 0) {
    drolt::detail::check_label_range(t, num_classes, caller, "targets");
  }
  return t;
}

/// Predicted labels, int64 [N] on the CPU, from labels [N] or scores [N, C].
inline torch::Tensor to_labels(const torch::Tensor& predictions, int64_t num_classes, int64_t n,
                               const char* caller) {
  TORCH_CHECK(predictions.defined(), caller, ": expected predictions, got an undefined tensor");
  torch::Tensor p;
  if (predictions.dim() == 2) {
    TORCH_CHECK(predictions.is_floating_point(), caller,
                ": expected floating-point scores for 2-D predictions, got ",
                predictions.scalar_type());
    TORCH_CHECK(num_classes <= 0 || predictions.size(1) == num_classes, caller,
                ": expected scores with ", num_classes, " columns, got ", predictions.size(1));
    TORCH_CHECK(predictions.size(1) > 0 || predictions.size(0) == 0, caller,
                ": expected scores with at least one column, got 0");
    p = predictions.size(0) == 0 ? torch::empty({0}, torch::kInt64)
                                 : predictions.argmax(1).to(torch::kCPU, torch::kInt64);
  } else {
    TORCH_CHECK(predictions.dim() == 1, caller,
                ": expected predicted labels [N] or scores [N, C], got ", predictions.dim(),
                " dimensions");
    TORCH_CHECK(!predictions.is_floating_point() && !predictions.is_complex() &&
                    predictions.scalar_type() != torch::kBool,
                caller, ": expected integer predicted labels, got ", predictions.scalar_type());
    p = predictions.to(torch::kCPU, torch::kInt64).contiguous();
    if (p.numel() > 0 && num_classes > 0) {
      drolt::detail::check_label_range(p, num_classes, caller, "predicted labels");
    }
  }
  TORCH_CHECK(p.size(0) == n, caller, ": expected as many predictions as targets (", n, "), got ",
              p.size(0));
  return p.contiguous();
}

inline double nan() {
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace detail

/// Confusion matrix, int64 [C, C]: entry (t, p) counts test samples of true
/// class t predicted as p.
inline torch::Tensor confusion_matrix(const torch::Tensor& predictions,
                                      const torch::Tensor& targets, int64_t num_classes) {
  constexpr const char* caller = "drolt::metrics::confusion_matrix";
  TORCH_CHECK(num_classes > 0, caller, ": expected num_classes > 0, got ", num_classes);
  const torch::Tensor t = detail::check_targets(targets, num_classes, caller);
  const torch::Tensor p = detail::to_labels(predictions, num_classes, t.size(0), caller);
  return torch::bincount(t * num_classes + p, {}, num_classes * num_classes)
      .to(torch::kInt64)
      .view({num_classes, num_classes});
}

/// Per-class top-1 accuracy, float64 [C]; NaN for a class without test samples.
inline torch::Tensor per_class_accuracy(const torch::Tensor& predictions,
                                        const torch::Tensor& targets, int64_t num_classes) {
  const torch::Tensor cm = confusion_matrix(predictions, targets, num_classes).to(torch::kFloat64);
  const torch::Tensor total = cm.sum(1);
  // 0 / 0 is NaN, exactly the "no test samples" marker wanted here.
  return cm.diagonal() / total;
}

/// Fraction of samples whose predicted label equals the target; NaN when empty.
inline double accuracy(const torch::Tensor& predictions, const torch::Tensor& targets) {
  constexpr const char* caller = "drolt::metrics::accuracy";
  const torch::Tensor t = detail::check_targets(targets, -1, caller);
  const torch::Tensor p = detail::to_labels(predictions, -1, t.size(0), caller);
  if (t.numel() == 0) return detail::nan();
  return p.eq(t).to(torch::kFloat64).mean().item<double>();
}

/// Fraction of samples whose target is among the k highest scores; NaN when
/// empty. Ties are broken by torch::topk.
inline double topk_accuracy(const torch::Tensor& scores, const torch::Tensor& targets, int64_t k) {
  constexpr const char* caller = "drolt::metrics::topk_accuracy";
  TORCH_CHECK(scores.defined() && scores.dim() == 2 && scores.is_floating_point(), caller,
              ": expected floating-point scores [N, C], got ",
              scores.defined() ? scores.sizes() : torch::IntArrayRef{});
  const int64_t c = scores.size(1);
  TORCH_CHECK(k >= 1 && k <= c, caller, ": expected 1 <= k <= ", c, ", got ", k);
  const torch::Tensor t = detail::check_targets(targets, c, caller);
  TORCH_CHECK(scores.size(0) == t.size(0), caller, ": expected as many score rows as targets (",
              t.size(0), "), got ", scores.size(0));
  if (t.numel() == 0) return detail::nan();
  const torch::Tensor top = std::get<1>(scores.to(torch::kCPU).topk(k, 1));
  return top.eq(t.unsqueeze(1)).any(1).to(torch::kFloat64).mean().item<double>();
}

/// Many / Medium / Few accuracy with configurable thresholds. `train_counts[c]`
/// is the number of training samples of class c and fixes C. A split's accuracy
/// is the mean of its classes' accuracies; classes without test samples are
/// listed in `classes_without_test_samples` and left out of every mean.
inline SplitAccuracy split_accuracy(const torch::Tensor& predictions, const torch::Tensor& targets,
                                    const std::vector<int64_t>& train_counts,
                                    const SplitThresholds& thresholds) {
  constexpr const char* caller = "drolt::metrics::split_accuracy";
  const auto num_classes = static_cast<int64_t>(train_counts.size());
  TORCH_CHECK(num_classes > 0, caller, ": expected train_counts for at least one class, got none");
  TORCH_CHECK(
      thresholds.few_below <= thresholds.many_above + 1, caller,
      ": expected few_below <= many_above + 1 so no class is both Few and Many, got few_below ",
      thresholds.few_below, " and many_above ", thresholds.many_above);
  for (size_t c = 0; c < train_counts.size(); ++c) {
    TORCH_CHECK(train_counts[c] >= 0, caller, ": expected train_counts >= 0, got ", train_counts[c],
                " for class ", c);
  }
  const torch::Tensor cm = confusion_matrix(predictions, targets, num_classes);
  const torch::Tensor correct = cm.diagonal().contiguous();
  const torch::Tensor total = cm.sum(1).contiguous();
  const int64_t* cor = correct.data_ptr<int64_t>();
  const int64_t* tot = total.data_ptr<int64_t>();

  SplitAccuracy out;
  double sum_many = 0, sum_medium = 0, sum_few = 0, sum_all = 0;
  int64_t n_correct = 0, n_total = 0, n_classes = 0;
  for (int64_t c = 0; c < num_classes; ++c) {
    n_correct += cor[c];
    n_total += tot[c];
    if (tot[c] == 0) {
      out.classes_without_test_samples.push_back(c);
      continue;
    }
    const double acc = static_cast<double>(cor[c]) / static_cast<double>(tot[c]);
    const int64_t n = train_counts[static_cast<size_t>(c)];
    if (n > thresholds.many_above) {
      sum_many += acc;
      ++out.many_classes;
    } else if (n < thresholds.few_below) {
      sum_few += acc;
      ++out.few_classes;
    } else {
      sum_medium += acc;
      ++out.medium_classes;
    }
    sum_all += acc;
    ++n_classes;
  }
  const auto mean = [](double s, int64_t k) {
    return k > 0 ? s / static_cast<double>(k) : detail::nan();
  };
  out.many = mean(sum_many, out.many_classes);
  out.medium = mean(sum_medium, out.medium_classes);
  out.few = mean(sum_few, out.few_classes);
  out.class_mean = mean(sum_all, n_classes);
  out.overall =
      n_total > 0 ? static_cast<double>(n_correct) / static_cast<double>(n_total) : detail::nan();
  return out;
}

/// Many / Medium / Few accuracy with the paper's thresholds (Many n > 100,
/// Medium 20 <= n <= 100, Few n < 20).
inline SplitAccuracy split_accuracy(const torch::Tensor& predictions, const torch::Tensor& targets,
                                    const std::vector<int64_t>& train_counts) {
  return split_accuracy(predictions, targets, train_counts, SplitThresholds{});
}

/// Expected calibration error (Guo et al. 2017; docs/math.md, "Methods compared"): the
/// confidence of a sample is its largest probability and its prediction the
/// argmax; samples go into `bins` equal-width confidence bins ((b/B, (b+1)/B],
/// a confidence of exactly 0 in the first), and
/// `ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`. `probabilities` is
/// [N, C] with entries in [0, 1], each row summing to 1 within
/// kProbabilitySumTolerance (softmax of the logits); NaN when N = 0.
/// How far a row of expected_calibration_error's probabilities may sum from 1.
constexpr double kProbabilitySumTolerance = 1e-3;

inline double expected_calibration_error(const torch::Tensor& probabilities,
                                         const torch::Tensor& targets, int64_t bins = 15) {
  constexpr const char* caller = "drolt::metrics::expected_calibration_error";
  TORCH_CHECK(
      probabilities.defined() && probabilities.dim() == 2 && probabilities.is_floating_point(),
      caller, ": expected floating-point probabilities [N, C], got ",
      probabilities.defined() ? probabilities.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(bins >= 1 && bins <= (int64_t{1} << 20), caller, ": expected 1 <= bins <= 2^20, got ",
              bins);
  const int64_t c = probabilities.size(1);
  TORCH_CHECK(c > 0 || probabilities.size(0) == 0, caller,
              ": expected probabilities with at least one column, got 0");
  const torch::Tensor t = detail::check_targets(targets, c, caller);
  TORCH_CHECK(probabilities.size(0) == t.size(0), caller,
              ": expected as many probability rows as targets (", t.size(0), "), got ",
              probabilities.size(0));
  if (t.numel() == 0) return detail::nan();
  const torch::Tensor p = probabilities.to(torch::kCPU, torch::kFloat64);
  const double lo = p.min().item<double>(), hi = p.max().item<double>();
  TORCH_CHECK(lo >= 0.0 && hi <= 1.0, caller,
              ": expected probabilities in [0, 1] (softmax of the logits), got values in [", lo,
              ", ", hi, "]");
  // Each row a distribution: summing to 1 within kProbabilitySumTolerance
  // (float32 softmax rounding over thousands of classes stays far below it).
  const torch::Tensor off = (p.sum(1) - 1.0).abs();
  const auto worst = off.max(0);
  const double worst_off = std::get<0>(worst).item<double>();
  if (!(worst_off <= kProbabilitySumTolerance)) {
    const int64_t row = std::get<1>(worst).item<int64_t>();
    TORCH_CHECK(false, caller, ": expected every row of probabilities to sum to 1 (within ",
                kProbabilitySumTolerance, "), got ", p[row].sum().item<double>(), " in row ", row);
  }
  const auto top = p.max(1);
  const torch::Tensor conf = std::get<0>(top).contiguous();
  const torch::Tensor correct = std::get<1>(top).eq(t).to(torch::kFloat64).contiguous();
  const torch::Tensor bin = (conf * static_cast<double>(bins))
                                .ceil()
                                .sub(1)
                                .clamp(0, static_cast<double>(bins - 1))
                                .to(torch::kInt64);
  const torch::Tensor n = torch::bincount(bin, {}, bins).to(torch::kFloat64);
  const torch::Tensor sum_conf = torch::bincount(bin, conf, bins);
  const torch::Tensor sum_acc = torch::bincount(bin, correct, bins);
  // Per bin |B_b| * |acc - conf| = |sum_acc - sum_conf|; empty bins add 0.
  return (sum_acc - sum_conf).abs().sum().item<double>() / static_cast<double>(t.size(0));
}

/// Label of the nearest valid centroid for each feature, int64 [N].
/// Euclidean: smallest ||z - mu_c||; cosine: largest cos(z, mu_c). `valid_mask`
/// ([C] bool) excludes classes without a centroid; an undefined tensor means all
/// are valid. Ties go to the lowest class index.
inline torch::Tensor nearest_centroid_predict(const torch::Tensor& features,
                                              const torch::Tensor& centroids,
                                              const torch::Tensor& valid_mask,
                                              Similarity similarity = Similarity::euclidean) {
  constexpr const char* caller = "drolt::metrics::nearest_centroid_predict";
  TORCH_CHECK(features.defined() && features.dim() == 2 && features.is_floating_point(), caller,
              ": expected floating-point features [N, D], got ",
              features.defined() ? features.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(centroids.defined() && centroids.dim() == 2 && centroids.is_floating_point(), caller,
              ": expected floating-point centroids [C, D], got ",
              centroids.defined() ? centroids.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(centroids.size(1) == features.size(1), caller,
              ": expected centroids of feature dimension ", features.size(1), ", got ",
              centroids.size(1));
  const int64_t c = centroids.size(0);
  TORCH_CHECK(c > 0, caller, ": expected at least one centroid, got 0");
  torch::Tensor valid = valid_mask.defined()
                            ? valid_mask
                            : torch::ones({c}, torch::TensorOptions().dtype(torch::kBool));
  TORCH_CHECK(valid.dim() == 1 && valid.size(0) == c && valid.scalar_type() == torch::kBool, caller,
              ": expected a bool valid_mask [", c, "], got ", valid.scalar_type(), " ",
              valid.sizes());
  valid = valid.to(features.device());
  TORCH_CHECK(valid.any().item<bool>(), caller, ": expected at least one valid centroid, got none");

  // Half-precision features are compared in float32: which centroid is
  // nearest is sensitive to rounding when two are almost equally far.
  const auto dtype = features.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  torch::Tensor mu = centroids.to(features.device(), dtype);
  if (similarity == Similarity::cosine) {
    mu = mu / mu.norm(2, 1, true).clamp_min(1e-12);
  }
  const torch::Tensor invalid = valid.logical_not().unsqueeze(0);
  std::vector<torch::Tensor> parts;
  constexpr int64_t kChunk = 4096;  // bounds the [chunk, C] score matrix
  for (int64_t start = 0; start < features.size(0); start += kChunk) {
    torch::Tensor z =
        features.narrow(0, start, std::min(kChunk, features.size(0) - start)).to(dtype);
    torch::Tensor score;
    if (similarity == Similarity::cosine) {
      z = z / z.norm(2, 1, true).clamp_min(1e-12);
      score = z.matmul(mu.t());
    } else {
      score = -torch::cdist(z, mu);
    }
    score = score.masked_fill(invalid, -std::numeric_limits<double>::infinity());
    parts.push_back(score.argmax(1));
  }
  if (parts.empty()) return torch::empty({0}, torch::kInt64);
  return torch::cat(parts).to(torch::kCPU, torch::kInt64);
}

/// Top-1 accuracy of nearest-centroid classification (see
/// nearest_centroid_predict); NaN when there are no features. Samples of a
/// class without a valid centroid count as errors.
inline double nearest_centroid_accuracy(const torch::Tensor& features, const torch::Tensor& targets,
                                        const torch::Tensor& centroids,
                                        const torch::Tensor& valid_mask,
                                        Similarity similarity = Similarity::euclidean) {
  constexpr const char* caller = "drolt::metrics::nearest_centroid_accuracy";
  const torch::Tensor pred = nearest_centroid_predict(features, centroids, valid_mask, similarity);
  const torch::Tensor t = detail::check_targets(targets, centroids.size(0), caller);
  TORCH_CHECK(t.size(0) == pred.size(0), caller, ": expected as many targets as features (",
              pred.size(0), "), got ", t.size(0));
  if (t.numel() == 0) return detail::nan();
  return pred.eq(t).to(torch::kFloat64).mean().item<double>();
}

/// Everything an evaluation reports, printable as text or JSON.
struct Summary {
  int64_t num_samples = 0;
  int64_t num_classes = 0;
  /// Top-1 over samples (same as split.overall).
  double top1 = detail::nan();
  /// Top-5 over samples; NaN when only labels were given or C < 5.
  double top5 = detail::nan();
  SplitAccuracy split;
  SplitThresholds thresholds;
  std::vector<double> per_class_accuracy;  ///< NaN for classes without test samples
  std::vector<int64_t> train_counts;
  std::vector<int64_t> test_counts;

  /// Human-readable report, accuracies in percent.
  std::string to_text() const {
    std::ostringstream s;
    const auto pct = [](double v) {
      if (std::isnan(v)) return std::string("   n/a");
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%6.2f%%", 100.0 * v);
      return std::string(buf);
    };
    s << "top-1  " << pct(top1) << "   top-5 " << pct(top5) << "   (" << num_samples
      << " test samples, " << num_classes << " classes)\n";
    s << "many   " << pct(split.many) << "   " << split.many_classes << " classes, n > "
      << thresholds.many_above << "\n";
    s << "medium " << pct(split.medium) << "   " << split.medium_classes << " classes, "
      << thresholds.few_below << " <= n <= " << thresholds.many_above << "\n";
    s << "few    " << pct(split.few) << "   " << split.few_classes << " classes, n < "
      << thresholds.few_below << "\n";
    s << "class mean " << pct(split.class_mean) << "\n";
    if (!split.classes_without_test_samples.empty()) {
      s << "classes without test samples (excluded): " << split.classes_without_test_samples.size()
        << " [";
      for (size_t i = 0; i < split.classes_without_test_samples.size(); ++i) {
        s << (i ? ", " : "") << split.classes_without_test_samples[i];
      }
      s << "]\n";
    }
    return s.str();
  }

  /// JSON object (NaN written as null), accuracies as fractions in [0, 1].
  std::string to_json() const {
    // JSON must not depend on the global locale (decimal commas, digit grouping).
    std::ostringstream s;
    s.imbue(std::locale::classic());
    const auto num = [](double v) {
      if (!std::isfinite(v)) return std::string("null");
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.10g", v);
      // printf follows the C locale's decimal point; JSON needs '.'. (Floating
      // std::to_chars would avoid this but needs GCC 11.)
      std::string out(buf);
      for (char& ch : out) {
        if (!(ch >= '0' && ch <= '9') && ch != '-' && ch != '+' && ch != 'e') ch = '.';
      }
      return out;
    };
    const auto ints = [](const std::vector<int64_t>& v) {
      std::string r = "[";
      for (size_t i = 0; i < v.size(); ++i) r += (i ? "," : "") + std::to_string(v[i]);
      return r + "]";
    };
    s << "{\"num_samples\":" << num_samples << ",\"num_classes\":" << num_classes
      << ",\"top1\":" << num(top1) << ",\"top5\":" << num(top5) << ",\"many\":" << num(split.many)
      << ",\"medium\":" << num(split.medium) << ",\"few\":" << num(split.few)
      << ",\"overall\":" << num(split.overall) << ",\"class_mean\":" << num(split.class_mean)
      << ",\"many_classes\":" << split.many_classes
      << ",\"medium_classes\":" << split.medium_classes << ",\"few_classes\":" << split.few_classes
      << ",\"thresholds\":{\"many_above\":" << thresholds.many_above
      << ",\"few_below\":" << thresholds.few_below << "}"
      << ",\"classes_without_test_samples\":" << ints(split.classes_without_test_samples)
      << ",\"per_class_accuracy\":[";
    for (size_t i = 0; i < per_class_accuracy.size(); ++i) {
      s << (i ? "," : "") << num(per_class_accuracy[i]);
    }
    s << "],\"train_counts\":" << ints(train_counts) << ",\"test_counts\":" << ints(test_counts)
      << "}";
    return s.str();
  }
};

/// Evaluates predictions (labels [N] or scores [N, C]) against targets, with
/// splits by `train_counts` (which fixes C).
inline Summary summarize(const torch::Tensor& predictions, const torch::Tensor& targets,
                         const std::vector<int64_t>& train_counts,
                         const SplitThresholds& thresholds = {}) {
  Summary s;
  s.num_classes = static_cast<int64_t>(train_counts.size());
  s.thresholds = thresholds;
  s.train_counts = train_counts;
  s.split = split_accuracy(predictions, targets, train_counts, thresholds);
  s.num_samples = targets.size(0);
  s.top1 = s.split.overall;
  if (predictions.dim() == 2 && s.num_classes >= 5 && s.num_samples > 0) {
    s.top5 = topk_accuracy(predictions, targets, 5);
  }
  const torch::Tensor cm = confusion_matrix(predictions, targets, s.num_classes);
  const torch::Tensor acc = per_class_accuracy(predictions, targets, s.num_classes).contiguous();
  const torch::Tensor tc = cm.sum(1).contiguous();
  s.per_class_accuracy.assign(acc.data_ptr<double>(), acc.data_ptr<double>() + acc.numel());
  s.test_counts.assign(tc.data_ptr<int64_t>(), tc.data_ptr<int64_t>() + tc.numel());
  return s;
}

}  // namespace metrics
}  // namespace drolt
