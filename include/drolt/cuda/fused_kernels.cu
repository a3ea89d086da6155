// Fused CUDA forward and backward of the DRO-LT loss (docs/math.md).
//
// This file is compiled in the consumer's build: linking the CMake target
// drolt::cuda adds it to the consumer's target (docs/cuda.md). At static
// initialisation it registers its FusedKernels in detail::cuda_kernels_slot(),
// where the autograd function in loss.hpp looks for it.
//
// Layout of the work (every block has kThreads threads = kWarps warps):
//   batch normalization (rows are classes c present in the batch with a centroid)
//     forward        grid C  one block per class row: counts n_c and the first
//                            sample of c by scanning the labels, then one warp per
//                            sample computes ||z_i - mu_c||^2, the score and an
//                            online log-sum-exp; warps merge in a fixed order.
//   classes normalization (rows are samples, columns the valid classes)
//     forward        grid B  one warp per class, online LSE over the classes.
//   backward, both normalizations (the same two kernels, specialised by the
//   traits BatchBackward / ClassesBackward)
//     per class      grid C  recomputes class c's entries from the saved LSE:
//                            dL/deps_c and (optionally) dL/dmu_c.
//     per sample     grid B  dL/dz_i over the sample's partner classes (batch:
//                            the rows, each found at the first sample of its
//                            class; classes: the valid classes).
// Nothing of size [K, B] is ever stored: each entry's coefficient is recomputed
// where it is needed. Every sum runs in a fixed order (warp butterflies, warps
// merged in index order, chunks in index order), and every output element is
// written by exactly one block, so results are bitwise reproducible; there are
// no atomics.
//
// Saved for backward: batch {lse [C] (acc type), count [C] int32, first [C]
// int32}; classes {lse [B] (acc type)}. The loss vector and the saved LSE use
// the accumulation type (float32, float64 for float64 inputs), as does radii.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include <climits>
#include <cstdint>

#include "drolt/detail/checks.hpp"
#include "drolt/detail/fused_contract.hpp"
#include "drolt/detail/tile_math.hpp"

namespace drolt {
namespace detail {
namespace {

/// Prefix of the kernels' own errors (inputs the autograd function should never pass).
constexpr const char* kWhere = "drolt::robust_centroid_loss (CUDA kernels)";

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

/// Scalars every kernel needs, converted once to the accumulation type.
template <typename acc_t>
struct KernelParams {
  int64_t B;
  int64_t C;
  int64_t D;
  Distance dist;
  acc_t scale;       // distance = scale * base distance
  acc_t inv_tau;     // 1 / tau
  acc_t loss_scale;  // tau / tau_b
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  // A butterfly leaves the same bits in every lane: each step adds a pair of
  // values in both lanes of the pair, and addition is commutative.
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ int warp_min(int v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = min(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/// ||a - b||^2 over D entries, computed by one warp (every lane gets the result).
/// Differences are formed before squaring, so a feature equal to a centroid gives
/// exactly 0 and nearby pairs keep their precision.
template <typename T, typename acc_t>
__device__ __forceinline__ acc_t warp_squared_distance(const T* __restrict__ a,
                                                       const T* __restrict__ b, int64_t D,
                                                       int lane) {
  acc_t s = acc_t(0);
  for (int64_t d = lane; d < D; d += 32) {
    const acc_t t = static_cast<acc_t>(a[d]) - static_cast<acc_t>(b[d]);
    s += t * t;
  }
  return warp_sum(s);
}

/// One chunk of a backward kernel's row update, for the row this block owns:
///   out[d] = (first ? 0 : out[d]) - sum_{j < n} q[j] * (self[d] - partner(j)[d])
/// summed in index order; each thread owns columns tid, tid + kThreads, ...
/// Feature rows: self = z_i, partners = centroids. Centroid rows: self = mu_c,
/// partners = features, which gives + sum_j q[j] (z_j - mu_c).
template <typename T, typename acc_t, typename PartnerRow>
__device__ __forceinline__ void update_row(acc_t* __restrict__ out, const T* __restrict__ self,
                                           const acc_t* s_q, int n, int64_t D, bool first,
                                           PartnerRow partner) {
  for (int64_t d = threadIdx.x; d < D; d += kThreads) {
    const acc_t sd = static_cast<acc_t>(self[d]);
    acc_t acc = acc_t(0);
    for (int j = 0; j < n; ++j) {
      const acc_t q = s_q[j];
      if (q != acc_t(0)) acc += q * (sd - static_cast<acc_t>(partner(j)[d]));
    }
    out[d] = first ? -acc : out[d] - acc;
  }
}

/// A row whose entries do not depend on the loss (no zero-filled buffers).
template <typename acc_t>
__device__ __forceinline__ void zero_row(acc_t* __restrict__ out, int64_t D) {
  for (int64_t d = threadIdx.x; d < D; d += kThreads) out[d] = acc_t(0);
}

/// Merges the per-warp LSE states kept in shared memory, in warp order.
template <typename acc_t>
__device__ __forceinline__ acc_t merge_warp_lse(const acc_t* m, const acc_t* s) {
  OnlineLse<acc_t> total;
  for (int w = 0; w < kWarps; ++w) {
    OnlineLse<acc_t> part;
    part.m = m[w];
    part.s = s[w];
    total.merge(part);
  }
  return total.value();
}

// ------------------------------------------------------------------ batch normalization

template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    batch_forward_kernel(const T* __restrict__ z, const int64_t* __restrict__ y,
                         const T* __restrict__ mu, const acc_t* __restrict__ eps,
                         const bool* __restrict__ valid, KernelParams<acc_t> p,
                         acc_t* __restrict__ loss, acc_t* __restrict__ lse_out,
                         int* __restrict__ count_out, int* __restrict__ first_out) {
  const int64_t c = blockIdx.x;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  __shared__ int s_count[kWarps];
  __shared__ int s_first[kWarps];
  __shared__ acc_t s_m[kWarps];
  __shared__ acc_t s_s[kWarps];
  __shared__ acc_t s_pos[kWarps];

  // n_c and the first sample of class c, from the labels (no host round trip).
  int count = 0;
  int first = INT_MAX;
  for (int64_t i = tid; i < p.B; i += kThreads) {
    if (y[i] == c) {
      ++count;
      first = min(first, static_cast<int>(i));
    }
  }
  count = warp_sum(count);
  first = warp_min(first);
  if (lane == 0) {
    s_count[warp] = count;
    s_first[warp] = first;
  }
  __syncthreads();
  int n_c = 0;
  int first_c = INT_MAX;
  for (int w = 0; w < kWarps; ++w) {
    n_c += s_count[w];
    first_c = min(first_c, s_first[w]);
  }
  if (n_c == 0 || !valid[c]) {  // block-uniform: no row for this class
    if (tid == 0) {
      loss[c] = acc_t(0);
      lse_out[c] = tm_neg_inf<acc_t>();
      count_out[c] = 0;
      first_out[c] = -1;
    }
    return;
  }

  const T* mu_c = mu + c * p.D;
  const acc_t eps_c = eps[c];
  OnlineLse<acc_t> state;
  acc_t pos_sum = acc_t(0);
  for (int64_t i = warp; i < p.B; i += kWarps) {
    const acc_t d2 = warp_squared_distance<T, acc_t>(z + i * p.D, mu_c, p.D, lane);
    if (lane == 0) {
      const bool positive = y[i] == c;
      const acc_t s = tm_score_batch(tm_distance(d2, p.dist, p.scale), eps_c, positive, p.inv_tau);
      state.add(s);
      if (positive) pos_sum += s;
    }
  }
  if (lane == 0) {
    s_m[warp] = state.m;
    s_s[warp] = state.s;
    s_pos[warp] = pos_sum;
  }
  __syncthreads();
  if (tid == 0) {
    const acc_t lse = merge_warp_lse(s_m, s_s);
    acc_t pos_total = acc_t(0);
    for (int w = 0; w < kWarps; ++w) pos_total += s_pos[w];
    loss[c] = -p.loss_scale * (pos_total / static_cast<acc_t>(n_c) - lse);
    lse_out[c] = lse;
    count_out[c] = n_c;
    first_out[c] = first_c;
  }
}

// ------------------------------------------------------------------ classes normalization
// (Its forward kernel's prologue, thread indices and per-warp log-sum-exp
// state, looks like batch_forward_kernel's on purpose: the two forward kernels
// differ in what a row is and in what they save, and are kept as two kernels.)

template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    classes_forward_kernel(const T* __restrict__ z, const int64_t* __restrict__ y,
                           const T* __restrict__ mu, const acc_t* __restrict__ eps,
                           const bool* __restrict__ valid, KernelParams<acc_t> p,
                           acc_t* __restrict__ loss, acc_t* __restrict__ lse_out) {
  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  __shared__ acc_t s_m[kWarps];
  __shared__ acc_t s_s[kWarps];
  __shared__ acc_t s_pos;

  const int64_t y_i = y[i];
  if (!valid[y_i]) {  // block-uniform: the sample's class has no centroid
    if (tid == 0) {
      loss[i] = acc_t(0);
      lse_out[i] = tm_neg_inf<acc_t>();
    }
    return;
  }
  const T* z_i = z + i * p.D;
  OnlineLse<acc_t> state;
  for (int64_t c = warp; c < p.C; c += kWarps) {
    if (!valid[c]) continue;  // warp-uniform
    const acc_t d2 = warp_squared_distance<T, acc_t>(z_i, mu + c * p.D, p.D, lane);
    if (lane == 0) {
      const bool positive = c == y_i;
      const acc_t s =
          tm_score_classes(tm_distance(d2, p.dist, p.scale), eps[c], positive, p.inv_tau);
      state.add(s);
      if (positive) s_pos = s;  // exactly one lane of the block writes it
    }
  }
  if (lane == 0) {
    s_m[warp] = state.m;
    s_s[warp] = state.s;
  }
  __syncthreads();
  if (tid == 0) {
    const acc_t lse = merge_warp_lse(s_m, s_s);
    loss[i] = -p.loss_scale * (s_pos - lse);
    lse_out[i] = lse;
  }
}


// ------------------------------------------------------------------ backward, both normalizations
//
// The two normalizations differ only in which entries (class c, sample i)
// exist, in the score and its gradient, and in how dL/deps_c collects; the
// traits below say that, and the two kernels are written once. Per entry the
// arithmetic is the tile math of detail/tile_math.hpp, the same operations in
// the same order for both.

/// Batch normalization: rows are the classes present in the batch (count > 0).
/// Saved by the forward: lse [C], count [C], first [C] (first sample of c).
template <typename acc_t>
struct BatchBackward {
  const int64_t* y;
  const acc_t* grad_loss;
  const acc_t* lse;
  const int* count;
  const int* first;

  /// Whether class c is a row of the loss (else dL/deps_c = 0, dL/dmu_c = 0).
  __device__ __forceinline__ bool has_row(int64_t c) const { return count[c] > 0; }
  /// Whether sample i enters row c's terms (every sample does: it is in the softmax).
  __device__ __forceinline__ bool in_row(int64_t /*i*/) const { return true; }
  /// Whether sample i has loss terms (else dL/dz_i = 0).
  __device__ __forceinline__ bool has_terms(int64_t /*i*/) const { return true; }
  /// Partners of sample i in the features kernel: the rows, visited at their
  /// first sample, so each once and in batch order (n = B candidates).
  __device__ __forceinline__ int64_t num_candidates(const KernelParams<acc_t>& p) const { return p.B; }
  __device__ __forceinline__ bool candidate(int64_t jj, int64_t* c) const {
    *c = y[jj];
    return count[*c] > 0 && first[*c] == jj;
  }
  __device__ __forceinline__ acc_t score(acc_t dist, acc_t eps_c, bool positive, acc_t inv_tau) const {
    return tm_score_batch(dist, eps_c, positive, inv_tau);
  }
  __device__ __forceinline__ acc_t dscore(acc_t s, int64_t c, int64_t /*i*/, bool positive,
                                          const KernelParams<acc_t>& p) const {
    return tm_dscore_batch(s, lse[c], positive, grad_loss[c] * p.loss_scale,
                           acc_t(1) / static_cast<acc_t>(count[c]));
  }
  /// dL/deps_c = -2 / tau * sum over the positives of dL/ds.
  __device__ __forceinline__ void add_radius_term(acc_t& rad, acc_t g, bool positive) const {
    if (positive) rad += g;
  }
  __device__ __forceinline__ acc_t radius_gradient(acc_t total, const KernelParams<acc_t>& p) const {
    return acc_t(-2) * p.inv_tau * total;
  }
};

/// Classes normalization: rows are the samples whose class has a centroid,
/// columns the valid classes. Saved by the forward: lse [B]. (The same members
/// as BatchBackward on purpose: they are the interface the two kernels use.)
template <typename acc_t>
struct ClassesBackward {
  const int64_t* y;
  const acc_t* grad_loss;
  const acc_t* lse;
  const bool* valid;

  __device__ __forceinline__ bool has_row(int64_t c) const { return valid[c]; }
  __device__ __forceinline__ bool in_row(int64_t i) const { return valid[y[i]]; }
  __device__ __forceinline__ bool has_terms(int64_t i) const { return valid[y[i]]; }
  __device__ __forceinline__ int64_t num_candidates(const KernelParams<acc_t>& p) const { return p.C; }
  __device__ __forceinline__ bool candidate(int64_t jj, int64_t* c) const {
    *c = jj;
    return valid[jj];
  }
  __device__ __forceinline__ acc_t score(acc_t dist, acc_t eps_c, bool positive, acc_t inv_tau) const {
    return tm_score_classes(dist, eps_c, positive, inv_tau);
  }
  __device__ __forceinline__ acc_t dscore(acc_t s, int64_t /*c*/, int64_t i, bool positive,
                                          const KernelParams<acc_t>& p) const {
    return tm_dscore_classes(s, lse[i], positive, grad_loss[i] * p.loss_scale);
  }
  /// dL/deps_c = 1 / tau * (sum over negatives - sum over positives) of dL/ds.
  __device__ __forceinline__ void add_radius_term(acc_t& rad, acc_t g, bool positive) const {
    rad += positive ? -g : g;
  }
  __device__ __forceinline__ acc_t radius_gradient(acc_t total, const KernelParams<acc_t>& p) const {
    return p.inv_tau * total;
  }
};

/// One block per class c: dL/deps_c (always) and dL/dmu_c (when grad_mu is set;
/// grad_mu is a [C, D] buffer whose row c this block alone writes, all of it),
/// over the samples in chunks of kThreads.
template <typename T, typename acc_t, typename Norm>
__global__ void __launch_bounds__(kThreads)
    backward_classes_kernel(const T* __restrict__ z, const int64_t* __restrict__ y,
                            const T* __restrict__ mu, const acc_t* __restrict__ eps, Norm norm,
                            KernelParams<acc_t> p, acc_t* __restrict__ grad_eps,
                            acc_t* __restrict__ grad_mu) {
  const int64_t c = blockIdx.x;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  __shared__ acc_t s_q[kThreads];
  __shared__ acc_t s_rad[kWarps];

  if (!norm.has_row(c)) {  // no row: the loss does not depend on eps_c or mu_c
    if (tid == 0) grad_eps[c] = acc_t(0);
    if (grad_mu != nullptr) zero_row(grad_mu + c * p.D, p.D);
    return;
  }
  const T* mu_c = mu + c * p.D;
  const acc_t eps_c = eps[c];
  acc_t rad = acc_t(0);
  for (int64_t base = 0; base < p.B; base += kThreads) {
    const int n_chunk = static_cast<int>(min(static_cast<int64_t>(kThreads), p.B - base));
    for (int j = warp; j < n_chunk; j += kWarps) {
      const int64_t i = base + j;
      acc_t q = acc_t(0);
      if (norm.in_row(i)) {  // warp-uniform
        const acc_t d2 = warp_squared_distance<T, acc_t>(z + i * p.D, mu_c, p.D, lane);
        const bool positive = y[i] == c;
        const acc_t dist = tm_distance(d2, p.dist, p.scale);
        const acc_t s = norm.score(dist, eps_c, positive, p.inv_tau);
        const acc_t g = norm.dscore(s, c, i, positive, p);
        if (lane == 0) norm.add_radius_term(rad, g, positive);
        // dL/dmu_c += q * (z_i - mu_c), q = g * (d dist / d(z - mu) coefficient) / tau
        q = g * tm_dist_grad_coef(dist, p.dist, p.scale) * p.inv_tau;
      }
      if (lane == 0) s_q[j] = q;
    }
    __syncthreads();
    if (grad_mu != nullptr)  // the first chunk writes the row, later ones add
      update_row(grad_mu + c * p.D, mu_c, s_q, n_chunk, p.D, base == 0,
                 [&](int j) { return z + (base + j) * p.D; });
    __syncthreads();  // s_q is refilled by the next chunk
  }
  if (lane == 0) s_rad[warp] = rad;
  __syncthreads();
  if (tid == 0) {
    acc_t total = acc_t(0);
    for (int w = 0; w < kWarps; ++w) total += s_rad[w];
    grad_eps[c] = norm.radius_gradient(total, p);
  }
}

/// One block per sample i: dL/dz_i = -sum_c q[c, i] (z_i - mu_c) over the
/// sample's partner classes (Norm::candidate), chunk by chunk in a fixed order.
/// Block i writes all of row i of grad_z [B, D].
template <typename T, typename acc_t, typename Norm>
__global__ void __launch_bounds__(kThreads)
    backward_features_kernel(const T* __restrict__ z, const int64_t* __restrict__ y,
                             const T* __restrict__ mu, const acc_t* __restrict__ eps, Norm norm,
                             KernelParams<acc_t> p, acc_t* __restrict__ grad_z) {
  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  __shared__ acc_t s_q[kThreads];
  __shared__ int64_t s_row[kThreads];

  if (!norm.has_terms(i)) {  // no loss term for this sample: a zero row
    zero_row(grad_z + i * p.D, p.D);
    return;
  }
  const T* z_i = z + i * p.D;
  const int64_t y_i = y[i];
  const int64_t n = norm.num_candidates(p);
  for (int64_t base = 0; base < n; base += kThreads) {
    const int n_chunk = static_cast<int>(min(static_cast<int64_t>(kThreads), n - base));
    for (int j = warp; j < n_chunk; j += kWarps) {
      int64_t c = 0;
      acc_t q = acc_t(0);
      if (norm.candidate(base + j, &c)) {  // warp-uniform
        const acc_t d2 = warp_squared_distance<T, acc_t>(z_i, mu + c * p.D, p.D, lane);
        const bool positive = y_i == c;
        const acc_t dist = tm_distance(d2, p.dist, p.scale);
        const acc_t s = norm.score(dist, eps[c], positive, p.inv_tau);
        const acc_t g = norm.dscore(s, c, i, positive, p);
        q = g * tm_dist_grad_coef(dist, p.dist, p.scale) * p.inv_tau;
      }
      if (lane == 0) {
        s_q[j] = q;
        s_row[j] = c;
      }
    }
    __syncthreads();
    update_row(grad_z + i * p.D, z_i, s_q, n_chunk, p.D, base == 0,
               [&](int j) { return mu + s_row[j] * p.D; });
    __syncthreads();
  }
}

// ------------------------------------------------------------------ reduction weights

constexpr int kWeightThreads = 1024;
/// Classes whose presence flags fit in shared memory (one bit each, 40 KiB of
/// the 48 KiB a launch may take without opting in).
constexpr int64_t kMaxWeightClasses = int64_t(40) * 1024 * 8;

/// One block: the weights v of the mean / sum reduction (loss = sum_k v[k] l[k]).
/// batch: v[c] = w_c if class c is in the batch and has a centroid, else 0;
/// classes: v[i] = w_{y_i} if y_i has a centroid, else 0; w = class weights or 1.
/// For the mean, v is divided by its sum when that is positive. The sum runs in
/// a fixed order (per-thread strided partial sums, then warps in index order).
template <typename acc_t>
__global__ void __launch_bounds__(kWeightThreads)
    reduction_weights_kernel(const int64_t* __restrict__ y, const bool* __restrict__ valid,
                             const acc_t* __restrict__ w, int64_t B, int64_t C, bool batch,
                             bool mean, acc_t* __restrict__ out) {
  extern __shared__ unsigned int s_present[];  // batch: ceil(C / 32) words
  __shared__ acc_t s_sum[kWeightThreads / 32];
  const int tid = threadIdx.x;
  const int64_t K = batch ? C : B;
  if (batch) {
    const int64_t words = (C + 31) / 32;
    for (int64_t k = tid; k < words; k += kWeightThreads) s_present[k] = 0u;
    __syncthreads();
    for (int64_t i = tid; i < B; i += kWeightThreads) {
      const int64_t c = y[i];
      atomicOr(&s_present[c >> 5], 1u << (c & 31));
    }
    __syncthreads();
  }
  acc_t part = acc_t(0);
  for (int64_t k = tid; k < K; k += kWeightThreads) {
    acc_t v = acc_t(0);
    if (batch) {
      if (((s_present[k >> 5] >> (k & 31)) & 1u) && valid[k]) v = w != nullptr ? w[k] : acc_t(1);
    } else {
      const int64_t c = y[k];
      if (valid[c]) v = w != nullptr ? w[c] : acc_t(1);
    }
    out[k] = v;
    part += v;
  }
  if (!mean) return;
  part = warp_sum(part);
  if ((tid & 31) == 0) s_sum[tid >> 5] = part;
  __syncthreads();
  acc_t den = acc_t(0);
  for (int k = 0; k < kWeightThreads / 32; ++k) den += s_sum[k];
  if (den > acc_t(0))
    for (int64_t k = tid; k < K; k += kWeightThreads) out[k] = out[k] / den;
}

// ------------------------------------------------------------------ host side

template <typename acc_t>
KernelParams<acc_t> make_params(int64_t B, int64_t C, int64_t D, const FusedParams& fp) {
  KernelParams<acc_t> p;
  p.B = B;
  p.C = C;
  p.D = D;
  p.dist = fp.dist;
  p.scale = static_cast<acc_t>(fp.dist_scale);
  p.inv_tau = static_cast<acc_t>(1.0 / fp.temperature);
  p.loss_scale = static_cast<acc_t>(fp.temperature / fp.base_temperature);
  return p;
}

void check_inputs(const torch::Tensor& features, const torch::Tensor& labels,
                  const torch::Tensor& centroids, const torch::Tensor& radii,
                  const torch::Tensor& valid) {
  DROLT_CHECK(features.is_cuda(), kWhere, "features must be a CUDA tensor, got ",
              features.device());
  DROLT_CHECK(features.dim() == 2 && centroids.dim() == 2 && features.size(1) == centroids.size(1), kWhere, "expected features [B, D] and centroids [C, D], got ",
              features.sizes(), " and ", centroids.sizes());
  DROLT_CHECK(features.size(0) < INT_MAX, kWhere, "batch too large (", features.size(0),
              ")");
  DROLT_CHECK(labels.scalar_type() == torch::kInt64 && valid.scalar_type() == torch::kBool, kWhere, "expected int64 labels and a bool valid mask");
  DROLT_CHECK(centroids.scalar_type() == features.scalar_type(), kWhere, "centroids must have the dtype of features (",
              features.scalar_type(), "), got ", centroids.scalar_type());
  DROLT_CHECK(features.is_contiguous() && centroids.is_contiguous() && labels.is_contiguous() &&
                  radii.is_contiguous() && valid.is_contiguous(), kWhere, "inputs must be contiguous");
}

template <typename acc_t>
void check_acc_dtype(const torch::Tensor& t, const char* what) {
  constexpr auto expected = c10::CppTypeToScalarType<acc_t>::value;
  DROLT_CHECK(t.scalar_type() == expected, kWhere, what, " must be ", expected,
              " for these features, got ", t.scalar_type());
}

/// Raw pointers and kernel scalars of one call, for the dispatched dtype.
template <typename scalar_t, typename acc_t>
struct DeviceInputs {
  const scalar_t* z;
  const scalar_t* mu;
  const int64_t* y;
  const acc_t* eps;
  const bool* v;
  KernelParams<acc_t> p;
  torch::TensorOptions acc_opts;  // accumulation-type tensors on the features' device
};

template <typename scalar_t, typename acc_t>
DeviceInputs<scalar_t, acc_t> device_inputs(const torch::Tensor& features,
                                            const torch::Tensor& labels,
                                            const torch::Tensor& centroids,
                                            const torch::Tensor& radii, const torch::Tensor& valid,
                                            const FusedParams& params) {
  check_acc_dtype<acc_t>(radii, "radii");
  DeviceInputs<scalar_t, acc_t> in;
  in.z = features.data_ptr<scalar_t>();
  in.mu = centroids.data_ptr<scalar_t>();
  in.y = labels.data_ptr<int64_t>();
  in.eps = radii.data_ptr<acc_t>();
  in.v = valid.data_ptr<bool>();
  in.p = make_params<acc_t>(features.size(0), centroids.size(0), features.size(1), params);
  in.acc_opts = features.options().dtype(radii.scalar_type());
  return in;
}

FusedForwardResult cuda_forward(const torch::Tensor& features, const torch::Tensor& labels,
                                const torch::Tensor& centroids, const torch::Tensor& radii,
                                const torch::Tensor& valid, const FusedParams& params) {
  check_inputs(features, labels, centroids, radii, valid);
  const c10::cuda::CUDAGuard guard(features.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t B = features.size(0);
  const int64_t C = centroids.size(0);
  const auto int_opts = features.options().dtype(torch::kInt32);
  FusedForwardResult out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "drolt_fused_forward_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
        const auto in =
            device_inputs<scalar_t, acc_t>(features, labels, centroids, radii, valid, params);
        if (params.norm == Normalization::batch) {
          auto loss = torch::empty({C}, in.acc_opts);
          auto lse = torch::empty({C}, in.acc_opts);
          auto count = torch::empty({C}, int_opts);
          auto first = torch::empty({C}, int_opts);
          if (C > 0) {
            batch_forward_kernel<scalar_t, acc_t>
                <<<static_cast<unsigned>(C), kThreads, 0, stream>>>(
                    in.z, in.y, in.mu, in.eps, in.v, in.p, loss.data_ptr<acc_t>(),
                    lse.data_ptr<acc_t>(), count.data_ptr<int>(), first.data_ptr<int>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
          out.loss = loss;
          out.saved = {lse, count, first};
        } else {
          auto loss = torch::empty({B}, in.acc_opts);
          auto lse = torch::empty({B}, in.acc_opts);
          if (B > 0) {
            classes_forward_kernel<scalar_t, acc_t>
                <<<static_cast<unsigned>(B), kThreads, 0, stream>>>(in.z, in.y, in.mu, in.eps, in.v,
                                                                    in.p, loss.data_ptr<acc_t>(),
                                                                    lse.data_ptr<acc_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
          out.loss = loss;
          out.saved = {lse};
        }
      });
  return out;
}

FusedBackwardResult cuda_backward(const torch::Tensor& grad_loss_in, const torch::Tensor& features,
                                  const torch::Tensor& labels, const torch::Tensor& centroids,
                                  const torch::Tensor& radii, const torch::Tensor& valid,
                                  const std::vector<torch::Tensor>& saved,
                                  const FusedParams& params) {
  check_inputs(features, labels, centroids, radii, valid);
  const c10::cuda::CUDAGuard guard(features.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t B = features.size(0);
  const int64_t D = features.size(1);
  const int64_t C = centroids.size(0);
  // The gradient of a mean or sum reduction arrives expanded (stride 0).
  const torch::Tensor grad_loss = grad_loss_in.to(radii.scalar_type()).contiguous();
  const bool batch = params.norm == Normalization::batch;
  DROLT_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == (batch ? C : B), kWhere, "grad_loss must have the shape of the loss vector, got ",
              grad_loss.sizes());
  DROLT_CHECK(saved.size() == (batch ? 3u : 1u), kWhere, "saved tensors do not come from this backend's forward");
  FusedBackwardResult out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "drolt_fused_backward_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
        const auto in =
            device_inputs<scalar_t, acc_t>(features, labels, centroids, radii, valid, params);
        const acc_t* gl = grad_loss.data_ptr<acc_t>();
        const acc_t* lse = saved[0].data_ptr<acc_t>();
        // Accumulators in the accumulation type; each row is owned by one block,
        // which writes all of it (no zero fill).
        auto grad_z = torch::empty({B, D}, in.acc_opts);
        auto grad_eps = torch::empty({C}, in.acc_opts);
        torch::Tensor grad_mu;
        if (params.centroid_grad) grad_mu = torch::empty({C, D}, in.acc_opts);
        acc_t* grad_mu_ptr = params.centroid_grad ? grad_mu.data_ptr<acc_t>() : nullptr;
        // The same two kernels for both normalizations, specialised by their traits.
        auto launch = [&](auto norm) {
          if (C > 0) {
            backward_classes_kernel<scalar_t, acc_t>
                <<<static_cast<unsigned>(C), kThreads, 0, stream>>>(
                    in.z, in.y, in.mu, in.eps, norm, in.p, grad_eps.data_ptr<acc_t>(), grad_mu_ptr);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
          if (B > 0) {
            backward_features_kernel<scalar_t, acc_t>
                <<<static_cast<unsigned>(B), kThreads, 0, stream>>>(in.z, in.y, in.mu, in.eps, norm,
                                                                    in.p, grad_z.data_ptr<acc_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        };
        if (batch) {
          launch(BatchBackward<acc_t>{in.y, gl, lse, saved[1].data_ptr<int>(), saved[2].data_ptr<int>()});
        } else {
          launch(ClassesBackward<acc_t>{in.y, gl, lse, in.v});
        }
        out.grad_features = grad_z.to(features.scalar_type());
        if (params.centroid_grad) out.grad_centroids = grad_mu.to(centroids.scalar_type());
        out.grad_radii = grad_eps;
      });
  return out;
}

torch::Tensor cuda_reduction_weights(const torch::Tensor& labels, const torch::Tensor& valid,
                                     const torch::Tensor& class_weights, Normalization norm, bool mean,
                                     int64_t num_classes, c10::ScalarType dtype) {
  const bool batch = norm == Normalization::batch;
  // Outside these limits the caller composes LibTorch ops.
  if ((batch && num_classes > kMaxWeightClasses) ||
      (dtype != torch::kFloat && dtype != torch::kDouble) ||
      (class_weights.defined() && class_weights.scalar_type() != dtype))
    return {};
  DROLT_CHECK(labels.is_cuda() && labels.scalar_type() == torch::kInt64 &&
                  valid.scalar_type() == torch::kBool && valid.numel() == num_classes, kWhere, "reduction weights need int64 labels and a bool mask of ",
              num_classes, " classes");
  const c10::cuda::CUDAGuard guard(labels.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  auto y = labels.contiguous();
  auto v = valid.contiguous();
  auto w = class_weights.defined() ? class_weights.contiguous() : torch::Tensor();
  const int64_t B = y.size(0);
  const int64_t K = batch ? num_classes : B;
  auto out = torch::empty({K}, labels.options().dtype(dtype));
  if (K == 0) return out;
  const size_t shared = batch ? static_cast<size_t>((num_classes + 31) / 32) * sizeof(unsigned) : 0;
  AT_DISPATCH_FLOATING_TYPES(dtype, "drolt_reduction_weights_cuda", [&] {
    reduction_weights_kernel<scalar_t><<<1, kWeightThreads, shared, stream>>>(
        y.data_ptr<int64_t>(), v.data_ptr<bool>(), w.defined() ? w.data_ptr<scalar_t>() : nullptr,
        B, num_classes, batch, mean, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

const FusedKernels kCudaKernels{&cuda_forward, &cuda_backward, &cuda_reduction_weights};
const CudaRegistrar kCudaRegistrar{&kCudaKernels};

}  // namespace
}  // namespace detail
}  // namespace drolt
