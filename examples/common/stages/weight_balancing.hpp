// --classifier wb: the second stage of weight balancing (Alshammari et al.
// 2022): the joint classifier trained on the frozen features with a
// class-balanced loss (effective-number weights, --cb-beta), weight decay
// --wb-wd and MaxNorm (--max-norm) after every optimizer step. The default
// stage of --method weight-balancing; its sampler is the stage sampler
// (--stage-sampler; the loss already balances the classes, so instance
// sampling is the paper's choice).
#pragma once

#include "../losses.hpp"
#include "../methods/weight_balancing.hpp"
#include "stage.hpp"

namespace drolt_examples {

class WeightBalancingStage : public ClassifierStage {
 public:
  using ClassifierStage::ClassifierStage;
  std::string name() const override { return "wb"; }
  bool trains() const override { return true; }
  double weight_decay() const override { return config().wb_weight_decay; }
  torch::Tensor train_loss(StageContext& ctx, const torch::Tensor& logits, const torch::Tensor& y) override {
    if (!weights_.defined())
      weights_ = weights_of(drolt::ClassWeighting::effective_number, ctx.counts, config().cb_beta);
    namespace F = torch::nn::functional;
    return F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().weight(weights_.to(logits.device())));
  }
  void after_step(StageContext& ctx) override { max_norm_.apply_(ctx.model->classifier(), config().max_norm); }

 private:
  ClassifierMaxNorm max_norm_;
  torch::Tensor weights_;
};

}  // namespace drolt_examples
