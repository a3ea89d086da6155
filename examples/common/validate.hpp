// The checks of a TrainConfig: validate() rejects bad values with a message
// naming the flag, what was expected and what was given, before any data is
// read or any training starts.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "protocol.hpp"
#include "registry.hpp"

namespace drolt_examples {

/// The problems found in a configuration, one per line.
struct Problems {
  std::ostringstream err;
  void bad(const std::string& s) { err << "  " << s << "\n"; }
  static std::string num(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }
  /// A count above its bound is reported alone (the other checks assume sane values).
  bool at_most(const char* flag, int64_t value, int64_t limit) {
    if (value <= limit) return true;
    bad(std::string(flag) + ": expected at most " + std::to_string(limit) + ", got " + std::to_string(value));
    return false;
  }
  /// Throws std::invalid_argument with every problem, if any.
  void throw_if_any() const {
    const std::string e = err.str();
    if (!e.empty()) throw std::invalid_argument("invalid configuration:\n" + e);
  }
};

/// Counts within the bounds the trainer's arithmetic assumes.
inline bool check_bounds(const TrainConfig& c, Problems& p) {
  bool sane = true;
  for (const auto& f : {std::make_pair("--epochs", c.epochs), std::make_pair("--stage-epochs", c.stage_epochs),
                        std::make_pair("--warmup", c.warmup_epochs), std::make_pair("--dro-start", c.dro_start),
                        std::make_pair("--drw-start", c.drw_start),
                        std::make_pair("--checkpoint-every", c.checkpoint_every),
                        std::make_pair("--save-at", c.save_at), std::make_pair("--stop-after", c.stop_after),
                        std::make_pair("--val-every", c.val_every)}) {
    sane = p.at_most(f.first, f.second, kMaxEpochs) && sane;
  }
  for (const auto& f : {std::make_pair("--n-max", c.n_max), std::make_pair("--val-per-class", c.val_per_class),
                        std::make_pair("--test-limit", c.test_limit),
                        std::make_pair("--class-aware-k", c.class_aware_k)}) {
    sane = p.at_most(f.first, f.second, kMaxImagesPerClass) && sane;
  }
  sane = p.at_most("--batch-size", c.batch_size, kMaxBatch) && sane;
  sane = p.at_most("--depth", c.depth, 1202) && sane;  // ResNet-1202, the deepest CIFAR ResNet
  sane = p.at_most("--threads", c.threads, 4096) && sane;
  if (c.dataset == Dataset::synthetic) {
    sane = p.at_most("synthetic_classes", c.synthetic_classes, 1000) && sane;
    sane = p.at_most("synthetic_size", c.synthetic_size, 256) && sane;
  }
  return sane;
}

/// The data set, its files and its long-tailed subset.
inline void check_data(const TrainConfig& c, Problems& p) {
  const std::string dataset = name_of(c.dataset);
  if (c.image_data()) {
#ifndef DROLT_HAS_IMAGES
    p.bad("--dataset " + dataset +
        ": this drolt_train was built without drolt::images (needs TurboJPEG, libpng, nlohmann_json)");
#endif
    const char* what = c.dataset == Dataset::folder ? "a class-folder tree"
                       : c.dataset == Dataset::list ? "a list file"
                                                    : "a JSON file";
    if (c.train_set.empty()) p.bad("--dataset " + dataset + ": expected --train-set (" + what + "), got none");
    if (c.test_set.empty()) p.bad("--dataset " + dataset + ": expected --test-set (" + what + "), got none");
    if (c.image_size < 8 || c.image_size > 1024) {
      p.bad("--image-size: expected a side in [8, 1024] pixels, got " + std::to_string(c.image_size));
    }
    if (c.resize != 0 && (c.resize < c.image_size || c.resize > 4096)) {
      p.bad("--resize: expected 0 (image size * 8 / 7) or a side in [--image-size, 4096], got " +
          std::to_string(c.resize));
    }
    if (c.workers < 1 || c.workers > 256) p.bad("--workers: expected 1 to 256 threads, got " + std::to_string(c.workers));
  } else {
    if (!c.train_set.empty() || !c.val_set.empty() || !c.test_set.empty()) {
      p.bad("--train-set / --val-set / --test-set: expected --dataset list, folder or inaturalist, got --dataset " +
          dataset + " (its files come from --data)");
    }
    if (c.loader != Loader::automatic) {
      p.bad("--loader " + name_of(c.loader) + ": expected --dataset list, folder or inaturalist, got " + dataset);
    }
    if (c.make_longtail) {
      p.bad("--make-longtail: the built-in sets always get a long-tailed subset; expected --dataset list, folder or "
          "inaturalist, got " + dataset);
    }
  }
}

/// The network and its precision.
inline void check_model(const TrainConfig& c, Problems& p) {
  if (c.imagenet_depth != 0 && c.imagenet_depth != 10 && c.imagenet_depth != 18 && c.imagenet_depth != 34 &&
      c.imagenet_depth != 50) {
    p.bad("--arch: expected resnet10, resnet18, resnet34, resnet50 or a CIFAR resnet(6n+2), got resnet" +
        std::to_string(c.imagenet_depth));
  }
  if (c.imagenet_depth != 0 && c.dro_layers != std::vector<int64_t>{3}) {
    p.bad("--dro-layers: the ImageNet ResNets (--arch resnet" + std::to_string(c.imagenet_depth) +
        ") support DRO-LT at layer 3 (the penultimate features) only");
  }
  if (c.balanced_subset && c.image_data()) {
    p.bad("--balanced-subset: expected a built-in data set (fashion-mnist, cifar10, cifar100), got --dataset " +
          name_of(c.dataset));
  }
  if (c.imagenet_depth != 0 && c.layer_analysis) {
    p.bad("--layer-analysis: expected a CIFAR ResNet (--depth); the ImageNet ResNets (--arch resnet" +
        std::to_string(c.imagenet_depth) + ") expose the penultimate features only");
  }
  if (c.amp && c.device != Device::cuda) {
    p.bad("--amp: expected --device cuda (bf16 autocast on the GPU), got --device " + name_of(c.device));
  }
  if (c.channels_last && c.device != Device::cuda) {
    p.bad("--channels-last: expected --device cuda (it only speeds up cuDNN convolutions), got --device " +
          name_of(c.device));
  }
}

/// The long-tail profile, the splits and the optimiser.
inline void check_optimisation(const TrainConfig& c, Problems& p) {
  if (!(c.rho >= 1.0) || !std::isfinite(c.rho)) p.bad("--rho: expected an imbalance ratio >= 1, got " + p.num(c.rho));
  if (c.n_max < 1) p.bad("--n-max: expected >= 1, got " + std::to_string(c.n_max));
  if (c.val_per_class < 0) p.bad("--val-per-class: expected >= 0, got " + std::to_string(c.val_per_class));
  if (c.test_limit < 0) p.bad("--test-limit: expected >= 0, got " + std::to_string(c.test_limit));
  if (c.few_below > c.many_above + 1) {
    p.bad("--few-below: expected at most --many-above + 1, got " + std::to_string(c.few_below));
  }
  if (c.depth < 8 || (c.depth - 2) % 6 != 0) {
    p.bad("--depth: expected a ResNet depth 6n + 2 (8, 20, 32, 44, 56, 110), got " + std::to_string(c.depth));
  }
  if (c.epochs < 1) p.bad("--epochs: expected >= 1, got " + std::to_string(c.epochs));
  if (c.batch_size < 1) p.bad("--batch-size: expected >= 1, got " + std::to_string(c.batch_size));
  if (!float_rate(c.lr, false)) p.bad("--lr: expected a positive learning rate" + kFloatRange + ", got " + p.num(c.lr));
  if (!(c.momentum >= 0 && c.momentum < 1)) p.bad("--momentum: expected a value in [0, 1), got " + p.num(c.momentum));
  if (!float_rate(c.weight_decay, true)) p.bad("--wd: expected >= 0" + kFloatRange + ", got " + p.num(c.weight_decay));
  if (c.warmup_epochs < 0) p.bad("--warmup: expected >= 0, got " + std::to_string(c.warmup_epochs));
  for (double m : c.milestones) {
    if (!(m > 0 && m <= 1)) p.bad("--milestones: expected fractions of the epochs in (0, 1], got " + p.num(m));
  }
  if (!(c.gamma > 0 && c.gamma <= 1)) p.bad("--gamma: expected a value in (0, 1], got " + p.num(c.gamma));
}

/// The representation losses.
inline void check_losses(const TrainConfig& c, Problems& p) {
  if (!(c.cb_beta >= 0 && c.cb_beta < 1)) p.bad("--cb-beta: expected a value in [0, 1), got " + p.num(c.cb_beta));
  if (!(c.focal_gamma >= 0) || !std::isfinite(c.focal_gamma)) {
    p.bad("--focal-gamma: expected >= 0, got " + p.num(c.focal_gamma));
  }
  if (!(c.ldam_margin > 0) || !std::isfinite(c.ldam_margin)) {
    p.bad("--ldam-margin: expected > 0, got " + p.num(c.ldam_margin));
  }
  if (!(c.ldam_scale > 0) || !std::isfinite(c.ldam_scale)) p.bad("--ldam-scale: expected > 0, got " + p.num(c.ldam_scale));
  if (c.class_aware_k < 1) p.bad("--class-aware-k: expected >= 1, got " + std::to_string(c.class_aware_k));
  if (!(c.la_loss_tau >= 0 && c.la_loss_tau <= 10)) {
    p.bad("--la-loss-tau: expected a value in [0, 10], got " + p.num(c.la_loss_tau));
  }
  if (!float_rate(c.wb_weight_decay, true)) {
    p.bad("--wb-wd: expected >= 0" + kFloatRange + ", got " + p.num(c.wb_weight_decay));
  }
  if (!(c.max_norm > 0) || !std::isfinite(c.max_norm)) p.bad("--max-norm: expected a radius > 0, got " + p.num(c.max_norm));
}

/// DRO-LT.
inline void check_dro(const TrainConfig& c, Problems& p) {
  if (!(c.lambda >= 0 && c.lambda <= 1)) p.bad("--lambda: expected a value in [0, 1], got " + p.num(c.lambda));
  if (!(c.temperature > 0) || !std::isfinite(c.temperature)) {
    p.bad("--temperature: expected a positive temperature, got " + p.num(c.temperature));
  }
  // Epoch flags whose one negative value, -1, is a documented sentinel.
  for (const auto& f : {std::make_pair("--dro-start", c.dro_start), std::make_pair("--drw-start", c.drw_start),
                        std::make_pair("--save-at", c.save_at), std::make_pair("--stop-after", c.stop_after)}) {
    if (f.second < -1) p.bad(std::string(f.first) + ": expected >= 0 (or -1, its default), got " + std::to_string(f.second));
  }
  if (c.dro_start > c.epochs) {
    p.bad("--dro-start: expected at most --epochs (" + std::to_string(c.epochs) + "), got " +
        std::to_string(c.dro_start));
  }
  if (!float_rate(c.dro_lr, true)) {
    p.bad("--dro-lr: expected >= 0 (0: the schedule)" + kFloatRange + ", got " + p.num(c.dro_lr));
  }
  if (c.dro_start == 0 && c.centroid_mode != CentroidMode::full) {
    p.bad("--dro-start 0 needs --centroids full (the other modes build centroids during a CE epoch)");
  }
  if (c.dro_layers.empty()) p.bad("--dro-layers: expected at least one of 0, 1, 2, 3");
  for (size_t i = 0; i < c.dro_layers.size(); ++i) {
    const int64_t l = c.dro_layers[i];
    if (l < 0 || l > 3) p.bad("--dro-layers: expected layers in 0..3 (0 the stem, 3 the penultimate), got " + std::to_string(l));
    for (size_t j = 0; j < i; ++j) {
      if (c.dro_layers[j] == l) p.bad("--dro-layers: expected distinct layers, got " + std::to_string(l) + " twice");
    }
  }
  if (!c.dro_layer_weights.empty()) {
    if (c.dro_layer_weights.size() != c.dro_layers.size()) {
      p.bad("--dro-layer-weights: expected one weight per --dro-layers entry (" + std::to_string(c.dro_layers.size()) +
          "), got " + std::to_string(c.dro_layer_weights.size()));
    }
    double total = 0;
    for (double w : c.dro_layer_weights) {
      if (!(w >= 0) || !std::isfinite(w)) p.bad("--dro-layer-weights: expected finite weights >= 0, got " + p.num(w));
      total += w;
    }
    if (!(total > 0)) p.bad("--dro-layer-weights: expected at least one weight > 0");
  }
  if (!(c.ema_momentum >= 0 && c.ema_momentum < 1)) {
    p.bad("--ema-momentum: expected a value in [0, 1), got " + p.num(c.ema_momentum));
  }
  if (!float_rate(c.radius_lr, true)) p.bad("--radius-lr: expected >= 0" + kFloatRange + ", got " + p.num(c.radius_lr));
}

/// The methods and classifier stages: known names, epochs for the stages that
/// train (their own answer, stages/*.hpp), a validation split for the ones
/// that choose tau on it.
inline void check_methods_and_stages(const TrainConfig& c, Problems& p) {
  if (c.methods.empty()) p.bad("--method: expected at least one of " + registry_choices(method_registry()));
  bool known = true;
  for (const auto& m : c.methods) {
    if (find_entry(method_registry(), m)) continue;
    p.bad("--method: expected " + registry_choices(method_registry()) + ", got '" + m + "'");
    known = false;
  }
  for (const auto& k : c.classifiers) {
    if (find_entry(stage_registry(), k)) continue;
    p.bad("--classifier: expected " + registry_choices(stage_registry()) + ", got '" + k + "'");
    known = false;
  }
  if (c.stage_epochs < 0) p.bad("--stage-epochs: expected >= 0, got " + std::to_string(c.stage_epochs));
  if (!known) return;
  std::string trained;
  bool needs_val = false;
  for (const auto& run : runs_of(c)) {
    for (const auto& k : run.classifiers) {
      const auto stage = make_stage(k, c);
      if (stage->trains() && trained.find(k) == std::string::npos) trained += (trained.empty() ? "" : ", ") + k;
      needs_val = needs_val || (stage->has_tau() && stage->configured_tau() < 0);
    }
  }
  if (!trained.empty() && c.stage_epochs == 0) {
    p.bad("--stage-epochs: the stages " + trained + " train a classifier; expected at least 1 epoch, got 0");
  }
  if (needs_val && c.val_per_class == 0 && !(c.image_data() && !c.val_set.empty())) {
    p.bad("--classifier: tau-norm and la choose tau on the validation split; give --val-per-class > 0 or "
          "--tau-norm-tau / --la-tau");
  }
  if (needs_val && c.image_data() && c.val_set.empty() && !c.make_longtail) {
    p.bad("--classifier: tau-norm and la choose tau on the validation split; give --val-set (or --make-longtail "
          "with --val-per-class > 0) or --tau-norm-tau / --la-tau");
  }
  if (!float_rate(c.stage_lr, false)) {
    p.bad("--stage-lr: expected a positive learning rate" + kFloatRange + ", got " + p.num(c.stage_lr));
  }
  if (c.tau_norm_tau > 1 || !std::isfinite(c.tau_norm_tau) || (c.tau_norm_tau < 0 && c.tau_norm_tau != -1)) {
    p.bad("--tau-norm-tau: expected a value in [0, 1] (or -1: chosen on validation), got " + p.num(c.tau_norm_tau));
  }
  if (!std::isfinite(c.la_tau) || c.la_tau > 10 || (c.la_tau < 0 && c.la_tau != -1)) {
    p.bad("--la-tau: expected a value in [0, 10] (or -1: chosen on validation), got " + p.num(c.la_tau));
  }
}

/// Threads, devices, processes, checkpoints and outputs.
inline void check_runtime(const TrainConfig& c, Problems& p) {
  if (c.crop_pad < -1) p.bad("--crop-pad: expected >= 0, got " + std::to_string(c.crop_pad));
  if (c.threads < 0) p.bad("--threads: expected >= 0 (0 = all cores), got " + std::to_string(c.threads));
  if (!(c.dist_bucket_mb >= 0 && c.dist_bucket_mb <= 1e6)) {
    p.bad("--dist-bucket-mb: expected a size in [0, 1000000] MB (0: all-reduce after backward), got " +
        p.num(c.dist_bucket_mb));
  }
  if (c.checkpoint_every < 0) p.bad("--checkpoint-every: expected >= 0, got " + std::to_string(c.checkpoint_every));
  if (!c.warm_start.empty() && c.centroid_mode != CentroidMode::full) p.bad("--warm-start needs --centroids full");
  if (c.val_every < 1) p.bad("--val-every: expected >= 1, got " + std::to_string(c.val_every));
  if (c.out_dir.empty()) p.bad("--out: expected a directory, got an empty string");
}

/// Throws std::invalid_argument with every problem found, one per line.
inline void validate(const TrainConfig& c) {
  Problems p;
  if (!check_bounds(c, p)) p.throw_if_any();
  check_methods_and_stages(c, p);
  check_data(c, p);
  check_model(c, p);
  check_optimisation(c, p);
  check_losses(c, p);
  check_dro(c, p);
  check_runtime(c, p);
  p.throw_if_any();
}

}  // namespace drolt_examples
