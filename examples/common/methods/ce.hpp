// --method ce: cross-entropy, instance sampling (the baseline every other
// method is compared with). --method crt is this representation evaluated with
// the cRT classifier stage (registry.hpp).
#pragma once

#include "method.hpp"

namespace drolt_examples {

class CeMethod : public RepresentationMethod {
 public:
  using RepresentationMethod::RepresentationMethod;
  std::string name() const override { return "ce"; }
  LossSpec loss_at(int64_t) const override { return LossSpec{}; }
  /// The paper's names: "ce" (joint), "crt" (cRT on the CE features).
  std::string row_name(const std::string& stage) const override {
    return stage == "crt" ? "crt" : RepresentationMethod::row_name(stage);
  }
};

}  // namespace drolt_examples
