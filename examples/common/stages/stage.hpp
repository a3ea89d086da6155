// The interface of a classifier stage on the frozen representation: whether it
// trains (the one answer to that question), its parameters, loss and hooks
// when it does, its scores when evaluated, and its checkpoint state. One stage
// is one type in one file of this folder, and one line of registry.hpp gives
// it its --classifier name (examples/README.md, "Adding a method or a
// classifier stage").
//
// Every stage starts from the joint classifier (the representation's), put
// back by the trainer; a trained stage then runs --stage-epochs epochs on the
// frozen features with --stage-sampler, --stage-lr and --stage-schedule.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../resnet.hpp"

namespace drolt_examples {

/// What a stage sees of the run: the network (its classifier), the device, the
/// training class counts and, once the representation is trained, its frozen
/// training features (CPU) and labels.
struct StageContext {
  ResNet& model;
  torch::Device device;
  const std::vector<int64_t>& counts;
  const torch::Tensor& train_features;
  const torch::Tensor& train_labels;
  int64_t num_classes() const { return static_cast<int64_t>(counts.size()); }
};

class ClassifierStage {
 public:
  explicit ClassifierStage(const TrainConfig& cfg) : cfg_(cfg) {}
  virtual ~ClassifierStage() = default;
  ClassifierStage(const ClassifierStage&) = delete;
  ClassifierStage& operator=(const ClassifierStage&) = delete;

  /// Its --classifier name (the second part of its table rows).
  virtual std::string name() const = 0;
  /// Whether it trains (then it has --stage-epochs epochs after the
  /// representation) or is read off the joint classifier right after it.
  virtual bool trains() const { return false; }

  // ---------------------------------------------------------------- trained stages
  /// Sets up its parameters at the start of its first epoch (the joint
  /// classifier already put back).
  virtual void start(StageContext& ctx) { (void)ctx; }
  /// What its optimizer updates, and that optimizer's weight decay.
  virtual std::vector<torch::Tensor> parameters(StageContext& ctx) { return ctx.model->classifier()->parameters(); }
  virtual double weight_decay() const { return 0; }
  /// Training logits on frozen features.
  virtual torch::Tensor train_logits(StageContext& ctx, const torch::Tensor& features) {
    return ctx.model->classify(features);
  }
  /// Its training loss (cross-entropy unless it says otherwise).
  virtual torch::Tensor train_loss(StageContext& ctx, const torch::Tensor& logits, const torch::Tensor& y) {
    (void)ctx;
    return torch::nn::functional::cross_entropy(logits, y);
  }
  /// Per-step hook: after every optimizer step.
  virtual void after_step(StageContext& ctx) { (void)ctx; }
  /// Checkpoint state beyond the network and the optimizer, and reading it
  /// back (in the middle of the stage).
  virtual void save(torch::serialize::OutputArchive& archive) const { (void)archive; }
  virtual void load(torch::serialize::InputArchive& archive, StageContext& ctx) {
    (void)archive;
    (void)ctx;
  }

  // ---------------------------------------------------------------- evaluation
  /// Whether it has a tau chosen on the validation split (tau-norm, la), and
  /// then the configured tau (-1: choose) and the grid it is chosen from.
  virtual bool has_tau() const { return false; }
  virtual double configured_tau() const { return -1; }
  virtual std::vector<double> tau_grid() const { return {}; }
  /// Whether its scores are logits (softmax probabilities give an ECE).
  virtual bool probabilities() const { return true; }
  /// Scores [N, C] (CPU) of features [N, D] (CPU), in batches of 500 on the device.
  virtual torch::Tensor scores(StageContext& ctx, const torch::Tensor& features, double tau) {
    torch::NoGradGuard g;
    std::vector<torch::Tensor> out;
    const int64_t N = features.size(0), B = 500;
    for (int64_t s = 0; s < N; s += B) {
      out.push_back(batch_scores(ctx, features.narrow(0, s, std::min(B, N - s)).to(ctx.device), tau).cpu());
    }
    return N == 0 ? torch::empty({0, ctx.num_classes()}) : torch::cat(out);
  }

 protected:
  /// Scores of one batch of features on the device.
  virtual torch::Tensor batch_scores(StageContext& ctx, const torch::Tensor& features, double tau) {
    (void)tau;
    return ctx.model->classify(features);
  }
  const TrainConfig& config() const { return cfg_; }

 private:
  TrainConfig cfg_;
};

}  // namespace drolt_examples
