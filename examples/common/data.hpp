// Data for the example trainer: a long-tailed training subset, a balanced
// validation split drawn from the images the subset left out (or a given
// validation set), and the test set. Every split is a DataSplit: its labels in
// memory, its images either in memory as float tensors (the built-in sets, and
// small image sets: 1,236 images for Fashion-MNIST-LT) or decoded on loader
// threads on every pass (image_data.hpp: ImageNet-LT, iNaturalist).
#pragma once

#include <drolt/data/cifar.hpp>
#include <drolt/data/idx.hpp>
#include <drolt/data/longtail.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "config.hpp"

namespace drolt_examples {

/// One split as the trainer reads it. A pass is announced with begin() (its
/// batches, in order) and its images are then taken batch by batch with next().
class DataSplit {
 public:
  virtual ~DataSplit() = default;
  int64_t size() const { return targets_.size(0); }
  /// Labels, int64 [N], on the CPU.
  const torch::Tensor& targets() const { return targets_; }
  /// Whether the images are decoded (and augmented, see begin) by a loader;
  /// false: in memory, and the trainer augments batches itself.
  virtual bool streaming() const = 0;
  /// Begins a pass over `batches` (row indices, in this order); streaming:
  /// `augment` picks the training transform, whose draws depend on (seed, epoch, position).
  virtual void begin(const std::vector<torch::Tensor>& batches, bool augment, int64_t epoch) = 0;
  /// The images [n, C, H, W] of the next batch of the pass, which must be `idx`.
  virtual torch::Tensor next(const torch::Tensor& idx) = 0;

 protected:
  torch::Tensor targets_;
};

/// Images held in memory as one float tensor.
class TensorSplit : public DataSplit {
 public:
  TensorSplit(torch::Tensor images, torch::Tensor targets) : images_(std::move(images)) {
    targets_ = std::move(targets);
  }
  bool streaming() const override { return false; }
  void begin(const std::vector<torch::Tensor>&, bool, int64_t) override {}
  torch::Tensor next(const torch::Tensor& idx) override { return images_.index_select(0, idx); }

 private:
  torch::Tensor images_;
};

/// 0 .. n-1 in consecutive batches of `b` (the evaluation passes).
inline std::vector<torch::Tensor> sequential_batches(int64_t n, int64_t b) {
  std::vector<torch::Tensor> out;
  for (int64_t s = 0; s < n; s += b) out.push_back(torch::arange(s, std::min(n, s + b), torch::kLong));
  return out;
}

struct DataBundle {
  // The splits as the trainer reads them (val: null when there is none).
  std::shared_ptr<DataSplit> train, val, test;
  // In-memory data: the images as tensors (undefined when streaming); labels always.
  torch::Tensor train_x, train_y;  // long-tailed training subset, normalised, [N, C, H, W] / [N]
  torch::Tensor val_x, val_y;      // balanced validation split (left-out training images)
  torch::Tensor test_x, test_y;    // official test set
  std::vector<int64_t> counts;     // training images per class (class 0 = head)
  /// Per-class counts that define Many / Medium / Few: `counts`, except with
  /// --balanced-subset, where they stay the long-tailed profile's.
  std::vector<int64_t> group_counts;
  int64_t num_classes = 0;
  int64_t channels = 0;
  int64_t height = 0;  // side of the images the network sees
  int64_t val_size() const { return val ? val->size() : 0; }
  std::vector<std::string> class_names;
  std::string description;
};

inline std::vector<std::string> class_names_for(Dataset dataset, int64_t C) {
  if (dataset == Dataset::fashion_mnist && C == 10) {
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  }
  if (dataset == Dataset::cifar10 && C == 10) {
    return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  }
  std::vector<std::string> out;
  for (int64_t c = 0; c < C; ++c) out.push_back("class" + std::to_string(c));
  return out;
}

inline bool directory_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

namespace detail {

inline torch::Tensor take(const torch::Tensor& t, const std::vector<int64_t>& idx) {
  return t.index_select(0, torch::tensor(idx, torch::kLong));
}

/// Normalises every split with the per-channel mean and std of the training subset.
inline void normalise(DataBundle& d) {
  auto mean = d.train_x.mean({0, 2, 3}, /*keepdim=*/true);
  auto std = d.train_x.std({0, 2, 3}, /*unbiased=*/false, /*keepdim=*/true).clamp_min(1e-6);
  d.train_x = (d.train_x - mean) / std;
  if (d.val_x.defined()) d.val_x = (d.val_x - mean) / std;
  d.test_x = (d.test_x - mean) / std;
}

/// The in-memory tensors of `d` as its splits.
inline void tensor_splits(DataBundle& d) {
  d.height = d.train_x.size(2);
  d.train = std::make_shared<TensorSplit>(d.train_x, d.train_y);
  d.test = std::make_shared<TensorSplit>(d.test_x, d.test_y);
  d.val = d.val_x.defined() ? std::make_shared<TensorSplit>(d.val_x, d.val_y) : nullptr;
}

/// Long-tailed subset + validation split of a balanced training set, plus the test set.
inline DataBundle assemble(const TrainConfig& cfg, const torch::Tensor& train_images,
                           const torch::Tensor& train_targets, const torch::Tensor& test_images,
                           const torch::Tensor& test_targets, int64_t C) {
  DataBundle d;
  d.num_classes = C;
  d.channels = train_images.size(1);
  const auto profile = cfg.profile == Profile::step ? drolt::data::Profile::step : drolt::data::Profile::exp;
  auto lt = drolt::data::make_longtail(train_targets, C, cfg.n_max, cfg.rho, profile,
                                       static_cast<uint64_t>(cfg.data_seed));
  d.group_counts = lt.counts;
  if (cfg.balanced_subset) {  // as many images, spread evenly over the classes
    int64_t total = 0;
    for (auto n : lt.counts) total += n;
    lt = drolt::data::make_longtail(train_targets, C, std::max<int64_t>(total / C, 1), 1.0, profile,
                                    static_cast<uint64_t>(cfg.data_seed));
  }
  d.counts = lt.counts;
  d.train_x = take(train_images, lt.indices);
  d.train_y = take(train_targets, lt.indices);
  if (cfg.val_per_class > 0) {
    auto vi = drolt::data::balanced_validation_split(train_targets, lt, cfg.val_per_class,
                                                     static_cast<uint64_t>(cfg.data_seed) + 1);
    d.val_x = take(train_images, vi);
    d.val_y = take(train_targets, vi);
  }
  d.test_x = test_images;
  d.test_y = test_targets;
  if (cfg.test_limit > 0 && cfg.test_limit < d.test_x.size(0)) {
    d.test_x = d.test_x.narrow(0, 0, cfg.test_limit);
    d.test_y = d.test_y.narrow(0, 0, cfg.test_limit);
  }
  normalise(d);
  d.class_names = class_names_for(cfg.dataset, C);
  tensor_splits(d);
  return d;
}

/// Deterministic synthetic images for tests: each class is a fixed random smooth
/// pattern plus noise. 1 channel, size x size.
inline void synthetic_split(int64_t C, int64_t per_class, int64_t size, uint64_t seed,
                            const torch::Tensor& templates, torch::Tensor& x, torch::Tensor& y) {
  torch::manual_seed(seed);
  y = torch::arange(C, torch::kLong).repeat_interleave(per_class);
  x = templates.index_select(0, y) + 0.6 * torch::randn({C * per_class, 1, size, size});
  x = x.clamp(0, 1);
}

}  // namespace detail

}  // namespace drolt_examples

#include "image_data.hpp"  // a user's images (needs DataSplit, DataBundle, detail::normalise)

namespace drolt_examples {

/// Loads the data set `cfg.dataset` from `cfg.data_dir` (or a user's images,
/// image_data.hpp). Throws std::runtime_error with a readable message when the
/// directory or files are missing.
inline DataBundle load_data(const TrainConfig& cfg) {
  if (cfg.image_data()) {
#ifdef DROLT_HAS_IMAGES
    return load_image_data(cfg);
#else
    throw std::runtime_error("--dataset " + name_of(cfg.dataset) + ": this drolt_train was built without drolt::images");
#endif
  }
  if (cfg.dataset == Dataset::synthetic) {
    const int64_t C = cfg.synthetic_classes, S = cfg.synthetic_size;
    torch::manual_seed(static_cast<uint64_t>(cfg.data_seed) + 12345);
    auto templates = torch::rand({C, 1, S / 2, S / 2});
    templates = torch::upsample_nearest2d(templates, {S, S});
    const int64_t per_class = cfg.n_max + std::max<int64_t>(cfg.val_per_class, 0);
    torch::Tensor trx, trY, tex, tey;
    // Seeds as unsigned: any --data-seed, INT64_MAX included, wraps instead of overflowing.
    const auto seed = static_cast<uint64_t>(cfg.data_seed);
    detail::synthetic_split(C, per_class, S, seed + 1, templates, trx, trY);
    detail::synthetic_split(C, 30, S, seed + 2, templates, tex, tey);
    auto d = detail::assemble(cfg, trx, trY, tex, tey, C);
    d.description = "synthetic-LT (" + std::to_string(C) + " classes, " + std::to_string(S) + "x" +
                    std::to_string(S) + ")";
    return d;
  }
  if (!directory_exists(cfg.data_dir)) {
    throw std::runtime_error("data directory '" + cfg.data_dir + "' does not exist" +
                             (cfg.dataset == Dataset::fashion_mnist
                                  ? " (install Debian's dataset-fashion-mnist or pass --data DIR)"
                                  : " (pass --data DIR with the CIFAR binary files)"));
  }
  torch::Tensor trx, trY, tex, tey;
  int64_t C = 10;
  try {
    if (cfg.dataset == Dataset::fashion_mnist) {
      drolt::data::IdxDataset tr(cfg.data_dir, drolt::data::Split::train);
      drolt::data::IdxDataset te(cfg.data_dir, drolt::data::Split::test);
      trx = tr.images();
      trY = tr.targets();
      tex = te.images();
      tey = te.targets();
      C = 10;
    } else {
      const auto v = cfg.dataset == Dataset::cifar10 ? drolt::data::CifarVariant::cifar10
                                              : drolt::data::CifarVariant::cifar100_fine;
      drolt::data::CifarDataset tr(cfg.data_dir, drolt::data::Split::train, v);
      drolt::data::CifarDataset te(cfg.data_dir, drolt::data::Split::test, v);
      trx = tr.images();
      trY = tr.targets();
      tex = te.images();
      tey = te.targets();
      C = drolt::data::cifar_num_classes(v);
    }
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string("cannot read the data set: ") + e.what_without_backtrace());
  }
  auto d = detail::assemble(cfg, trx, trY, tex, tey, C);
  std::string name = cfg.dataset == Dataset::fashion_mnist ? "Fashion-MNIST-LT"
                     : cfg.dataset == Dataset::cifar10     ? "CIFAR-10-LT"
                                                           : "CIFAR-100-LT";
  std::ostringstream s;
  s << name << " (" << name_of(cfg.profile) << ", rho=" << cfg.rho << ", n_max=" << cfg.n_max << ")";
  d.description = s.str();
  return d;
}

}  // namespace drolt_examples
