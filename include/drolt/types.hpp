#pragma once
// The choices drolt's loss is parametrised by, one enum per concept. The same
// enums reach the fused CPU path, the CUDA kernels (drolt/detail/tile_math.hpp
// is compiled by nvcc too, so nothing here needs LibTorch) and the metrics.

namespace drolt {

/// Axis of the softmax: over the batch (the paper's Eq. 18, default) or over
/// the class centroids (docs/math.md, "Normalization::classes").
enum class Normalization : int { batch = 0, classes = 1 };

/// Distance between a feature and a centroid. Cosine is 1 - cos(z, mu). The
/// fused paths compute only euclidean and squared_euclidean: cosine reaches
/// them as 0.5 * squared_euclidean between L2-normalised vectors.
enum class Distance : int { euclidean = 0, squared_euclidean = 1, cosine = 2 };

/// Which implementation computes the loss. `automatic` picks the fused path
/// (CPU float32/float64; CUDA when drolt::cuda is linked) and the reference
/// composition of LibTorch ops otherwise.
enum class Backend : int { automatic = 0, reference = 1, fused = 2 };

inline const char* to_string(Normalization n) {
  return n == Normalization::batch ? "batch" : "classes";
}
inline const char* to_string(Distance d) {
  return d == Distance::euclidean           ? "euclidean"
         : d == Distance::squared_euclidean ? "squared_euclidean"
                                            : "cosine";
}

}  // namespace drolt
