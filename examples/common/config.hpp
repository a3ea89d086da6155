// Configuration of the example trainer (drolt_train) and its validation.
//
// Everything a run depends on lives in TrainConfig, typed: the command line is
// parsed into enums and a drolt::RadiusPolicy once (parse_enum below), and
// validate() rejects bad values with a message before any data is read or any
// training starts. Presets (apply_preset) are data, next to the defaults.
#pragma once

#include <drolt/radius.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace drolt_examples {

// ------------------------------------------------------------------ enumerations

/// What `--method` names: a representation (how the feature extractor is
/// trained). `crt` is the CE representation evaluated with classifier re-training.
enum class Method { ce, crt, resample, reweight, focal, ldam_drw, drolt };
/// The representation loss (the classifier's term; DRO-LT is added on top).
enum class BaseLoss { ce, focal, ldam };
/// Class weights of the representation loss (docs/math.md, "Methods compared").
enum class Weighting { none, inverse, effective, max_ratio };
/// Order of the training images: instance (a permutation), class-balanced
/// (class uniform, then an image of it), class-aware (k images of one class,
/// then k of the next, as the authors' loader), square-root, progressive.
enum class SamplerKind { instance, class_balanced, class_aware, sqrt, progressive };
/// Classifier stages on the frozen representation (docs/math.md, "Methods compared").
enum class ClassifierKind { joint, crt, lws, tau_norm, ncm, logit_adjust };
enum class CentroidMode { full, previous, ema };
enum class Schedule { multistep, cosine, constant };

template <typename E>
struct EnumNames;  // the spelling of every value of E on the command line

template <>
struct EnumNames<Method> {
  static std::vector<std::pair<const char*, Method>> table() {
    return {{"ce", Method::ce},       {"crt", Method::crt},     {"resample", Method::resample},
            {"reweight", Method::reweight}, {"focal", Method::focal}, {"ldam-drw", Method::ldam_drw},
            {"drolt", Method::drolt}};
  }
};
template <>
struct EnumNames<BaseLoss> {
  static std::vector<std::pair<const char*, BaseLoss>> table() {
    return {{"ce", BaseLoss::ce}, {"focal", BaseLoss::focal}, {"ldam", BaseLoss::ldam}};
  }
};
template <>
struct EnumNames<Weighting> {
  static std::vector<std::pair<const char*, Weighting>> table() {
    return {{"none", Weighting::none},
            {"inverse", Weighting::inverse},
            {"effective", Weighting::effective},
            {"nmax", Weighting::max_ratio}};
  }
};
template <>
struct EnumNames<SamplerKind> {
  static std::vector<std::pair<const char*, SamplerKind>> table() {
    return {{"instance", SamplerKind::instance},
            {"class-balanced", SamplerKind::class_balanced},
            {"class-aware", SamplerKind::class_aware},
            {"sqrt", SamplerKind::sqrt},
            {"progressive", SamplerKind::progressive}};
  }
};
template <>
struct EnumNames<ClassifierKind> {
  static std::vector<std::pair<const char*, ClassifierKind>> table() {
    return {{"joint", ClassifierKind::joint},       {"crt", ClassifierKind::crt},
            {"lws", ClassifierKind::lws},           {"tau-norm", ClassifierKind::tau_norm},
            {"ncm", ClassifierKind::ncm},           {"la", ClassifierKind::logit_adjust}};
  }
};
template <>
struct EnumNames<CentroidMode> {
  static std::vector<std::pair<const char*, CentroidMode>> table() {
    return {{"full", CentroidMode::full}, {"previous", CentroidMode::previous}, {"ema", CentroidMode::ema}};
  }
};
template <>
struct EnumNames<Schedule> {
  static std::vector<std::pair<const char*, Schedule>> table() {
    return {{"multistep", Schedule::multistep}, {"cosine", Schedule::cosine}, {"constant", Schedule::constant}};
  }
};

/// "a, b or c": the spellings of E, for messages and --help.
template <typename E>
std::string enum_choices() {
  const auto t = EnumNames<E>::table();
  std::string s;
  for (size_t i = 0; i < t.size(); ++i) s += (i == 0 ? "" : i + 1 == t.size() ? " or " : ", ") + std::string(t[i].first);
  return s;
}

/// The value spelt `text`; `flag` names the option in the message of a bad one.
template <typename E>
E parse_enum(const std::string& flag, const std::string& text) {
  for (const auto& kv : EnumNames<E>::table()) {
    if (text == kv.first) return kv.second;
  }
  throw std::invalid_argument(flag + ": expected " + enum_choices<E>() + ", got '" + text + "'");
}

template <typename E>
std::string name_of(E value) {
  for (const auto& kv : EnumNames<E>::table()) {
    if (kv.second == value) return kv.first;
  }
  return "?";
}

/// Comma-separated values ("ce,crt" or several occurrences of the flag).
template <typename E>
std::vector<E> parse_enum_list(const std::string& flag, const std::vector<std::string>& items) {
  std::vector<E> out;
  for (const auto& s : items) {
    std::string cur;
    for (size_t i = 0; i <= s.size(); ++i) {
      if (i == s.size() || s[i] == ',') {
        if (!cur.empty()) out.push_back(parse_enum<E>(flag, cur));
        cur.clear();
      } else {
        cur += s[i];
      }
    }
  }
  return out;
}

/// "erm", "shared", "sqrtn", "learned" with radius eps0 (the message names --policy).
inline drolt::RadiusPolicy parse_policy(const std::string& name, double eps0) {
  if (name != "erm" && name != "shared" && name != "sqrtn" && name != "learned") {
    throw std::invalid_argument("--policy: expected erm, shared, sqrtn or learned, got '" + name + "'");
  }
  if (!(eps0 >= 0) || !std::isfinite(eps0)) {
    std::ostringstream s;
    s << "--eps0: expected a finite radius >= 0, got " << eps0;
    throw std::invalid_argument(s.str());
  }
  return drolt::RadiusPolicy::parse(name, eps0);
}

// ------------------------------------------------------------------ the configuration

struct TrainConfig {
  // ------------------------------------------------------------------ what to run
  /// The representations to train (each once). ce and crt share one CE
  /// representation, so asking for both trains once.
  std::vector<Method> methods = {Method::drolt};
  /// Classifier stages evaluated on every representation; empty = the paper's
  /// protocol: joint for ce and the baselines, cRT for crt, cRT and joint for drolt.
  std::vector<ClassifierKind> classifiers;

  // ------------------------------------------------------------------ data
  /// fashion-mnist (IDX files), cifar10, cifar100 (binary version), synthetic
  /// (tests), or a user's images: list (ImageNet-LT / Places-LT list files),
  /// folder (class-folder trees), inaturalist (iNaturalist 2018 / 2019 JSON).
  std::string dataset = "fashion-mnist";
  /// The built-in sets' files; for list and inaturalist the root that relative
  /// image paths start from.
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  /// Image data sets: each split's list file, JSON or class-folder tree (val optional).
  std::string train_set, val_set, test_set;
  /// Image data sets: memory (decode every image once, keep them as tensors;
  /// images of one size, small sets), stream (decode on loader threads every
  /// epoch, torchvision's ImageNet transforms), auto (memory when the first
  /// training image is at most 64 x 64 pixels).
  std::string loader = "auto";
  int64_t image_size = 224;  // stream: side of the training / evaluation crops
  int64_t resize = 0;        // stream: shorter side before the evaluation center crop; 0 = image_size * 8 / 7
  int64_t workers = 4;       // stream: decoding threads per loader
  /// Image data sets: draw a long-tailed subset (--profile, --rho, --n-max) and
  /// the validation split (--val-per-class) from a balanced training set, as for
  /// the built-in sets; without it the training set is used as listed.
  bool make_longtail = false;
  std::string profile = "exp";  // exp | step
  double rho = 100.0;           // imbalance ratio n_max / n_min
  int64_t n_max = 500;          // images of the largest class
  int64_t val_per_class = 100;  // balanced validation split drawn from the left-out images
  int64_t data_seed = 0;        // seed of the long-tailed subset and validation split
  int64_t test_limit = 0;       // evaluate on the first N test images only (0 = all)
  /// Train on a class-balanced subset with as many images as the long-tailed
  /// one (its total / C per class); Many / Medium / Few stay the long-tailed
  /// profile's classes, so that the splits compare like for like (the
  /// "balanced set of the same size" of the paper's layer analysis).
  bool balanced_subset = false;
  // synthetic data (tests only)
  int64_t synthetic_classes = 4;
  int64_t synthetic_size = 12;
  /// Many n > many_above, Few n < few_below (docs/math.md, "Long-tailed data and evaluation").
  int64_t many_above = 100;
  int64_t few_below = 20;

  // ------------------------------------------------------------------ model
  int64_t depth = 32;  // ResNet-(6n+2)
  /// 0: the CIFAR ResNet of `depth`; 10, 18, 34, 50: torchvision's ImageNet ResNet (--arch resnet50).
  int64_t imagenet_depth = 0;
  bool amp = false;            // CUDA: bf16 autocast for the network (loss and centroids in float32)
  bool channels_last = false;  // CUDA: channels-last convolution weights and inputs

  // ------------------------------------------------------------------ optimisation
  int64_t epochs = 60;  // epochs of representation learning (CE warm-up + DRO-LT for drolt)
  int64_t batch_size = 128;
  double lr = 0.1;
  double momentum = 0.9;
  double weight_decay = 2e-4;
  int64_t warmup_epochs = 5;                    // linear learning-rate warm-up
  Schedule schedule = Schedule::multistep;
  std::vector<double> milestones = {0.8, 0.9};  // fractions of `epochs` (multistep)
  double gamma = 0.1;                           // multistep decay factor

  // ------------------------------------------------------------------ representation losses
  /// The drolt representation's classifier loss, class weights and sampler
  /// during the DRO-LT epochs (its warm-up is plain CE with instance sampling).
  BaseLoss loss = BaseLoss::ce;
  Weighting weighting = Weighting::none;
  SamplerKind sampler = SamplerKind::instance;
  /// ReSample's sampler and ReWeight's weights.
  SamplerKind resample_sampler = SamplerKind::class_balanced;
  Weighting reweight = Weighting::inverse;
  double cb_beta = 0.9999;   // effective-number weights (and DRW)
  double focal_gamma = 1.0;  // focal loss
  double ldam_margin = 0.5;  // LDAM: largest margin m
  double ldam_scale = 30.0;  // LDAM: cosine classifier scale s
  /// LDAM: DRW (effective-number weights) from this epoch on; -1 = 0.8 * epochs
  /// (their CIFAR recipe: 160 of 200). ldam-drw always, drolt with --loss ldam when drw.
  int64_t drw_start = -1;
  bool drw = false;
  int64_t class_aware_k = 4;  // class-aware sampler: images of one class in a row

  // ------------------------------------------------------------------ DRO-LT
  double lambda = 0.5;      // L = (1 - lambda) CE + lambda DRO
  bool dro_sum = false;     // L = CE + DRO (the authors' code; lambda unused)
  double temperature = 1.0;  // tau
  drolt::RadiusPolicy radius = drolt::RadiusPolicy::learned(0.5);
  int64_t dro_start = -1;   // first DRO-LT epoch (CE before it); -1 = epochs / 2
  /// Constant learning rate of the DRO-LT epochs (> 0), or 0: the schedule goes on.
  double dro_lr = 0;
  CentroidMode centroid_mode = CentroidMode::full;
  /// Layers with a DRO-LT loss (docs/math.md, "Several layers"): 0 the stem,
  /// 1..3 the ResNet stages (3 = the penultimate features); each has its own
  /// bank and radii. The DRO-LT term is sum_l w_l L_DRO(layer l).
  std::vector<int64_t> dro_layers = {3};
  /// The weights w_l, one per --dro-layers entry; empty = 1 / (number of layers) each.
  std::vector<double> dro_layer_weights;
  double ema_momentum = 0.9;
  double radius_lr = 0.005;  // learned radii: SGD lr (docs/math.md, "Radius policies")
  double radius_weight_decay = 1e-4;

  // ------------------------------------------------------------------ classifier stages
  int64_t crt_epochs = 10;  // epochs of each trained classifier stage (crt, lws)
  double crt_lr = 0.1;
  Schedule crt_schedule = Schedule::cosine;
  SamplerKind crt_sampler = SamplerKind::class_balanced;
  bool crt_reinit = true;      // cRT re-initialises the classifier (false: goes on training it)
  /// The classifier stages' batch normalisation: false (eval) keeps the representation's running
  /// statistics (features truly frozen); true (train) normalises with batch statistics and updates the
  /// running ones from the re-balanced batches, as Kang et al.'s cRT code does (every stage starts from
  /// the representation's statistics, and is evaluated with its own).
  bool crt_bn_train = false;
  double tau_norm_tau = -1;    // tau-normalisation's tau; -1 = chosen on the validation split
  double la_tau = -1;          // logit adjustment's tau; -1 = chosen on the validation split

  // ------------------------------------------------------------------ augmentation
  int64_t crop_pad = -1;  // random-crop padding; -1 = 4 for 32x32 input, 2 otherwise
  bool flip = true;

  // ------------------------------------------------------------------ runtime
  int64_t seed = 0;
  int threads = 0;  // 0 = all cores
  std::string device = "cpu";
  /// Several processes (WORLD_SIZE > 1): auto (nccl for cuda, gloo for cpu), gloo or nccl.
  std::string dist_backend = "auto";
  /// Several processes: gradient buckets of this many MB, all-reduced during
  /// backward(); 0 = all gradients after backward().
  double dist_bucket_mb = 25.0;
  std::string out_dir = "out/train";
  bool resume = false;
  int64_t checkpoint_every = 1;  // epochs; 0 = never
  /// Also keep a copy of the checkpoint taken after this epoch (-1 = none);
  /// a CE run's copy at the DRO-LT start epoch can --warm-start DRO-LT runs.
  int64_t save_at = -1;
  /// DRO-LT runs: take the CE warm-up from this CE checkpoint (see save_at).
  std::string warm_start;
  bool plots = true;
  /// After each representation: nearest-centroid accuracy at every layer
  /// (stem, stages) for Many / Medium / Few, written to layers-<run>.csv.
  bool layer_analysis = false;
  bool verbose = true;
  int64_t val_every = 1;
  /// Stop (as if interrupted) once this many epochs of a run have completed and
  /// been checkpointed; -1 = never. For testing --resume.
  int64_t stop_after = -1;

  bool image_data() const { return dataset == "list" || dataset == "folder" || dataset == "inaturalist"; }
  /// "resnet32" (CIFAR, --depth) or "resnet50" (ImageNet layout), as --arch names them.
  std::string arch_name() const { return "resnet" + std::to_string(imagenet_depth ? imagenet_depth : depth); }

  int64_t dro_start_epoch() const { return dro_start < 0 ? epochs / 2 : dro_start; }
  /// w_l of every --dro-layers entry (1 / L each unless given).
  std::vector<double> dro_weights() const {
    if (!dro_layer_weights.empty()) return dro_layer_weights;
    return std::vector<double>(dro_layers.size(), 1.0 / static_cast<double>(std::max<size_t>(dro_layers.size(), 1)));
  }
  int64_t drw_start_epoch() const { return drw_start < 0 ? epochs * 4 / 5 : drw_start; }
  bool wants(Method m) const {
    for (auto x : methods) {
      if (x == m) return true;
    }
    return false;
  }
};

/// "ResNet-32" (CIFAR) or "ImageNet ResNet-50", for logs and tables.
inline std::string network_name(const TrainConfig& c) {
  return c.imagenet_depth ? "ImageNet ResNet-" + std::to_string(c.imagenet_depth) : "ResNet-" + std::to_string(c.depth);
}

/// Upper bounds of the user-given counts: far above any real run, and low
/// enough that no sum or product of them in the trainer overflows int64.
constexpr int64_t kMaxEpochs = 1000000;
constexpr int64_t kMaxImagesPerClass = int64_t{1} << 30;
constexpr int64_t kMaxBatch = int64_t{1} << 20;

/// A rate or weight decay that SGD applies to float tensors: > 0 (or >= 0),
/// finite and within float's range (LibTorch refuses a larger scalar mid-run).
inline bool float_rate(double v, bool zero_ok) {
  return (zero_ok ? v >= 0 : v > 0) && v <= static_cast<double>(std::numeric_limits<float>::max());
}
inline const std::string kFloatRange = " no larger than a float holds (3.4e38)";

/// Throws std::invalid_argument with every problem found, one per line.
inline void validate(const TrainConfig& c) {
  std::ostringstream err;
  auto bad = [&](const std::string& s) { err << "  " << s << "\n"; };
  auto num = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  // A count above its bound is reported alone (the checks below assume sane values).
  auto at_most = [&](const char* flag, int64_t value, int64_t limit) {
    if (value <= limit) return true;
    bad(std::string(flag) + ": expected at most " + std::to_string(limit) + ", got " + std::to_string(value));
    return false;
  };
  bool sane = true;
  for (const auto& f : {std::make_pair("--epochs", c.epochs), std::make_pair("--crt-epochs", c.crt_epochs),
                        std::make_pair("--warmup", c.warmup_epochs), std::make_pair("--dro-start", c.dro_start),
                        std::make_pair("--drw-start", c.drw_start),
                        std::make_pair("--checkpoint-every", c.checkpoint_every),
                        std::make_pair("--save-at", c.save_at), std::make_pair("--stop-after", c.stop_after),
                        std::make_pair("--val-every", c.val_every)}) {
    sane = at_most(f.first, f.second, kMaxEpochs) && sane;
  }
  for (const auto& f : {std::make_pair("--n-max", c.n_max), std::make_pair("--val-per-class", c.val_per_class),
                        std::make_pair("--test-limit", c.test_limit),
                        std::make_pair("--class-aware-k", c.class_aware_k)}) {
    sane = at_most(f.first, f.second, kMaxImagesPerClass) && sane;
  }
  sane = at_most("--batch-size", c.batch_size, kMaxBatch) && sane;
  sane = at_most("--depth", c.depth, 1202) && sane;  // ResNet-1202, the deepest CIFAR ResNet
  sane = at_most("--threads", c.threads, 4096) && sane;
  if (c.dataset == "synthetic") {
    sane = at_most("synthetic_classes", c.synthetic_classes, 1000) && sane;
    sane = at_most("synthetic_size", c.synthetic_size, 256) && sane;
  }
  if (!sane) throw std::invalid_argument("invalid configuration:\n" + err.str());

  if (c.methods.empty()) bad("--method: expected at least one of " + enum_choices<Method>());
  if (c.dataset != "fashion-mnist" && c.dataset != "cifar10" && c.dataset != "cifar100" &&
      c.dataset != "synthetic" && !c.image_data()) {
    bad("--dataset: expected fashion-mnist, cifar10, cifar100, list, folder or inaturalist, got '" + c.dataset + "'");
  }
  if (c.image_data()) {
#ifndef DROLT_HAS_IMAGES
    bad("--dataset " + c.dataset +
        ": this drolt_train was built without drolt::images (needs TurboJPEG, libpng, nlohmann_json)");
#endif
    const char* what = c.dataset == "folder" ? "a class-folder tree" : c.dataset == "list" ? "a list file" : "a JSON file";
    if (c.train_set.empty()) bad("--dataset " + c.dataset + ": expected --train-set (" + what + "), got none");
    if (c.test_set.empty()) bad("--dataset " + c.dataset + ": expected --test-set (" + what + "), got none");
    if (c.loader != "auto" && c.loader != "memory" && c.loader != "stream") {
      bad("--loader: expected auto, memory or stream, got '" + c.loader + "'");
    }
    if (c.image_size < 8 || c.image_size > 1024) {
      bad("--image-size: expected a side in [8, 1024] pixels, got " + std::to_string(c.image_size));
    }
    if (c.resize != 0 && (c.resize < c.image_size || c.resize > 4096)) {
      bad("--resize: expected 0 (image size * 8 / 7) or a side in [--image-size, 4096], got " +
          std::to_string(c.resize));
    }
    if (c.workers < 1 || c.workers > 256) bad("--workers: expected 1 to 256 threads, got " + std::to_string(c.workers));
  } else {
    if (!c.train_set.empty() || !c.val_set.empty() || !c.test_set.empty()) {
      bad("--train-set / --val-set / --test-set: expected --dataset list, folder or inaturalist, got --dataset " +
          c.dataset + " (its files come from --data)");
    }
    if (c.loader != "auto") bad("--loader " + c.loader + ": expected --dataset list, folder or inaturalist, got " + c.dataset);
    if (c.make_longtail) {
      bad("--make-longtail: the built-in sets always get a long-tailed subset; expected --dataset list, folder or "
          "inaturalist, got " + c.dataset);
    }
  }
  if (c.imagenet_depth != 0 && c.imagenet_depth != 10 && c.imagenet_depth != 18 && c.imagenet_depth != 34 &&
      c.imagenet_depth != 50) {
    bad("--arch: expected resnet10, resnet18, resnet34, resnet50 or a CIFAR resnet(6n+2), got resnet" +
        std::to_string(c.imagenet_depth));
  }
  if (c.imagenet_depth != 0 && c.dro_layers != std::vector<int64_t>{3}) {
    bad("--dro-layers: the ImageNet ResNets (--arch resnet" + std::to_string(c.imagenet_depth) +
        ") support DRO-LT at layer 3 (the penultimate features) only");
  }
  if (c.balanced_subset && c.image_data()) {
    bad("--balanced-subset: expected a built-in data set (fashion-mnist, cifar10, cifar100), got --dataset " +
        c.dataset);
  }
  if (c.imagenet_depth != 0 && c.layer_analysis) {
    bad("--layer-analysis: expected a CIFAR ResNet (--depth); the ImageNet ResNets (--arch resnet" +
        std::to_string(c.imagenet_depth) + ") expose the penultimate features only");
  }
  if (c.amp && c.device != "cuda") {
    bad("--amp: expected --device cuda (bf16 autocast on the GPU), got --device " + c.device);
  }
  if (c.channels_last && c.device != "cuda") {
    bad("--channels-last: expected --device cuda (it only speeds up cuDNN convolutions), got --device " + c.device);
  }
  if (c.profile != "exp" && c.profile != "step") bad("--profile: expected exp or step, got '" + c.profile + "'");
  if (!(c.rho >= 1.0) || !std::isfinite(c.rho)) bad("--rho: expected an imbalance ratio >= 1, got " + num(c.rho));
  if (c.n_max < 1) bad("--n-max: expected >= 1, got " + std::to_string(c.n_max));
  if (c.val_per_class < 0) bad("--val-per-class: expected >= 0, got " + std::to_string(c.val_per_class));
  if (c.test_limit < 0) bad("--test-limit: expected >= 0, got " + std::to_string(c.test_limit));
  if (c.few_below > c.many_above + 1) {
    bad("--few-below: expected at most --many-above + 1, got " + std::to_string(c.few_below));
  }
  if (c.depth < 8 || (c.depth - 2) % 6 != 0) {
    bad("--depth: expected a ResNet depth 6n + 2 (8, 20, 32, 44, 56, 110), got " + std::to_string(c.depth));
  }
  if (c.epochs < 1) bad("--epochs: expected >= 1, got " + std::to_string(c.epochs));
  if (c.batch_size < 1) bad("--batch-size: expected >= 1, got " + std::to_string(c.batch_size));
  if (!float_rate(c.lr, false)) bad("--lr: expected a positive learning rate" + kFloatRange + ", got " + num(c.lr));
  if (!(c.momentum >= 0 && c.momentum < 1)) bad("--momentum: expected a value in [0, 1), got " + num(c.momentum));
  if (!float_rate(c.weight_decay, true)) bad("--wd: expected >= 0" + kFloatRange + ", got " + num(c.weight_decay));
  if (c.warmup_epochs < 0) bad("--warmup: expected >= 0, got " + std::to_string(c.warmup_epochs));
  for (double m : c.milestones) {
    if (!(m > 0 && m <= 1)) bad("--milestones: expected fractions of the epochs in (0, 1], got " + num(m));
  }
  if (!(c.gamma > 0 && c.gamma <= 1)) bad("--gamma: expected a value in (0, 1], got " + num(c.gamma));
  if (!(c.cb_beta >= 0 && c.cb_beta < 1)) bad("--cb-beta: expected a value in [0, 1), got " + num(c.cb_beta));
  if (!(c.focal_gamma >= 0) || !std::isfinite(c.focal_gamma)) {
    bad("--focal-gamma: expected >= 0, got " + num(c.focal_gamma));
  }
  if (!(c.ldam_margin > 0) || !std::isfinite(c.ldam_margin)) {
    bad("--ldam-margin: expected > 0, got " + num(c.ldam_margin));
  }
  if (!(c.ldam_scale > 0) || !std::isfinite(c.ldam_scale)) bad("--ldam-scale: expected > 0, got " + num(c.ldam_scale));
  if (c.class_aware_k < 1) bad("--class-aware-k: expected >= 1, got " + std::to_string(c.class_aware_k));
  if (!(c.lambda >= 0 && c.lambda <= 1)) bad("--lambda: expected a value in [0, 1], got " + num(c.lambda));
  if (!(c.temperature > 0) || !std::isfinite(c.temperature)) {
    bad("--temperature: expected a positive temperature, got " + num(c.temperature));
  }
  // Epoch flags whose one negative value, -1, is a documented sentinel.
  for (const auto& f : {std::make_pair("--dro-start", c.dro_start), std::make_pair("--drw-start", c.drw_start),
                        std::make_pair("--save-at", c.save_at), std::make_pair("--stop-after", c.stop_after)}) {
    if (f.second < -1) bad(std::string(f.first) + ": expected >= 0 (or -1, its default), got " + std::to_string(f.second));
  }
  if (c.dro_start > c.epochs) {
    bad("--dro-start: expected at most --epochs (" + std::to_string(c.epochs) + "), got " +
        std::to_string(c.dro_start));
  }
  if (!float_rate(c.dro_lr, true)) {
    bad("--dro-lr: expected >= 0 (0: the schedule)" + kFloatRange + ", got " + num(c.dro_lr));
  }
  if (c.dro_start == 0 && c.centroid_mode != CentroidMode::full) {
    bad("--dro-start 0 needs --centroids full (the other modes build centroids during a CE epoch)");
  }
  if (c.dro_layers.empty()) bad("--dro-layers: expected at least one of 0, 1, 2, 3");
  for (size_t i = 0; i < c.dro_layers.size(); ++i) {
    const int64_t l = c.dro_layers[i];
    if (l < 0 || l > 3) bad("--dro-layers: expected layers in 0..3 (0 the stem, 3 the penultimate), got " + std::to_string(l));
    for (size_t j = 0; j < i; ++j) {
      if (c.dro_layers[j] == l) bad("--dro-layers: expected distinct layers, got " + std::to_string(l) + " twice");
    }
  }
  if (!c.dro_layer_weights.empty()) {
    if (c.dro_layer_weights.size() != c.dro_layers.size()) {
      bad("--dro-layer-weights: expected one weight per --dro-layers entry (" + std::to_string(c.dro_layers.size()) +
          "), got " + std::to_string(c.dro_layer_weights.size()));
    }
    double total = 0;
    for (double w : c.dro_layer_weights) {
      if (!(w >= 0) || !std::isfinite(w)) bad("--dro-layer-weights: expected finite weights >= 0, got " + num(w));
      total += w;
    }
    if (!(total > 0)) bad("--dro-layer-weights: expected at least one weight > 0");
  }
  if (!(c.ema_momentum >= 0 && c.ema_momentum < 1)) {
    bad("--ema-momentum: expected a value in [0, 1), got " + num(c.ema_momentum));
  }
  if (!float_rate(c.radius_lr, true)) bad("--radius-lr: expected >= 0" + kFloatRange + ", got " + num(c.radius_lr));
  if (c.crt_epochs < 0) bad("--crt-epochs: expected >= 0, got " + std::to_string(c.crt_epochs));
  bool trained_stage = c.wants(Method::crt) || (c.wants(Method::drolt) && c.classifiers.empty());
  bool needs_val = false;
  for (auto k : c.classifiers) {
    trained_stage = trained_stage || k == ClassifierKind::crt || k == ClassifierKind::lws;
    needs_val = needs_val || (k == ClassifierKind::tau_norm && c.tau_norm_tau < 0) ||
                (k == ClassifierKind::logit_adjust && c.la_tau < 0);
  }
  if (trained_stage && c.crt_epochs == 0) {
    bad("--crt-epochs: crt, lws (and drolt's default protocol) train a classifier; expected at least 1 epoch, got 0");
  }
  if (needs_val && c.val_per_class == 0 && !(c.image_data() && !c.val_set.empty())) {
    bad("--classifier: tau-norm and la choose tau on the validation split; give --val-per-class > 0 or "
        "--tau-norm-tau / --la-tau");
  }
  if (needs_val && c.image_data() && c.val_set.empty() && !c.make_longtail) {
    bad("--classifier: tau-norm and la choose tau on the validation split; give --val-set (or --make-longtail "
        "with --val-per-class > 0) or --tau-norm-tau / --la-tau");
  }
  if (!float_rate(c.crt_lr, false)) {
    bad("--crt-lr: expected a positive learning rate" + kFloatRange + ", got " + num(c.crt_lr));
  }
  if (c.tau_norm_tau > 1 || !std::isfinite(c.tau_norm_tau) || (c.tau_norm_tau < 0 && c.tau_norm_tau != -1)) {
    bad("--tau-norm-tau: expected a value in [0, 1] (or -1: chosen on validation), got " + num(c.tau_norm_tau));
  }
  if (!std::isfinite(c.la_tau) || c.la_tau > 10 || (c.la_tau < 0 && c.la_tau != -1)) {
    bad("--la-tau: expected a value in [0, 10] (or -1: chosen on validation), got " + num(c.la_tau));
  }
  if (c.crop_pad < -1) bad("--crop-pad: expected >= 0, got " + std::to_string(c.crop_pad));
  if (c.threads < 0) bad("--threads: expected >= 0 (0 = all cores), got " + std::to_string(c.threads));
  if (c.device != "cpu" && c.device != "cuda") bad("--device: expected cpu or cuda, got '" + c.device + "'");
  if (c.dist_backend != "auto" && c.dist_backend != "gloo" && c.dist_backend != "nccl") {
    bad("--dist-backend: expected auto, gloo or nccl, got '" + c.dist_backend + "'");
  }
  if (!(c.dist_bucket_mb >= 0 && c.dist_bucket_mb <= 1e6)) {
    bad("--dist-bucket-mb: expected a size in [0, 1000000] MB (0: all-reduce after backward), got " +
        num(c.dist_bucket_mb));
  }
  if (c.checkpoint_every < 0) bad("--checkpoint-every: expected >= 0, got " + std::to_string(c.checkpoint_every));
  if (!c.warm_start.empty() && c.centroid_mode != CentroidMode::full) bad("--warm-start needs --centroids full");
  if (c.val_every < 1) bad("--val-every: expected >= 1, got " + std::to_string(c.val_every));
  if (c.out_dir.empty()) bad("--out: expected a directory, got an empty string");
  const std::string e = err.str();
  if (!e.empty()) throw std::invalid_argument("invalid configuration:\n" + e);
}

/// Presets: settings chosen on the validation split (docs/results.md) or read
/// from the authors' code (official); options given on the command line
/// override them. Throws std::invalid_argument for an unknown name.
inline void apply_preset(const std::string& name, TrainConfig& c) {
  if (name.empty()) return;
  if (name == "demo") {
    // ce, crt and drolt(learned) on Fashion-MNIST-LT, ResNet-20, in < 10 min on 2 cores.
    // DRO-LT takes its 15-epoch CE warm-up from the CE run (shared, bit-identical).
    c.methods = {Method::ce, Method::crt, Method::drolt};
    c.radius = drolt::RadiusPolicy::learned(c.radius.eps0());
    c.lambda = 0.3;  // chosen on the validation split for docs/results.md (ResNet-32)
    c.depth = 20;
    c.epochs = 30;
    c.dro_start = 15;
    c.crt_epochs = 10;
    c.val_every = 5;
    c.out_dir = "out/demo";
    return;
  }
  if (name == "paper") {
    // The first reproduction's setting (lr 0.1, lambda 0.3 chosen on its validation split; its page:
    // `git show 6baa0c2:docs/results.md`). scripts/reproduce.sh passes its own, validation-chosen arguments.
    c.methods = {Method::ce, Method::crt, Method::drolt};
    c.lambda = 0.3;
    c.depth = 32;
    c.epochs = 40;
    c.dro_start = 20;
    c.crt_epochs = 10;
    c.val_every = 5;
    c.out_dir = "out/paper";
    return;
  }
  if (name == "official") {
    // The authors' released recipe (their README step 2; docs/math.md, "The authors' published recipe"), after
    // a CE model (their step 1: 200 epochs, lr 0.1 decayed 100x at 160 and 180):
    // 80 DRO-LT epochs of CE(n_c / n_max) + DRO-LT on a class-aware loader
    // (4 images per class in turn), learned radii from eps0 0.5, temperature 1,
    // constant lr 0.005, full centroid refresh; then 20 epochs of classifier
    // training (not re-initialised) at lr 0.01 on the class-aware loader.
    c.methods = {Method::drolt};
    c.depth = 32;
    c.batch_size = 128;
    c.epochs = 280;
    c.dro_start = 200;
    c.lr = 0.1;
    c.weight_decay = 2e-4;
    c.warmup_epochs = 5;
    c.schedule = Schedule::multistep;
    c.milestones = {160.0 / 280.0, 180.0 / 280.0};
    c.gamma = 0.01;
    c.loss = BaseLoss::ce;
    c.weighting = Weighting::max_ratio;
    c.sampler = SamplerKind::class_aware;
    c.class_aware_k = 4;
    c.dro_sum = true;
    c.temperature = 1.0;
    c.radius = drolt::RadiusPolicy::learned(0.5);
    c.dro_lr = 0.005;
    c.radius_lr = 0.005;
    c.radius_weight_decay = 1e-4;
    c.centroid_mode = CentroidMode::full;
    c.crt_epochs = 20;
    c.crt_lr = 0.01;
    c.crt_schedule = Schedule::constant;
    c.crt_sampler = SamplerKind::class_aware;
    c.crt_reinit = false;
    c.val_every = 5;
    c.out_dir = "out/official";
    return;
  }
  if (name == "smoke") {
    c.methods = {Method::ce, Method::crt, Method::drolt};
    c.depth = 8;
    c.epochs = 3;
    c.crt_epochs = 1;
    c.warmup_epochs = 1;
    c.test_limit = 1000;
    return;
  }
  throw std::invalid_argument("--preset: expected demo, paper, official or smoke, got '" + name + "'");
}

}  // namespace drolt_examples
