// The interface of a representation method (how the feature extractor is
// trained): its loss, its sampler, its per-epoch and per-step hooks and its
// checkpoint state. One method is one type in one file of this folder, and one
// line of registry.hpp gives it its --method name (examples/README.md,
// "Adding a method or a classifier stage").
//
// The trainer (trainer.hpp) owns the network, the optimizer and, for methods
// with dro(), the DRO-LT module and its banks; a method decides what is
// minimised and how the images are drawn.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../losses.hpp"

namespace drolt_examples {

class RepresentationMethod {
 public:
  RepresentationMethod(const TrainConfig& cfg, std::vector<int64_t> counts) : cfg_(cfg), counts_(std::move(counts)) {}
  virtual ~RepresentationMethod() = default;
  RepresentationMethod(const RepresentationMethod&) = delete;
  RepresentationMethod& operator=(const RepresentationMethod&) = delete;

  /// Its run's name, the first part of its table rows: "ce", "focal", "drolt-learned".
  virtual std::string name() const = 0;
  /// The classifier loss it builds on: the phase of its epochs and, for LDAM,
  /// a cosine classifier.
  virtual BaseLoss base_loss() const { return BaseLoss::ce; }
  /// Whether DRO-LT is added from --dro-start on (plain CE with instance sampling before).
  virtual bool dro() const { return false; }
  /// Its sampler (after DRO-LT's warm-up); instance = a permutation per epoch.
  virtual SamplerKind sampler() const { return SamplerKind::instance; }
  /// The classifier stages evaluated on it when --classifier is not given.
  virtual std::vector<std::string> default_stages() const { return {"joint"}; }
  /// The weight decay of the representation's optimizer.
  virtual double weight_decay() const { return cfg_.weight_decay; }
  /// The table row of classifier stage `stage` on it: <name>/<stage>, its
  /// joint classifier plain <name>.
  virtual std::string row_name(const std::string& stage) const {
    return stage == "joint" ? name() : name() + "/" + stage;
  }
  /// Entries of the checkpoint fingerprint that a resumed run must share.
  virtual void describe(nlohmann::json& fingerprint) const {
    (void)fingerprint;
  }

  /// Per-epoch hook: what representation epoch `e` minimises (the classifier
  /// term; DRO-LT's term is the trainer's). Called before the epoch's first step.
  virtual LossSpec loss_at(int64_t e) const = 0;
  /// Per-step hook: after every optimizer step of the representation.
  virtual void after_step(torch::nn::Linear& classifier) { (void)classifier; }

  /// Checkpoint state beyond the network and the optimizer (none for most).
  virtual void save(torch::serialize::OutputArchive& archive) const { (void)archive; }
  virtual void load(torch::serialize::InputArchive& archive) { (void)archive; }

  /// The warm-up of a DRO-LT method (plain CE, instance sampling) before --dro-start.
  bool warm_up_at(int64_t e) const { return dro() && e < cfg_.dro_start_epoch(); }
  /// Whether DRO-LT is on in representation epoch e.
  bool dro_at(int64_t e) const { return dro() && e >= cfg_.dro_start_epoch(); }
  /// The sampler of representation epoch e, and the epoch its own one starts.
  SamplerKind sampler_at(int64_t e) const { return warm_up_at(e) ? SamplerKind::instance : sampler(); }
  int64_t first_sampler_epoch() const { return dro() ? cfg_.dro_start_epoch() : 0; }
  /// "ce", "dro", or the base loss's name ("focal", "ldam").
  std::string phase(int64_t e) const {
    if (dro_at(e)) return "dro";
    if (warm_up_at(e)) return "ce";
    return name_of(base_loss());
  }
  /// The loss of representation epoch e: plain CE during a warm-up, else
  /// loss_at(e) with DRO-LT's mixing when dro_at(e).
  LossSpec spec_at(int64_t e) const {
    if (warm_up_at(e)) return LossSpec{};
    LossSpec s = loss_at(e);
    s.dro = dro_at(e);
    s.lambda = cfg_.lambda;
    s.sum = cfg_.dro_sum;
    return s;
  }

 protected:
  const TrainConfig& config() const { return cfg_; }
  const std::vector<int64_t>& counts() const { return counts_; }

  /// The loss `base` with class weights `w` (effective-number weights from
  /// --drw-start on when `drw`), configured as the flags say.
  LossSpec standard_loss(BaseLoss base, drolt::ClassWeighting w, bool drw, int64_t e) const {
    LossSpec s;
    s.base = base;
    if (drw && e >= cfg_.drw_start_epoch()) w = drolt::ClassWeighting::effective_number;
    s.class_weights = weights_of(w, counts_, cfg_.cb_beta);
    s.focal_gamma = cfg_.focal_gamma;
    if (base == BaseLoss::ldam) {
      s.ldam_margins = drolt::ldam_margins(counts_, cfg_.ldam_margin);
      s.ldam_scale = cfg_.ldam_scale;
    }
    return s;
  }
  /// The fingerprint entries of such a loss and its sampler.
  static void describe_loss(nlohmann::json& j, BaseLoss base, drolt::ClassWeighting w, SamplerKind sampler,
                            bool drw) {
    j["loss"] = name_of(base);
    j["weighting"] = name_of(w);
    j["sampler"] = name_of(sampler);
    j["drw"] = drw;
  }

 private:
  TrainConfig cfg_;
  std::vector<int64_t> counts_;
};

}  // namespace drolt_examples
