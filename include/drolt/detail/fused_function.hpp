#pragma once
// The fused paths as one autograd function: forward and the analytic backward
// of docs/math.md ("Gradients"), computed by the fused kernels of the inputs'
// device (detail/fused_contract.hpp). Part of drolt/loss.hpp.
#include <ATen/Dispatch.h>
#include <torch/torch.h>

#include <atomic>
#include <vector>

#include "drolt/detail/checks.hpp"
#include "drolt/detail/dispatch.hpp"
#include "drolt/detail/fused_contract.hpp"
#include "drolt/detail/loss_inputs.hpp"
#include "drolt/detail/reduction.hpp"
#include "drolt/detail/reference.hpp"

namespace drolt {
namespace detail {

/// The fused kernels of a tensor's device (detail/dispatch.hpp).
inline const FusedKernels& kernels_for(const torch::Tensor& t) {
  const FusedKernels* k = kernels_of_device(t.device());
  DROLT_CHECK(k != nullptr, kLossFn, "expected the fused kernels for ", t.device().type(),
              " tensors, got a build without them",
              t.is_cuda() ? " (link drolt::cuda)" : "");
  return *k;
}

inline void warn_cuda_fallback_once() {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    TORCH_WARN(kLossFn,
               ": CUDA tensors but no fused CUDA kernels in this build (link drolt::cuda); "
               "using the LibTorch reference composition");
}

/// Cosine distance on the fused paths: 1 - cos(z, mu) = 0.5 ||z' - mu'||^2 when
/// z', mu' are unit vectors with z' . mu' = cos(z, mu). L2-normalised rows are
/// unit vectors except an all-zero row (its norm is clamped, so it stays zero,
/// and its cosine is 0); two extra columns make every row a unit vector without
/// changing any dot product: z' = [z, e_z, 0], mu' = [mu, 0, e_mu] with
/// e = sqrt(1 - |row|^2) for rows far from unit length and 0 otherwise.
inline torch::Tensor cosine_pad(const torch::Tensor& xn, bool first_slot) {
  auto n2 = xn.detach().to(torch::kFloat).pow(2).sum(1, /*keepdim=*/true);
  auto e = torch::where(n2 < 0.5, (1 - n2).clamp_min(0).sqrt(), torch::zeros_like(n2))
               .to(xn.scalar_type());
  auto zero = torch::zeros_like(e);
  return torch::cat({xn, first_slot ? e : zero, first_slot ? zero : e}, 1);
}

/// Whether an L2-normalised CPU tensor has a row far from unit length (an
/// all-zero row): only then does the CPU path need cosine_pad.
inline bool needs_cosine_pad_cpu(const torch::Tensor& xn) {
  auto x = xn.detach().contiguous();
  bool any = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "drolt_cosine_pad", [&] {
    const scalar_t* p = x.data_ptr<scalar_t>();
    const int64_t N = x.size(0), D = x.size(1);
    for (int64_t r = 0; r < N && !any; ++r) {
      scalar_t acc = 0;
      for (int64_t d = 0; d < D; ++d) acc += p[r * D + d] * p[r * D + d];
      any = !(acc >= scalar_t(0.5));
    }
  });
  return any;
}

/// Differentiating the gradient again (create_graph) recomputes the loss from
/// the saved inputs by LibTorch ops and differentiates that, so second
/// derivatives are exact too (at the composition's speed).
struct FusedFunction : public torch::autograd::Function<FusedFunction> {
  /// The inputs of apply(), in order (what needs_input_grad and backward's result index).
  enum Input : size_t {
    kFeatures,
    kCentroids,
    kRadii,
    kLabels,
    kValid,
    kReduceWeights,
    kParams,
    kNumInputs
  };

  /// What forward keeps for backward, by name. It travels through the autograd
  /// context as one tensor list (to_list / from_list are the only place that
  /// knows the order).
  struct Saved {
    torch::Tensor z, mu, eps, y, valid;
    torch::Tensor reduce_weights;             ///< empty for reduction none
    torch::Tensor loss_vector;                ///< the unreduced loss (the class weights' gradient)
    std::vector<torch::Tensor> kernel_state;  ///< FusedForwardResult::saved

    std::vector<torch::Tensor> to_list() const {
      std::vector<torch::Tensor> out{z, mu, eps, y, valid, reduce_weights, loss_vector};
      out.insert(out.end(), kernel_state.begin(), kernel_state.end());
      return out;
    }
    static Saved from_list(const torch::autograd::variable_list& l) {
      Saved s;
      s.z = l[0];
      s.mu = l[1];
      s.eps = l[2];
      s.y = l[3];
      s.valid = l[4];
      s.reduce_weights = l[5];
      s.loss_vector = l[6];
      s.kernel_state.assign(l.begin() + 7, l.end());
      return s;
    }
  };

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& features,
                               const torch::Tensor& centroids, const torch::Tensor& radii,
                               const torch::Tensor& labels, const torch::Tensor& valid,
                               const torch::Tensor& reduce_weights, FusedParams params) {
    const FusedKernels& k = kernels_for(features);
    Saved s;
    s.z = features.contiguous();
    s.mu = centroids.contiguous();
    s.eps = radii.contiguous();
    s.y = labels.contiguous();
    s.valid = valid.contiguous();
    s.reduce_weights = reduce_weights;
    auto res = k.forward(s.z, s.y, s.mu, s.eps, s.valid, params);
    s.loss_vector = res.loss;
    s.kernel_state = std::move(res.saved);
    ctx->save_for_backward(s.to_list());
    ctx->saved_data["params"] = params.pack();
    if (reduce_weights.numel() == 0) return res.loss;
    return weighted_sum(reduce_weights, res.loss);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const Saved s = Saved::from_list(ctx->get_saved_variables());
    const FusedParams p = FusedParams::unpack(ctx->saved_data["params"].toDoubleVector());
    const auto& rw = s.reduce_weights;
    const bool rw_grad = rw.numel() > 0 && ctx->needs_input_grad(kReduceWeights);
    if (torch::GradMode::is_enabled())
      return backward_composed(ctx, s, grad_outputs[0], p, rw_grad);

    const FusedKernels& k = kernels_for(s.z);
    auto g = rw.numel() > 0 ? (rw * grad_outputs[0]).contiguous() : grad_outputs[0].contiguous();
    auto r = k.backward(g, s.z, s.y, s.mu, s.eps, s.valid, s.kernel_state, p);
    torch::autograd::variable_list out(kNumInputs);
    out[kFeatures] = r.grad_features;
    if (p.centroid_grad) out[kCentroids] = r.grad_centroids;
    out[kRadii] = r.grad_radii;
    // d(sum_k v_k l_k)/dv = l: the class weights' gradient flows on through v.
    if (rw_grad) out[kReduceWeights] = s.loss_vector * grad_outputs[0];
    return out;
  }

  /// Backward with create_graph: the gradient of the composed loss, itself differentiable.
  static torch::autograd::variable_list backward_composed(torch::autograd::AutogradContext* ctx,
                                                          const Saved& s,
                                                          const torch::Tensor& grad_output,
                                                          const FusedParams& p, bool rw_grad) {
    const auto& rw = s.reduce_weights;
    auto l = composed_loss_vector(s.z, s.mu, s.eps, s.y, s.valid, p);
    auto out = rw.numel() > 0 ? (rw * l).sum() : l;
    const std::pair<size_t, torch::Tensor> candidates[] = {
        {kFeatures, s.z}, {kCentroids, s.mu}, {kRadii, s.eps}, {kReduceWeights, rw}};
    std::vector<torch::Tensor> inputs;
    std::vector<size_t> slots;
    for (const auto& c : candidates) {
      const bool wanted = c.first == kReduceWeights ? rw_grad : ctx->needs_input_grad(c.first);
      if (wanted && c.second.requires_grad()) {
        inputs.push_back(c.second);
        slots.push_back(c.first);
      }
    }
    torch::autograd::variable_list result(kNumInputs);
    if (inputs.empty()) return result;
    auto grads = torch::autograd::grad({out}, inputs, {grad_output}, /*retain_graph=*/true,
                                       /*create_graph=*/true, /*allow_unused=*/true);
    for (size_t j = 0; j < slots.size(); ++j) result[slots[j]] = grads[j];
    return result;
  }
};

}  // namespace detail
}  // namespace drolt
