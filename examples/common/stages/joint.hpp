// --classifier joint: the classifier trained with the representation, as it left it.
#pragma once

#include "stage.hpp"

namespace drolt_examples {

class JointStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "joint"; }
};

}  // namespace drolt_examples
