#pragma once
// DRO-LT on several representations at once (the paper's Appendix H):
//
//   L_DRO = sum_l w_l L_DRO(z^(l))
//
// one loss per chosen layer l, each with its own centroid bank and its own
// radii, on that layer's features (for a convolutional layer: its feature map
// averaged over space, so D_l is its channel count).
//
//   drolt::MultiLayerRobustCentroidLoss dro(
//       drolt::MultiLayerRobustCentroidLossOptions(drolt::RobustCentroidLossOptions(C))
//           .add_layer("stem", 16, 0.25).add_layer("stage1", 16, 0.25)
//           .add_layer("stage2", 32, 0.25).add_layer("stage3", 64, 0.25));
//   // every epoch: dro->clear_sums(); dro->accumulate({f0, f1, f2, f3}, y) over the data; dro->finalize();
//   auto loss = (1 - lambda) * ce + lambda * dro({f0, f1, f2, f3}, y);
//
// It is a module whose children are the per-layer RobustCentroidLoss ("loss_<name>")
// and CentroidBank ("bank_<name>"): parameters() holds every learned radius,
// torch::save / drolt::save store every bank and radius, to() moves them all,
// and drolt::dist::finalize synchronises all banks in one collective.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "drolt/centroid_bank.hpp"
#include "drolt/loss.hpp"

namespace drolt {

/// One tapped layer: a name (unique; used for the children's names), its
/// feature dimension and its weight w_l in the sum.
struct LayerSpec {
  std::string name;
  int64_t dim = 0;
  double weight = 1.0;
};

struct MultiLayerRobustCentroidLossOptions {
  /* implicit */ MultiLayerRobustCentroidLossOptions(RobustCentroidLossOptions loss)
      : loss_(std::move(loss)) {}
  /// Options of every layer's loss (num_classes, radius policy, temperature, ...).
  TORCH_ARG(RobustCentroidLossOptions, loss);
  /// Momentum of every layer's bank (ema_update).
  TORCH_ARG(double, bank_momentum) = 0.9;
  TORCH_ARG(std::vector<LayerSpec>, layers) = {};

 public:
  MultiLayerRobustCentroidLossOptions& add_layer(std::string name, int64_t dim, double weight = 1.0) {
    layers_.push_back(LayerSpec{std::move(name), dim, weight});
    return *this;
  }
};

class MultiLayerRobustCentroidLossImpl : public torch::nn::Cloneable<MultiLayerRobustCentroidLossImpl> {
 public:
  explicit MultiLayerRobustCentroidLossImpl(MultiLayerRobustCentroidLossOptions options)
      : options(std::move(options)) {
    const auto& layers = this->options.layers();
    TORCH_CHECK(!layers.empty(), "drolt::MultiLayerRobustCentroidLoss: expected at least one layer, got none");
    for (size_t l = 0; l < layers.size(); ++l) {
      const auto& s = layers[l];
      TORCH_CHECK(!s.name.empty() && s.name.find('.') == std::string::npos,
                  "drolt::MultiLayerRobustCentroidLoss: expected a non-empty layer name without '.', got '",
                  s.name, "'");
      TORCH_CHECK(s.dim > 0, "drolt::MultiLayerRobustCentroidLoss: expected dim > 0 for layer '", s.name,
                  "', got ", s.dim);
      TORCH_CHECK(std::isfinite(s.weight) && s.weight >= 0,
                  "drolt::MultiLayerRobustCentroidLoss: expected a finite weight >= 0 for layer '", s.name,
                  "', got ", s.weight);
      for (size_t k = 0; k < l; ++k)
        TORCH_CHECK(layers[k].name != s.name, "drolt::MultiLayerRobustCentroidLoss: layer name '", s.name,
                    "' is used twice");
    }
    reset();
  }

  void reset() override {
    losses_.clear();
    banks_.clear();
    const int64_t C = options.loss().num_classes();
    for (const auto& s : options.layers()) {
      losses_.push_back(register_module("loss_" + s.name, RobustCentroidLoss(options.loss())));
      banks_.push_back(register_module(
          "bank_" + s.name, CentroidBank(CentroidBankOptions(C, s.dim).momentum(options.bank_momentum()))));
    }
  }

  /// The weighted sum sum_l w_l L_DRO(features[l]) (features in layer order).
  torch::Tensor forward(const std::vector<torch::Tensor>& features, const torch::Tensor& labels) {
    auto t = terms(features, labels);
    torch::Tensor total = t[0] * options.layers()[0].weight;
    for (size_t l = 1; l < t.size(); ++l) total = total + t[l] * options.layers()[l].weight;
    return total;
  }

  /// Each layer's (unweighted) loss, in layer order.
  std::vector<torch::Tensor> terms(const std::vector<torch::Tensor>& features, const torch::Tensor& labels) {
    check_features(features, "forward");
    std::vector<torch::Tensor> out;
    out.reserve(losses_.size());
    for (size_t l = 0; l < losses_.size(); ++l) out.push_back(losses_[l]->forward(features[l], labels, banks_[l]));
    return out;
  }

  /// Per-epoch bank refresh, every layer in the same pass over the data.
  void clear_sums() {
    for (auto& b : banks_) b->clear_sums();
  }
  void accumulate(const std::vector<torch::Tensor>& features, const torch::Tensor& labels) {
    check_features(features, "accumulate");
    for (size_t l = 0; l < banks_.size(); ++l) banks_[l]->accumulate(features[l], labels);
  }
  void finalize() {
    for (auto& b : banks_) b->finalize();
  }
  void ema_update(const std::vector<torch::Tensor>& features, const torch::Tensor& labels) {
    check_features(features, "ema_update");
    for (size_t l = 0; l < banks_.size(); ++l) banks_[l]->ema_update(features[l], labels);
  }
  /// Clamps every learned radius's raw parameter to >= 0 (RobustCentroidLoss::project_).
  void project_() {
    for (auto& l : losses_) l->project_();
  }

  size_t num_layers() const { return losses_.size(); }
  /// Index of the layer called `name` (c10::Error when there is none).
  size_t index_of(const std::string& name) const {
    for (size_t l = 0; l < options.layers().size(); ++l)
      if (options.layers()[l].name == name) return l;
    std::string names;
    for (const auto& s : options.layers()) names += (names.empty() ? "" : ", ") + s.name;
    TORCH_CHECK(false, "drolt::MultiLayerRobustCentroidLoss: expected one of the layers ", names, "; got '",
                name, "'");
  }
  RobustCentroidLoss& loss(size_t l) { return losses_.at(l); }
  CentroidBank& bank(size_t l) { return banks_.at(l); }
  const CentroidBank& bank(size_t l) const { return banks_.at(l); }
  RobustCentroidLoss& loss(const std::string& name) { return losses_.at(index_of(name)); }
  CentroidBank& bank(const std::string& name) { return banks_.at(index_of(name)); }

  /// Module::load, all or nothing: the archive is read into a fresh copy of
  /// this module (every layer's own checks run there), and only once every
  /// layer has loaded are the tensors moved over (set_data: the parameters an
  /// optimizer holds stay the same objects). A checkpoint damaged in any layer
  /// leaves every bank and radius as it was.
  void load(torch::serialize::InputArchive& archive) override {
    auto fresh = std::dynamic_pointer_cast<MultiLayerRobustCentroidLossImpl>(clone());
    TORCH_INTERNAL_ASSERT(fresh != nullptr);
    fresh->torch::nn::Module::load(archive);
    torch::NoGradGuard no_grad;
    const auto theirs_p = fresh->named_parameters();
    const auto theirs_b = fresh->named_buffers();
    for (auto& p : named_parameters()) p.value().set_data(theirs_p[p.key()]);
    for (auto& b : named_buffers()) b.value().set_data(theirs_b[b.key()]);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::MultiLayerRobustCentroidLoss(num_classes=" << options.loss().num_classes() << ", layers=[";
    for (size_t l = 0; l < options.layers().size(); ++l) {
      const auto& s = options.layers()[l];
      stream << (l ? ", " : "") << s.name << ":" << s.dim << "x" << s.weight;
    }
    stream << "])";
  }

  MultiLayerRobustCentroidLossOptions options;

 private:
  void check_features(const std::vector<torch::Tensor>& features, const char* fn) const {
    const auto& layers = options.layers();
    TORCH_CHECK(features.size() == layers.size(), "drolt::MultiLayerRobustCentroidLoss::", fn, ": expected ",
                layers.size(), " feature tensors (one per layer), got ", features.size());
    for (size_t l = 0; l < layers.size(); ++l)
      TORCH_CHECK(features[l].defined() && features[l].dim() == 2 && features[l].size(1) == layers[l].dim,
                  "drolt::MultiLayerRobustCentroidLoss::", fn, ": expected features of layer '", layers[l].name,
                  "' of shape [B, ", layers[l].dim, "], got ",
                  features[l].defined() ? detail::describe(features[l]) : std::string("an undefined tensor"));
  }

  std::vector<RobustCentroidLoss> losses_;
  std::vector<CentroidBank> banks_;
};

TORCH_MODULE(MultiLayerRobustCentroidLoss);

/// Global average pooling of a feature map [B, C, H, W] (or [B, C, ...]) to the
/// [B, C] features a layer's loss takes; [B, C] passes through.
inline torch::Tensor pooled_features(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 2, "drolt::pooled_features: expected a [B, C] or [B, C, ...] tensor, got ",
              x.defined() ? detail::describe(x) : std::string("an undefined tensor"));
  if (x.dim() == 2) return x;
  return x.flatten(2).mean(2);
}

}  // namespace drolt
