#pragma once
// The to() overloads of drolt's modules. LibTorch's Module::to(dtype) converts
// every parameter and buffer, integer counts and bool masks included, which
// breaks the next accumulate or sqrtn refresh: a drolt module converts only
// its floating-point state (Derived::convert_floating_state) and keeps the
// rest; to(device) moves everything as LibTorch's does.
#include <torch/torch.h>

#include "drolt/detail/checks.hpp"

namespace drolt {
namespace detail {

/// Base of CentroidBankImpl and RobustCentroidLossImpl. Derived provides
/// `static constexpr const char* kToName` ("drolt::CentroidBank::to", for errors) and
/// `void convert_floating_state(torch::Dtype, bool non_blocking)` (called under
/// NoGradGuard with a floating-point dtype).
template <typename Derived>
class FloatingStateModule : public torch::nn::Cloneable<Derived> {
 public:
  void to(torch::Dtype dtype, bool non_blocking = false) override {
    DROLT_CHECK(c10::isFloatingType(dtype), Derived::kToName,
                "expected a floating-point dtype, got ", dtype);
    torch::NoGradGuard no_grad;
    static_cast<Derived*>(this)->convert_floating_state(dtype, non_blocking);
  }
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override {
    to(device, non_blocking);
    to(dtype, non_blocking);
  }
  void to(torch::Device device, bool non_blocking = false) override {
    torch::nn::Module::to(device, non_blocking);
  }
};

}  // namespace detail
}  // namespace drolt
