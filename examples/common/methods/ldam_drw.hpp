// --method ldam-drw: LDAM (Cao et al. 2019) on a cosine classifier, margins
// --ldam-margin / n_c^(1/4), scale --ldam-scale, with deferred re-weighting
// (effective-number weights, --cb-beta) from --drw-start on.
#pragma once

#include "method.hpp"

namespace drolt_examples {

class LdamDrwMethod : public RepresentationMethod {
 public:
  using RepresentationMethod::RepresentationMethod;
  std::string name() const override { return "ldam-drw"; }
  BaseLoss base_loss() const override { return BaseLoss::ldam; }
  void describe(nlohmann::json& j) const override {
    describe_loss(j, BaseLoss::ldam, drolt::ClassWeighting::none, SamplerKind::instance, true);
  }
  LossSpec loss_at(int64_t e) const override {
    return standard_loss(BaseLoss::ldam, drolt::ClassWeighting::none, true, e);
  }
};

}  // namespace drolt_examples
