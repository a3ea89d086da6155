#pragma once
// Per-entry math of the fused paths. The CUDA kernels compute every entry with
// it; the fused CPU path (detail/cpu_fused.hpp) uses it where it works entry by
// entry (the online log-sum-exp and the scores and score gradients of the
// classes normalization) and vectorisable loops over whole rows elsewhere.
// Everything here is __host__ __device__, so the CPU tests exercise exactly
// the code the GPU runs (tests/test_tile_math.cpp, tag [tile_math]).
#include <cmath>
#include <cstdint>

#include "drolt/types.hpp"

#if defined(__CUDACC__)
#define DROLT_HD __host__ __device__ __forceinline__
#else
#define DROLT_HD inline
#endif

namespace drolt {
namespace detail {


template <typename T>
DROLT_HD T tm_neg_inf() {
  return -static_cast<T>(INFINITY);
}

// exp / log / sqrt in the argument's precision: on the host an unqualified
// exp(float) would call the double ::exp; in device code CUDA's overloads apply.
#if defined(__CUDA_ARCH__)
#define DROLT_TM_UNARY(name) \
  template <typename T>      \
  DROLT_HD T tm_##name(T x) { return name(x); }
#else
#define DROLT_TM_UNARY(name) \
  template <typename T>      \
  DROLT_HD T tm_##name(T x) { return std::name(x); }
#endif
DROLT_TM_UNARY(exp)
DROLT_TM_UNARY(log)
DROLT_TM_UNARY(sqrt)
#undef DROLT_TM_UNARY

/// Distance from a squared Euclidean distance: the Euclidean distance for
/// Distance::euclidean, d2 itself otherwise (the fused paths see only euclidean
/// and squared_euclidean; cosine arrives as a scaled squared distance). A
/// slightly negative d2 (rounding in |z|^2 + |mu|^2 - 2 z.mu) is clamped to 0; NaN passes through, so a
/// non-finite feature gives a NaN loss rather than a silently wrong one.
template <typename T>
DROLT_HD T tm_distance(T d2, Distance kind, T scale) {
  d2 = d2 < T(0) ? T(0) : d2;
  return kind == Distance::euclidean ? scale * tm_sqrt(d2) : scale * d2;
}

/// Coefficient k such that d(dist)/dz = k * (z - mu). Zero where the Euclidean
/// distance is zero (the derivative of ||z - mu|| is undefined there; we use 0 as
/// torch::cdist does), so a feature equal to a centroid never yields NaN.
template <typename T>
DROLT_HD T tm_dist_grad_coef(T dist, Distance kind, T scale) {
  if (kind == Distance::euclidean) {
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
