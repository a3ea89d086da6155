#pragma once
/// \file
/// Re-balancing samplers for torch::data::make_data_loader: class-balanced,
/// square-root and progressively balanced (Kang et al., "Decoupling
/// Representation and Classifier for Long-Tailed Recognition", ICLR 2020).
///
/// Each draw picks a class c with probability p_c, then one of its samples
/// uniformly, with replacement. An epoch has `num_samples` draws (default: the
/// dataset size). Draws come from the sampler's own std::mt19937_64 seeded by
/// the options, never from torch's global generator, and are the same on every
/// platform; every reset() (the data loader calls it at the start of each
/// epoch) draws a fresh epoch from the continuing stream.
///
///     drolt::data::ClassBalancedSampler sampler(train.targets(),
///         drolt::data::ClassSamplerOptions().seed(7));
///     auto loader = torch::data::make_data_loader(
///         train.map(torch::data::transforms::Stack<>()), std::move(sampler), 128);
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "drolt/data/detail/random.hpp"

namespace drolt {
namespace data {

struct ClassSamplerOptions {
  /// Seed of the sampler's own generator.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Draws per epoch; 0 means the number of targets.
  TORCH_ARG(int64_t, num_samples) = 0;
};

namespace detail {

/// Shared machinery: per-class index pools, class probabilities, epoch drawing,
/// save/load. Subclasses only decide the class probabilities.
class ClassSamplerBase : public torch::data::samplers::Sampler<> {
 public:
  void reset(c10::optional<size_t> new_size = c10::nullopt) override {
    if (new_size.has_value()) epoch_length_ = *new_size;
    draw_epoch();
  }

  c10::optional<std::vector<size_t>> next(size_t batch_size) override {
    if (position_ >= indices_.size()) return c10::nullopt;
    const size_t end = std::min(indices_.size(), position_ + batch_size);
    std::vector<size_t> batch(indices_.begin() + static_cast<std::ptrdiff_t>(position_),
                              indices_.begin() + static_cast<std::ptrdiff_t>(end));
    position_ = end;
    return batch;
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    std::ostringstream rng_state;
    rng_state << rng_;
    archive.write("drolt_sampler/rng", c10::IValue(rng_state.str()));
    archive.write("drolt_sampler/position", c10::IValue(static_cast<int64_t>(position_)));
    archive.write("drolt_sampler/epoch_length", c10::IValue(static_cast<int64_t>(epoch_length_)));
    auto idx = torch::empty({static_cast<int64_t>(indices_.size())}, torch::kInt64);
    std::copy(indices_.begin(), indices_.end(), idx.data_ptr<int64_t>());
    archive.write("drolt_sampler/indices", idx, /*is_buffer=*/true);
  }

  void load(torch::serialize::InputArchive& archive) override {
    c10::IValue rng_state, position, epoch_length;
    archive.read("drolt_sampler/rng", rng_state);
    archive.read("drolt_sampler/position", position);
    archive.read("drolt_sampler/epoch_length", epoch_length);
    torch::Tensor idx;
    archive.read("drolt_sampler/indices", idx, /*is_buffer=*/true);
    idx = idx.to(torch::kInt64).contiguous();
    const auto n = static_cast<int64_t>(num_targets_);
    const int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < idx.numel(); ++i) {
      TORCH_CHECK(p[i] >= 0 && p[i] < n, "drolt sampler load: expected indices in [0, ", n,
                  "), got ", p[i], " (saved from a sampler over other targets?)");
    }
    TORCH_CHECK(position.toInt() >= 0 && position.toInt() <= idx.numel(),
                "drolt sampler load: expected position in [0, ", idx.numel(), "], got ",
                position.toInt());
    std::istringstream in(rng_state.toStringRef());
    in >> rng_;
    TORCH_CHECK(!in.fail(), "drolt sampler load: corrupt generator state");
    indices_.assign(p, p + idx.numel());
    position_ = static_cast<size_t>(position.toInt());
    epoch_length_ = static_cast<size_t>(epoch_length.toInt());
  }

  /// Draws per epoch.
  size_t epoch_length() const { return epoch_length_; }
  /// Probability of drawing each class, [C] (0 for classes without samples).
  const std::vector<double>& class_probabilities() const { return probabilities_; }
  /// Samples per class in the targets the sampler was built from.
  std::vector<int64_t> class_counts() const {
    std::vector<int64_t> out;
    for (const auto& pool : pools_) out.push_back(static_cast<int64_t>(pool.size()));
    return out;
  }

 protected:
  ClassSamplerBase(const torch::Tensor& targets, const ClassSamplerOptions& options,
                   const char* name)
      : name_(name), rng_(options.seed()) {
    TORCH_CHECK(targets.defined() && targets.dim() == 1 && targets.numel() > 0, name_,
                ": expected non-empty 1-D targets, got ",
                targets.defined() ? targets.sizes() : torch::IntArrayRef{});
    TORCH_CHECK(!targets.is_floating_point() && !targets.is_complex() &&
                    targets.scalar_type() != torch::kBool,
                name_, ": expected integer targets, got ", targets.scalar_type());
    TORCH_CHECK(options.num_samples() >= 0, name_, ": expected num_samples >= 0, got ",
                options.num_samples());
    const torch::Tensor t = targets.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t* y = t.data_ptr<int64_t>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      TORCH_CHECK(y[i] >= 0, name_, ": expected non-negative labels, got ", y[i], " at index ", i);
      // Labels index a vector: refuse absurd ones rather than allocating for them.
      TORCH_CHECK(y[i] < (int64_t{1} << 24), name_, ": expected labels < 2^24, got ", y[i]);
      if (static_cast<size_t>(y[i]) >= pools_.size()) pools_.resize(static_cast<size_t>(y[i]) + 1);
      pools_[static_cast<size_t>(y[i])].push_back(static_cast<size_t>(i));
    }
    num_targets_ = static_cast<size_t>(t.numel());
    epoch_length_ = options.num_samples() > 0 ? static_cast<size_t>(options.num_samples())
                                              : num_targets_;
  }

  /// Sets class probabilities from non-negative per-class weights (normalised
  /// here; classes without samples get 0 whatever their weight).
  void set_class_weights(std::vector<double> weights) {
    double total = 0.0;
    for (size_t c = 0; c < weights.size(); ++c) {
      if (pools_[c].empty()) weights[c] = 0.0;
      total += weights[c];
    }
    TORCH_CHECK(total > 0.0, name_, ": expected positive total class weight, got ", total);
    probabilities_.resize(weights.size());
    cumulative_.resize(weights.size());
    double running = 0.0;
    for (size_t c = 0; c < weights.size(); ++c) {
      probabilities_[c] = weights[c] / total;
      running += probabilities_[c];
      cumulative_[c] = running;
    }
  }

  void draw_epoch() {
    indices_.resize(epoch_length_);
    for (auto& index : indices_) {
      const double u = uniform_unit(rng_) * cumulative_.back();
      // First class whose cumulative probability exceeds u; a class with p = 0
      // has the same cumulative value as the one before it and is never chosen.
      size_t c = static_cast<size_t>(
          std::upper_bound(cumulative_.begin(), cumulative_.end(), u) - cumulative_.begin());
      c = std::min(c, cumulative_.size() - 1);
      // u < cumulative_.back(), so c is a class whose probability is positive;
      // the loop only guards against rounding in the cumulative sums.
      while (c > 0 && pools_[c].empty()) --c;
      const auto& pool = pools_[c];
      index = pool[static_cast<size_t>(uniform_below(rng_, pool.size()))];
    }
    position_ = 0;
  }

  const std::vector<std::vector<size_t>>& pools() const { return pools_; }

 private:
  const char* name_;
  std::mt19937_64 rng_;
  std::vector<std::vector<size_t>> pools_;
  std::vector<double> probabilities_;
  std::vector<double> cumulative_;
  std::vector<size_t> indices_;
  size_t position_ = 0;
  size_t epoch_length_ = 0;
  size_t num_targets_ = 0;
};

}  // namespace detail

/// Picks a class uniformly among the classes that have samples, then a sample
/// of it uniformly (class-balanced sampling, as in cRT re-training).
class ClassBalancedSampler : public detail::ClassSamplerBase {
 public:
  explicit ClassBalancedSampler(const torch::Tensor& targets, ClassSamplerOptions options = {})
      : ClassSamplerBase(targets, options, "drolt::data::ClassBalancedSampler") {
    set_class_weights(std::vector<double>(pools().size(), 1.0));
    draw_epoch();
  }
};

/// Class probability proportional to sqrt(n_c): halfway (in exponent) between
/// instance-balanced and class-balanced sampling.
class SqrtSampler : public detail::ClassSamplerBase {
 public:
  explicit SqrtSampler(const torch::Tensor& targets, ClassSamplerOptions options = {})
      : ClassSamplerBase(targets, options, "drolt::data::SqrtSampler") {
    std::vector<double> w;
    for (const auto& pool : pools()) w.push_back(std::sqrt(static_cast<double>(pool.size())));
    set_class_weights(std::move(w));
    draw_epoch();
  }
};

/// Progressively balanced sampling: p_c(t) = (1 - t) n_c / N + t / C', with
/// t = epoch / total_epochs (as in Kang et al.) and C' the number of classes
/// that have samples: instance-balanced at epoch 0, class-balanced when
/// epoch == total_epochs.
///
/// Call set_epoch(e, total) before iterating epoch e; the data loader's reset()
/// at the start of the loop draws the epoch with the new probabilities (call
/// reset() yourself when using the sampler without a loader).
class ProgressiveSampler : public detail::ClassSamplerBase {
 public:
  explicit ProgressiveSampler(const torch::Tensor& targets, ClassSamplerOptions options = {})
      : ClassSamplerBase(targets, options, "drolt::data::ProgressiveSampler") {
    update();
    draw_epoch();
  }

  void set_epoch(int64_t epoch, int64_t total_epochs) {
    TORCH_CHECK(total_epochs > 0,
                "drolt::data::ProgressiveSampler::set_epoch: expected total_epochs > 0, got ",
                total_epochs);
    TORCH_CHECK(epoch >= 0 && epoch <= total_epochs,
                "drolt::data::ProgressiveSampler::set_epoch: expected epoch in [0, ",
                total_epochs, "], got ", epoch);
    t_ = static_cast<double>(epoch) / static_cast<double>(total_epochs);
    update();
  }

  /// Current interpolation weight t in [0, 1].
  double progress() const { return t_; }

 private:
  void update() {
    size_t nonempty = 0, total = 0;
    for (const auto& pool : pools()) {
      nonempty += pool.empty() ? 0 : 1;
      total += pool.size();
    }
    std::vector<double> w;
    for (const auto& pool : pools()) {
      const double instance = static_cast<double>(pool.size()) / static_cast<double>(total);
      const double balanced = pool.empty() ? 0.0 : 1.0 / static_cast<double>(nonempty);
      w.push_back((1.0 - t_) * instance + t_ * balanced);
    }
    set_class_weights(std::move(w));
  }

  double t_ = 0.0;
};

}  // namespace data
}  // namespace drolt
