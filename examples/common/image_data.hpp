// A user's images for the example trainer (--dataset list, folder,
// inaturalist): ImageNet-LT / Places-LT list files, class-folder trees and the
// iNaturalist JSON, read with drolt::images. Included by data.hpp, after
// DataSplit and DataBundle.
//
// Two ways to hold a split:
//   memory : every image decoded once, kept as one float tensor and treated as
//            the built-in sets are (per-channel normalisation on the training
//            subset, random crop with padding and flips). All images must have
//            one size: for small sets (Fashion-MNIST or CIFAR as PNG files).
//   stream : a StreamingSplit: images decoded on loader threads on every pass,
//            with torchvision's ImageNet transforms (train: random-resized crop
//            and flip; evaluation: resize and center crop) and ImageNet's mean
//            and std; only the paths stay in memory (ImageNet-LT, iNaturalist).
#pragma once

#ifdef DROLT_HAS_IMAGES

#include <drolt/data/image_codec.hpp>
#include <drolt/data/image_list.hpp>
#include <drolt/data/image_loader.hpp>
#include <drolt/data/images.hpp>
#include <drolt/data/inaturalist.hpp>
#include <drolt/data/longtail.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"

namespace drolt_examples {

/// Images decoded and transformed on drolt::data::ImageLoader threads. The
/// loader hands out single images, so batches of any size (a rank's share
/// of a re-balancing sampler's batch included) are put together here; an
/// image's augmentation depends only on (--seed, epoch, its position in the
/// pass), so a pass is the same for any number of workers, and after --resume.
class StreamingSplit : public DataSplit {
 public:
  StreamingSplit(drolt::data::ImageList list, const TrainConfig& cfg)
      : list_(std::move(list)), cfg_(cfg) {
    targets_ = torch::tensor(list_.labels, torch::kLong);
  }
  bool streaming() const override { return true; }

  void begin(const std::vector<torch::Tensor>& batches, bool augment, int64_t epoch) override {
    auto& loader = augment ? train_loader_ : eval_loader_;
    if (!loader) loader = make_loader(augment);
    current_ = loader.get();
    pending_.assign(batches.begin(), batches.end());
    std::vector<int64_t> order;
    for (const auto& b : batches) {
      auto c = b.contiguous();
      order.insert(order.end(), c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    }
    current_->start_epoch(std::move(order), epoch);
  }

  torch::Tensor next(const torch::Tensor& idx) override {
    TORCH_CHECK(current_ != nullptr && !pending_.empty() && torch::equal(idx, pending_.front()),
                "StreamingSplit::next: expected the next batch announced to begin()");
    pending_.pop_front();
    const int64_t n = idx.size(0);
    std::vector<torch::Tensor> xs, ys;
    for (int64_t i = 0; i < n; ++i) {
      auto ex = current_->next();  // a bad image file is a c10::Error naming it
      TORCH_CHECK(ex.has_value(), "StreamingSplit::next: the loader ended its pass early");
      xs.push_back(ex->data);
      ys.push_back(ex->target);
    }
    TORCH_CHECK(torch::equal(torch::cat(ys), targets_.index_select(0, idx)),
                "StreamingSplit::next: the loader returned images of other labels than asked for");
    return torch::cat(xs);
  }

  const drolt::data::ImageList& list() const { return list_; }

 private:
  std::unique_ptr<drolt::data::ImageLoader> make_loader(bool augment) const {
    const int64_t size = cfg_.image_size, resize = cfg_.resize > 0 ? cfg_.resize : size * 8 / 7;
    // A JPEG is decoded at the smallest DCT scale that keeps its shorter side at
    // least the training crop size (train) or the evaluation resize (eval).
    drolt::data::ImageDataset ds(
        list_, drolt::data::ImageDatasetOptions().decode(
                   drolt::data::ImageDecodeOptions().channels(3).min_size(augment ? size : resize)));
    auto t = drolt::data::ImageTransformOptions().train(augment).size(size).resize(resize);
    auto o = drolt::data::ImageLoaderOptions()
                 .batch_size(1)
                 .workers(cfg_.workers)
                 .prefetch(std::max<int64_t>(64, 2 * cfg_.batch_size))
                 .seed(static_cast<uint64_t>(cfg_.seed))
                 .pin_memory(false);
    return std::make_unique<drolt::data::ImageLoader>(std::move(ds), t, o);
  }

  drolt::data::ImageList list_;
  TrainConfig cfg_;
  std::unique_ptr<drolt::data::ImageLoader> train_loader_, eval_loader_;
  drolt::data::ImageLoader* current_ = nullptr;
  std::deque<torch::Tensor> pending_;
};

namespace detail {

/// The split `source` of --dataset list / folder / inaturalist; `train`, when
/// given, is the training set, whose classes the other splits must have.
inline drolt::data::ImageList read_image_split(const TrainConfig& cfg, const char* flag, const std::string& source,
                                               const drolt::data::ImageList* train) {
  drolt::data::ImageList l;
  try {
    if (cfg.dataset == Dataset::list) {
      l = drolt::data::read_image_list(source, cfg.data_dir, train ? train->num_classes : 0);
    } else if (cfg.dataset == Dataset::folder) {
      l = drolt::data::list_image_folder(source);
    } else {
      l = drolt::data::read_inaturalist(source, cfg.data_dir);
    }
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string(flag) + ": " + e.what_without_backtrace());
  }
  if (train && cfg.dataset != Dataset::list && l.class_names != train->class_names) {
    throw std::runtime_error(std::string(flag) + " '" + source + "': expected the " +
                             std::to_string(train->num_classes) + " classes of --train-set, got " +
                             std::to_string(l.num_classes) +
                             (l.num_classes == train->num_classes ? " with other names" : ""));
  }
  if (train) l.num_classes = train->num_classes;
  return l;
}

inline drolt::data::ImageList select(const drolt::data::ImageList& l, const std::vector<int64_t>& idx) {
  drolt::data::ImageList out;
  out.class_names = l.class_names;
  out.num_classes = l.num_classes;
  for (int64_t i : idx) {
    out.paths.push_back(l.paths[static_cast<size_t>(i)]);
    out.labels.push_back(l.labels[static_cast<size_t>(i)]);
  }
  return out;
}

/// Every image of `l` decoded with `channels`, as float [N, C, H, W] in [0, 1]
/// (the IDX and CIFAR readers' scaling); all of size h x w.
inline torch::Tensor decode_all(const drolt::data::ImageList& l, int64_t channels, int64_t h, int64_t w) {
  std::vector<torch::Tensor> chw;
  chw.reserve(l.paths.size());
  const auto opts = drolt::data::ImageDecodeOptions().channels(channels);
  for (const auto& p : l.paths) {
    torch::Tensor hwc;
    try {
      hwc = drolt::data::read_image(p, opts);
    } catch (const c10::Error& e) {
      throw std::runtime_error(std::string("cannot read an image: ") + e.what_without_backtrace());
    }
    if (hwc.size(0) != h || hwc.size(1) != w) {
      std::ostringstream s;
      s << "--loader memory needs images of one size: expected " << h << " x " << w << " (the first training image), got "
        << hwc.size(0) << " x " << hwc.size(1) << " for '" << p << "' (use --loader stream)";
      throw std::runtime_error(s.str());
    }
    chw.push_back(hwc.permute({2, 0, 1}));
  }
  if (chw.empty()) return torch::empty({0, channels, h, w});
  return torch::stack(chw).to(torch::kFloat32).div_(255.0);
}

}  // namespace detail

/// The data of --dataset list / folder / inaturalist (see the file comment).
inline DataBundle load_image_data(const TrainConfig& cfg) {
  namespace dd = drolt::data;
  const dd::ImageList full = detail::read_image_split(cfg, "--train-set", cfg.train_set, nullptr);
  const int64_t C = full.num_classes;
  const auto targets = torch::tensor(full.labels, torch::kLong);
  std::vector<int64_t> keep, val_rows;
  std::vector<int64_t> counts;
  if (cfg.make_longtail) {
    const auto profile = cfg.profile == Profile::step ? dd::Profile::step : dd::Profile::exp;
    auto lt = dd::make_longtail(targets, C, cfg.n_max, cfg.rho, profile, static_cast<uint64_t>(cfg.data_seed));
    keep = lt.indices;
    counts = lt.counts;
    if (cfg.val_set.empty() && cfg.val_per_class > 0) {
      val_rows = dd::balanced_validation_split(targets, lt, cfg.val_per_class, static_cast<uint64_t>(cfg.data_seed) + 1);
    }
  } else {
    keep.resize(full.paths.size());
    for (size_t i = 0; i < keep.size(); ++i) keep[i] = static_cast<int64_t>(i);
    counts.assign(static_cast<size_t>(C), 0);
    for (int64_t y : full.labels) ++counts[static_cast<size_t>(y)];
  }
  const dd::ImageList train = detail::select(full, keep);
  dd::ImageList val;
  if (!cfg.val_set.empty()) {
    val = detail::read_image_split(cfg, "--val-set", cfg.val_set, &full);
  } else if (!val_rows.empty()) {
    val = detail::select(full, val_rows);
  }
  dd::ImageList test = detail::read_image_split(cfg, "--test-set", cfg.test_set, &full);
  if (cfg.test_limit > 0 && cfg.test_limit < static_cast<int64_t>(test.paths.size())) {
    test.paths.resize(static_cast<size_t>(cfg.test_limit));
    test.labels.resize(static_cast<size_t>(cfg.test_limit));
  }
  if (train.paths.empty()) throw std::runtime_error("--train-set '" + cfg.train_set + "': no training images left");

  // The first training image decides the loader (auto) and, in memory, the size and channels.
  torch::Tensor first;
  try {
    first = dd::read_image(train.paths.front(), dd::ImageDecodeOptions().channels(0));
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string("cannot read an image: ") + e.what_without_backtrace());
  }
  const bool memory = cfg.loader == Loader::memory || (cfg.loader == Loader::automatic && first.size(0) <= 64 && first.size(1) <= 64);

  DataBundle d;
  d.num_classes = C;
  d.counts = counts;
  d.group_counts = counts;
  d.class_names = full.class_names;
  if (d.class_names.empty() || std::all_of(d.class_names.begin(), d.class_names.end(),
                                           [](const std::string& n) { return n.empty(); })) {
    d.class_names = class_names_for(cfg.dataset, C);
  }
  d.train_y = torch::tensor(train.labels, torch::kLong);
  d.test_y = torch::tensor(test.labels, torch::kLong);
  if (!val.paths.empty()) d.val_y = torch::tensor(val.labels, torch::kLong);
  std::ostringstream desc;
  desc << name_of(cfg.dataset) << " '" << cfg.train_set << "' (" << C << " classes";
  if (cfg.make_longtail) desc << ", " << name_of(cfg.profile) << " rho=" << cfg.rho << " n_max=" << cfg.n_max;
  if (memory) {
    const int64_t ch = first.size(2), h = first.size(0), w = first.size(1);
    d.channels = ch;
    d.train_x = detail::decode_all(train, ch, h, w);
    d.test_x = detail::decode_all(test, ch, h, w);
    if (!val.paths.empty()) d.val_x = detail::decode_all(val, ch, h, w);
    detail::normalise(d);
    detail::tensor_splits(d);
    desc << ", in memory, " << h << "x" << w << ")";
  } else {
    d.channels = 3;
    d.height = cfg.image_size;
    d.train = std::make_shared<StreamingSplit>(train, cfg);
    d.test = std::make_shared<StreamingSplit>(test, cfg);
    if (!val.paths.empty()) d.val = std::make_shared<StreamingSplit>(val, cfg);
    desc << ", streamed, " << cfg.image_size << " px, " << cfg.workers << " loader threads)";
  }
  d.description = desc.str();
  return d;
}

}  // namespace drolt_examples

#endif  // DROLT_HAS_IMAGES
