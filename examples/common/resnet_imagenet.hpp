// ImageNet-style residual networks in torchvision's layout (He et al., CVPR
// 2016, Table 1; torchvision.models.resnet, "v1.5": the stride of a bottleneck
// sits in its 3x3 convolution): a 7x7 stride-2 stem with 64 channels and a
// 3x3 stride-2 max pool, four stages (64, 128, 256, 512 planes; stride 2 from
// the second on), global average pooling and a linear classifier.
//
//   depth 10: basic blocks [1, 1, 1, 1]     (512-d features; for small runs)
//   depth 18: basic blocks [2, 2, 2, 2]     (512-d)
//   depth 34: basic blocks [3, 4, 6, 3]     (512-d)
//   depth 50: bottlenecks  [3, 4, 6, 3]     (2048-d; the paper's ImageNet-LT
//             and iNaturalist backbone, 25,557,032 parameters with 1000 classes)
//
// Module and parameter names follow torchvision's (conv1, bn1, layer1.0.conv1,
// layer2.0.downsample.0, fc, ...), so its checkpoints map one to one.
//
//   drolt_examples::ImageNetResNet net(drolt_examples::ImageNetResNetOptions(50, 1000));
//   auto out = net->forward(x);  // x [B, 3, 224, 224]: out.features [B, 2048], out.logits [B,
//   1000]
//
// Header-only; needs only LibTorch.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace drolt_examples {

struct ImageNetResNetOptions {
  ImageNetResNetOptions(int64_t depth = 50, int64_t num_classes = 1000)
      : depth_(depth), num_classes_(num_classes) {}
  /// 10, 18, 34 or 50.
  TORCH_ARG(int64_t, depth);
  TORCH_ARG(int64_t, num_classes);
  /// 3 (RGB) or 1 (gray).
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Start each block's last batch norm at zero (Goyal et al. 2017), so every
  /// residual block begins as the identity; torchvision's zero_init_residual.
  TORCH_ARG(bool, zero_init_residual) = false;
};

struct ImageNetResNetOutput {
  /// After global average pooling: [B, 512] (depth 10-34) or [B, 2048] (depth 50).
  torch::Tensor features;
  /// [B, num_classes].
  torch::Tensor logits;
};

namespace detail {

inline torch::nn::Conv2d resnet_conv(int64_t in, int64_t out, int64_t k, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}

/// A basic block (two 3x3 convolutions) or a bottleneck (1x1, 3x3, 1x1 with 4x
/// expansion), with a 1x1 projection shortcut when the shape changes.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int64_t in, int64_t planes, int64_t stride, bool bottleneck)
      : bottleneck_(bottleneck) {
    const int64_t out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      conv1_ = register_module("conv1", resnet_conv(in, planes, 1, 1));
      bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
      conv2_ = register_module("conv2", resnet_conv(planes, planes, 3, stride));
      bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
      conv3_ = register_module("conv3", resnet_conv(planes, out, 1, 1));
      bn3_ = register_module("bn3", torch::nn::BatchNorm2d(out));
    } else {
      conv1_ = register_module("conv1", resnet_conv(in, planes, 3, stride));
      bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
      conv2_ = register_module("conv2", resnet_conv(planes, planes, 3, 1));
      bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
    }
    if (stride != 1 || in != out) {
      downsample_ = register_module(
          "downsample",
          torch::nn::Sequential(resnet_conv(in, out, 1, stride), torch::nn::BatchNorm2d(out)));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(bn1_(conv1_(x)));
    y = bn2_(conv2_(y));
    if (bottleneck_) y = bn3_(conv3_(torch::relu(y)));
    const torch::Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
    return torch::relu(y + shortcut);
  }

  /// The batch norm whose output is added to the shortcut.
  torch::nn::BatchNorm2d& last_bn() { return bottleneck_ ? bn3_ : bn2_; }

 private:
  bool bottleneck_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(ResidualBlock);

}  // namespace detail

class ImageNetResNetImpl : public torch::nn::Module {
 public:
  explicit ImageNetResNetImpl(const ImageNetResNetOptions& options) : options_(options) {
    std::vector<int64_t> blocks;
    bool bottleneck = false;
    switch (options.depth()) {
      case 10:
        blocks = {1, 1, 1, 1};
        break;
      case 18:
        blocks = {2, 2, 2, 2};
        break;
      case 34:
        blocks = {3, 4, 6, 3};
        break;
      case 50:
        blocks = {3, 4, 6, 3};
        bottleneck = true;
        break;
      default:
        TORCH_CHECK(false, "drolt_examples::ImageNetResNet: expected depth 10, 18, 34 or 50, got ",
                    options.depth());
    }
    TORCH_CHECK(options.num_classes() > 0,
                "drolt_examples::ImageNetResNet: expected num_classes > 0, got ",
                options.num_classes());
    TORCH_CHECK(options.in_channels() == 1 || options.in_channels() == 3,
                "drolt_examples::ImageNetResNet: expected in_channels 1 or 3, got ",
                options.in_channels());
    conv1_ = register_module("conv1", detail::resnet_conv(options.in_channels(), 64, 7, 2));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(64));
    int64_t in = 64;
    const int64_t expansion = bottleneck ? 4 : 1;
    for (size_t s = 0; s < 4; ++s) {
      const int64_t planes = int64_t{64} << s;
      torch::nn::Sequential stage;
      for (int64_t b = 0; b < blocks[s]; ++b) {
        detail::ResidualBlock block(in, planes, b == 0 && s > 0 ? 2 : 1, bottleneck);
        blocks_.push_back(block);
        stage->push_back(block);
        in = planes * expansion;
      }
      stages_.push_back(register_module("layer" + std::to_string(s + 1), stage));
    }
    feature_dim_ = in;
    fc_ = register_module("fc", torch::nn::Linear(in, options.num_classes()));

    // torchvision's initialisation: He normal (fan out) for convolutions, batch
    // norms at weight 1 and bias 0, the linear layer at LibTorch's default.
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->as<torch::nn::Conv2d>()) {
        torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
        torch::nn::init::ones_(bn->weight);
        torch::nn::init::zeros_(bn->bias);
      }
    }
    if (options.zero_init_residual()) {
      for (auto& block : blocks_) torch::nn::init::zeros_(block->last_bn()->weight);
    }
  }

  ImageNetResNetOutput forward(const torch::Tensor& x) {
    ImageNetResNetOutput out;
    out.features = features(x);
    out.logits = fc_(out.features);
    return out;
  }

  /// The globally average-pooled output of the last stage, [B, feature_dim()].
  torch::Tensor features(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels(),
                "drolt_examples::ImageNetResNet: expected input [B, ", options_.in_channels(),
                ", H, W], got ", x.sizes());
    torch::Tensor y = torch::relu(bn1_(conv1_(x)));
    y = torch::max_pool2d(y, 3, 2, 1);
    for (auto& stage : stages_) y = stage->forward(y);
    return torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1);
  }

  /// 512 (depth 10-34) or 2048 (depth 50).
  int64_t feature_dim() const { return feature_dim_; }
  torch::nn::Linear& classifier() { return fc_; }
  const ImageNetResNetOptions& options() const { return options_; }

 private:
  ImageNetResNetOptions options_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<torch::nn::Sequential> stages_;
  std::vector<detail::ResidualBlock> blocks_;
  torch::nn::Linear fc_{nullptr};
  int64_t feature_dim_ = 0;
};
TORCH_MODULE(ImageNetResNet);

}  // namespace drolt_examples
