// --method drolt: DRO-LT (Samuel & Chechik 2021) on top of any base loss
// (--loss ce, focal or ldam, with --weighting class weights and --drw) from
// --dro-start on, on --sampler; plain CE with instance sampling before it. The
// DRO-LT module, its banks and their refresh are the trainer's (trainer.hpp);
// this type says what the classifier term is and when DRO-LT is on.
#pragma once

#include "method.hpp"

namespace drolt_examples {

class DroltMethod : public RepresentationMethod {
 public:
  using RepresentationMethod::RepresentationMethod;
  std::string name() const override { return "drolt-" + config().radius.name(); }
  BaseLoss base_loss() const override { return config().loss; }
  bool dro() const override { return true; }
  SamplerKind sampler() const override { return config().sampler; }
  /// The paper's protocol (cRT, with the joint classifier next to it); with LDAM
  /// (the default recipe) its own joint classifier, which validated higher.
  std::vector<std::string> default_stages() const override {
    if (config().loss == BaseLoss::ldam) return {"joint"};
    return {"crt", "joint"};
  }
  void describe(nlohmann::json& j) const override {
    describe_loss(j, config().loss, config().weighting, sampler(), drw());
  }
  /// The paper's names: drolt-<policy> is DRO-LT + cRT, drolt-<policy>/nocrt its joint classifier.
  std::string row_name(const std::string& stage) const override {
    if (stage == "crt") return name();
    if (stage == "joint") return name() + "/nocrt";
    return name() + "/" + stage;
  }
  LossSpec loss_at(int64_t e) const override { return standard_loss(config().loss, config().weighting, drw(), e); }

 private:
  bool drw() const { return config().loss == BaseLoss::ldam && config().drw; }
};

}  // namespace drolt_examples
