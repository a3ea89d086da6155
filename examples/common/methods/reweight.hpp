// --method reweight: class-weighted cross-entropy (--reweight: inverse
// frequency by default, or effective-number / n_c / n_max weights).
#pragma once

#include "method.hpp"

namespace drolt_examples {

class ReweightMethod : public RepresentationMethod {
 public:
  using RepresentationMethod::RepresentationMethod;
  std::string name() const override { return "reweight"; }
  void describe(nlohmann::json& j) const override {
    describe_loss(j, BaseLoss::ce, config().reweight, SamplerKind::instance, false);
  }
  LossSpec loss_at(int64_t e) const override { return standard_loss(BaseLoss::ce, config().reweight, false, e); }
};

}  // namespace drolt_examples
