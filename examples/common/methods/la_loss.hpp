// --method la-loss: the logit-adjusted loss of Menon et al. 2021 during
// training, cross-entropy on logit_c + tau log pi_c (pi the training class
// prior, tau = --la-loss-tau); predictions use the plain logits. tau = 1 is
// Balanced Softmax (Ren et al. 2020), tau = 0 cross-entropy. Every class needs
// training images (log 0 is not a prior).
#pragma once

#include <drolt/longtail_losses.hpp>
#include <torch/torch.h>

#include "method.hpp"

namespace drolt_examples {

class LogitAdjustedLossMethod : public RepresentationMethod {
 public:
  LogitAdjustedLossMethod(const TrainConfig& cfg, std::vector<int64_t> counts)
      : RepresentationMethod(cfg, std::move(counts)) {
    // drolt::log_class_prior would count an empty class as one sample; a
    // representation trained on a made-up prior is refused instead.
    for (size_t c = 0; c < this->counts().size(); ++c) {
      TORCH_CHECK(this->counts()[c] > 0, "--method la-loss: expected every class to have training images, got 0 "
                  "for class ", c, " (its prior log pi_c is -inf)");
    }
  }
  std::string name() const override { return "la-loss"; }
  void describe(nlohmann::json& j) const override { j["la_loss_tau"] = config().la_loss_tau; }
  LossSpec loss_at(int64_t) const override {
    LossSpec s;
    s.log_prior = drolt::log_class_prior(counts());
    s.la_tau = config().la_loss_tau;
    return s;
  }
};

}  // namespace drolt_examples
