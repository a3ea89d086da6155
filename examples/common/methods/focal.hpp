// --method focal: focal loss -(1 - p_y)^gamma log p_y (Lin et al. 2017), gamma = --focal-gamma.
#pragma once

#include "method.hpp"

namespace drolt_examples {

class FocalMethod : public RepresentationMethod {
 public:
  using RepresentationMethod::RepresentationMethod;
  std::string name() const override { return "focal"; }
  BaseLoss base_loss() const override { return BaseLoss::focal; }
  void describe(nlohmann::json& j) const override {
    describe_loss(j, BaseLoss::focal, drolt::ClassWeighting::none, SamplerKind::instance, false);
  }
  LossSpec loss_at(int64_t e) const override {
    return standard_loss(BaseLoss::focal, drolt::ClassWeighting::none, false, e);
  }
};

}  // namespace drolt_examples
