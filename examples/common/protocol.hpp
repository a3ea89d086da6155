// The protocol of a run, in one place.
//
// A run trains one representation (a method of the registry, registry.hpp),
// then evaluates classifier stages on it, frozen:
//
//   epochs [0, E)                 representation (E = --epochs). Its phase per
//                                 epoch: "ce" (plain CE, also DRO-LT's warm-up
//                                 before --dro-start), "dro" (base loss +
//                                 DRO-LT), or the base loss ("focal", "ldam").
//   after epoch E                 the stages that do not train are evaluated
//                                 (joint, tau-norm, ncm, la).
//   [E + k T, E + (k + 1) T)      the k-th trained stage (crt, lws, wb),
//                                 T = --stage-epochs, each from the joint
//                                 classifier; evaluated at its end.
//
// Each evaluation is one table row, named by row_name(): the paper's protocol
// keeps its historical names (ce, crt, drolt-<policy> = DRO-LT + cRT,
// drolt-<policy>/nocrt = DRO-LT's joint classifier), every other pair is
// <representation>/<classifier>.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "losses.hpp"
#include "registry.hpp"

namespace drolt_examples {

/// One representation and the classifier stages evaluated on it, in table order.
struct RunSpec {
  std::string method;  // its --method name (the first of the names that asked for it)
  std::vector<std::string> classifiers;
};

/// The runs of an invocation: one per distinct representation, in registry
/// order. Without --classifier each gets the stages its --method names ask for
/// (ce: joint, crt: cRT on the same CE representation, drolt: cRT then joint,
/// the others: joint); with it, every one gets the list.
inline std::vector<RunSpec> runs_of(const TrainConfig& c) {
  std::vector<RunSpec> out;
  std::vector<std::string> run_names;
  for (const auto& entry : method_registry()) {
    if (!c.wants(entry.name)) continue;
    const auto method = entry.make(c, {});
    auto stages = entry.stages.empty() ? method->default_stages() : entry.stages;
    size_t i = 0;
    while (i < run_names.size() && run_names[i] != method->name()) ++i;
    if (i == run_names.size()) {
      run_names.push_back(method->name());
      out.push_back(RunSpec{entry.name, {}});
    }
    if (c.classifiers.empty()) {
      out[i].classifiers.insert(out[i].classifiers.end(), stages.begin(), stages.end());
    } else {
      out[i].classifiers = c.classifiers;
    }
  }
  return out;
}

class Protocol {
 public:
  Protocol(const TrainConfig& cfg, const RunSpec& spec, const std::vector<int64_t>& counts)
      : cfg_(cfg), method_(method_entry(spec.method).make(cfg, counts)), names_(spec.classifiers) {
    for (const auto& n : names_) {
      stages_.push_back(make_stage(n, cfg));
      if (stages_.back()->trains()) trained_.push_back(stages_.size() - 1);
    }
  }

  RepresentationMethod& method() const { return *method_; }
  /// The classifier stages' names, in table order.
  const std::vector<std::string>& classifiers() const { return names_; }
  ClassifierStage& stage(size_t i) const { return *stages_.at(i); }
  size_t stage_count() const { return stages_.size(); }
  /// The number of stages that train.
  size_t trained_count() const { return trained_.size(); }

  int64_t representation_epochs() const { return cfg_.epochs; }
  int64_t total_epochs() const {
    return cfg_.epochs + static_cast<int64_t>(trained_.size()) * cfg_.stage_epochs;
  }
  bool in_representation(int64_t e) const { return e < cfg_.epochs; }
  int64_t epoch_in_stage(int64_t e) const { return (e - cfg_.epochs) % cfg_.stage_epochs; }
  /// The index (into classifiers()) of the trained stage of classifier epoch e.
  size_t stage_index_at(int64_t e) const {
    return trained_.at(static_cast<size_t>((e - cfg_.epochs) / cfg_.stage_epochs));
  }
  ClassifierStage& stage_at(int64_t e) const { return stage(stage_index_at(e)); }
  /// Whether epoch e is the last of a trained classifier stage.
  bool ends_stage(int64_t e) const { return !in_representation(e) && epoch_in_stage(e) + 1 == cfg_.stage_epochs; }

  /// Whether DRO-LT is on in representation epoch e.
  bool dro_at(int64_t e) const { return method_->dro_at(e); }
  std::string phase(int64_t e) const { return in_representation(e) ? method_->phase(e) : stage_at(e).name(); }
  /// Whether an epoch of `phase` trained a classifier stage (not the representation).
  static bool is_classifier_phase(const std::string& phase, const TrainConfig& cfg) {
    return stage_trains(phase, cfg);
  }
  bool is_classifier_phase(const std::string& phase) const { return is_classifier_phase(phase, cfg_); }
  SamplerKind sampler_at(int64_t e) const { return method_->sampler_at(e); }
  /// What representation epoch e minimises.
  LossSpec loss_at(int64_t e) const { return method_->spec_at(e); }

  /// The table row of stage `stage` on this representation.
  std::string row_name(const std::string& stage) const { return method_->row_name(stage); }

 private:
  TrainConfig cfg_;
  std::shared_ptr<RepresentationMethod> method_;
  std::vector<std::string> names_;
  std::vector<std::shared_ptr<ClassifierStage>> stages_;
  std::vector<size_t> trained_;
};

}  // namespace drolt_examples
