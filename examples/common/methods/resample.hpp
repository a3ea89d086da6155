// --method resample: cross-entropy on a re-balancing sampler (--resample-sampler,
// class-balanced by default).
#pragma once

#include "method.hpp"

namespace drolt_examples {

class ResampleMethod : public RepresentationMethod {
 public:
  using RepresentationMethod::RepresentationMethod;
  std::string name() const override { return "resample"; }
  SamplerKind sampler() const override { return config().resample_sampler; }
  void describe(nlohmann::json& j) const override {
    describe_loss(j, BaseLoss::ce, drolt::ClassWeighting::none, sampler(), false);
  }
  LossSpec loss_at(int64_t e) const override {
    return standard_loss(BaseLoss::ce, drolt::ClassWeighting::none, false, e);
  }
};

}  // namespace drolt_examples
