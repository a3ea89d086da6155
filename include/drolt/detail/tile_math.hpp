#pragma once
// Per-entry math shared by the fused CPU path and the CUDA kernels.
// Everything here is __host__ __device__ so the CPU tests exercise exactly the
// code the GPU runs (tests/test_cuda.cpp, tagged [tile_math], runs them on the CPU).
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DROLT_HD __host__ __device__ __forceinline__
#else
#define DROLT_HD inline
#endif

namespace drolt {
namespace detail {

/// Base distances the fused paths compute. Cosine is evaluated as
/// 0.5 * squared Euclidean distance between L2-normalised vectors.
enum class DistKind : int { euclidean = 0, squared = 1 };
/// Which axis the softmax runs over: the batch (the paper's Eq. 18) or the classes.
enum class NormKind : int { batch = 0, classes = 1 };

template <typename T>
DROLT_HD T tm_neg_inf() {
  return -static_cast<T>(INFINITY);
}

// exp / log / sqrt in the argument's precision: on the host an unqualified
// exp(float) would call the double ::exp; in device code CUDA's overloads apply.
template <typename T>
DROLT_HD T tm_exp(T x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  return std::exp(x);
#endif
}
template <typename T>
DROLT_HD T tm_log(T x) {
#if defined(__CUDA_ARCH__)
  return log(x);
#else
  return std::log(x);
#endif
}
template <typename T>
DROLT_HD T tm_sqrt(T x) {
#if defined(__CUDA_ARCH__)
  return sqrt(x);
#else
  return std::sqrt(x);
#endif
}

/// Distance from a squared Euclidean distance. A slightly negative d2 (rounding
/// in |z|^2 + |mu|^2 - 2 z.mu) is clamped to 0; NaN passes through, so a
/// non-finite feature gives a NaN loss rather than a silently wrong one.
template <typename T>
DROLT_HD T tm_distance(T d2, DistKind kind, T scale) {
  d2 = d2 < T(0) ? T(0) : d2;
  return kind == DistKind::euclidean ? scale * tm_sqrt(d2) : scale * d2;
}

/// Coefficient k such that d(dist)/dz = k * (z - mu). Zero where the Euclidean
/// distance is zero (the derivative of ||z - mu|| is undefined there; we use 0 as
/// torch::cdist does), so a feature equal to a centroid never yields NaN.
template <typename T>
DROLT_HD T tm_dist_grad_coef(T dist, DistKind kind, T scale) {
  if (kind == DistKind::euclidean) {
    return dist > T(0) ? scale * scale / dist : T(0);  // scale*(z-mu)/||z-mu||, dist = scale*||.||
  }
  return T(2) * scale;
}

/// Score of entry (row class c, sample i) in the "batch" normalization:
/// s = (-d - 2 eps_c [y_i == c]) / tau.
template <typename T>
DROLT_HD T tm_score_batch(T dist, T eps_c, bool positive, T inv_tau) {
  return (-dist - (positive ? T(2) * eps_c : T(0))) * inv_tau;
}

/// Score of entry (sample i, class c) in the "classes" normalization:
/// s = (-d - eps_c [y_i == c] + eps_c [y_i != c]) / tau.
template <typename T>
DROLT_HD T tm_score_classes(T dist, T eps_c, bool positive, T inv_tau) {
  return (-dist + (positive ? -eps_c : eps_c)) * inv_tau;
}

/// Online log-sum-exp: running maximum m and running sum s of exp(x - m).
template <typename T>
struct OnlineLse {
  T m;
  T s;
  DROLT_HD OnlineLse() : m(tm_neg_inf<T>()), s(T(0)) {}
  DROLT_HD void add(T x) {
    if (x > m) {
      s = s * tm_exp(m - x) + T(1);
      m = x;
    } else {
      s += tm_exp(x - m);
    }
  }
  /// Merge another partial state (used for parallel reductions).
  DROLT_HD void merge(const OnlineLse& o) {
    if (o.m == tm_neg_inf<T>()) return;
    if (m == tm_neg_inf<T>()) {
      m = o.m;
      s = o.s;
      return;
    }
    if (o.m > m) {
      s = s * tm_exp(m - o.m) + o.s;
      m = o.m;
    } else {
      s += o.s * tm_exp(o.m - m);
    }
  }
  DROLT_HD T value() const { return m == tm_neg_inf<T>() ? m : m + tm_log(s); }
};

/// dL/ds for one entry of the "batch" normalization:
/// a_c * (p - [positive] / n_c), p = exp(s - lse).
template <typename T>
DROLT_HD T tm_dscore_batch(T score, T lse, bool positive, T a_c, T inv_n_c) {
  const T p = tm_exp(score - lse);
  return a_c * (p - (positive ? inv_n_c : T(0)));
}

/// dL/ds for one entry of the "classes" normalization: b_i * (p - [positive]).
template <typename T>
DROLT_HD T tm_dscore_classes(T score, T lse, bool positive, T b_i) {
  const T p = tm_exp(score - lse);
  return b_i * (p - (positive ? T(1) : T(0)));
}

}  // namespace detail
}  // namespace drolt
