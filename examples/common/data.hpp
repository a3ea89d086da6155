// Data for the example trainer: a long-tailed training subset, a balanced
// validation split drawn from the images the subset left out, and the official
// (balanced) test set, all held as in-memory float tensors (the long-tailed
// training sets here are small: 1,236 images for Fashion-MNIST-LT at the defaults).
#pragma once

#include <drolt/data/cifar.hpp>
#include <drolt/data/idx.hpp>
#include <drolt/data/longtail.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "config.hpp"

namespace drolt_examples {

struct DataBundle {
  torch::Tensor train_x, train_y;  // long-tailed training subset, normalised, [N, C, H, W] / [N]
  torch::Tensor val_x, val_y;      // balanced validation split (left-out training images)
  torch::Tensor test_x, test_y;    // official test set
  std::vector<int64_t> counts;     // training images per class (class 0 = head)
  int64_t num_classes = 0;
  int64_t channels = 0;
  std::vector<std::string> class_names;
  std::string description;
};

inline std::vector<std::string> class_names_for(const std::string& dataset, int64_t C) {
  if (dataset == "fashion-mnist" && C == 10) {
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  }
  if (dataset == "cifar10" && C == 10) {
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

/// Long-tailed subset + validation split of a balanced training set, plus the test set.
inline DataBundle assemble(const TrainConfig& cfg, const torch::Tensor& train_images,
                           const torch::Tensor& train_targets, const torch::Tensor& test_images,
                           const torch::Tensor& test_targets, int64_t C) {
  DataBundle d;
  d.num_classes = C;
  d.channels = train_images.size(1);
  const auto profile = cfg.profile == "step" ? drolt::data::Profile::step : drolt::data::Profile::exp;
  auto lt = drolt::data::make_longtail(train_targets, C, cfg.n_max, cfg.rho, profile,
                                       static_cast<uint64_t>(cfg.data_seed));
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

/// Loads the data set `cfg.dataset` from `cfg.data_dir`. Throws std::runtime_error
/// with a readable message when the directory or files are missing.
inline DataBundle load_data(const TrainConfig& cfg) {
  if (cfg.dataset == "synthetic") {
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
                             (cfg.dataset == "fashion-mnist"
                                  ? " (install Debian's dataset-fashion-mnist or pass --data DIR)"
                                  : " (pass --data DIR with the CIFAR binary files)"));
  }
  torch::Tensor trx, trY, tex, tey;
  int64_t C = 10;
  try {
    if (cfg.dataset == "fashion-mnist") {
      drolt::data::IdxDataset tr(cfg.data_dir, drolt::data::Split::train);
      drolt::data::IdxDataset te(cfg.data_dir, drolt::data::Split::test);
      trx = tr.images();
      trY = tr.targets();
      tex = te.images();
      tey = te.targets();
      C = 10;
    } else {
      const auto v = cfg.dataset == "cifar10" ? drolt::data::CifarVariant::cifar10
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
  std::string name = cfg.dataset == "fashion-mnist" ? "Fashion-MNIST-LT"
                     : cfg.dataset == "cifar10"     ? "CIFAR-10-LT"
                                                    : "CIFAR-100-LT";
  std::ostringstream s;
  s << name << " (" << cfg.profile << ", rho=" << cfg.rho << ", n_max=" << cfg.n_max << ")";
  d.description = s.str();
  return d;
}

}  // namespace drolt_examples
