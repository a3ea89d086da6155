// --classifier la: post-hoc logit adjustment (Menon et al. 2021),
// logit_c - tau log pi_c, tau = --la-tau or chosen on the validation split.
#pragma once

#include <drolt/posthoc.hpp>
#include <torch/torch.h>

#include "stage.hpp"

namespace drolt_examples {

class LogitAdjustStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "la"; }
  bool has_tau() const override { return true; }
  double configured_tau() const override { return config().la_tau; }
  std::vector<double> tau_grid() const override { return drolt::logit_adjust_grid(); }

 protected:
  torch::Tensor batch_scores(StageContext& ctx, const torch::Tensor& features, double tau) override {
    return drolt::logit_adjust(ctx.model->classify(features), ctx.counts, tau);
  }
};

}  // namespace drolt_examples
