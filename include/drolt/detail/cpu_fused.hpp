#pragma once
// The fast CPU path: one matrix product for all distances, then per-row
// log-sum-exp and analytic gradients (docs/math.md, "Gradients") with two more matrix
// products in backward.
//
// Precision: inputs are centred on the mean of the used centroids before
// |z|^2 + |mu|^2 - 2 z.mu is formed, which removes the large common component
// of real features; entries that still lose precision to cancellation ("near"
// pairs, where a feature sits close to a centroid) are recomputed exactly from
// the differences, in values and in gradients.
//
// Speed: at the sizes of a training step (K, B ~ 100) LibTorch's per-op
// overhead would dominate, so everything but the matrix products and one
// vectorised exp is a plain loop written so the compiler can vectorise it.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "drolt/detail/fused_contract.hpp"
#include "drolt/detail/tile_math.hpp"

namespace drolt {
namespace detail {
namespace cpu {

/// Below this fraction of |z'|^2 + |mu'|^2 the expanded squared distance is
/// recomputed from the differences (float32 keeps ~1e-6 relative accuracy above it).
template <typename T>
constexpr double near_fraction() {
  return sizeof(T) == 4 ? 0.1 : 1e-4;
}

/// Rows per parallel chunk: about 32k entries, below which threads cost more than they save.
inline int64_t row_grain(int64_t B) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(B, 1)); }

struct Layout {
  std::vector<int64_t> counts;  // per class, from the labels
  std::vector<int64_t> rows;    // class of each row
};

inline Layout make_layout(const torch::Tensor& labels, const torch::Tensor& valid,
                          int64_t num_classes, Normalization norm) {
  Layout out;
  out.counts.assign(num_classes, 0);
  const int64_t* y = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.size(0); ++i) ++out.counts[y[i]];
  const bool* v = valid.data_ptr<bool>();
  for (int64_t c = 0; c < num_classes; ++c) {
    const bool used = norm == Normalization::batch ? (out.counts[c] > 0 && v[c]) : v[c];
    if (used) out.rows.push_back(c);
  }
  return out;
}

/// The samples of each row's class, grouped by row (CSR): row k's positives are
/// index[start[k] .. start[k + 1]). O(B) in all, so margins and positive sums
/// never scan the whole [K, B] matrix.
struct Positives {
  std::vector<int64_t> start;
  std::vector<int64_t> index;
};

inline Positives positives(const torch::Tensor& labels, int64_t num_classes,
                           const std::vector<int64_t>& rows) {
  const int64_t K = static_cast<int64_t>(rows.size()), B = labels.size(0);
  std::vector<int64_t> row_of(num_classes, -1);
  for (int64_t k = 0; k < K; ++k) row_of[rows[k]] = k;
  const int64_t* y = labels.data_ptr<int64_t>();
  Positives out;
  out.start.assign(K + 1, 0);
  for (int64_t i = 0; i < B; ++i)
    if (row_of[y[i]] >= 0) ++out.start[row_of[y[i]] + 1];
  for (int64_t k = 0; k < K; ++k) out.start[k + 1] += out.start[k];
  out.index.resize(out.start[K]);
  std::vector<int64_t> fill(out.start.begin(), out.start.end() - 1);
  for (int64_t i = 0; i < B; ++i)
    if (row_of[y[i]] >= 0) out.index[fill[row_of[y[i]]]++] = i;
  return out;
}

/// Centred features and row centroids, the [K, B] distances, and the entries
/// that were recomputed exactly.
struct Geometry {
  torch::Tensor zc;    // [B, D] features minus the centre
  torch::Tensor muc;   // [K, D] row centroids minus the centre
  torch::Tensor dist;  // [K, B] distance (scaled)
  torch::Tensor near;  // [n] int64 flat indices k * B + i of near pairs
};

template <typename T>
std::vector<T> row_sq_norms(const T* x, int64_t n, int64_t D) {
  std::vector<T> out(n);
  for (int64_t r = 0; r < n; ++r) {
    T acc = T(0);
    for (int64_t d = 0; d < D; ++d) acc += x[r * D + d] * x[r * D + d];
    out[r] = acc;
  }
  return out;
}

template <typename T>
Geometry make_geometry(const torch::Tensor& z, const torch::Tensor& mu,
                       const std::vector<int64_t>& rows, const FusedParams& p) {
  Geometry g;
  const int64_t K = static_cast<int64_t>(rows.size()), B = z.size(0), D = z.size(1);
  const T* zin = z.template data_ptr<T>();
  const T* min = mu.template data_ptr<T>();
  std::vector<double> center(D, 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t d = 0; d < D; ++d) center[d] += static_cast<double>(min[rows[k] * D + d]);
  std::vector<T> c(D);
  for (int64_t d = 0; d < D; ++d) c[d] = static_cast<T>(center[d] / static_cast<double>(K));
  g.zc = torch::empty({B, D}, z.options());
  g.muc = torch::empty({K, D}, z.options());
  T* zp = g.zc.template data_ptr<T>();
  T* mp = g.muc.template data_ptr<T>();
  for (int64_t i = 0; i < B; ++i)
    for (int64_t d = 0; d < D; ++d) zp[i * D + d] = zin[i * D + d] - c[d];
  for (int64_t k = 0; k < K; ++k)
    for (int64_t d = 0; d < D; ++d) mp[k * D + d] = min[rows[k] * D + d] - c[d];
  const std::vector<T> zz = row_sq_norms(zp, B, D), mm = row_sq_norms(mp, K, D);

  g.dist = torch::mm(g.muc, g.zc.t());  // z.mu, turned into squared distances below
  T* dp = g.dist.template data_ptr<T>();
  const T frac = static_cast<T>(near_fraction<T>());
  std::vector<std::vector<int64_t>> near_rows(K);
  at::parallel_for(0, K, row_grain(B), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      T* row = dp + k * B;
      const T mk = mm[k];
      for (int64_t i = 0; i < B; ++i) row[i] = mk + zz[i] - T(2) * row[i];
      int64_t n_near = 0;  // vectorised count first: most rows have no near pair
      for (int64_t i = 0; i < B; ++i) n_near += !(row[i] > frac * (mk + zz[i]));
      for (int64_t i = 0; i < B && n_near > 0; ++i) {
        if (row[i] > frac * (mk + zz[i])) continue;
        // Close pair (or NaN input): exact squared distance from differences.
        double acc = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          const double diff =
              static_cast<double>(zp[i * D + d]) - static_cast<double>(mp[k * D + d]);
          acc += diff * diff;
        }
        row[i] = static_cast<T>(acc);
        near_rows[k].push_back(k * B + i);
      }
      for (int64_t i = 0; i < B; ++i) row[i] = row[i] < T(0) ? T(0) : row[i];  // NaN passes
    }
  });
  if (p.dist == Distance::euclidean) g.dist.sqrt_();  // vectorised by ATen
  if (p.dist_scale != 1.0) g.dist.mul_(p.dist_scale);
  std::vector<int64_t> near;
  for (const auto& r : near_rows) near.insert(near.end(), r.begin(), r.end());
  g.near = torch::tensor(near, torch::kLong);
  return g;
}

// ---------------------------------------------------------------- forward

template <typename T>
FusedForwardResult forward_impl(const torch::Tensor& z, const torch::Tensor& labels,
                                const torch::Tensor& mu, const torch::Tensor& radii,
                                const torch::Tensor& valid, const FusedParams& p) {
  const int64_t B = z.size(0), C = mu.size(0);
  const Layout lay = make_layout(labels, valid, C, p.norm);
  const int64_t K = static_cast<int64_t>(lay.rows.size());
  const int64_t out_len = p.norm == Normalization::batch ? C : B;
  auto loss = torch::zeros({out_len}, radii.options());
  if (K == 0) return {loss, {}};

  auto geo = make_geometry<T>(z, mu, lay.rows, p);
  const T* dist = geo.dist.template data_ptr<T>();
  const int64_t* y = labels.data_ptr<int64_t>();
  const T* eps = radii.data_ptr<T>();
  T* out = loss.data_ptr<T>();
  const T inv_tau = static_cast<T>(1.0 / p.temperature);
  const T ratio = static_cast<T>(p.temperature / p.base_temperature);

  if (p.norm == Normalization::batch) {
    const Positives pos = positives(labels, C, lay.rows);
    // Scores minus the row maximum, exponentiated in one vectorised op, then
    // normalised in place: the softmax P over the batch, kept for backward.
    auto P = torch::empty({K, B}, z.options());
    T* pp = P.template data_ptr<T>();
    std::vector<T> mx(K);
    at::parallel_for(0, K, row_grain(B), [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c = lay.rows[k];
        const T* drow = dist + k * B;
        T* srow = pp + k * B;
        const T margin = T(2) * eps[c] * inv_tau;
        T m = tm_neg_inf<T>(), pos_sum = T(0);
        for (int64_t i = 0; i < B; ++i) srow[i] = -drow[i] * inv_tau;
        // The margin goes to the entries of the row's own class, and only there.
        for (int64_t e = pos.start[k]; e < pos.start[k + 1]; ++e) {
          srow[pos.index[e]] -= margin;
          pos_sum += srow[pos.index[e]];
        }
        for (int64_t i = 0; i < B; ++i) m = srow[i] > m ? srow[i] : m;
        if (!(m > tm_neg_inf<T>())) m = T(0);  // all -inf or NaN: keep NaN visible below
        for (int64_t i = 0; i < B; ++i) srow[i] -= m;
        mx[k] = m;
        out[c] = pos_sum;  // finished below, once the log-sum-exp is known
      }
    });
    P.exp_();
    at::parallel_for(0, K, row_grain(B), [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c = lay.rows[k];
        T* prow = pp + k * B;
        T se = T(0);
        for (int64_t i = 0; i < B; ++i) se += prow[i];
        const T inv = T(1) / se;
        for (int64_t i = 0; i < B; ++i) prow[i] *= inv;
        const T lse = mx[k] + tm_log(se);
        out[c] = -ratio * (out[c] / static_cast<T>(lay.counts[c]) - lse);
      }
    });
    return {loss, {geo.dist, P, geo.zc, geo.muc, geo.near}};
  }

  // classes normalization: a softmax over the valid centroids for each sample.
  auto lse = torch::empty({B}, z.options());
  T* lp = lse.template data_ptr<T>();
  std::vector<int64_t> row_of(C, -1);
  for (int64_t k = 0; k < K; ++k) row_of[lay.rows[k]] = k;
  at::parallel_for(0, B, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      OnlineLse<T> acc;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t c = lay.rows[k];
        acc.add(tm_score_classes<T>(dist[k * B + i], eps[c], y[i] == c, inv_tau));
      }
      lp[i] = acc.value();
      const int64_t kp = row_of[y[i]];
      if (kp < 0) continue;  // own class has no centroid: the sample has no positive
      const T spos = tm_score_classes<T>(dist[kp * B + i], eps[y[i]], true, inv_tau);
      out[i] = -ratio * (spos - lp[i]);
    }
  });
  return {loss, {geo.dist, lse, geo.zc, geo.muc, geo.near}};
}

// ---------------------------------------------------------------- backward

template <typename T>
FusedBackwardResult backward_impl(const torch::Tensor& grad_loss, const torch::Tensor& z,
                                  const torch::Tensor& labels, const torch::Tensor& mu,
                                  const torch::Tensor& radii, const torch::Tensor& valid,
                                  const std::vector<torch::Tensor>& saved,
                                  const FusedParams& p) {
  const int64_t B = z.size(0), C = mu.size(0), D = z.size(1);
  FusedBackwardResult r;
  r.grad_radii = torch::zeros({C}, radii.options());
  if (p.centroid_grad) r.grad_centroids = torch::zeros({C, D}, mu.options());
  if (saved.empty()) {  // no row: the loss did not depend on anything
    r.grad_features = torch::zeros_like(z);
    return r;
  }
  const Layout lay = make_layout(labels, valid, C, p.norm);
  const int64_t K = static_cast<int64_t>(lay.rows.size());
  const bool batch = p.norm == Normalization::batch;
  const T* dist = saved[0].template data_ptr<T>();
  const T* prob_or_lse = saved[1].template data_ptr<T>();  // batch: P [K, B]; classes: lse [B]
  const torch::Tensor& zc = saved[2];
  const torch::Tensor& muc = saved[3];
  const torch::Tensor& near_t = saved[4];
  const T* zp = zc.template data_ptr<T>();
  const T* mp = muc.template data_ptr<T>();
  const int64_t* y = labels.data_ptr<int64_t>();
  const T* eps = radii.data_ptr<T>();
  const auto gl_t = grad_loss.contiguous();
  const T* gl = gl_t.template data_ptr<T>();
  const T inv_tau = static_cast<T>(1.0 / p.temperature);
  const T ratio = static_cast<T>(p.temperature / p.base_temperature);
  const T scale = static_cast<T>(p.dist_scale);
  std::vector<int64_t> row_of(C, -1);
  for (int64_t k = 0; k < K; ++k) row_of[lay.rows[k]] = k;

  // W[k, i] = dL/dz_i's coefficient of (z_i - mu_k):
  // dL/dz_i = sum_k W[k, i] (z_i - mu_k) and dL/dmu_k = -sum_i W[k, i] (z_i - mu_k).
  auto W = torch::empty({K, B}, z.options());
  T* wp = W.template data_ptr<T>();
  T* geps = r.grad_radii.template data_ptr<T>();
  const bool euclid = p.dist == Distance::euclidean;
  const Positives pos = positives(labels, C, lay.rows);
  const T sq_coef = T(2) * scale;  // squared distance: d dist/dz = 2 scale (z - mu)
  at::parallel_for(0, K, row_grain(B), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c = lay.rows[k];
      const T* drow = dist + k * B;
      T* wrow = wp + k * B;
      T de = T(0);
      if (batch) {
        // g = a (P - [pos] / n); W = -g / tau * coef(dist)
        const T a = gl[c] * ratio;
        const T inv_n = T(1) / static_cast<T>(lay.counts[c]);
        const T* prow = prob_or_lse + k * B;
        for (int64_t i = 0; i < B; ++i) wrow[i] = a * prow[i];
        for (int64_t e = pos.start[k]; e < pos.start[k + 1]; ++e) {
          wrow[pos.index[e]] -= a * inv_n;
          de += wrow[pos.index[e]];
        }
        for (int64_t i = 0; i < B; ++i) wrow[i] *= -inv_tau;
        geps[c] = -T(2) * inv_tau * de;
      } else {
        for (int64_t i = 0; i < B; ++i) {
          T g = T(0);  // a sample without a positive is not in the loss
          if (row_of[y[i]] >= 0) {
            const bool pos = y[i] == c;
            g = tm_dscore_classes<T>(tm_score_classes<T>(drow[i], eps[c], pos, inv_tau),
                                     prob_or_lse[i], pos, gl[i] * ratio);
            de += pos ? -g : g;
          }
          wrow[i] = -g * inv_tau;
        }
        geps[c] = de * inv_tau;
      }
      if (euclid) {
        const T s2 = scale * scale;
        for (int64_t i = 0; i < B; ++i) wrow[i] = drow[i] > T(0) ? wrow[i] * s2 / drow[i] : T(0);
      } else {
        for (int64_t i = 0; i < B; ++i) wrow[i] *= sq_coef;
      }
    }
  });
  // Near pairs leave the matrix products and are applied exactly below.
  const int64_t n_near = near_t.numel();
  const int64_t* np = near_t.data_ptr<int64_t>();
  std::vector<T> near_w(n_near);
  for (int64_t e = 0; e < n_near; ++e) {
    near_w[e] = wp[np[e]];
    wp[np[e]] = T(0);
  }

  // dz_i = z_i * sum_k W[k, i] - sum_k W[k, i] mu_k  (one matrix product)
  std::vector<T> colsum(B, T(0));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < B; ++i) colsum[i] += wp[k * B + i];
  r.grad_features = torch::empty({B, D}, z.options());
  T* gz = r.grad_features.template data_ptr<T>();
  for (int64_t i = 0; i < B; ++i)
    for (int64_t d = 0; d < D; ++d) gz[i * D + d] = zp[i * D + d] * colsum[i];
  r.grad_features.addmm_(W.t(), muc, /*beta=*/1, /*alpha=*/-1);
  torch::Tensor gmuK;
  T* gm = nullptr;
  if (p.centroid_grad) {
    // dmu_k = mu_k * sum_i W[k, i] - sum_i W[k, i] z_i
    gmuK = torch::empty({K, D}, z.options());
    gm = gmuK.template data_ptr<T>();
    for (int64_t k = 0; k < K; ++k) {
      T rs = T(0);
      for (int64_t i = 0; i < B; ++i) rs += wp[k * B + i];
      for (int64_t d = 0; d < D; ++d) gm[k * D + d] = mp[k * D + d] * rs;
    }
    gmuK.addmm_(W, zc, 1, -1);
  }
  // Exact contributions of the near pairs, in a fixed order (deterministic).
  for (int64_t e = 0; e < n_near; ++e) {
    const T w = near_w[e];
    if (w == T(0)) continue;
    const int64_t k = np[e] / B, i = np[e] % B;
    for (int64_t d = 0; d < D; ++d) {
      const T diff = zp[i * D + d] - mp[k * D + d];
      gz[i * D + d] += w * diff;
      if (gm) gm[k * D + d] -= w * diff;
    }
  }
  if (gm) {
    T* out = r.grad_centroids.template data_ptr<T>();
    for (int64_t k = 0; k < K; ++k)
      std::copy(gm + k * D, gm + (k + 1) * D, out + lay.rows[k] * D);
  }
  return r;
}

inline FusedForwardResult forward(const torch::Tensor& z, const torch::Tensor& labels,
                                  const torch::Tensor& mu, const torch::Tensor& radii,
                                  const torch::Tensor& valid, const FusedParams& p) {
  if (z.scalar_type() == torch::kDouble) return forward_impl<double>(z, labels, mu, radii, valid, p);
  return forward_impl<float>(z, labels, mu, radii, valid, p);
}

inline FusedBackwardResult backward(const torch::Tensor& grad_loss, const torch::Tensor& z,
                                    const torch::Tensor& labels, const torch::Tensor& mu,
                                    const torch::Tensor& radii, const torch::Tensor& valid,
                                    const std::vector<torch::Tensor>& saved,
                                    const FusedParams& p) {
  if (z.scalar_type() == torch::kDouble)
    return backward_impl<double>(grad_loss, z, labels, mu, radii, valid, saved, p);
  return backward_impl<float>(grad_loss, z, labels, mu, radii, valid, saved, p);
}

inline const FusedKernels& kernels() {
  static const FusedKernels k{&forward, &backward, /*reduction_weights=*/nullptr};
  return k;
}

}  // namespace cpu
}  // namespace detail
}  // namespace drolt
