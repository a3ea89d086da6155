// --classifier lws: learnable weight scaling (Kang et al. 2020): the joint
// classifier kept, one learned scale f_c per class, logit_c = f_c (w_c . z + b_c),
// trained with the stage sampler. No weight decay on the scales: it would pull
// every class towards 0.
#pragma once

#include <drolt/posthoc.hpp>
#include <torch/torch.h>

#include "stage.hpp"

namespace drolt_examples {

class LwsStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "lws"; }
  bool trains() const override { return true; }
  void start(StageContext& ctx) override {
    lws_ = drolt::LWS(ctx.num_classes());
    lws_->to(ctx.device);
  }
  std::vector<torch::Tensor> parameters(StageContext&) override { return {lws_->scales}; }
  torch::Tensor train_logits(StageContext& ctx, const torch::Tensor& features) override {
    torch::Tensor joint;
    {
      torch::NoGradGuard g;
      joint = ctx.model->classify(features);
    }
    return lws_(joint);
  }
  void save(torch::serialize::OutputArchive& archive) const override {
    if (!lws_.is_empty()) archive.write("lws_scale", lws_->scales.detach());
  }
  void load(torch::serialize::InputArchive& archive, StageContext& ctx) override {
    torch::Tensor t;
    archive.read("lws_scale", t);
    lws_ = drolt::LWS(t.size(0));
    lws_->to(ctx.device);
    torch::NoGradGuard g;
    lws_->scales.copy_(t);
  }
  /// The learned scales (undefined before the stage starts).
  torch::Tensor scales() const { return lws_.is_empty() ? torch::Tensor() : lws_->scales; }

 protected:
  torch::Tensor batch_scores(StageContext& ctx, const torch::Tensor& features, double) override {
    return lws_(ctx.model->classify(features));
  }

 private:
  drolt::LWS lws_{nullptr};
};

}  // namespace drolt_examples
