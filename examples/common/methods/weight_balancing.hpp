// --method weight-balancing (Alshammari, Wang, Ramanan, Kong, CVPR 2022,
// "Long-tailed recognition via weight balancing"): cross-entropy with a tuned,
// larger weight decay (--wb-wd) and MaxNorm (each class's classifier weights
// projected onto the ball of radius --max-norm after every optimizer step);
// its default classifier stage ("wb", stages/weight_balancing.hpp) then trains
// the classifier with a class-balanced loss, weight decay and MaxNorm.
#pragma once

#include <drolt/weight_balancing.hpp>
#include <torch/torch.h>

#include <memory>

#include "method.hpp"

namespace drolt_examples {

/// MaxNorm (drolt::MaxNorm) of a classifier's weight rows, radius r shared by
/// every class; the bias is not projected. The projection is rebuilt only when
/// the classifier's weight tensor changes (a re-initialised classifier), so a
/// step costs no argument checks and no host synchronisation.
class ClassifierMaxNorm {
 public:
  void apply_(const torch::nn::Linear& classifier, double r) {
    if (!weight_.defined() || !weight_.is_same(classifier->weight)) {
      weight_ = classifier->weight;
      projection_ = std::make_unique<drolt::MaxNorm>(weight_, r);
    }
    projection_->apply_();
  }

 private:
  torch::Tensor weight_;
  std::unique_ptr<drolt::MaxNorm> projection_;
};

class WeightBalancingMethod : public RepresentationMethod {
 public:
  using RepresentationMethod::RepresentationMethod;
  std::string name() const override { return "weight-balancing"; }
  std::vector<std::string> default_stages() const override { return {"joint", "wb"}; }
  double weight_decay() const override { return config().wb_weight_decay; }
  void describe(nlohmann::json& j) const override {
    j["wb_wd"] = config().wb_weight_decay;
    j["max_norm"] = config().max_norm;
  }
  LossSpec loss_at(int64_t) const override { return LossSpec{}; }
  void after_step(torch::nn::Linear& classifier) override { max_norm_.apply_(classifier, config().max_norm); }

 private:
  ClassifierMaxNorm max_norm_;
};

}  // namespace drolt_examples
