// --classifier crt: classifier re-training (Kang et al. 2020): the linear
// classifier re-initialised (unless --no-crt-reinit: the authors' code goes on
// training the joint one) and trained on the frozen features with the stage
// sampler (class-balanced by default) and the representation's weight decay.
#pragma once

#include "stage.hpp"

namespace drolt_examples {

class CrtStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "crt"; }
  bool trains() const override { return true; }
  void start(StageContext& ctx) override {
    if (!config().crt_reinit) return;
    torch::NoGradGuard g;
    auto& fc = ctx.model->classifier();
    torch::nn::init::kaiming_normal_(fc->weight);
    torch::nn::init::zeros_(fc->bias);
  }
  double weight_decay() const override { return config().weight_decay; }
};

}  // namespace drolt_examples
