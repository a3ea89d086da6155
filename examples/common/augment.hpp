// Batch augmentation for the example trainer: random crop with zero padding and
// horizontal flip, vectorised over the batch, drawing from torch's default
// generator (so a run is reproducible from its seed).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace drolt_examples {

/// x: [B, C, H, W]. Pads by `pad` on every side with zeros and cuts a random
/// HxW window per image, then flips each image horizontally with probability 1/2
/// when `flip`. Returns a new tensor; x is untouched.
inline torch::Tensor augment_batch(const torch::Tensor& x, int64_t pad, bool flip) {
  using torch::indexing::Slice;
  torch::NoGradGuard no_grad;
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  auto out = x;
  if (pad > 0 && B > 0) {
    auto padded = torch::constant_pad_nd(x, {pad, pad, pad, pad}, 0.0);  // [B, C, H+2p, W+2p]
    auto iopt = torch::TensorOptions().dtype(torch::kLong).device(x.device());
    auto oy = torch::randint(0, 2 * pad + 1, {B}, iopt);
    auto ox = torch::randint(0, 2 * pad + 1, {B}, iopt);
    auto rows = oy.unsqueeze(1) + torch::arange(H, iopt).unsqueeze(0);  // [B, H]
    auto cols = ox.unsqueeze(1) + torch::arange(W, iopt).unsqueeze(0);  // [B, W]
    auto b = torch::arange(B, iopt).view({B, 1, 1});
    // Advanced indices around a slice: the result is [B, H, W, C].
    out = padded.permute({0, 2, 3, 1})
              .index({b, rows.unsqueeze(2), cols.unsqueeze(1)})
              .permute({0, 3, 1, 2})
              .contiguous();
  }
  if (flip && B > 0) {
    auto mask = torch::rand({B}, torch::TensorOptions().device(x.device())) < 0.5;
    out = torch::where(mask.view({B, 1, 1, 1}), out.flip({3}), out);
  }
  return out;
}

}  // namespace drolt_examples
