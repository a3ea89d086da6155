// --method la-loss: the logit-adjusted loss of Menon et al. 2021 during
// training, cross-entropy on logit_c + tau log pi_c (pi the training class
// prior, tau = --la-loss-tau); predictions use the plain logits. tau = 1 is
// Balanced Softmax (Ren et al. 2020), tau = 0 cross-entropy. Every class needs
// training images (log 0 is not a prior).
#pragma once

#include <torch/torch.h>

#include <cmath>

#include "method.hpp"

namespace drolt_examples {

class LogitAdjustedLossMethod : public RepresentationMethod {
 public:
  LogitAdjustedLossMethod(const TrainConfig& cfg, std::vector<int64_t> counts)
      : RepresentationMethod(cfg, std::move(counts)) {
    std::vector<double> log_prior;
    double total = 0;
    for (auto n : this->counts()) total += static_cast<double>(n);
    for (size_t c = 0; c < this->counts().size(); ++c) {
      TORCH_CHECK(this->counts()[c] > 0, "--method la-loss: expected every class to have training images, got 0 "
                  "for class ", c, " (its prior log pi_c is -inf)");
      log_prior.push_back(std::log(static_cast<double>(this->counts()[c]) / total));
    }
    offsets_ = torch::tensor(log_prior, torch::kDouble).mul(cfg.la_loss_tau).to(torch::kFloat32);
  }
  std::string name() const override { return "la-loss"; }
  void describe(nlohmann::json& j) const override { j["la_loss_tau"] = config().la_loss_tau; }
  LossSpec loss_at(int64_t) const override {
    LossSpec s;
    s.logit_offsets = offsets_;
    return s;
  }

 private:
  torch::Tensor offsets_;  // tau log pi, float32 [C]
};

}  // namespace drolt_examples
