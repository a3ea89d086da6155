#pragma once

/// \file drolt/detail/seen_tensor.hpp
/// A cheap "has this tensor been written since?" test, so that a value read
/// from a tensor (which may sit on a GPU: a host synchronisation) is read again
/// only when it can have changed.

#include <torch/torch.h>

#include <cstdint>

namespace drolt {
namespace detail {

/// Remembers one tensor: its TensorImpl, its storage and storage offset, and its
/// version counter. same(t) is true only for that very tensor, unwritten since:
/// in-place ops (copy_, add_, ...) bump the version, and Module::load and to()
/// swap the storage. Both the tensor and its storage are held, so neither
/// address can be reused by another tensor while remembered.
class SeenTensor {
 public:
  bool same(const torch::Tensor& t) const {
    return t_.defined() && t.defined() && t_.unsafeGetTensorImpl() == t.unsafeGetTensorImpl() &&
           storage_.unsafeGetStorageImpl() == t.storage().unsafeGetStorageImpl() &&
           offset_ == t.storage_offset() && version_ == t._version();
  }
  void remember(const torch::Tensor& t) {
    t_ = t;
    storage_ = t.storage();
    offset_ = t.storage_offset();
    version_ = t._version();
  }
  void forget() {
    t_ = torch::Tensor();
    storage_ = c10::Storage();
  }

 private:
  torch::Tensor t_;
  c10::Storage storage_;
  int64_t offset_ = 0;
  int64_t version_ = -1;
};

}  // namespace detail
}  // namespace drolt
