// --classifier tau-norm: tau-normalisation (Kang et al. 2020): w_c / ||w_c||^tau,
// bias dropped, tau = --tau-norm-tau or chosen on the validation split.
#pragma once

#include "../classifiers.hpp"
#include "stage.hpp"

namespace drolt_examples {

class TauNormStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "tau-norm"; }
  bool has_tau() const override { return true; }
  double configured_tau() const override { return config().tau_norm_tau; }
  std::vector<double> tau_grid() const override { return tau_norm_grid(); }

 protected:
  torch::Tensor batch_scores(StageContext& ctx, const torch::Tensor& features, double tau) override {
    return tau_norm_logits(ctx.model->classifier_input(features), ctx.model->classifier()->weight, tau);
  }
};

}  // namespace drolt_examples
