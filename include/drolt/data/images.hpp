#pragma once
/// \file
/// A `torch::data` dataset of image files (JPEG, PNG) from an `ImageList`: a
/// list file, a class-folder tree or the iNaturalist JSON. Needs the
/// `drolt::images` CMake target.
///
///     drolt::data::ImageDataset train(
///         drolt::data::read_image_list("ImageNet_LT_train.txt", "/data/imagenet"),
///         drolt::data::ImageDatasetOptions().skip_bad_images(true));
///     train.targets();       // int64 [N], for make_longtail, samplers, class weights
///     train.class_counts();  // for metrics::split_accuracy (Many / Medium / Few)
///     train.get(0).data;     // float [3, H, W] in [0, 1], the image's own size
///
/// The images are decoded on each `get` (nothing is cached), so a data set of
/// any size costs only its paths in memory; copies share them.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "drolt/data/detail/io.hpp"
#include "drolt/data/image_codec.hpp"
#include "drolt/data/image_list.hpp"

namespace drolt {
namespace data {
namespace detail {

/// `error` as a c10::Error: itself when it is one, else a c10::Error carrying
/// its message (std::bad_alloc, std::length_error, ... from a worker thread).
inline std::exception_ptr as_c10_error(const std::exception_ptr& error, const char* context) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error&) {
    return error;
  } catch (const std::exception& e) {
    try {
      TORCH_CHECK(false, context, ": ", e.what());
    } catch (...) {
      return std::current_exception();
    }
  } catch (...) {
    try {
      TORCH_CHECK(false, context, ": an exception of unknown type");
    } catch (...) {
      return std::current_exception();
    }
  }
  return error;
}

}  // namespace detail

struct ImageDatasetOptions {
  /// How each file is decoded (channels, JPEG downscaling, size limit).
  TORCH_ARG(ImageDecodeOptions, decode) = {};
  /// Decode every image once while constructing and leave out those that fail
  /// (missing, truncated, undecodable), recording them in skipped(). Costs one
  /// full decoding pass. Off: the first bad image stops the program with an
  /// error naming the file, when it is read (a missing file already when
  /// constructing, see check_files).
  TORCH_ARG(bool, skip_bad_images) = false;
  /// Without skip_bad_images: check that every file exists while constructing
  /// (one stat per file), so a wrong root fails at once, not hours later.
  TORCH_ARG(bool, check_files) = true;
  /// Threads for the skip_bad_images pass; 0 means one per hardware thread.
  TORCH_ARG(int64_t, check_threads) = 0;
};

/// An image left out by skip_bad_images, and why.
struct SkippedImage {
  std::string path;
  int64_t label;
  std::string reason;
};

class ImageDataset : public torch::data::datasets::Dataset<ImageDataset> {
 public:
  explicit ImageDataset(ImageList list, ImageDatasetOptions options = {})
      : data_(std::make_shared<Data>()) {
    constexpr const char* caller = "drolt::data::ImageDataset";
    detail::check_image_list(list, caller);
    detail::check_decode_options(options.decode(), caller);
    TORCH_CHECK(options.check_threads() >= 0, caller, ": expected check_threads >= 0, got ",
                options.check_threads());
    Data& d = *data_;
    d.options = options;
    d.num_classes = list.num_classes;
    d.class_names = std::move(list.class_names);
    if (options.skip_bad_images()) {
      const std::vector<std::string> reasons = check_decodable(list.paths, options);
      for (size_t i = 0; i < list.paths.size(); ++i) {
        if (reasons[i].empty()) {
          d.paths.push_back(std::move(list.paths[i]));
          d.labels.push_back(list.labels[i]);
        } else {
          d.skipped.push_back({std::move(list.paths[i]), list.labels[i], reasons[i]});
        }
      }
      if (!d.skipped.empty()) {
        TORCH_WARN("drolt::data::ImageDataset: skipped ", d.skipped.size(), " of ",
                   d.skipped.size() + d.paths.size(), " images that could not be decoded, ",
                   "the first: ", d.skipped.front().reason);
      }
    } else {
      d.paths = std::move(list.paths);
      d.labels = std::move(list.labels);
      if (options.check_files()) {
        for (const std::string& path : d.paths) {
          TORCH_CHECK(detail::is_regular_file(path), caller, ": cannot open '", path,
                      "': file not found (or not a regular file)");
        }
      }
    }
    TORCH_CHECK(!d.paths.empty(), caller, ": expected at least one usable image, got none",
                d.skipped.empty() ? std::string()
                                  : " (all " + std::to_string(d.skipped.size()) +
                                        " were skipped as undecodable)");
    d.targets = torch::tensor(d.labels, torch::kInt64);
  }

  /// Image i as float [C, H, W] in [0, 1] and its label.
  torch::data::Example<> get(size_t index) override {
    const torch::Tensor hwc = decode(index);
    return {hwc.permute({2, 0, 1}).to(torch::kFloat32).div_(255.0),
            data_->targets[static_cast<int64_t>(index)]};
  }

  /// Image i decoded, uint8 [H, W, C] (the layout augmentation works on).
  torch::Tensor decode(size_t index) const {
    TORCH_CHECK(index < data_->paths.size(), "drolt::data::ImageDataset::get: expected index < ",
                data_->paths.size(), ", got ", index);
    return read_image(data_->paths[index], data_->options.decode());
  }

  c10::optional<size_t> size() const override { return data_->paths.size(); }

  /// Labels, int64 [N], in [0, num_classes()).
  const torch::Tensor& targets() const { return data_->targets; }
  const std::vector<int64_t>& labels() const { return data_->labels; }
  const std::vector<std::string>& paths() const { return data_->paths; }
  /// Class names (folder names, iNaturalist names); empty for list files.
  const std::vector<std::string>& class_names() const { return data_->class_names; }
  int64_t num_classes() const { return data_->num_classes; }
  /// Images per class, [num_classes()] (classes without images count 0).
  std::vector<int64_t> class_counts() const {
    std::vector<int64_t> counts(static_cast<size_t>(data_->num_classes), 0);
    for (const int64_t y : data_->labels) ++counts[static_cast<size_t>(y)];
    return counts;
  }
  /// Images left out by skip_bad_images, in list order.
  const std::vector<SkippedImage>& skipped() const { return data_->skipped; }
  const ImageDatasetOptions& options() const { return data_->options; }

 private:
  struct Data {
    ImageDatasetOptions options;
    std::vector<std::string> paths;
    std::vector<int64_t> labels;
    std::vector<std::string> class_names;
    std::vector<SkippedImage> skipped;
    int64_t num_classes = 0;
    torch::Tensor targets;
  };

  /// "" for each image that decodes, the error otherwise; decoded on a few threads.
  static std::vector<std::string> check_decodable(const std::vector<std::string>& paths,
                                                  const ImageDatasetOptions& options) {
    std::vector<std::string> reasons(paths.size());
    size_t threads = options.check_threads() > 0
                         ? static_cast<size_t>(options.check_threads())
                         : std::max<size_t>(1, std::thread::hardware_concurrency());
    threads = std::min(threads, std::max<size_t>(1, paths.size()));
    std::atomic<size_t> next{0};
    std::mutex mutex;
    std::exception_ptr error;  // what escaped a worker (not a bad image): rethrown after the join
    auto work = [&]() {
      try {
        for (size_t i = next++; i < paths.size(); i = next++) {
          try {
            (void)read_image(paths[i], options.decode());
          } catch (const c10::Error& e) {
            reasons[i] = e.what_without_backtrace();
          } catch (const std::exception& e) {
            // Out of memory for one huge image must not end the whole pass.
            reasons[i] = paths[i] + ": " + e.what();
          }
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        next = paths.size();  // the others stop too
      }
    };
    std::vector<std::thread> pool;
    try {
      for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    } catch (const std::system_error&) {
      // No more threads to be had: those started and this one share the work.
    }
    work();
    for (auto& t : pool) t.join();
    if (error) {
      std::rethrow_exception(
          detail::as_c10_error(error, "drolt::data::ImageDataset: checking the images failed"));
    }
    return reasons;
  }

  std::shared_ptr<Data> data_;
};

}  // namespace data
}  // namespace drolt
