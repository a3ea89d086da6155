// --classifier lws: learnable weight scaling (Kang et al. 2020): the joint
// classifier kept, one learned scale f_c per class, logit_c = f_c (w_c . z + b_c),
// trained with the stage sampler. No weight decay on the scales: it would pull
// every class towards 0.
#pragma once

#include "../classifiers.hpp"
#include "stage.hpp"

namespace drolt_examples {

class LwsStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "lws"; }
  bool trains() const override { return true; }
  void start(StageContext& ctx) override {
    scales_ = torch::ones({ctx.num_classes()}, torch::TensorOptions().device(ctx.device)).requires_grad_(true);
  }
  std::vector<torch::Tensor> parameters(StageContext&) override { return {scales_}; }
  torch::Tensor train_logits(StageContext& ctx, const torch::Tensor& features) override {
    torch::Tensor joint;
    {
      torch::NoGradGuard g;
      joint = ctx.model->classify(features);
    }
    return lws_logits(joint, scales_);
  }
  void save(torch::serialize::OutputArchive& archive) const override {
    if (scales_.defined()) archive.write("lws_scale", scales_.detach());
  }
  void load(torch::serialize::InputArchive& archive, StageContext& ctx) override {
    torch::Tensor t;
    archive.read("lws_scale", t);
    scales_ = t.to(ctx.device).requires_grad_(true);
  }
  /// The learned scales (undefined before the stage starts).
  const torch::Tensor& scales() const { return scales_; }

 protected:
  torch::Tensor batch_scores(StageContext& ctx, const torch::Tensor& features, double) override {
    return lws_logits(ctx.model->classify(features), scales_);
  }

 private:
  torch::Tensor scales_;
};

}  // namespace drolt_examples
