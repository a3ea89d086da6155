#pragma once
/// \file
/// Fast loading of image data sets: decoding and augmentation on a pool of
/// worker threads with a bounded prefetch queue, batches delivered in order.
/// Needs the `drolt::images` CMake target.
///
///     drolt::data::ImageLoader loader(train,
///         drolt::data::ImageTransformOptions().train(true).size(224),
///         drolt::data::ImageLoaderOptions().batch_size(256).workers(8).seed(1));
///     for (int64_t epoch = 0; epoch < epochs; ++epoch) {
///       loader.start_epoch(drolt::data::shuffled_indices(train.size().value(), 1, epoch), epoch);
///       while (auto batch = loader.next()) { /* batch->data [256, 3, 224, 224], batch->target */ }
///     }
///
/// Each sample's augmentation draws from its own generator, seeded from
/// (seed, epoch, position in the epoch): the batches are the same for every
/// number of workers and every thread schedule, on every platform.
///
/// Transforms (torchvision's ImageNet recipe):
/// - train: RandomResizedCrop(size, scale, ratio), then a horizontal flip with
///   probability flip_probability;
/// - eval: Resize(resize) of the shorter side, then CenterCrop(size);
/// then ToTensor and Normalize(mean, std). Resampling is antialiased bilinear
/// (PIL's filter, as torchvision applies to PIL images), done on the crop box
/// directly so that resize and crop are one pass.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "drolt/data/detail/random.hpp"
#include "drolt/data/images.hpp"

namespace drolt {
namespace data {

struct ImageTransformOptions {
  /// true: random-resized crop and flip; false: resize + center crop.
  TORCH_ARG(bool, train) = true;
  /// Side of the square output.
  TORCH_ARG(int64_t, size) = 224;
  /// Evaluation: the shorter side after resizing, before the center crop.
  TORCH_ARG(int64_t, resize) = 256;
  /// Random-resized crop: area fraction and aspect-ratio range (log-uniform).
  TORCH_ARG(double, scale_min) = 0.08;
  TORCH_ARG(double, scale_max) = 1.0;
  TORCH_ARG(double, ratio_min) = 3.0 / 4.0;
  TORCH_ARG(double, ratio_max) = 4.0 / 3.0;
  TORCH_ARG(double, flip_probability) = 0.5;
  /// Per-channel normalisation of values in [0, 1]; one value or one per channel.
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{0.485, 0.456, 0.406};
  TORCH_ARG(std::vector<double>, std) = std::vector<double>{0.229, 0.224, 0.225};
};

/// A crop box in source pixels (x0, y0 inclusive corner; widths may be fractional).
struct CropBox {
  double x0, y0, width, height;
  bool flip;
};

namespace detail {

inline void check_transform(const ImageTransformOptions& t, const char* caller) {
  TORCH_CHECK(t.size() > 0 && t.size() <= 8192, caller, ": expected size in [1, 8192], got ",
              t.size());
  TORCH_CHECK(t.resize() >= t.size(), caller, ": expected resize >= size (", t.size(), "), got ",
              t.resize());
  TORCH_CHECK(t.scale_min() > 0 && t.scale_min() <= t.scale_max() && t.scale_max() <= 1.0, caller,
              ": expected 0 < scale_min <= scale_max <= 1, got [", t.scale_min(), ", ",
              t.scale_max(), "]");
  TORCH_CHECK(t.ratio_min() > 0 && t.ratio_min() <= t.ratio_max() && std::isfinite(t.ratio_max()),
              caller, ": expected 0 < ratio_min <= ratio_max < inf, got [", t.ratio_min(), ", ", t.ratio_max(),
              "]");
  TORCH_CHECK(t.flip_probability() >= 0 && t.flip_probability() <= 1, caller,
              ": expected flip_probability in [0, 1], got ", t.flip_probability());
  TORCH_CHECK(!t.mean().empty() && t.mean().size() == t.std().size(), caller,
              ": expected mean and std of the same non-zero length, got ", t.mean().size(), " and ",
              t.std().size());
  for (const double m : t.mean()) {
    TORCH_CHECK(std::isfinite(m), caller, ": expected a finite mean, got ", m);
  }
  for (const double s : t.std()) {
    TORCH_CHECK(std::isfinite(s) && s > 0, caller, ": expected a finite std > 0, got ", s);
  }
}

/// Filter taps of one axis: out[i] = sum_k w[i * ksize + k] * in[start[i] + k].
struct Taps {
  std::vector<int64_t> start, count;
  std::vector<float> weight;
  int64_t ksize = 0;
};

/// PIL's antialiased bilinear coefficients (precompute_coeffs in Resample.c):
/// the triangle filter stretched by the downscaling factor.
inline Taps bilinear_taps(int64_t in_size, double box0, double box1, int64_t out_size) {
  Taps t;
  const double scale = (box1 - box0) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = filterscale;  // the triangle's support is 1
  t.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.start.resize(static_cast<size_t>(out_size));
  t.count.resize(static_cast<size_t>(out_size));
  t.weight.assign(static_cast<size_t>(out_size * t.ksize), 0.0f);
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = box0 + (static_cast<double>(i) + 0.5) * scale;
    int64_t lo = static_cast<int64_t>(center - support + 0.5);
    lo = std::max<int64_t>(lo, 0);
    int64_t hi = static_cast<int64_t>(center + support + 0.5);
    hi = std::min<int64_t>(hi, in_size);
    hi = std::max(hi, lo + 1);
    if (hi > in_size) lo = in_size - 1, hi = in_size;
    const int64_t n = std::min(hi - lo, t.ksize);
    double total = 0.0;
    std::vector<double> w(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) {
      const double x = (static_cast<double>(k + lo) - center + 0.5) / filterscale;
      w[static_cast<size_t>(k)] = std::max(0.0, 1.0 - std::abs(x));
      total += w[static_cast<size_t>(k)];
    }
    for (int64_t k = 0; k < n; ++k) {
      t.weight[static_cast<size_t>(i * t.ksize + k)] =
          static_cast<float>(total > 0 ? w[static_cast<size_t>(k)] / total : (k == 0 ? 1.0 : 0.0));
    }
    t.start[static_cast<size_t>(i)] = lo;
    t.count[static_cast<size_t>(i)] = n;
  }
  return t;
}

}  // namespace detail

/// Where the transform crops image h x w for one sample, drawing from `rng`
/// in train mode (torchvision's RandomResizedCrop.get_params: ten tries, then
/// the central crop with the ratio clamped; then the flip).
inline CropBox choose_crop(int64_t h, int64_t w, const ImageTransformOptions& t,
                           std::mt19937_64& rng) {
  const double H = static_cast<double>(h), W = static_cast<double>(w);
  if (!t.train()) {
    // Resize(resize) then CenterCrop(size), as a box in source pixels; Python's
    // round() is round-half-even, as std::nearbyint in the default mode.
    const double rh = h <= w ? static_cast<double>(t.resize())
                             : std::floor(static_cast<double>(t.resize()) * H / W);
    const double rw = w <= h ? static_cast<double>(t.resize())
                             : std::floor(static_cast<double>(t.resize()) * W / H);
    const double s = static_cast<double>(t.size());
    const double top = std::nearbyint((rh - s) / 2.0), left = std::nearbyint((rw - s) / 2.0);
    // The resized image spans the source exactly; per axis scale = source / resized.
    const double sy = H / rh, sx = W / rw;
    return {left * sx, top * sy, s * sx, s * sy, false};
  }
  const double area = H * W;
  const double log_lo = std::log(t.ratio_min()), log_hi = std::log(t.ratio_max());
  CropBox box{0, 0, W, H, false};
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target =
        area * (t.scale_min() + (t.scale_max() - t.scale_min()) * detail::uniform_unit(rng));
    const double ratio = std::exp(log_lo + (log_hi - log_lo) * detail::uniform_unit(rng));
    const auto cw = static_cast<int64_t>(std::nearbyint(std::sqrt(target * ratio)));
    const auto ch = static_cast<int64_t>(std::nearbyint(std::sqrt(target / ratio)));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      const auto top =
          static_cast<int64_t>(detail::uniform_below(rng, static_cast<uint64_t>(h - ch + 1)));
      const auto left =
          static_cast<int64_t>(detail::uniform_below(rng, static_cast<uint64_t>(w - cw + 1)));
      box = {static_cast<double>(left), static_cast<double>(top), static_cast<double>(cw),
             static_cast<double>(ch), false};
      found = true;
    }
  }
  if (!found) {
    const double in_ratio = W / H;
    double cw = W, ch = H;
    if (in_ratio < t.ratio_min()) {
      ch = std::nearbyint(W / t.ratio_min());
    } else if (in_ratio > t.ratio_max()) {
      cw = std::nearbyint(H * t.ratio_max());
    }
    box = {std::floor((W - cw) / 2.0), std::floor((H - ch) / 2.0), cw, ch, false};
  }
  box.flip = detail::uniform_unit(rng) < t.flip_probability();
  return box;
}

/// Resamples `box` of a uint8 [H, W, C] image to [C, size, size] floats at
/// `out`, normalised: (v / 255 - mean[c]) / std[c], mirrored if box.flip.
inline void resample_normalize(const torch::Tensor& hwc, const CropBox& box,
                               const ImageTransformOptions& t, float* out) {
  const int64_t h = hwc.size(0), w = hwc.size(1), c = hwc.size(2);
  const int64_t s = t.size();
  const uint8_t* src = hwc.data_ptr<uint8_t>();
  const detail::Taps tx = detail::bilinear_taps(w, box.x0, box.x0 + box.width, s);
  const detail::Taps ty = detail::bilinear_taps(h, box.y0, box.y0 + box.height, s);
  // Horizontal pass over the rows the vertical taps read.
  const int64_t row_lo = ty.start.front();
  const int64_t row_hi = ty.start.back() + ty.count.back();
  std::vector<float> tmp(static_cast<size_t>((row_hi - row_lo) * s * c));
  for (int64_t r = row_lo; r < row_hi; ++r) {
    const uint8_t* row = src + r * w * c;
    float* dst = tmp.data() + (r - row_lo) * s * c;
    for (int64_t x = 0; x < s; ++x) {
      const float* wk = tx.weight.data() + x * tx.ksize;
      const uint8_t* p = row + tx.start[static_cast<size_t>(x)] * c;
      const int64_t n = tx.count[static_cast<size_t>(x)];
      for (int64_t ch = 0; ch < c; ++ch) {
        float acc = 0.0f;
        for (int64_t k = 0; k < n; ++k) acc += wk[k] * static_cast<float>(p[k * c + ch]);
        dst[x * c + ch] = acc;
      }
    }
  }
  std::vector<float> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    const size_t m = t.mean().size() == 1 ? 0 : static_cast<size_t>(ch);
    scale[static_cast<size_t>(ch)] = static_cast<float>(1.0 / (255.0 * t.std()[m]));
    shift[static_cast<size_t>(ch)] = static_cast<float>(-t.mean()[m] / t.std()[m]);
  }
  for (int64_t y = 0; y < s; ++y) {
    const float* wk = ty.weight.data() + y * ty.ksize;
    const int64_t first = ty.start[static_cast<size_t>(y)] - row_lo;
    const int64_t n = ty.count[static_cast<size_t>(y)];
    for (int64_t x = 0; x < s; ++x) {
      const int64_t ox = box.flip ? s - 1 - x : x;
      for (int64_t ch = 0; ch < c; ++ch) {
        float acc = 0.0f;
        for (int64_t k = 0; k < n; ++k)
          acc += wk[k] * tmp[static_cast<size_t>(((first + k) * s + x) * c + ch)];
        // PIL rounds and clamps to 8 bits between resampling and ToTensor.
        const float v = std::min(255.0f, std::max(0.0f, std::nearbyint(acc)));
        out[(ch * s + y) * s + ox] =
            v * scale[static_cast<size_t>(ch)] + shift[static_cast<size_t>(ch)];
      }
    }
  }
}

/// Decoded image -> normalised [C, size, size] float tensor, drawing from `rng`.
inline torch::Tensor transform_image(const torch::Tensor& hwc, const ImageTransformOptions& t,
                                     std::mt19937_64& rng) {
  detail::check_transform(t, "drolt::data::transform_image");
  TORCH_CHECK(hwc.dim() == 3 && hwc.scalar_type() == torch::kUInt8 && hwc.is_contiguous(),
              "drolt::data::transform_image: expected a contiguous uint8 [H, W, C] image, got ",
              hwc.sizes(), " ", hwc.scalar_type());
  TORCH_CHECK(t.mean().size() == 1 || static_cast<int64_t>(t.mean().size()) == hwc.size(2),
              "drolt::data::transform_image: expected one mean/std value or one per channel (",
              hwc.size(2), "), got ", t.mean().size());
  torch::Tensor out = torch::empty({hwc.size(2), t.size(), t.size()}, torch::kFloat32);
  resample_normalize(hwc, choose_crop(hwc.size(0), hwc.size(1), t, rng), t, out.data_ptr<float>());
  return out;
}

/// Seed of the generator for sample `position` of epoch `epoch` (SplitMix64
/// finalisers, so neighbouring positions get unrelated streams).
inline uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t position) {
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(seed) ^ static_cast<uint64_t>(epoch)) ^ static_cast<uint64_t>(position));
}

/// 0 ... n-1 in a random order, the same on every platform for (seed, epoch).
inline std::vector<int64_t> shuffled_indices(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(sample_seed(seed, epoch, -1));
  detail::partial_shuffle(order, n, rng);
  return order;
}

namespace detail {

/// Test hook (documented in docs/longtail.md, for tests only): when set, a loader
/// worker calls it with the batch number just before allocating that batch's
/// tensors, so a test can inject an allocation failure by throwing from it.
/// Set it only while no loader runs.
inline std::function<void(int64_t)>& loader_allocation_hook() {
  static std::function<void(int64_t)> hook;
  return hook;
}

}  // namespace detail

struct ImageLoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 256;
  /// Decoding threads.
  TORCH_ARG(int64_t, workers) = 4;
  /// Batches in the queue at most: the one the consumer waits for and those
  /// decoded ahead of it. Bounds memory at prefetch batches.
  TORCH_ARG(int64_t, prefetch) = 4;
  /// Seed of the per-sample augmentation generators.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Leave out a last, smaller batch.
  TORCH_ARG(bool, drop_last) = false;
  /// Batches in page-locked memory (fast, asynchronous copies to the GPU);
  /// applies only when CUDA is available.
  TORCH_ARG(bool, pin_memory) = true;
};

/// Decodes and augments an ImageDataset on worker threads; see the file comment.
class ImageLoader {
 public:
  ImageLoader(ImageDataset dataset, ImageTransformOptions transform,
              ImageLoaderOptions options = {})
      : dataset_(std::move(dataset)), transform_(std::move(transform)), options_(options) {
    constexpr const char* caller = "drolt::data::ImageLoader";
    detail::check_transform(transform_, caller);
    TORCH_CHECK(options_.batch_size() > 0, caller, ": expected batch_size > 0, got ",
                options_.batch_size());
    TORCH_CHECK(options_.workers() > 0 && options_.workers() <= 1024, caller,
                ": expected workers in [1, 1024], got ", options_.workers());
    TORCH_CHECK(options_.prefetch() > 0, caller, ": expected prefetch > 0, got ",
                options_.prefetch());
    const int64_t ch = dataset_.options().decode().channels();
    TORCH_CHECK(ch == 1 || ch == 3, caller,
                ": expected the dataset to decode to a fixed 1 or 3 channels, got channels ", ch);
    TORCH_CHECK(
        transform_.mean().size() == 1 || static_cast<int64_t>(transform_.mean().size()) == ch,
        caller, ": expected one mean/std value or one per channel (", ch, "), got ",
        transform_.mean().size());
    channels_ = ch;
    pinned_ = options_.pin_memory() && torch::cuda::is_available();
    try {
      for (int64_t i = 0; i < options_.workers(); ++i) threads_.emplace_back([this] { work(); });
    } catch (...) {
      // A thread that cannot be started: join those that were, then report.
      const auto error = detail::as_c10_error(std::current_exception(),
                                              "drolt::data::ImageLoader: starting a worker failed");
      shut_down();
      std::rethrow_exception(error);
    }
  }
  ImageLoader(const ImageLoader&) = delete;
  ImageLoader& operator=(const ImageLoader&) = delete;
  ~ImageLoader() { shut_down(); }

  /// Begins epoch `epoch` over `order` (dataset indices, e.g. shuffled_indices
  /// or a sampler's draws); batches of the previous epoch not yet taken are dropped.
  void start_epoch(std::vector<int64_t> order, int64_t epoch = 0) {
    const auto n = static_cast<int64_t>(dataset_.size().value());
    for (const int64_t i : order) {
      TORCH_CHECK(i >= 0 && i < n,
                  "drolt::data::ImageLoader::start_epoch: expected indices in [0, ", n, "), got ",
                  i);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++generation_;
    order_ = std::make_shared<const std::vector<int64_t>>(std::move(order));
    epoch_ = epoch;
    const auto total = static_cast<int64_t>(order_->size());
    const int64_t bs = options_.batch_size();
    // No (total + bs - 1) or num_batches * bs: either overflows for a batch
    // size near INT64_MAX.
    num_batches_ = total / bs + (!options_.drop_last() && total % bs != 0 ? 1 : 0);
    num_samples_ = options_.drop_last() ? total - total % bs : total;
    next_sample_ = 0;
    next_deliver_ = 0;
    batches_.clear();
    wake_workers_.notify_all();
  }

  /// The next batch of the epoch in order, or nullopt after the last one.
  /// An error on a worker thread (a bad file, a failed allocation) is rethrown
  /// here as a c10::Error carrying the original message; the batch it hit is
  /// skipped and the next call goes on with the following one.
  c10::optional<torch::data::Example<>> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (fatal_) std::rethrow_exception(fatal_);
    if (next_deliver_ >= num_batches_) return c10::nullopt;
    const int64_t b = next_deliver_;
    batch_ready_.wait(lock, [&] {
      if (fatal_) return true;
      const auto it = batches_.find(b);
      return it != batches_.end() && it->second.remaining == 0;
    });
    if (fatal_) std::rethrow_exception(fatal_);
    Batch batch = std::move(batches_[b]);
    batches_.erase(b);
    ++next_deliver_;
    wake_workers_.notify_all();
    lock.unlock();
    if (batch.error) std::rethrow_exception(batch.error);
    return torch::data::Example<>{batch.data, batch.target};
  }

  /// Batches in the queue (complete or being decoded) and samples handed to
  /// workers so far this epoch: to watch for a starving consumer, and to see
  /// the prefetch bound hold.
  struct Progress {
    int64_t queued_batches = 0;
    int64_t ready_batches = 0;
    int64_t samples_started = 0;
  };
  Progress progress() const {
    std::lock_guard<std::mutex> lock(mutex_);
    Progress p;
    p.queued_batches = static_cast<int64_t>(batches_.size());
    for (const auto& kv : batches_) p.ready_batches += kv.second.remaining == 0 ? 1 : 0;
    p.samples_started = next_sample_;
    return p;
  }

  int64_t batches_per_epoch() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return num_batches_;
  }
  bool pinned() const { return pinned_; }
  const ImageDataset& dataset() const { return dataset_; }

 private:
  struct Batch {
    torch::Tensor data, target;
    int64_t remaining = 0;
    std::exception_ptr error;
  };

  void shut_down() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_workers_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  int64_t batch_rows(int64_t b) const {
    const auto total = static_cast<int64_t>(order_->size());
    return std::min(options_.batch_size(), total - b * options_.batch_size());
  }

  /// A worker's loop; what escapes it (an error outside any one sample's work)
  /// stops the loader: next() rethrows it from then on, and the destructor
  /// still joins every thread.
  void work() {
    try {
      work_loop();
    } catch (...) {
      const auto error =
          detail::as_c10_error(std::current_exception(), "drolt::data::ImageLoader: a worker failed");
      std::lock_guard<std::mutex> lock(mutex_);
      if (!fatal_) fatal_ = error;
      batch_ready_.notify_all();
    }
  }

  void work_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_workers_.wait(lock, [&] { return stop_ || claimable(); });
      if (stop_) return;
      const int64_t sample = next_sample_++;
      const int64_t b = sample / options_.batch_size();
      const int64_t row = sample % options_.batch_size();
      const uint64_t generation = generation_;
      const int64_t epoch = epoch_;
      const auto order = order_;
      auto it = batches_.find(b);
      if (it == batches_.end()) {
        const int64_t rows = batch_rows(b);
        Batch fresh;
        fresh.remaining = rows;
        try {
          if (detail::loader_allocation_hook()) detail::loader_allocation_hook()(b);
          const auto opts = torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(pinned_);
          fresh.data = torch::empty({rows, channels_, transform_.size(), transform_.size()}, opts);
          fresh.target = torch::empty(
              {rows}, torch::TensorOptions().dtype(torch::kInt64).pinned_memory(pinned_));
        } catch (...) {
          // The batch fails as a whole; its samples are still counted down.
          fresh.error = detail::as_c10_error(
              std::current_exception(), "drolt::data::ImageLoader: allocating a batch failed");
        }
        it = batches_.emplace(b, std::move(fresh)).first;
      }
      // References keep the batch's memory alive should start_epoch drop it meanwhile.
      const torch::Tensor data = it->second.data, targets = it->second.target;
      const bool allocated = data.defined();
      float* out = allocated ? data.data_ptr<float>() +
                                   row * channels_ * transform_.size() * transform_.size()
                             : nullptr;
      int64_t* target = allocated ? targets.data_ptr<int64_t>() + row : nullptr;
      lock.unlock();

      std::exception_ptr error;
      const auto position = b * options_.batch_size() + row;
      const int64_t index = (*order)[static_cast<size_t>(position)];
      if (allocated) try {
        const torch::Tensor hwc = dataset_.decode(static_cast<size_t>(index));
        std::mt19937_64 rng(sample_seed(options_.seed(), epoch, position));
        resample_normalize(hwc, choose_crop(hwc.size(0), hwc.size(1), transform_, rng), transform_,
                           out);
        *target = dataset_.labels()[static_cast<size_t>(index)];
      } catch (...) {
        error = detail::as_c10_error(std::current_exception(), "drolt::data::ImageLoader");
      }

      lock.lock();
      if (generation != generation_) continue;  // the epoch was restarted meanwhile
      Batch& batch = batches_[b];
      if (error && !batch.error) batch.error = error;
      if (--batch.remaining == 0) batch_ready_.notify_all();
    }
  }

  bool claimable() const {
    if (!order_) return false;
    const int64_t b = next_sample_ / options_.batch_size();
    return next_sample_ < num_samples_ && b - next_deliver_ < options_.prefetch();
  }

  ImageDataset dataset_;
  ImageTransformOptions transform_;
  ImageLoaderOptions options_;
  int64_t channels_ = 3;
  bool pinned_ = false;

  mutable std::mutex mutex_;
  std::condition_variable wake_workers_, batch_ready_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  std::shared_ptr<const std::vector<int64_t>> order_;
  int64_t epoch_ = 0;
  int64_t num_batches_ = 0;
  int64_t num_samples_ = 0;  // samples the epoch's batches hold
  int64_t next_sample_ = 0;
  int64_t next_deliver_ = 0;
  std::map<int64_t, Batch> batches_;
  std::exception_ptr fatal_;  // an error that stopped a worker
};

}  // namespace data
}  // namespace drolt
