// --method weight-balancing (Alshammari, Wang, Ramanan, Kong, CVPR 2022,
// "Long-tailed recognition via weight balancing"): cross-entropy with a tuned,
// larger weight decay (--wb-wd) and MaxNorm (each class's classifier weights
// projected onto the ball of radius --max-norm after every optimizer step);
// its default classifier stage ("wb", stages/weight_balancing.hpp) then trains
// the classifier with a class-balanced loss, weight decay and MaxNorm.
#pragma once

#include <torch/torch.h>

#include "method.hpp"

namespace drolt_examples {

/// MaxNorm: w_c <- w_c * min(1, r / ||w_c||) for every row of the classifier's
/// weight (the bias is not projected).
inline void max_norm_rows_(torch::nn::Linear& classifier, double r) {
  torch::NoGradGuard g;
  auto& w = classifier->weight;
  auto scale = (r / w.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12)).clamp_max(1.0);
  w.mul_(scale);
}

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
  void after_step(torch::nn::Linear& classifier) override { max_norm_rows_(classifier, config().max_norm); }
};

}  // namespace drolt_examples
