#pragma once
/// \file
/// Re-balancing samplers for torch::data::make_data_loader: class-balanced,
/// square-root and progressively balanced (Kang et al., "Decoupling
/// Representation and Classifier for Long-Tailed Recognition", ICLR 2020), and
/// class-aware (k images of one class, then k of the next; ClassAwareSampler).
///
/// Each draw picks a class c with probability p_c, then one of its samples
/// uniformly, with replacement. An epoch has `num_samples` draws (default: the
/// dataset size). Draws come from the sampler's own std::mt19937_64 seeded by
/// the options, never from torch's global generator, and are the same on every
/// platform. Every reset() (the data loader calls it when a loop over it
/// starts) begins the next epoch, drawn from the continuing stream; next()
/// before the first reset() begins epoch 0 by itself.
///
///     drolt::data::ClassBalancedSampler sampler(train.targets(),
///         drolt::data::ClassSamplerOptions().seed(7));
///     auto loader = torch::data::make_data_loader(
///         train.map(torch::data::transforms::Stack<>()), std::move(sampler), 128);
#include <torch/torch.h>

#include <cstring>
#include <type_traits>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <locale>
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

/// The checks every sampler makes of its targets and options.
inline void check_sampler_inputs(const torch::Tensor& targets, const ClassSamplerOptions& options,
                                 const char* name) {
  TORCH_CHECK(targets.defined() && targets.dim() == 1 && targets.numel() > 0, name,
              ": expected non-empty 1-D targets, got ",
              targets.defined() ? targets.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(!targets.is_floating_point() && !targets.is_complex() && targets.scalar_type() != torch::kBool,
              name, ": expected integer targets, got ", targets.scalar_type());
  TORCH_CHECK(options.num_samples() >= 0, name, ": expected num_samples >= 0, got ", options.num_samples());
  // An epoch is materialised as indices: refuse sizes that cannot be allocated
  // (2^31 draws are 16 GiB of indices) with an error instead of std::bad_alloc.
  TORCH_CHECK(options.num_samples() <= (int64_t{1} << 31), name,
              ": expected num_samples <= 2^31 (an epoch's indices are held in memory), got ",
              options.num_samples());
}

/// The next batch of a sampler's epoch: indices[position, position + batch_size),
/// advancing position; nullopt once the epoch is used up.
inline c10::optional<std::vector<size_t>> take_batch(const std::vector<size_t>& indices,
                                                     size_t& position, size_t batch_size) {
  if (position >= indices.size()) return c10::nullopt;
  // Not position + batch_size: that wraps around for a batch size near SIZE_MAX.
  const size_t end = position + std::min(indices.size() - position, batch_size);
  std::vector<size_t> batch(indices.begin() + static_cast<std::ptrdiff_t>(position),
                            indices.begin() + static_cast<std::ptrdiff_t>(end));
  position = end;
  return batch;
}

/// A sampler's random engine as raw bytes (its text form did not parse back in
/// builds against PyPI's LibTorch, whose libtorch.so exports copies of
/// libstdc++ internals).
inline torch::Tensor engine_bytes(const std::mt19937_64& rng) {
  static_assert(std::is_trivially_copyable<std::mt19937_64>::value,
                "the sampler saves its engine as raw bytes");
  auto t = torch::empty({static_cast<int64_t>(sizeof(rng))}, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), &rng, sizeof(rng));
  return t;
}

/// Shared machinery: per-class index pools, class probabilities, epoch drawing,
/// save/load. Subclasses only decide the class probabilities.
class ClassSamplerBase : public torch::data::samplers::Sampler<> {
 public:
  /// Begins the next epoch; `new_size` changes the number of draws per epoch.
  void reset(c10::optional<size_t> new_size = c10::nullopt) override {
    if (new_size.has_value()) epoch_length_ = *new_size;
    prepare_epoch(next_epoch_);
    draw_epoch();
    current_epoch_ = next_epoch_++;
  }

  c10::optional<std::vector<size_t>> next(size_t batch_size) override {
    if (current_epoch_ < 0) reset();
    return take_batch(indices_, position_, batch_size);
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("drolt_sampler/rng", engine_bytes(rng_), /*is_buffer=*/true);
    archive.write("drolt_sampler/position", c10::IValue(static_cast<int64_t>(position_)));
    archive.write("drolt_sampler/epoch_length", c10::IValue(static_cast<int64_t>(epoch_length_)));
    archive.write("drolt_sampler/num_targets", c10::IValue(static_cast<int64_t>(num_targets_)));
    archive.write("drolt_sampler/current_epoch", c10::IValue(current_epoch_));
    archive.write("drolt_sampler/next_epoch", c10::IValue(next_epoch_));
    auto idx = torch::empty({static_cast<int64_t>(indices_.size())}, torch::kInt64);
    std::copy(indices_.begin(), indices_.end(), idx.data_ptr<int64_t>());
    archive.write("drolt_sampler/indices", idx, /*is_buffer=*/true);
  }

  void load(torch::serialize::InputArchive& archive) override {
    c10::IValue num_targets, position, epoch_length, current_epoch, next_epoch;
    torch::Tensor rng_state;
    archive.read("drolt_sampler/num_targets", num_targets);
    TORCH_CHECK(num_targets.toInt() == static_cast<int64_t>(num_targets_), name_,
                "::load: expected an archive from a sampler over ", num_targets_,
                " targets, got one over ", num_targets.toInt());
    archive.read("drolt_sampler/rng", rng_state, /*is_buffer=*/true);
    archive.read("drolt_sampler/position", position);
    archive.read("drolt_sampler/epoch_length", epoch_length);
    archive.read("drolt_sampler/current_epoch", current_epoch);
    archive.read("drolt_sampler/next_epoch", next_epoch);
    torch::Tensor idx;
    archive.read("drolt_sampler/indices", idx, /*is_buffer=*/true);
    idx = idx.to(torch::kInt64).contiguous();
    const auto n = static_cast<int64_t>(num_targets_);
    const int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < idx.numel(); ++i) {
      TORCH_CHECK(p[i] >= 0 && p[i] < n, name_, "::load: expected indices in [0, ", n, "), got ",
                  p[i], " (saved from a sampler over other targets?)");
    }
    TORCH_CHECK(position.toInt() >= 0 && position.toInt() <= idx.numel(), name_,
                "::load: expected position in [0, ", idx.numel(), "], got ", position.toInt());
    TORCH_CHECK(rng_state.scalar_type() == torch::kUInt8 &&
                    rng_state.numel() == static_cast<int64_t>(sizeof(rng_)),
                name_, "::load: expected a std::mt19937_64 state of ", sizeof(rng_),
                " bytes, got ", rng_state.numel(), " values of ", rng_state.scalar_type());
    std::mt19937_64 restored;
    std::memcpy(&restored, rng_state.contiguous().data_ptr<uint8_t>(), sizeof(restored));
#if defined(__GLIBCXX__)
    // libstdc++ keeps the word array then its position; a position past the
    // array would read out of bounds on the next draw.
    size_t word = 0;
    std::memcpy(&word, rng_state.contiguous().data_ptr<uint8_t>() + sizeof(restored) - sizeof(size_t),
                sizeof(size_t));
    TORCH_CHECK(sizeof(restored) == 312 * sizeof(uint64_t) + sizeof(size_t) && word <= 312, name_,
                "::load: expected a std::mt19937_64 state, got a corrupt one");
#endif
    rng_ = restored;
    indices_.assign(p, p + idx.numel());
    position_ = static_cast<size_t>(position.toInt());
    epoch_length_ = static_cast<size_t>(epoch_length.toInt());
    current_epoch_ = current_epoch.toInt();
    next_epoch_ = next_epoch.toInt();
    // Keep class_probabilities() in step with the epoch being served.
    prepare_epoch(std::max<int64_t>(current_epoch_, 0));
  }

  /// Index of the epoch being served (0 for the first), -1 before any.
  int64_t epoch() const { return current_epoch_; }

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
    detail::check_sampler_inputs(targets, options, name_);
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
    epoch_length_ =
        options.num_samples() > 0 ? static_cast<size_t>(options.num_samples()) : num_targets_;
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

  /// Hook for samplers whose class probabilities change with the epoch.
  virtual void prepare_epoch(int64_t /*epoch*/) {}

  /// Makes `epoch` the one the next reset() begins.
  void set_next_epoch(int64_t epoch) { next_epoch_ = epoch; }

  void draw_epoch() {
    indices_.resize(epoch_length_);
    for (auto& index : indices_) {
      const double u = uniform_unit(rng_) * cumulative_.back();
      // First class whose cumulative probability exceeds u; a class with p = 0
      // has the same cumulative value as the one before it and is never chosen.
      size_t c = static_cast<size_t>(std::upper_bound(cumulative_.begin(), cumulative_.end(), u) -
                                     cumulative_.begin());
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
  int64_t current_epoch_ = -1;
  int64_t next_epoch_ = 0;
};

}  // namespace detail

/// Picks a class uniformly among the classes that have samples, then a sample
/// of it uniformly (class-balanced sampling, as in cRT re-training).
class ClassBalancedSampler : public detail::ClassSamplerBase {
 public:
  explicit ClassBalancedSampler(const torch::Tensor& targets, ClassSamplerOptions options = {})
      : ClassSamplerBase(targets, options, "drolt::data::ClassBalancedSampler") {
    set_class_weights(std::vector<double>(pools().size(), 1.0));
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
  }
};

/// Progressively balanced sampling: p_c(t) = (1 - t) n_c / N + t / C', with
/// t = min(epoch, total_epochs) / total_epochs (as in Kang et al.) and C' the
/// number of classes that have samples: instance-balanced at epoch 0,
/// class-balanced from epoch total_epochs on.
///
/// Each reset() begins the next epoch, so with a data loader every loop over it
/// is one epoch further along. set_epoch(e) makes the next reset() begin epoch
/// e (to resume, or to drive the sampler by hand).
class ProgressiveSampler : public detail::ClassSamplerBase {
 public:
  ProgressiveSampler(const torch::Tensor& targets, int64_t total_epochs,
                     ClassSamplerOptions options = {})
      : ClassSamplerBase(targets, options, "drolt::data::ProgressiveSampler"),
        total_epochs_(total_epochs) {
    TORCH_CHECK(total_epochs > 0,
                "drolt::data::ProgressiveSampler: expected total_epochs > 0, got ", total_epochs);
    prepare_epoch(0);
  }

  /// The next reset() begins epoch `epoch`; class_probabilities() and progress()
  /// show that epoch's values right away.
  void set_epoch(int64_t epoch) {
    TORCH_CHECK(epoch >= 0, "drolt::data::ProgressiveSampler::set_epoch: expected epoch >= 0, got ",
                epoch);
    set_next_epoch(epoch);
    prepare_epoch(epoch);
  }

  /// Interpolation weight t in [0, 1] of the epoch being served (or set).
  double progress() const { return t_; }
  int64_t total_epochs() const { return total_epochs_; }

 protected:
  void prepare_epoch(int64_t epoch) override {
    t_ = static_cast<double>(std::min(epoch, total_epochs_)) / static_cast<double>(total_epochs_);
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

 private:
  int64_t total_epochs_;
  double t_ = 0.0;
};

/// Class-aware sampling as in the DRO-LT and classifier-balancing authors'
/// loaders: `k` images of one class, then `k` of the next, the classes in a
/// shuffled cycle (re-shuffled each time round) and each class's images in
/// their own shuffled cycle, so every image of a class is drawn once before any
/// is drawn again. An epoch has `n_max * C` draws by default (n_max the largest
/// class, C the classes with samples); the cycles continue across epochs.
/// Draws come from the sampler's own std::mt19937_64, as the other samplers.
class ClassAwareSampler : public torch::data::samplers::Sampler<> {
 public:
  ClassAwareSampler(const torch::Tensor& targets, int64_t k, ClassSamplerOptions options = {})
      : k_(k), rng_(options.seed()) {
    constexpr const char* name = "drolt::data::ClassAwareSampler";
    TORCH_CHECK(k >= 1, name, ": expected k >= 1 images per class in turn, got ", k);
    detail::check_sampler_inputs(targets, options, name);
    const torch::Tensor t = targets.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t* y = t.data_ptr<int64_t>();
    std::vector<std::vector<size_t>> pools;
    for (int64_t i = 0; i < t.numel(); ++i) {
      TORCH_CHECK(y[i] >= 0 && y[i] < (int64_t{1} << 24), name,
                  ": expected labels in [0, 2^24), got ", y[i], " at index ", i);
      if (static_cast<size_t>(y[i]) >= pools.size()) pools.resize(static_cast<size_t>(y[i]) + 1);
      pools[static_cast<size_t>(y[i])].push_back(static_cast<size_t>(i));
    }
    size_t largest = 0;
    for (size_t c = 0; c < pools.size(); ++c) {
      if (pools[c].empty()) continue;
      classes_.order.push_back(c);
      largest = std::max(largest, pools[c].size());
    }
    for (auto& p : pools) images_.push_back(Cycle{std::move(p), 0});
    num_targets_ = static_cast<size_t>(t.numel());
    epoch_length_ = options.num_samples() > 0 ? static_cast<size_t>(options.num_samples())
                                              : largest * classes_.order.size();
    // Start "at the end" of every cycle, so the first draw shuffles it (as theirs).
    classes_.position = classes_.order.size();
    for (auto& c : images_) c.position = c.order.size();
  }

  void reset(c10::optional<size_t> new_size = c10::nullopt) override {
    if (new_size.has_value()) epoch_length_ = *new_size;
    indices_.resize(epoch_length_);
    for (size_t i = 0; i < epoch_length_; ++i) {
      if (in_class_ == 0) class_ = next_of(classes_);
      indices_[i] = next_of(images_[class_]);
      in_class_ = (in_class_ + 1) % static_cast<size_t>(k_);
    }
    position_ = 0;
    ++epoch_;
  }

  c10::optional<std::vector<size_t>> next(size_t batch_size) override {
    if (epoch_ < 0) reset();
    return detail::take_batch(indices_, position_, batch_size);
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("drolt_class_aware/rng", detail::engine_bytes(rng_), /*is_buffer=*/true);
    // Every cycle (classes first, then each class's images): order and position.
    std::vector<int64_t> orders, positions;
    auto put = [&](const Cycle& c) {
      orders.insert(orders.end(), c.order.begin(), c.order.end());
      positions.push_back(static_cast<int64_t>(c.position));
    };
    put(classes_);
    for (const auto& c : images_) put(c);
    archive.write("drolt_class_aware/orders", torch::tensor(orders, torch::kInt64), true);
    archive.write("drolt_class_aware/positions", torch::tensor(positions, torch::kInt64), true);
    std::vector<int64_t> idx(indices_.begin(), indices_.end());
    archive.write("drolt_class_aware/indices", torch::tensor(idx, torch::kInt64), true);
    archive.write(
        "drolt_class_aware/state",
        torch::tensor({static_cast<int64_t>(num_targets_), static_cast<int64_t>(position_),
                       static_cast<int64_t>(epoch_length_), epoch_, static_cast<int64_t>(class_),
                       static_cast<int64_t>(in_class_), k_},
                      torch::kInt64),
        true);
  }

  void load(torch::serialize::InputArchive& archive) override {
    constexpr const char* name = "drolt::data::ClassAwareSampler::load";
    torch::Tensor rng_state, orders, positions, idx, state;
    archive.read("drolt_class_aware/rng", rng_state, true);
    archive.read("drolt_class_aware/orders", orders, true);
    archive.read("drolt_class_aware/positions", positions, true);
    archive.read("drolt_class_aware/indices", idx, true);
    archive.read("drolt_class_aware/state", state, true);
    state = state.to(torch::kInt64).contiguous();
    TORCH_CHECK(state.numel() == 7, name, ": expected 7 state values, got ", state.numel());
    const int64_t* s = state.data_ptr<int64_t>();
    TORCH_CHECK(s[0] == static_cast<int64_t>(num_targets_) && s[6] == k_, name,
                ": expected an archive from a sampler over ", num_targets_, " targets with k ", k_,
                ", got one over ", s[0], " targets with k ", s[6]);
    TORCH_CHECK(rng_state.scalar_type() == torch::kUInt8 &&
                    rng_state.numel() == static_cast<int64_t>(sizeof(rng_)),
                name, ": expected a std::mt19937_64 state of ", sizeof(rng_), " bytes, got ",
                rng_state.numel());
    orders = orders.to(torch::kInt64).contiguous();
    positions = positions.to(torch::kInt64).contiguous();
    idx = idx.to(torch::kInt64).contiguous();
    TORCH_CHECK(positions.numel() == static_cast<int64_t>(images_.size() + 1), name, ": expected ",
                images_.size() + 1, " cycle positions, got ", positions.numel());
    // Each cycle must hold the same elements as ours (a permutation of them).
    const int64_t* o = orders.data_ptr<int64_t>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    int64_t at = 0;
    auto take = [&](Cycle& c, int64_t p) {
      const auto n = static_cast<int64_t>(c.order.size());
      TORCH_CHECK(at + n <= orders.numel() && p >= 0 && p <= n, name,
                  ": expected cycles of the sizes of this sampler's classes, got others");
      std::vector<size_t> got(o + at, o + at + n), mine = c.order;
      std::vector<size_t> a = got;
      std::sort(a.begin(), a.end());
      std::sort(mine.begin(), mine.end());
      TORCH_CHECK(a == mine, name,
                  ": expected cycles over this sampler's classes and images, got others");
      c.order = got;
      c.position = static_cast<size_t>(p);
      at += n;
    };
    Cycle classes = classes_;
    std::vector<Cycle> images = images_;
    take(classes, pos[0]);
    for (size_t c = 0; c < images.size(); ++c) take(images[c], pos[c + 1]);
    TORCH_CHECK(at == orders.numel(), name, ": expected ", at, " cycle entries, got ",
                orders.numel());
    const int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < idx.numel(); ++i) {
      TORCH_CHECK(p[i] >= 0 && p[i] < static_cast<int64_t>(num_targets_), name,
                  ": expected indices in [0, ", num_targets_, "), got ", p[i]);
    }
    TORCH_CHECK(s[1] >= 0 && s[1] <= idx.numel() && s[2] >= 0 && s[4] >= 0 &&
                    s[4] < static_cast<int64_t>(images.size()) && s[5] >= 0 && s[5] < k_,
                name, ": expected a consistent sampler state, got a corrupt one");
    std::memcpy(&rng_, rng_state.contiguous().data_ptr<uint8_t>(), sizeof(rng_));
    classes_ = std::move(classes);
    images_ = std::move(images);
    indices_.assign(p, p + idx.numel());
    position_ = static_cast<size_t>(s[1]);
    epoch_length_ = static_cast<size_t>(s[2]);
    epoch_ = s[3];
    class_ = static_cast<size_t>(s[4]);
    in_class_ = static_cast<size_t>(s[5]);
  }

  /// Draws per epoch.
  size_t epoch_length() const { return epoch_length_; }
  /// Images of one class drawn in a row.
  int64_t k() const { return k_; }

 private:
  struct Cycle {
    std::vector<size_t> order;
    size_t position = 0;
  };

  size_t next_of(Cycle& c) {
    if (c.position >= c.order.size()) {
      for (size_t i = c.order.size(); i > 1; --i) {  // Fisher-Yates, portable draws
        std::swap(c.order[i - 1], c.order[static_cast<size_t>(detail::uniform_below(rng_, i))]);
      }
      c.position = 0;
    }
    return c.order[c.position++];
  }

  int64_t k_;
  std::mt19937_64 rng_;
  Cycle classes_;
  std::vector<Cycle> images_;
  std::vector<size_t> indices_;
  size_t position_ = 0, epoch_length_ = 0, num_targets_ = 0;
  size_t class_ = 0, in_class_ = 0;
  int64_t epoch_ = -1;
};

}  // namespace data
}  // namespace drolt
