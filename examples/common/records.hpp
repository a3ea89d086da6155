// What the example trainer records: one evaluated (representation, classifier)
// pair (EvalResult) and one epoch (EpochRecord), with their JSON form through
// nlohmann's to_json / from_json (result-<name>.json, summary.json,
// metrics.jsonl, checkpoints).
#pragma once

#include <drolt/metrics.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace drolt_examples {

using json = nlohmann::json;

/// Accuracy of the class groups Many / Medium / Few and of All, in percent
/// (NaN for an empty group), the form drolt::metrics::SplitAccuracy takes in
/// tables and JSON. ("Split" in the trainer means a part of the data: the
/// training, validation or test split; Many / Medium / Few are class groups.)
struct GroupAccuracy {
  double many = std::nan(""), medium = std::nan(""), few = std::nan(""), all = std::nan("");
};

inline GroupAccuracy percent(const drolt::metrics::SplitAccuracy& s) {
  return GroupAccuracy{100.0 * s.many, 100.0 * s.medium, 100.0 * s.few, 100.0 * s.overall};
}

inline json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
inline double number_or_nan(const json& j) { return j.is_null() ? std::nan("") : j.get<double>(); }

/// One classifier evaluated on one representation.
struct EvalResult {
  std::string name;            // the table row: see Protocol::row_name
  std::string representation;  // e.g. "ce", "focal", "drolt-learned"
  std::string classifier;      // joint, crt, lws, tau-norm, ncm, la
  GroupAccuracy test;          // classifier: many / medium / few / all
  GroupAccuracy nc;            // nearest training centroid on the penultimate features
  GroupAccuracy val;           // classifier on the validation split (model selection)
  double ece = std::nan("");   // expected calibration error on the test set, % (NaN: no probabilities)
  double tau = std::nan("");   // tau chosen on the validation split (tau-norm, la), else NaN
  std::vector<double> per_class;  // test accuracy per class, %
  std::vector<double> radii;      // effective radii per class (DRO-LT runs), else empty
  double train_seconds = 0;       // wall time of the run up to this evaluation
  double mean_epoch_seconds = 0;  // mean wall time of a representation epoch
};

/// One line of the per-epoch log.
struct EpochRecord {
  std::string run, phase;
  int64_t epoch = 0;  // 0-based, global over the stages of a run
  /// The loss, its classifier term (cross-entropy, focal, LDAM, ... as the
  /// method says; the whole loss in classifier stages) and its DRO-LT term.
  double lr = 0, loss = 0, base_loss = 0, dro = 0, train_acc = 0, val_acc = -1;
  double seconds = 0, centroid_seconds = 0, images_per_s = 0;
  /// DRO-LT epochs: the bound's relative gap (upper - lower) / upper, mean over
  /// the epoch's steps, per DRO-LT layer (layer order of --dro-layers); else empty.
  std::vector<double> bound_gap;
};

inline void to_json(json& j, const GroupAccuracy& s) {
  j = json{{"many", number_or_null(s.many)},
           {"medium", number_or_null(s.medium)},
           {"few", number_or_null(s.few)},
           {"all", number_or_null(s.all)}};
}
inline void from_json(const json& j, GroupAccuracy& s) {
  s.many = number_or_nan(j.at("many"));
  s.medium = number_or_nan(j.at("medium"));
  s.few = number_or_nan(j.at("few"));
  s.all = number_or_nan(j.at("all"));
}

inline void to_json(json& j, const EvalResult& r) {
  json pc = json::array();
  for (double x : r.per_class) pc.push_back(number_or_null(x));
  j = json{{"name", r.name},
           {"representation", r.representation},
           {"classifier", r.classifier},
           {"test", r.test},
           {"nearest_centroid", r.nc},
           {"val", r.val},
           {"ece", number_or_null(r.ece)},
           {"tau", number_or_null(r.tau)},
           {"per_class", pc},
           {"radii", r.radii},
           {"train_seconds", r.train_seconds},
           {"mean_epoch_seconds", r.mean_epoch_seconds}};
}
inline void from_json(const json& j, EvalResult& r) {
  r.name = j.at("name").get<std::string>();
  r.representation = j.value("representation", std::string());
  r.classifier = j.value("classifier", std::string());
  r.test = j.at("test").get<GroupAccuracy>();
  r.nc = j.at("nearest_centroid").get<GroupAccuracy>();
  r.val = j.at("val").get<GroupAccuracy>();
  r.ece = j.contains("ece") ? number_or_nan(j.at("ece")) : std::nan("");
  r.tau = j.contains("tau") ? number_or_nan(j.at("tau")) : std::nan("");
  r.per_class.clear();
  for (const auto& v : j.at("per_class")) r.per_class.push_back(number_or_nan(v));
  r.radii = j.at("radii").get<std::vector<double>>();
  r.train_seconds = j.value("train_seconds", 0.0);
  r.mean_epoch_seconds = j.value("mean_epoch_seconds", 0.0);
}

inline void to_json(json& j, const EpochRecord& r) {
  j = json{{"run", r.run},
           {"phase", r.phase},
           {"epoch", r.epoch},
           {"lr", r.lr},
           {"loss", r.loss},
           {"base_loss", r.base_loss},
           {"dro", r.dro},
           {"train_acc", r.train_acc},
           {"seconds", r.seconds},
           {"centroid_seconds", r.centroid_seconds},
           {"images_per_s", r.images_per_s}};
  if (r.val_acc >= 0) j["val_acc"] = r.val_acc;
  if (!r.bound_gap.empty()) j["bound_gap"] = r.bound_gap;
}
inline void from_json(const json& j, EpochRecord& r) {
  r.run = j.at("run").get<std::string>();
  r.phase = j.at("phase").get<std::string>();
  r.epoch = j.at("epoch").get<int64_t>();
  r.lr = j.at("lr").get<double>();
  r.loss = j.at("loss").get<double>();
  // "ce": the key before it was named for what it holds (checkpoints and logs of older versions).
  r.base_loss = (j.contains("base_loss") ? j.at("base_loss") : j.at("ce")).get<double>();
  r.dro = j.at("dro").get<double>();
  r.train_acc = j.at("train_acc").get<double>();
  r.val_acc = j.value("val_acc", -1.0);
  r.seconds = j.at("seconds").get<double>();
  r.centroid_seconds = j.at("centroid_seconds").get<double>();
  r.images_per_s = j.at("images_per_s").get<double>();
  r.bound_gap = j.contains("bound_gap") ? j.at("bound_gap").get<std::vector<double>>() : std::vector<double>{};
}

}  // namespace drolt_examples
