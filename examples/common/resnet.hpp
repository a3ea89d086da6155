// CIFAR-style residual networks (He et al., "Deep Residual Learning for Image
// Recognition", CVPR 2016, Section 4.2): depth 6n + 2 (ResNet-8/20/32/44/56/110),
// a 3x3 stem with 16 channels, three stages of n basic blocks with 16/32/64
// channels (stride 2 at the start of stages 2 and 3), global average pooling
// and a linear classifier. The paper's CIFAR-LT backbone is ResNet-32.
//
// Shortcuts: option A of the paper (parameter-free identity with zero-padded
// channels and stride-2 subsampling), as in the original CIFAR experiments and
// the LDAM/DRO-LT reference code; option B (1x1 projection + BN) is available.
//
// Works with 1-channel (Fashion-MNIST, 28x28) and 3-channel (CIFAR, 32x32) input
// of any spatial size >= 4x4.
//
//   drolt_examples::ResNet net(drolt_examples::ResNetOptions(32, 1, 10));
//   auto out = net->forward(x);     // out.features [B, 64], out.logits [B, 10]
//
// With imagenet_depth(10, 18, 34 or 50) the same class holds a torchvision-
// layout ResNet (resnet_imagenet.hpp, 224 px input, 2048-d features for 50)
// instead, so the trainer drives both families through one interface.
//
// Header-only; needs only LibTorch.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "resnet_imagenet.hpp"

namespace drolt_examples {

enum class Shortcut {
  A,  // identity, zero-padded channels, strided subsampling (no parameters)
  B   // 1x1 convolution + batch norm when the shape changes
};

struct ResNetOptions {
  ResNetOptions(int64_t depth = 32, int64_t in_channels = 3, int64_t num_classes = 10)
      : depth_(depth), in_channels_(in_channels), num_classes_(num_classes) {}
  /// 6n + 2: 8, 20, 32, 44, 56, 110, ...
  TORCH_ARG(int64_t, depth);
  /// 1 (grey) or 3 (RGB).
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, num_classes);
  /// Channels of the first stage; stages use w, 2w, 4w (16/32/64 by default).
  TORCH_ARG(int64_t, base_width) = 16;
  TORCH_ARG(Shortcut, shortcut) = Shortcut::A;
  /// When true, forward() also returns the globally average-pooled output of
  /// every stage (for losses applied at several layers, the paper's Appendix H).
  TORCH_ARG(bool, stage_features) = false;
  /// 0: a linear classifier. s > 0: a cosine classifier (LDAM, Cao et al. 2019),
  /// logits s * cos(z, w_c) from normalised features and weights, no bias.
  TORCH_ARG(double, cosine_scale) = 0.0;
  /// 0: the CIFAR ResNet of `depth`. 10, 18, 34 or 50: torchvision's ImageNet
  /// ResNet of that depth instead (`depth`, base_width and shortcut unused;
  /// no stage_features).
  TORCH_ARG(int64_t, imagenet_depth) = 0;
};

/// What forward() returns.
struct ResNetOutput {
  /// Penultimate representation (after global average pooling), [B, 4 * base_width].
  torch::Tensor features;
  /// Classifier output, [B, num_classes].
  torch::Tensor logits;
  /// Pooled stage outputs [B, w], [B, 2w], [B, 4w] when stage_features(true), else empty.
  /// The last one equals `features`.
  std::vector<torch::Tensor> stages;
  /// The pooled output of the stem (first convolution, batch norm, ReLU), [B, w],
  /// when stage_features(true).
  torch::Tensor stem;
};

class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, Shortcut shortcut)
      : in_planes_(in_planes), planes_(planes), stride_(stride), shortcut_(shortcut) {
    conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_planes, planes, 3)
                                                            .stride(stride).padding(1).bias(false)));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
    conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(planes, planes, 3)
                                                            .stride(1).padding(1).bias(false)));
    bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
    if ((stride != 1 || in_planes != planes) && shortcut == Shortcut::B) {
      proj_ = register_module("shortcut", torch::nn::Sequential(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(in_planes, planes, 1).stride(stride).bias(false)),
          torch::nn::BatchNorm2d(planes)));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto out = torch::relu(bn1_->forward(conv1_->forward(x)));
    out = bn2_->forward(conv2_->forward(out));
    return torch::relu(out + shortcut(x));
  }

 private:
  torch::Tensor shortcut(const torch::Tensor& x) {
    if (stride_ == 1 && in_planes_ == planes_) return x;
    if (shortcut_ == Shortcut::B) return proj_->forward(x);
    // Option A: subsample spatially, zero-pad channels symmetrically.
    using torch::indexing::None;
    using torch::indexing::Slice;
    auto y = x.index({Slice(), Slice(), Slice(None, None, stride_), Slice(None, None, stride_)});
    const int64_t pad = planes_ - in_planes_;
    if (pad > 0) {
      y = torch::constant_pad_nd(y, {0, 0, 0, 0, pad / 2, pad - pad / 2}, 0.0);
    }
    return y;
  }

  int64_t in_planes_, planes_, stride_;
  Shortcut shortcut_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential proj_{nullptr};
};
TORCH_MODULE(BasicBlock);

class ResNetImpl : public torch::nn::Module {
 public:
  explicit ResNetImpl(const ResNetOptions& options) : options_(options) {
    if (options.imagenet_depth() != 0) {
      build_imagenet();
      return;
    }
    const int64_t d = options.depth();
    if (d < 8 || (d - 2) % 6 != 0) {
      throw std::invalid_argument("ResNet depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, 110), got " +
                                  std::to_string(d));
    }
    if (options.in_channels() < 1) throw std::invalid_argument("ResNet in_channels must be >= 1");
    if (options.num_classes() < 1) throw std::invalid_argument("ResNet num_classes must be >= 1");
    if (options.base_width() < 1) throw std::invalid_argument("ResNet base_width must be >= 1");
    if (!(options.cosine_scale() >= 0)) throw std::invalid_argument("ResNet cosine_scale must be >= 0");
    const int64_t n = (d - 2) / 6;
    const int64_t w = options.base_width();

    conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), w, 3)
                                                            .stride(1).padding(1).bias(false)));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(w));
    int64_t in_planes = w;
    const int64_t widths[3] = {w, 2 * w, 4 * w};
    for (int s = 0; s < 3; ++s) {
      torch::nn::Sequential stage;
      for (int64_t b = 0; b < n; ++b) {
        const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        stage->push_back(BasicBlock(in_planes, widths[s], stride, options.shortcut()));
        in_planes = widths[s];
      }
      stages_.push_back(register_module("layer" + std::to_string(s + 1), stage));
    }
    fc_ = register_module("fc", torch::nn::Linear(in_planes, options.num_classes()));
    feature_dim_ = in_planes;

    // Kaiming-normal initialisation for convolutions and the classifier weight,
    // BN weight 1 / bias 0 (torch defaults), classifier bias 0.
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->as<torch::nn::Conv2d>()) {
        torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      } else if (auto* lin = m->as<torch::nn::Linear>()) {
        torch::nn::init::kaiming_normal_(lin->weight);
        torch::nn::init::zeros_(lin->bias);
      }
    }
  }

  /// Penultimate features only, [B, feature_dim()].
  torch::Tensor features(const torch::Tensor& x) {
    if (imagenet_) return imagenet_->features(x);
    auto h = torch::relu(bn1_->forward(conv1_->forward(x)));
    for (auto& st : stages_) h = st->forward(h);
    return h.mean({2, 3});
  }

  /// Pooled features of layer `layer`: 0 the stem, 1..3 the stages (3 is the
  /// penultimate representation; the paper's layers 0, 10, 20, 30 of ResNet-32).
  torch::Tensor layer_features(const torch::Tensor& x, int64_t layer) {
    if (layer == 3) return features(x);
    if (imagenet_) throw std::invalid_argument("ImageNet ResNet: only layer 3 (the penultimate features) is pooled");
    auto h = torch::relu(bn1_->forward(conv1_->forward(x)));
    for (int64_t s = 0; s < layer; ++s) h = stages_[static_cast<size_t>(s)]->forward(h);
    return h.mean({2, 3});
  }

  /// Channels of layer `layer` (see layer_features).
  int64_t layer_dim(int64_t layer) const {
    if (layer == 3) return feature_dim_;
    return layer == 0 ? options_.base_width() : options_.base_width() << (layer - 1);
  }

  /// Classifier on top of features.
  torch::Tensor classify(const torch::Tensor& features) {
    if (!is_cosine()) return fc_->forward(features);
    return torch::matmul(classifier_input(features),
                         torch::nn::functional::normalize(fc_->weight, normalize_rows()).t());
  }

  /// What the classifier's weights multiply: the features (linear classifier)
  /// or s times the normalised features (cosine classifier).
  torch::Tensor classifier_input(const torch::Tensor& features) const {
    if (!is_cosine()) return features;
    return torch::nn::functional::normalize(features, normalize_rows()) * options_.cosine_scale();
  }

  bool is_cosine() const { return options_.cosine_scale() > 0; }

  ResNetOutput forward(const torch::Tensor& x) {
    ResNetOutput out;
    if (imagenet_) {
      out.features = imagenet_->features(x);
      out.logits = classify(out.features);
      return out;
    }
    auto h = torch::relu(bn1_->forward(conv1_->forward(x)));
    if (options_.stage_features()) out.stem = h.mean({2, 3});
    for (auto& st : stages_) {
      h = st->forward(h);
      if (options_.stage_features()) out.stages.push_back(h.mean({2, 3}));
    }
    out.features = options_.stage_features() ? out.stages.back() : h.mean({2, 3});
    out.logits = classify(out.features);
    return out;
  }

  /// The linear classifier (for classifier re-training).
  torch::nn::Linear& classifier() { return fc_; }

  /// Parameters of everything except the classifier (the feature extractor).
  std::vector<torch::Tensor> backbone_parameters() {
    std::vector<torch::Tensor> out;
    for (auto& kv : named_parameters(/*recurse=*/true)) {
      if (kv.key().rfind("fc.", 0) != 0 && kv.key().rfind("backbone.fc.", 0) != 0) out.push_back(kv.value());
    }
    return out;
  }

  int64_t feature_dim() const { return feature_dim_; }
  const ResNetOptions& options() const { return options_; }
  bool is_imagenet() const { return static_cast<bool>(imagenet_); }

  /// Convolution weights in channels-last (NHWC) memory order, which cuDNN's
  /// fastest bf16 / fp16 kernels use; values and parameter identity unchanged.
  void to_channels_last() {
    torch::NoGradGuard g;
    for (auto& p : parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }

 private:
  void build_imagenet() {
    const int64_t d = options_.imagenet_depth();
    if (d != 10 && d != 18 && d != 34 && d != 50) {
      throw std::invalid_argument("ImageNet ResNet depth must be 10, 18, 34 or 50, got " + std::to_string(d));
    }
    if (options_.stage_features()) {
      throw std::invalid_argument("ImageNet ResNet: stage_features is not supported (DRO-LT at layer 3 only)");
    }
    if (options_.num_classes() < 1) throw std::invalid_argument("ResNet num_classes must be >= 1");
    if (!(options_.cosine_scale() >= 0)) throw std::invalid_argument("ResNet cosine_scale must be >= 0");
    imagenet_ = register_module(
        "backbone", ImageNetResNet(ImageNetResNetOptions(d, options_.num_classes()).in_channels(options_.in_channels())));
    fc_ = imagenet_->classifier();  // registered once, as backbone.fc
    feature_dim_ = imagenet_->feature_dim();
  }

  static torch::nn::functional::NormalizeFuncOptions normalize_rows() {
    return torch::nn::functional::NormalizeFuncOptions().p(2).dim(1).eps(1e-12);
  }

  ResNetOptions options_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<torch::nn::Sequential> stages_;
  torch::nn::Linear fc_{nullptr};
  ImageNetResNet imagenet_{nullptr};
  int64_t feature_dim_ = 0;
};
TORCH_MODULE(ResNet);

}  // namespace drolt_examples
