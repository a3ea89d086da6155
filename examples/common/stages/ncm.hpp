// --classifier ncm: nearest class mean of the L2-normalised features (cosine
// similarity to each class's mean normalised training feature).
#pragma once

#include <drolt/posthoc.hpp>
#include <torch/torch.h>

#include "stage.hpp"

namespace drolt_examples {

class NcmStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "ncm"; }
  bool probabilities() const override { return false; }  // similarities, not logits
  torch::Tensor scores(StageContext& ctx, const torch::Tensor& features, double) override {
    drolt::NearestClassMean ncm(ctx.num_classes(), ctx.train_features.size(1));
    ncm->fit(ctx.train_features, ctx.train_labels);
    return ncm(features);
  }
};

}  // namespace drolt_examples
