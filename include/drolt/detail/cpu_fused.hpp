#pragma once
// The fast CPU path: one matrix product for all distances, then per-row
// log-sum-exp and analytic gradients (spec section 4) with two more matrix
// products in backward. Inputs are centred on the mean of the used centroids
// before |z|^2 + |mu|^2 - 2 z.mu is formed, which removes the large common
// component of real features; entries that still lose precision to cancellation
// ("near" pairs, where a feature sits close to a centroid) are recomputed
// exactly, in values and in gradients.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "drolt/detail/backend.hpp"
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

struct Layout {
  std::vector<int64_t> counts;  // per class, from the labels
  std::vector<int64_t> rows;    // class of each row
};

inline Layout make_layout(const torch::Tensor& labels, const torch::Tensor& valid,
                          int64_t num_classes, NormKind norm) {
  Layout out;
  out.counts.assign(num_classes, 0);
  const int64_t* y = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.size(0); ++i) ++out.counts[y[i]];
  const bool* v = valid.data_ptr<bool>();
  for (int64_t c = 0; c < num_classes; ++c) {
    const bool used = norm == NormKind::batch ? (out.counts[c] > 0 && v[c]) : v[c];
    if (used) out.rows.push_back(c);
  }
  return out;
}

/// Centred features and row centroids, their squared norms, and the [K, B]
/// matrix of distances (not yet scaled to the chosen distance).
template <typename T>
struct Geometry {
  torch::Tensor zc;    // [B, D]
  torch::Tensor muc;   // [K, D]
  torch::Tensor dist;  // [K, B] distance (scaled)
};

template <typename T>
Geometry<T> make_geometry(const torch::Tensor& z, const torch::Tensor& mu,
                          const torch::Tensor& rows_t, const FusedParams& p) {
  Geometry<T> g;
  auto muK = mu.index_select(0, rows_t);
  auto center = muK.mean(0, /*keepdim=*/true);
  g.zc = (z - center).contiguous();
  g.muc = (muK - center).contiguous();
  const int64_t K = g.muc.size(0), B = g.zc.size(0), D = g.zc.size(1);
  auto zz = g.zc.pow(2).sum(1).contiguous();
  auto mm = g.muc.pow(2).sum(1).contiguous();
  g.dist = torch::mm(g.muc, g.zc.t()).contiguous();  // z.mu, overwritten below
  const T* zzp = zz.template data_ptr<T>();
  const T* mmp = mm.template data_ptr<T>();
  const T* zp = g.zc.template data_ptr<T>();
  const T* mp = g.muc.template data_ptr<T>();
  T* dp = g.dist.template data_ptr<T>();
  const T scale = static_cast<T>(p.dist_scale);
  const double frac = near_fraction<T>();
  at::parallel_for(0, K, 8, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      T* row = dp + k * B;
      for (int64_t i = 0; i < B; ++i) {
        const T norms = mmp[k] + zzp[i];
        T d2 = norms - T(2) * row[i];
        if (!(d2 > static_cast<T>(frac) * norms)) {
          // Close pair (or NaN input): exact squared distance from differences.
          double acc = 0.0;
          const T* a = zp + i * D;
          const T* b = mp + k * D;
          for (int64_t d = 0; d < D; ++d) {
            const double diff = static_cast<double>(a[d]) - static_cast<double>(b[d]);
            acc += diff * diff;
          }
          d2 = static_cast<T>(acc);
        }
        row[i] = tm_distance<T>(d2, p.dist, scale);
      }
    }
  });
  return g;
}

template <typename T>
FusedForwardResult forward_impl(const torch::Tensor& z, const torch::Tensor& labels,
                                const torch::Tensor& mu, const torch::Tensor& radii,
                                const torch::Tensor& valid, const FusedParams& p) {
  const int64_t B = z.size(0), C = mu.size(0);
  const Layout lay = make_layout(labels, valid, C, p.norm);
  const int64_t K = static_cast<int64_t>(lay.rows.size());
  const int64_t out_len = p.norm == NormKind::batch ? C : B;
  auto loss = torch::zeros({out_len}, radii.options());
  auto rows_t = torch::tensor(lay.rows, torch::kLong);
  if (K == 0) return {loss, {rows_t, torch::empty({0, B}, z.options()), torch::empty({0}, z.options())}};

  auto geo = make_geometry<T>(z, mu, rows_t, p);
  const T* dist = geo.dist.template data_ptr<T>();
  const int64_t* y = labels.data_ptr<int64_t>();
  const T* eps = radii.data_ptr<T>();
  T* out = loss.data_ptr<T>();
  const T inv_tau = static_cast<T>(1.0 / p.temperature);
  const T ratio = static_cast<T>(p.temperature / p.base_temperature);

  torch::Tensor lse;
  if (p.norm == NormKind::batch) {
    lse = torch::empty({K}, z.options());
    T* lp = lse.template data_ptr<T>();
    at::parallel_for(0, K, 8, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c = lay.rows[k];
        const T* drow = dist + k * B;
        T mx = tm_neg_inf<T>(), pos_sum = T(0);
        for (int64_t i = 0; i < B; ++i) {
          const bool pos = y[i] == c;
          const T s = tm_score_batch<T>(drow[i], eps[c], pos, inv_tau);
          mx = std::max(mx, s);
          if (pos) pos_sum += s;
        }
        T se = T(0);
        for (int64_t i = 0; i < B; ++i)
          se += std::exp(tm_score_batch<T>(drow[i], eps[c], y[i] == c, inv_tau) - mx);
        lp[k] = mx + std::log(se);
        out[c] = -ratio * (pos_sum / static_cast<T>(lay.counts[c]) - lp[k]);
      }
    });
  } else {
    lse = torch::empty({B}, z.options());
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
  }
  return {loss, {rows_t, geo.dist, lse}};
}

template <typename T>
FusedBackwardResult backward_impl(const torch::Tensor& grad_loss, const torch::Tensor& z,
                                  const torch::Tensor& labels, const torch::Tensor& mu,
                                  const torch::Tensor& radii, const torch::Tensor& valid,
                                  const std::vector<torch::Tensor>& saved,
                                  const FusedParams& p) {
  const int64_t B = z.size(0), C = mu.size(0), D = z.size(1);
  const auto& rows_t = saved.at(0);
  const auto& dist_t = saved.at(1);
  const auto& lse_t = saved.at(2);
  const int64_t K = rows_t.size(0);
  FusedBackwardResult r;
  r.grad_radii = torch::zeros({C}, radii.options());
  if (p.centroid_grad) r.grad_centroids = torch::zeros({C, D}, mu.options());
  if (K == 0) {
    r.grad_features = torch::zeros_like(z);
    return r;
  }
  const Layout lay = make_layout(labels, valid, C, p.norm);
  // Centre exactly as forward did (the distances themselves are reused).
  auto muK = mu.index_select(0, rows_t);
  auto center = muK.mean(0, true);
  auto zc = (z - center).contiguous();
  auto muc = (muK - center).contiguous();

  const T* dist = dist_t.template data_ptr<T>();
  const T* lse = lse_t.template data_ptr<T>();
  const int64_t* y = labels.data_ptr<int64_t>();
  const T* eps = radii.data_ptr<T>();
  const auto gl_t = grad_loss.contiguous();
  const T* gl = gl_t.template data_ptr<T>();
  const T inv_tau = static_cast<T>(1.0 / p.temperature);
  const T ratio = static_cast<T>(p.temperature / p.base_temperature);
  const T scale = static_cast<T>(p.dist_scale);
  const double frac = near_fraction<T>();

  // W[k, i] = dL/dd(k, i) * (d dist / d z) coefficient, so that
  // dL/dz_i = sum_k W[k, i] (z_i - mu_k) and dL/dmu_k = -sum_i W[k, i] (z_i - mu_k).
  auto W = torch::empty({K, B}, z.options());
  T* wp = W.template data_ptr<T>();
  std::vector<T> deps_row(K, T(0));      // batch: per row; classes: see below
  std::vector<T> deps_cls(C, T(0));
  // "Near" entries are taken out of the matrix products and applied exactly.
  auto zn = zc.pow(2).sum(1).contiguous();
  auto mn = muc.pow(2).sum(1).contiguous();
  const T* znp = zn.template data_ptr<T>();
  const T* mnp = mn.template data_ptr<T>();
  std::vector<std::vector<std::pair<int64_t, T>>> near(K);

  if (p.norm == NormKind::batch) {
    at::parallel_for(0, K, 8, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c = lay.rows[k];
        const T a = gl[c] * ratio;
        const T inv_n = T(1) / static_cast<T>(lay.counts[c]);
        T de = T(0);
        for (int64_t i = 0; i < B; ++i) {
          const bool pos = y[i] == c;
          const T dd = dist[k * B + i];
          const T s = tm_score_batch<T>(dd, eps[c], pos, inv_tau);
          const T g = tm_dscore_batch<T>(s, lse[k], pos, a, inv_n);
          if (pos) de += g;
          const T w = -g * inv_tau * tm_dist_grad_coef<T>(dd, p.dist, scale);
          const T base2 = dd * dd / (scale * scale);
          const T d2 = p.dist == DistKind::euclidean ? base2 : dd / scale;
          if (!(d2 > static_cast<T>(frac) * (znp[i] + mnp[k]))) {
            near[k].emplace_back(i, w);
            wp[k * B + i] = T(0);
          } else {
            wp[k * B + i] = w;
          }
        }
        deps_row[k] = -T(2) * inv_tau * de;
      }
    });
    for (int64_t k = 0; k < K; ++k) deps_cls[lay.rows[k]] = deps_row[k];
  } else {
    std::vector<int64_t> row_of(C, -1);
    for (int64_t k = 0; k < K; ++k) row_of[lay.rows[k]] = k;
    // Rows (classes) in parallel; each class's radius gradient is a sum over samples.
    at::parallel_for(0, K, 8, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c = lay.rows[k];
        T de = T(0);
        for (int64_t i = 0; i < B; ++i) {
          const bool pos = y[i] == c;
          const T dd = dist[k * B + i];
          T w = T(0);
          if (row_of[y[i]] >= 0) {
            const T b = gl[i] * ratio;
            const T s = tm_score_classes<T>(dd, eps[c], pos, inv_tau);
            const T g = tm_dscore_classes<T>(s, lse[i], pos, b);
            de += pos ? -g * inv_tau : g * inv_tau;
            w = -g * inv_tau * tm_dist_grad_coef<T>(dd, p.dist, scale);
          }
          const T base2 = dd * dd / (scale * scale);
          const T d2 = p.dist == DistKind::euclidean ? base2 : dd / scale;
          if (!(d2 > static_cast<T>(frac) * (znp[i] + mnp[k]))) {
            near[k].emplace_back(i, w);
            wp[k * B + i] = T(0);
          } else {
            wp[k * B + i] = w;
          }
        }
        deps_row[k] = de;
      }
    });
    for (int64_t k = 0; k < K; ++k) deps_cls[lay.rows[k]] = deps_row[k];
  }

  // dz_i = z_i * sum_k W[k,i] - sum_k W[k,i] mu_k
  auto colsum = W.sum(0);  // [B]
  r.grad_features = (zc * colsum.unsqueeze(1) - torch::mm(W.t(), muc)).contiguous();
  torch::Tensor gmuK;
  if (p.centroid_grad) {
    auto rowsum = W.sum(1);  // [K]
    gmuK = (muc * rowsum.unsqueeze(1) - torch::mm(W, zc)).contiguous();
  }
  // Exact contributions of the near pairs, in a fixed order (deterministic).
  T* gz = r.grad_features.template data_ptr<T>();
  T* gm = gmuK.defined() ? gmuK.template data_ptr<T>() : nullptr;
  const T* zp = zc.template data_ptr<T>();
  const T* mp = muc.template data_ptr<T>();
  for (int64_t k = 0; k < K; ++k) {
    for (const auto& e : near[k]) {
      const int64_t i = e.first;
      const T w = e.second;
      if (w == T(0)) continue;
      for (int64_t d = 0; d < D; ++d) {
        const T diff = zp[i * D + d] - mp[k * D + d];
        gz[i * D + d] += w * diff;
        if (gm) gm[k * D + d] -= w * diff;
      }
    }
  }
  if (p.centroid_grad) r.grad_centroids.index_copy_(0, rows_t, gmuK);
  r.grad_radii = torch::from_blob(deps_cls.data(), {C}, radii.options()).clone();
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

inline const FusedBackend& backend() {
  static const FusedBackend b{&forward, &backward};
  return b;
}

}  // namespace cpu
}  // namespace detail
}  // namespace drolt
