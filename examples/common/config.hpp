// Configuration of the example trainer (drolt_train) and its validation.
//
// Everything a run depends on lives in TrainConfig; validate() rejects bad input
// with a message before any data is read or any training starts.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace drolt_examples {

struct TrainConfig {
  // ------------------------------------------------------------------ what to run
  /// Any of "ce", "crt", "drolt". "ce" and "crt" share one CE-trained backbone
  /// (cRT is classifier re-training on top of it), so asking for both trains once.
  std::vector<std::string> methods = {"drolt"};
  /// Radius policy of the DRO-LT loss: erm (eps = 0), shared, sqrtn, learned.
  std::string radius_policy = "learned";

  // ------------------------------------------------------------------ data
  /// fashion-mnist (IDX files), cifar10, cifar100 (binary version), synthetic (tests).
  std::string dataset = "fashion-mnist";
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string profile = "exp";  // exp | step
  double rho = 100.0;           // imbalance ratio n_max / n_min
  int64_t n_max = 500;          // images of the largest class
  int64_t val_per_class = 100;  // balanced validation split drawn from the left-out images
  int64_t data_seed = 0;        // seed of the long-tailed subset and validation split
  int64_t test_limit = 0;       // evaluate on the first N test images only (0 = all)
  // synthetic data (tests only)
  int64_t synthetic_classes = 4;
  int64_t synthetic_size = 12;

  // ------------------------------------------------------------------ model
  int64_t depth = 32;  // ResNet-(6n+2)

  // ------------------------------------------------------------------ optimisation
  int64_t epochs = 60;  // epochs of feature learning (CE, or CE warm-up + DRO-LT)
  int64_t batch_size = 128;
  double lr = 0.1;
  double momentum = 0.9;
  double weight_decay = 2e-4;
  int64_t warmup_epochs = 5;          // linear learning-rate warm-up
  std::string schedule = "multistep";  // multistep | cosine
  std::vector<double> milestones = {0.8, 0.9};  // fractions of `epochs` (multistep)
  double gamma = 0.1;                           // multistep decay factor

  // ------------------------------------------------------------------ DRO-LT
  double lambda = 0.5;       // L = (1 - lambda) CE + lambda DRO
  double temperature = 1.0;  // tau
  double eps0 = 0.5;         // initial / shared radius (margin 2 * eps0)
  int64_t dro_start = -1;    // first DRO-LT epoch (CE before it); -1 = epochs / 2
  std::string centroid_mode = "full";  // full | previous | ema
  double ema_momentum = 0.9;
  double radius_lr = 0.005;  // learned radii: SGD lr (spec section 5)
  double radius_weight_decay = 1e-4;

  // ------------------------------------------------------------------ cRT
  int64_t crt_epochs = 10;
  double crt_lr = 0.1;

  // ------------------------------------------------------------------ augmentation
  int64_t crop_pad = -1;  // random-crop padding; -1 = 4 for 32x32 input, 2 otherwise
  bool flip = true;

  // ------------------------------------------------------------------ runtime
  int64_t seed = 0;
  int threads = 0;  // 0 = all cores
  std::string device = "cpu";
  std::string out_dir = "out/train";
  bool resume = false;
  int64_t checkpoint_every = 1;  // epochs; 0 = never
  /// Also keep a copy of the checkpoint taken after this epoch (-1 = none);
  /// a CE run's copy at the DRO-LT start epoch can --warm-start DRO-LT runs.
  int64_t save_at = -1;
  /// DRO-LT runs: take the CE warm-up from this CE checkpoint (see save_at).
  std::string warm_start;
  bool plots = true;
  bool verbose = true;
  int64_t val_every = 1;
  /// Stop (as if interrupted) once this many epochs of a run have completed and
  /// been checkpointed; -1 = never. For testing --resume.
  int64_t stop_after = -1;

  int64_t dro_start_epoch() const { return dro_start < 0 ? epochs / 2 : dro_start; }
  bool wants(const std::string& m) const {
    for (const auto& x : methods) {
      if (x == m) return true;
    }
    return false;
  }
};

/// Throws std::invalid_argument with every problem found, one per line.
inline void validate(const TrainConfig& c) {
  std::ostringstream err;
  auto bad = [&](const std::string& s) { err << "  " << s << "\n"; };
  if (c.methods.empty()) bad("--method: give at least one of ce, crt, drolt");
  for (const auto& m : c.methods) {
    if (m != "ce" && m != "crt" && m != "drolt") {
      bad("--method: unknown method '" + m + "' (expected ce, crt or drolt)");
    }
  }
  if (c.radius_policy != "erm" && c.radius_policy != "shared" && c.radius_policy != "sqrtn" &&
      c.radius_policy != "learned") {
    bad("--policy: unknown radius policy '" + c.radius_policy + "' (expected erm, shared, sqrtn or learned)");
  }
  if (c.dataset != "fashion-mnist" && c.dataset != "cifar10" && c.dataset != "cifar100" &&
      c.dataset != "synthetic") {
    bad("--dataset: unknown dataset '" + c.dataset + "' (expected fashion-mnist, cifar10, cifar100)");
  }
  if (c.profile != "exp" && c.profile != "step") bad("--profile: expected exp or step, got '" + c.profile + "'");
  if (!(c.rho >= 1.0) || !std::isfinite(c.rho)) bad("--rho: the imbalance ratio must be >= 1");
  if (c.n_max < 1) bad("--n-max: must be >= 1");
  if (c.val_per_class < 0) bad("--val-per-class: must be >= 0");
  if (c.test_limit < 0) bad("--test-limit: must be >= 0");
  if (c.depth < 8 || (c.depth - 2) % 6 != 0) {
    bad("--depth: ResNet depth must be 6n + 2 (8, 20, 32, 44, 56, 110), got " + std::to_string(c.depth));
  }
  if (c.epochs < 1) bad("--epochs: must be >= 1");
  if (c.batch_size < 1) bad("--batch-size: must be positive, got " + std::to_string(c.batch_size));
  if (!(c.lr > 0) || !std::isfinite(c.lr)) bad("--lr: must be positive");
  if (!(c.momentum >= 0 && c.momentum < 1)) bad("--momentum: must be in [0, 1)");
  if (!(c.weight_decay >= 0)) bad("--wd: must be >= 0");
  if (c.warmup_epochs < 0) bad("--warmup: must be >= 0");
  if (c.schedule != "multistep" && c.schedule != "cosine") {
    bad("--schedule: expected multistep or cosine, got '" + c.schedule + "'");
  }
  for (double m : c.milestones) {
    if (!(m > 0 && m <= 1)) bad("--milestones: fractions of the epochs in (0, 1]");
  }
  if (!(c.gamma > 0 && c.gamma <= 1)) bad("--gamma: must be in (0, 1]");
  if (!(c.lambda >= 0 && c.lambda <= 1)) {
    std::ostringstream s;
    s << "--lambda: must be in [0, 1], got " << c.lambda;
    bad(s.str());
  }
  if (!(c.temperature > 0) || !std::isfinite(c.temperature)) {
    std::ostringstream s;
    s << "--temperature: must be positive, got " << c.temperature;
    bad(s.str());
  }
  if (!(c.eps0 >= 0) || !std::isfinite(c.eps0)) bad("--eps0: the radius must be >= 0");
  if (c.dro_start > c.epochs) bad("--dro-start: must be <= --epochs");
  if (c.dro_start == 0 && c.centroid_mode != "full") {
    bad("--dro-start 0 needs --centroids full (the other modes build centroids during a CE epoch)");
  }
  if (c.centroid_mode != "full" && c.centroid_mode != "previous" && c.centroid_mode != "ema") {
    bad("--centroids: expected full, previous or ema, got '" + c.centroid_mode + "'");
  }
  if (!(c.ema_momentum >= 0 && c.ema_momentum < 1)) bad("--ema-momentum: must be in [0, 1)");
  if (!(c.radius_lr >= 0)) bad("--radius-lr: must be >= 0");
  if (c.crt_epochs < 0) bad("--crt-epochs: must be >= 0");
  if ((c.wants("crt") || c.wants("drolt")) && c.crt_epochs == 0) {
    bad("--crt-epochs: crt and drolt end with classifier re-training; give at least 1 epoch");
  }
  if (!(c.crt_lr > 0)) bad("--crt-lr: must be positive");
  if (c.crop_pad < -1) bad("--crop-pad: must be >= 0");
  if (c.threads < 0) bad("--threads: must be >= 0 (0 = all cores)");
  if (c.device != "cpu" && c.device != "cuda") bad("--device: expected cpu or cuda, got '" + c.device + "'");
  if (c.checkpoint_every < 0) bad("--checkpoint-every: must be >= 0");
  if (!c.warm_start.empty() && c.centroid_mode != "full") {
    bad("--warm-start needs --centroids full");
  }
  if (c.val_every < 1) bad("--val-every: must be >= 1");
  if (c.out_dir.empty()) bad("--out: must not be empty");
  const std::string e = err.str();
  if (!e.empty()) throw std::invalid_argument("invalid configuration:\n" + e);
}

}  // namespace drolt_examples
