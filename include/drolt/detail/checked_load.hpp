#pragma once
// Module::load with the module's own expectations: LibTorch's load replaces each
// parameter and buffer by whatever the archive holds (another shape, another
// dtype) without a word, so a bank saved with 10 classes would load into one
// built for 100 and report 100 while holding 10. drolt's modules check what was
// read against their options and, on a mismatch, restore what they held and
// throw.
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace drolt {
namespace detail {

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  c10::optional<torch::ScalarType> dtype;  // nullopt: any floating dtype
};

/// Runs `load` (the base Module::load) and checks every named parameter / buffer
/// against `expected`; on failure the module gets its previous tensors back.
template <typename LoadFn>
void checked_load(torch::nn::Module& m, const std::vector<ExpectedTensor>& expected,
                  const char* who, LoadFn&& load) {
  auto find = [&](const std::string& name) -> torch::Tensor {
    for (auto& p : m.named_parameters(/*recurse=*/false))
      if (p.key() == name) return p.value();
    for (auto& b : m.named_buffers(/*recurse=*/false))
      if (b.key() == name) return b.value();
    return torch::Tensor();
  };
  // Aliases of the current storage: Module::load rebinds the tensors (set_ or
  // set_data), so these keep the old contents for a rollback at no copying cost.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> before;
  for (const auto& e : expected) {
    auto t = find(e.name);
    if (t.defined()) before.emplace_back(t, t.detach());
  }
  auto rollback = [&] {
    torch::NoGradGuard g;
    for (auto& pr : before) pr.first.set_data(pr.second);  // set_data: also across devices
  };
  try {
    load();
  } catch (...) {
    rollback();
    throw;
  }
  for (const auto& e : expected) {
    auto t = find(e.name);
    const bool shape_ok = t.defined() && t.sizes() == c10::IntArrayRef(e.shape);
    const bool dtype_ok =
        t.defined() && (e.dtype ? t.scalar_type() == *e.dtype : c10::isFloatingType(t.scalar_type()));
    if (shape_ok && dtype_ok) continue;
    std::ostringstream want, got;
    want << c10::IntArrayRef(e.shape) << " " << (e.dtype ? c10::toString(*e.dtype) : "floating");
    if (t.defined())
      got << t.sizes() << " " << t.scalar_type();
    else
      got << "nothing";
    rollback();
    TORCH_CHECK(false, who, "::load: the archive does not fit this module: expected '", e.name,
                "' of shape ", want.str(), " (from the module's options), got ", got.str(),
                " (saved with another number of classes, dimension or dtype?)");
  }
}

}  // namespace detail
}  // namespace drolt
