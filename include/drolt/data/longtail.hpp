#pragma once
/// \file
/// Long-tailed subsets of a balanced dataset, by the CIFAR-LT protocol
/// (docs/math.md, "Long-tailed data and evaluation"), and a balanced validation split from what the subset left
/// out, so hyper-parameters are never tuned on the test set.
///
///     auto lt = drolt::data::make_longtail(train.targets(), 100, 500, 100.0,
///                                          drolt::data::Profile::exp, /*seed=*/0);
///     // lt.counts: 500, 477, ..., 5 (10847 in total); lt.indices into train
///     auto val = drolt::data::balanced_validation_split(train.targets(), lt, 20, 1);
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "drolt/data/detail/random.hpp"

namespace drolt {
namespace data {

/// How the per-class counts fall from the head (class 0) to the tail.
enum class Profile {
  exp,   ///< n_c = floor(n_max * rho^(-c / (C - 1)))
  step,  ///< first floor(C / 2) classes n_max, the rest floor(n_max / rho)
};

/// Per-class sample counts of a long-tailed subset; class 0 is the head.
///
/// `imbalance_ratio` is rho = n_max / n_min, at least 1 and at most n_max (so
/// every class keeps at least one sample). The floor is taken with a relative
/// tolerance of 1e-10: n_max * rho^(-c/(C-1)) is computed with pow/exp
/// rounding, and an exact integer such as 500 / 100 = 5 must not come out as 4
/// because the product landed at 4.9999999999999991.
inline std::vector<int64_t> longtail_counts(int64_t n_max, int64_t num_classes,
                                            double imbalance_ratio, Profile profile) {
  constexpr const char* caller = "drolt::data::longtail_counts";
  TORCH_CHECK(n_max > 0, caller, ": expected n_max > 0, got ", n_max);
  TORCH_CHECK(num_classes > 0, caller, ": expected num_classes > 0, got ", num_classes);
  TORCH_CHECK(std::isfinite(imbalance_ratio) && imbalance_ratio >= 1.0, caller,
              ": expected a finite imbalance_ratio >= 1, got ", imbalance_ratio);
  TORCH_CHECK(imbalance_ratio <= static_cast<double>(n_max), caller,
              ": expected imbalance_ratio <= n_max (", n_max,
              ") so that every class keeps at least one sample, got ", imbalance_ratio);
  const auto tolerant_floor = [](double v) {
    const double f = std::floor(v);
    return static_cast<int64_t>(v - f >= 1.0 - 1e-10 * std::max(1.0, v) ? f + 1.0 : f);
  };
  const double nmax = static_cast<double>(n_max);
  std::vector<int64_t> counts(static_cast<size_t>(num_classes));
  for (int64_t c = 0; c < num_classes; ++c) {
    double v = nmax;
    if (profile == Profile::exp) {
      // One class has no tail: its exponent would be 0/0.
      if (num_classes > 1) {
        v = nmax * std::pow(imbalance_ratio,
                            -static_cast<double>(c) / static_cast<double>(num_classes - 1));
      }
    } else {
      TORCH_CHECK(profile == Profile::step, caller, ": unknown Profile");
      if (c >= num_classes / 2) v = nmax / imbalance_ratio;
    }
    counts[static_cast<size_t>(c)] = std::min(n_max, tolerant_floor(v));
  }
  return counts;
}

/// A long-tailed subset of a dataset.
struct LongTailSubset {
  /// Dataset indices of the kept samples, grouped by class (class 0 first),
  /// ascending within a class.
  std::vector<int64_t> indices;
  /// Kept samples per class, counts[c] for class c; counts[0] is the largest.
  std::vector<int64_t> counts;
};

namespace detail {

/// Dataset indices of every class, ascending, after checking the labels.
inline std::vector<std::vector<int64_t>> indices_by_class(const torch::Tensor& targets,
                                                          int64_t num_classes, const char* caller) {
  TORCH_CHECK(
      targets.defined() && targets.dim() == 1, caller,
      ": expected targets to be a 1-D tensor, got ",
      targets.defined() ? std::to_string(targets.dim()) + " dimensions" : "an undefined tensor");
  TORCH_CHECK(!targets.is_floating_point() && !targets.is_complex() &&
                  targets.scalar_type() != torch::kBool,
              caller, ": expected integer targets, got ", targets.scalar_type());
  TORCH_CHECK(num_classes > 0, caller, ": expected num_classes > 0, got ", num_classes);
  const torch::Tensor t = targets.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* y = t.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  for (int64_t i = 0; i < t.numel(); ++i) {
    TORCH_CHECK(y[i] >= 0 && y[i] < num_classes, caller, ": expected labels in [0, ", num_classes,
                "), got ", y[i], " at index ", i);
    by_class[static_cast<size_t>(y[i])].push_back(i);
  }
  return by_class;
}

}  // namespace detail

/// Keeps `longtail_counts(n_max, num_classes, rho, profile)[c]` samples of each
/// class c, chosen uniformly at random (deterministically from `seed`, the same
/// on every platform) among that class's samples in `targets`.
/// Throws if a class has fewer samples than it must keep.
inline LongTailSubset make_longtail(const torch::Tensor& targets, int64_t num_classes,
                                    int64_t n_max, double rho, Profile profile, uint64_t seed) {
  constexpr const char* caller = "drolt::data::make_longtail";
  LongTailSubset out;
  out.counts = longtail_counts(n_max, num_classes, rho, profile);
  auto by_class = detail::indices_by_class(targets, num_classes, caller);
  std::mt19937_64 rng(seed);
  for (int64_t c = 0; c < num_classes; ++c) {
    auto& pool = by_class[static_cast<size_t>(c)];
    const int64_t k = out.counts[static_cast<size_t>(c)];
    TORCH_CHECK(static_cast<int64_t>(pool.size()) >= k, caller, ": class ", c, " must keep ", k,
                " samples, expected at least that many in targets, got ", pool.size());
    detail::partial_shuffle(pool, static_cast<size_t>(k), rng);
    std::sort(pool.begin(), pool.begin() + k);
    out.indices.insert(out.indices.end(), pool.begin(), pool.begin() + k);
  }
  return out;
}

/// A class-balanced validation set of `per_class` samples per class, drawn
/// (deterministically from `seed`) only from the samples of `targets` that
/// `subset` did not keep. Indices are grouped by class, ascending within a
/// class. Throws if a class has fewer than `per_class` samples left over.
inline std::vector<int64_t> balanced_validation_split(const torch::Tensor& targets,
                                                      const LongTailSubset& subset,
                                                      int64_t per_class, uint64_t seed) {
  constexpr const char* caller = "drolt::data::balanced_validation_split";
  TORCH_CHECK(per_class > 0, caller, ": expected per_class > 0, got ", per_class);
  const auto num_classes = static_cast<int64_t>(subset.counts.size());
  TORCH_CHECK(num_classes > 0, caller, ": expected a subset with per-class counts, got none");
  auto by_class = detail::indices_by_class(targets, num_classes, caller);
  const int64_t n = targets.size(0);
  std::vector<char> taken(static_cast<size_t>(n), 0);
  for (const int64_t i : subset.indices) {
    TORCH_CHECK(i >= 0 && i < n, caller, ": expected subset indices in [0, ", n, "), got ", i,
                " (was the subset built from these targets?)");
    taken[static_cast<size_t>(i)] = 1;
  }
  std::mt19937_64 rng(seed);
  std::vector<int64_t> out;
  // per_class * num_classes may overflow; a class cannot hold more than n.
  out.reserve(static_cast<size_t>(std::min(per_class, n) * num_classes));
  for (int64_t c = 0; c < num_classes; ++c) {
    std::vector<int64_t> pool;
    for (const int64_t i : by_class[static_cast<size_t>(c)]) {
      if (!taken[static_cast<size_t>(i)]) pool.push_back(i);
    }
    TORCH_CHECK(static_cast<int64_t>(pool.size()) >= per_class, caller, ": class ", c,
                " expected at least ", per_class, " samples outside the long-tailed subset, got ",
                pool.size());
    detail::partial_shuffle(pool, static_cast<size_t>(per_class), rng);
    std::sort(pool.begin(), pool.begin() + per_class);
    out.insert(out.end(), pool.begin(), pool.begin() + per_class);
  }
  return out;
}

/// A view of `dataset` restricted to `indices` (a long-tailed subset or a
/// validation split), usable with torch::data::make_data_loader.
template <typename Dataset>
class SubsetDataset
    : public torch::data::datasets::Dataset<SubsetDataset<Dataset>, typename Dataset::ExampleType> {
 public:
  using ExampleType = typename Dataset::ExampleType;

  SubsetDataset(Dataset dataset, std::vector<int64_t> indices)
      : dataset_(std::move(dataset)), indices_(std::move(indices)) {
    const auto n = dataset_.size();
    for (const int64_t i : indices_) {
      TORCH_CHECK(i >= 0 && (!n.has_value() || static_cast<size_t>(i) < *n),
                  "drolt::data::SubsetDataset: expected indices in [0, ",
                  n.has_value() ? std::to_string(*n) : std::string("size"), "), got ", i);
    }
  }

  ExampleType get(size_t index) override {
    TORCH_CHECK(index < indices_.size(), "drolt::data::SubsetDataset::get: expected index < ",
                indices_.size(), ", got ", index);
    return dataset_.get(static_cast<size_t>(indices_[index]));
  }

  c10::optional<size_t> size() const override { return indices_.size(); }

  const std::vector<int64_t>& indices() const { return indices_; }
  Dataset& dataset() { return dataset_; }

 private:
  Dataset dataset_;
  std::vector<int64_t> indices_;
};

}  // namespace data
}  // namespace drolt
