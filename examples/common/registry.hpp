// The registry: the command-line names of the representation methods
// (--method) and of the classifier stages (--classifier), each mapped to its
// type (methods/*.hpp, stages/*.hpp). Adding one is one new file and one line
// here (examples/README.md, "Adding a method or a classifier stage").
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "methods/ce.hpp"
#include "methods/drolt.hpp"
#include "methods/focal.hpp"
#include "methods/la_loss.hpp"
#include "methods/ldam_drw.hpp"
#include "methods/resample.hpp"
#include "methods/reweight.hpp"
#include "methods/weight_balancing.hpp"
#include "stages/crt.hpp"
#include "stages/joint.hpp"
#include "stages/logit_adjust.hpp"
#include "stages/lws.hpp"
#include "stages/ncm.hpp"
#include "stages/tau_norm.hpp"
#include "stages/weight_balancing.hpp"

namespace drolt_examples {

struct MethodEntry {
  std::string name;  // --method
  std::function<std::unique_ptr<RepresentationMethod>(const TrainConfig&, std::vector<int64_t>)> make;
  /// The classifier stages this name asks for when --classifier is not given;
  /// empty: the method's own default_stages(). (crt: the CE representation
  /// evaluated with the cRT stage, the paper's name for that pair.)
  std::vector<std::string> stages;
};

struct StageEntry {
  std::string name;  // --classifier
  std::function<std::unique_ptr<ClassifierStage>(const TrainConfig&)> make;
};

template <typename M>
MethodEntry method(const std::string& name, std::vector<std::string> stages = {}) {
  return {name,
          [](const TrainConfig& c, std::vector<int64_t> counts) { return std::make_unique<M>(c, std::move(counts)); },
          std::move(stages)};
}

template <typename S>
StageEntry stage(const std::string& name) {
  return {name, [](const TrainConfig& c) { return std::make_unique<S>(c); }};
}

/// Every --method, in the order the runs are made (and tables list them).
inline const std::vector<MethodEntry>& method_registry() {
  static const std::vector<MethodEntry> r = {
      method<CeMethod>("ce"),
      method<CeMethod>("crt", {"crt"}),
      method<ResampleMethod>("resample"),
      method<ReweightMethod>("reweight"),
      method<FocalMethod>("focal"),
      method<LdamDrwMethod>("ldam-drw"),
      method<DroltMethod>("drolt"),
      method<LogitAdjustedLossMethod>("la-loss"),
      method<WeightBalancingMethod>("weight-balancing"),
  };
  return r;
}

/// Every --classifier.
inline const std::vector<StageEntry>& stage_registry() {
  static const std::vector<StageEntry> r = {
      stage<JointStage>("joint"),   stage<CrtStage>("crt"), stage<LwsStage>("lws"),
      stage<TauNormStage>("tau-norm"), stage<NcmStage>("ncm"), stage<LogitAdjustStage>("la"),
      stage<WeightBalancingStage>("wb"),
  };
  return r;
}

/// "a, b or c": the names of a registry, for messages and --help.
template <typename Entry>
std::string registry_choices(const std::vector<Entry>& r) {
  std::string s;
  for (size_t i = 0; i < r.size(); ++i) s += (i == 0 ? "" : i + 1 == r.size() ? " or " : ", ") + r[i].name;
  return s;
}

template <typename Entry>
const Entry* find_entry(const std::vector<Entry>& r, const std::string& name) {
  for (const auto& e : r) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

inline const MethodEntry& method_entry(const std::string& name) {
  const auto* e = find_entry(method_registry(), name);
  if (!e) throw std::invalid_argument("--method: expected " + registry_choices(method_registry()) + ", got '" + name + "'");
  return *e;
}

inline std::unique_ptr<ClassifierStage> make_stage(const std::string& name, const TrainConfig& cfg) {
  const auto* e = find_entry(stage_registry(), name);
  if (!e) {
    throw std::invalid_argument("--classifier: expected " + registry_choices(stage_registry()) + ", got '" + name + "'");
  }
  return e->make(cfg);
}

/// Whether stage `name` trains: the stage's own answer (stage.hpp).
inline bool stage_trains(const std::string& name, const TrainConfig& cfg) {
  const auto* e = find_entry(stage_registry(), name);
  return e != nullptr && e->make(cfg)->trains();
}

/// The names in comma-separated lists ("ce,crt" or several occurrences of the
/// flag), each checked against `registry`; `flag` names the option in the
/// message of a bad one.
template <typename Entry>
std::vector<std::string> parse_names(const std::string& flag, const std::vector<Entry>& registry,
                                     const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& word : list_words(items)) {
    if (!find_entry(registry, word)) {
      throw std::invalid_argument(flag + ": expected " + registry_choices(registry) + ", got '" + word + "'");
    }
    out.push_back(word);
  }
  return out;
}

}  // namespace drolt_examples
