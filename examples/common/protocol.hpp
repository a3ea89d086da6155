// The protocol of a run, in one place.
//
// A run trains one representation, then evaluates classifier stages on it,
// frozen:
//
//   epochs [0, E)                 representation (E = --epochs). Its phase per
//                                 epoch: "ce" (plain CE, also DRO-LT's warm-up
//                                 before --dro-start), "dro" (base loss +
//                                 DRO-LT), or the base loss ("focal", "ldam").
//   after epoch E                 the read-off classifiers are evaluated: joint,
//                                 tau-norm, ncm, la.
//   [E + k T, E + (k + 1) T)      the k-th trained classifier stage (crt, lws),
//                                 T = --crt-epochs, each from the joint
//                                 classifier; evaluated at its end.
//
// Each evaluation is one table row, named by row_name(): the paper's protocol
// keeps its historical names (ce, crt, drolt-<policy> = DRO-LT + cRT,
// drolt-<policy>/nocrt = DRO-LT's joint classifier), every other pair is
// <representation>/<classifier>.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "classifiers.hpp"
#include "config.hpp"
#include "losses.hpp"

namespace drolt_examples {

/// How one representation is trained.
struct Representation {
  Method method = Method::ce;
  std::string name;  // "ce", "resample", "reweight", "focal", "ldam-drw", "drolt-<policy>"
  BaseLoss loss = BaseLoss::ce;
  Weighting weighting = Weighting::none;
  SamplerKind sampler = SamplerKind::instance;
  bool drw = false;  // effective-number weights from --drw-start on
  bool dro = false;  // + DRO-LT from --dro-start on (plain CE before)
};

/// The representation each --method stands for (docs/math.md, "Methods compared").
inline Representation representation_of(Method m, const TrainConfig& c) {
  Representation r;
  r.method = m;
  switch (m) {
    case Method::ce:
    case Method::crt:
      r.name = "ce";
      break;
    case Method::resample:
      r.name = "resample";
      r.sampler = c.resample_sampler;
      break;
    case Method::reweight:
      r.name = "reweight";
      r.weighting = c.reweight;
      break;
    case Method::focal:
      r.name = "focal";
      r.loss = BaseLoss::focal;
      break;
    case Method::ldam_drw:
      r.name = "ldam-drw";
      r.loss = BaseLoss::ldam;
      r.drw = true;
      break;
    case Method::drolt:
      r.name = "drolt-" + c.radius.name();
      r.loss = c.loss;
      r.weighting = c.weighting;
      r.sampler = c.sampler;
      r.drw = c.loss == BaseLoss::ldam && c.drw;
      r.dro = true;
      break;
  }
  return r;
}

/// One representation and the classifiers evaluated on it, in table order.
struct RunSpec {
  Representation representation;
  std::vector<ClassifierKind> classifiers;
};

/// The runs of an invocation: one per distinct representation, in the order
/// ce, resample, reweight, focal, ldam-drw, drolt. Without --classifier each
/// gets the paper's protocol (ce: joint if asked for, cRT if crt is; drolt: cRT
/// then joint; the baselines: joint); with it, every one gets the list.
inline std::vector<RunSpec> runs_of(const TrainConfig& c) {
  std::vector<RunSpec> out;
  const bool ce_rep = c.wants(Method::ce) || c.wants(Method::crt);
  for (Method m : {Method::ce, Method::resample, Method::reweight, Method::focal, Method::ldam_drw, Method::drolt}) {
    if (m == Method::ce ? !ce_rep : !c.wants(m)) continue;
    RunSpec s{representation_of(m, c), c.classifiers};
    if (s.classifiers.empty()) {
      if (m == Method::ce) {
        if (c.wants(Method::ce)) s.classifiers.push_back(ClassifierKind::joint);
        if (c.wants(Method::crt)) s.classifiers.push_back(ClassifierKind::crt);
      } else if (m == Method::drolt) {
        s.classifiers = {ClassifierKind::crt, ClassifierKind::joint};
      } else {
        s.classifiers = {ClassifierKind::joint};
      }
    }
    out.push_back(s);
  }
  return out;
}

class Protocol {
 public:
  Protocol(const TrainConfig& cfg, RunSpec spec) : cfg_(cfg), spec_(std::move(spec)) {
    for (auto k : spec_.classifiers) {
      if (is_trained(k)) trained_.push_back(k);
    }
  }

  const Representation& representation() const { return spec_.representation; }
  const std::vector<ClassifierKind>& classifiers() const { return spec_.classifiers; }
  /// The trained classifier stages, in order.
  const std::vector<ClassifierKind>& trained_stages() const { return trained_; }

  int64_t representation_epochs() const { return cfg_.epochs; }
  int64_t total_epochs() const {
    return cfg_.epochs + static_cast<int64_t>(trained_.size()) * cfg_.crt_epochs;
  }
  bool in_representation(int64_t e) const { return e < cfg_.epochs; }
  /// Index into trained_stages() of classifier epoch e, and e's epoch within it.
  size_t stage_of(int64_t e) const { return static_cast<size_t>((e - cfg_.epochs) / cfg_.crt_epochs); }
  int64_t epoch_in_stage(int64_t e) const { return (e - cfg_.epochs) % cfg_.crt_epochs; }
  ClassifierKind classifier_at(int64_t e) const { return trained_.at(stage_of(e)); }
  /// Whether epoch e is the last of a trained classifier stage.
  bool ends_stage(int64_t e) const { return !in_representation(e) && epoch_in_stage(e) + 1 == cfg_.crt_epochs; }

  /// Whether DRO-LT is on in representation epoch e.
  bool dro_at(int64_t e) const { return spec_.representation.dro && e >= cfg_.dro_start_epoch(); }
  /// The representation's warm-up (plain CE, instance sampling) before DRO-LT.
  bool warm_up_at(int64_t e) const { return spec_.representation.dro && e < cfg_.dro_start_epoch(); }

  std::string phase(int64_t e) const {
    if (!in_representation(e)) return name_of(classifier_at(e));
    if (dro_at(e)) return "dro";
    if (warm_up_at(e)) return "ce";
    return name_of(spec_.representation.loss);
  }
  static bool is_classifier_phase(const std::string& phase) { return phase == "crt" || phase == "lws"; }

  /// The sampler of representation epoch e.
  SamplerKind sampler_at(int64_t e) const {
    return warm_up_at(e) ? SamplerKind::instance : spec_.representation.sampler;
  }

  /// What representation epoch e minimises.
  LossSpec loss_at(int64_t e, const std::vector<int64_t>& counts) const {
    const auto& r = spec_.representation;
    LossSpec s;
    if (warm_up_at(e)) return s;  // plain CE on the model's logits
    s.base = r.loss;
    Weighting w = r.weighting;
    if (r.drw && e >= cfg_.drw_start_epoch()) w = Weighting::effective;
    s.class_weights = weights_of(w, counts, cfg_.cb_beta);
    s.focal_gamma = cfg_.focal_gamma;
    if (r.loss == BaseLoss::ldam) s.ldam_offsets = ldam_margins(counts, cfg_.ldam_margin) * cfg_.ldam_scale;
    s.dro = dro_at(e);
    s.lambda = cfg_.lambda;
    s.sum = cfg_.dro_sum;
    return s;
  }

  /// The table row of classifier k on this representation.
  std::string row_name(ClassifierKind k) const {
    const auto& r = spec_.representation;
    if (r.method == Method::ce || r.method == Method::crt) {
      if (k == ClassifierKind::joint) return "ce";
      if (k == ClassifierKind::crt) return "crt";
    } else if (r.dro) {
      if (k == ClassifierKind::crt) return r.name;
      if (k == ClassifierKind::joint) return r.name + "/nocrt";
    } else if (k == ClassifierKind::joint) {
      return r.name;
    }
    return r.name + "/" + name_of(k);
  }

 private:
  TrainConfig cfg_;
  RunSpec spec_;
  std::vector<ClassifierKind> trained_;
};

}  // namespace drolt_examples
