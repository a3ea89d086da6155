#pragma once
// The one way drolt words its errors, and the label-range check every entry
// point shares. A message reads "<where>: expected <what>, got <what was given>",
// <where> being the public function or class the caller used
// ("drolt::robust_centroid_loss", "drolt::CentroidBank::accumulate").
#include <torch/torch.h>

#include <cstdint>
#include <sstream>
#include <string>

/// TORCH_CHECK with drolt's prefix: DROLT_CHECK(ok, where, "expected ..., got ", x).
#define DROLT_CHECK(cond, where, ...) TORCH_CHECK(cond, where, ": ", __VA_ARGS__)

namespace drolt {
namespace detail {

/// "[2, 3]": a tensor's shape for an error message.
inline std::string describe(const torch::Tensor& t) {
  std::ostringstream o;
  o << t.sizes();
  return o.str();
}

/// Refuses labels whose smallest value `lo` or largest `hi` leaves [0, num_classes):
/// "<where>: expected <what> in [0, C), got values in [lo, hi]".
inline void check_label_bounds(int64_t lo, int64_t hi, int64_t num_classes,
                               const std::string& where, const char* what = "labels") {
  DROLT_CHECK(lo >= 0 && hi < num_classes, where, "expected ", what, " in [0, ", num_classes,
              "), got values in [", lo, ", ", hi, "]");
}

/// check_label_bounds for integer labels on any device (one min and one max: a
/// device synchronisation off the CPU). An empty tensor passes.
inline void check_label_range(const torch::Tensor& labels, int64_t num_classes,
                              const std::string& where, const char* what = "labels") {
  if (labels.numel() == 0) return;
  check_label_bounds(labels.min().item<int64_t>(), labels.max().item<int64_t>(), num_classes, where,
                     what);
}

}  // namespace detail
}  // namespace drolt
