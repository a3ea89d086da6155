// --classifier tau-norm: tau-normalisation (Kang et al. 2020): w_c / ||w_c||^tau,
// bias dropped, tau = --tau-norm-tau or chosen on the validation split.
#pragma once

#include <drolt/posthoc.hpp>
#include <torch/torch.h>

#include "stage.hpp"

namespace drolt_examples {

class TauNormStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "tau-norm"; }
  bool has_tau() const override { return true; }
  double configured_tau() const override { return config().tau_norm_tau; }
  std::vector<double> tau_grid() const override { return drolt::tau_normalize_grid(); }

 protected:
  torch::Tensor batch_scores(StageContext& ctx, const torch::Tensor& features, double tau) override {
    // w_c / ||w_c||^tau, bias dropped.
    return torch::matmul(ctx.model->classifier_input(features),
                         drolt::tau_normalize(ctx.model->classifier()->weight.detach(), tau).t());
  }
};

}  // namespace drolt_examples
