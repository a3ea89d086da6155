#pragma once
// CentroidBank: per-class centroids kept fixed for an epoch (docs/math.md, "The centroid bank").
//
// The paper refreshes centroids once per epoch from the features of every
// training sample; per-batch centroids are rejected because tail classes rarely
// appear in a batch. The bank accumulates per-class sums in float64 (so the mean
// of 10^5 float32 features is exact to float32 rounding) and counts, and
// publishes means on finalize(). Two cheaper modes avoid the extra pass:
//  - accumulate the features seen during the previous training epoch (same
//    clear_sums / accumulate / finalize calls, fed from the training loop);
//  - an exponential moving average per class (ema_update).
// It is a torch module with buffers, so torch::save / torch::load and `to()`
// work and a resumed run gets the same centroids.
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "drolt/detail/checked_load.hpp"
#include "drolt/detail/checks.hpp"
#include "drolt/detail/floating_state.hpp"

namespace drolt {
namespace detail {

/// CentroidBank's checks of a batch (labels in [0, C), features [N, D]): the
/// labels as int64 on `device`. `fn` is the method's name, for the message.
inline torch::Tensor bank_check_batch(const torch::Tensor& features, const torch::Tensor& labels,
                                      int64_t C, int64_t D, const torch::Device& device,
                                      const char* fn) {
  const std::string where = std::string("drolt::CentroidBank::") + fn;
  DROLT_CHECK(features.dim() == 2 && features.size(1) == D, where,
              "expected features of shape [N, ", D, "], got ", features.sizes());
  DROLT_CHECK(c10::isFloatingType(features.scalar_type()), where,
              "expected floating-point features, got ", features.scalar_type());
  DROLT_CHECK(labels.dim() == 1 && labels.size(0) == features.size(0), where,
              "expected labels of shape [", features.size(0), "], got ", labels.sizes());
  DROLT_CHECK(c10::isIntegralType(labels.scalar_type(), /*includeBool=*/false), where,
              "expected integer labels, got ", labels.scalar_type());
  auto y = labels.to(device, torch::kLong);
  detail::check_label_range(y, C, where);
  return y;
}

/// CentroidBank::accumulate on the bank's tensors (also the operator
/// drolt::bank_accumulate_ of the Python package): adds the features of the
/// checked int64 labels `y` (on the sums' device) to the float64 `sums` and
/// one per sample to `pending`.
inline void bank_accumulate(torch::Tensor& sums, torch::Tensor& pending, const torch::Tensor& y,
                            const torch::Tensor& features) {
  sums.index_add_(0, y, features.detach().to(sums.device(), torch::kFloat64));
  pending.index_add_(0, y, torch::ones_like(y));
}

/// CentroidBank::finalize on the bank's tensors (also drolt::bank_finalize_):
/// publishes the means of `sums` / `pending` as centroids (and the EMA state),
/// the counts and the valid mask, then clears the accumulators.
inline void bank_finalize(torch::Tensor& sums, torch::Tensor& pending, torch::Tensor& centroids,
                          torch::Tensor& counts, torch::Tensor& valid, torch::Tensor& ema) {
  auto n = pending.to(torch::kFloat64).unsqueeze(1);
  auto means = torch::where(n > 0, sums / n.clamp_min(1), torch::zeros_like(sums));
  centroids.copy_(means.to(centroids.scalar_type()));
  ema.copy_(means);
  counts.copy_(pending);
  valid.copy_(pending > 0);
  sums.zero_();
  pending.zero_();
}

}  // namespace detail

struct CentroidBankOptions {
  CentroidBankOptions(int64_t num_classes, int64_t dim) : num_classes_(num_classes), dim_(dim) {}
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, dim);
  /// Weight of the old centroid in ema_update: mu <- m * mu + (1 - m) * batch mean.
  TORCH_ARG(double, momentum) = 0.9;
  /// dtype of the published centroids (sums are always float64).
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
};

class CentroidBankImpl : public detail::FloatingStateModule<CentroidBankImpl> {
 public:
  CentroidBankImpl(int64_t num_classes, int64_t dim)
      : CentroidBankImpl(CentroidBankOptions(num_classes, dim)) {}
  explicit CentroidBankImpl(const CentroidBankOptions& options) : options(options) {
    TORCH_CHECK(options.num_classes() > 0, "drolt::CentroidBank: expected num_classes > 0, got ",
                options.num_classes());
    TORCH_CHECK(options.dim() > 0, "drolt::CentroidBank: expected dim > 0, got ", options.dim());
    TORCH_CHECK(options.momentum() >= 0 && options.momentum() < 1,
                "drolt::CentroidBank: expected momentum in [0, 1), got ", options.momentum());
    TORCH_CHECK(c10::isFloatingType(options.dtype()),
                "drolt::CentroidBank: expected a floating-point dtype, got ", options.dtype());
    reset();
  }

  /// Starts a new accumulation: clears the running sums and counts, keeps the
  /// published centroids (they stay in use until the next finalize()).
  void clear_sums() {
    torch::NoGradGuard no_grad;
    sums_.zero_();
    pending_.zero_();
  }

  /// LibTorch's Cloneable hook: registers the buffers on construction and
  /// clone(). The per-epoch clear is clear_sums(); called on a bank that has its
  /// buffers, reset() only forwards to clear_sums() (deprecated: earlier
  /// versions documented reset() as the per-epoch clear, and callers remain).
  void reset() override {
    const int64_t C = options.num_classes(), D = options.dim();
    if (!sums_.defined() || named_buffers(/*recurse=*/false).size() == 0) {
      auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
      sums_ = register_buffer("sums", torch::zeros({C, D}, f64));
      pending_ = register_buffer("pending_counts", torch::zeros({C}, torch::kLong));
      centroids_ = register_buffer("centroids", torch::zeros({C, D}, options.dtype()));
      counts_ = register_buffer("counts", torch::zeros({C}, torch::kLong));
      valid_ = register_buffer("valid", torch::zeros({C}, torch::kBool));
      ema_ = register_buffer("ema", torch::zeros({C, D}, f64));
      return;
    }
    clear_sums();
  }

  /// Adds a batch of features to the running per-class sums. Features are
  /// detached and moved to the bank's device; labels must be in [0, C).
  void accumulate(const torch::Tensor& features, const torch::Tensor& labels) {
    torch::NoGradGuard no_grad;
    detail::bank_accumulate(sums_, pending_, check_batch(features, labels, "accumulate"), features);
  }

  /// Publishes the means of everything accumulated since clear_sums() as the current
  /// centroids (classes seen at least once become valid, the others invalid),
  /// then clears the accumulators.
  void finalize() {
    torch::NoGradGuard no_grad;
    detail::bank_finalize(sums_, pending_, centroids_, counts_, valid_, ema_);
  }

  /// finalize() from per-class sums and counts gathered elsewhere (e.g. summed
  /// over processes, drolt::dist::finalize): replaces what was accumulated since
  /// clear_sums() by `sums` ([C, D], converted to float64) and `counts` ([C], integer
  /// or integral-valued float), then publishes their means.
  void finalize_from(const torch::Tensor& sums, const torch::Tensor& counts) {
    torch::NoGradGuard no_grad;
    check_sums(sums, counts, "finalize_from");
    sums_.copy_(sums.detach());
    pending_.copy_(c10::isFloatingType(counts.scalar_type()) ? counts.detach().round() : counts.detach());
    finalize();
  }

  /// EMA mode: for every class in the batch, mu <- m * mu + (1 - m) * mean of
  /// the class's features in this batch (a class seen for the first time takes
  /// its batch mean). The state is kept in float64.
  void ema_update(const torch::Tensor& features, const torch::Tensor& labels) {
    torch::NoGradGuard no_grad;
    auto y = check_batch(features, labels, "ema_update");
    const int64_t C = options.num_classes();
    auto s = torch::zeros({C, options.dim()}, ema_.options());
    s.index_add_(0, y, features.detach().to(ema_.device(), torch::kFloat64));
    auto n = torch::zeros({C}, torch::TensorOptions().dtype(torch::kLong).device(ema_.device()));
    n.index_add_(0, y, torch::ones_like(y));
    ema_step(s, n);
  }

  /// ema_update() from a batch's per-class sums ([C, D]) and counts ([C]) gathered
  /// elsewhere (e.g. summed over processes, drolt::dist::ema_update); classes with
  /// count 0 keep their centroid.
  void ema_update_from_sums(const torch::Tensor& sums, const torch::Tensor& counts) {
    torch::NoGradGuard no_grad;
    check_sums(sums, counts, "ema_update_from_sums");
    auto n = c10::isFloatingType(counts.scalar_type()) ? counts.detach().round() : counts.detach();
    ema_step(sums.detach().to(ema_.device(), torch::kFloat64), n.to(ema_.device(), torch::kLong));
  }

  /// Directly sets centroids (e.g. computed elsewhere); rows with valid == false are ignored.
  void set(const torch::Tensor& centroids, const torch::Tensor& valid) {
    torch::NoGradGuard no_grad;
    TORCH_CHECK(centroids.dim() == 2 && centroids.size(0) == options.num_classes() &&
                    centroids.size(1) == options.dim(),
                "drolt::CentroidBank::set: expected centroids of shape [", options.num_classes(),
                ", ", options.dim(), "], got ", centroids.sizes());
    TORCH_CHECK(valid.dim() == 1 && valid.size(0) == options.num_classes(),
                "drolt::CentroidBank::set: expected a valid mask of shape [", options.num_classes(),
                "], got ", valid.sizes());
    centroids_.copy_(centroids.detach());
    ema_.copy_(centroids.detach());
    valid_.copy_(valid.to(torch::kBool));
  }

  /// [C, D] centroids published by the last finalize() / ema_update().
  const torch::Tensor& centroids() const { return centroids_; }
  /// [C] bool: classes that have a centroid.
  const torch::Tensor& valid() const { return valid_; }
  /// [C] int64: samples behind each published centroid (EMA: samples seen so far).
  const torch::Tensor& counts() const { return counts_; }
  /// [C] int64: samples accumulated since the last clear_sums().
  const torch::Tensor& pending_counts() const { return pending_; }
  /// [C, D] float64: per-class feature sums accumulated since the last clear_sums().
  const torch::Tensor& pending_sums() const { return sums_; }
  int64_t num_classes() const { return options.num_classes(); }
  int64_t dim() const { return options.dim(); }

  /// to(dtype) (detail/floating_state.hpp) converts only the published
  /// centroids: sums stay float64, counts int64, the mask bool.
  static constexpr const char* kToName = "drolt::CentroidBank::to";
  void convert_floating_state(torch::Dtype dtype, bool non_blocking) {
    centroids_.set_data(centroids_.to(dtype, non_blocking));
    options.dtype(dtype);
  }

  /// Module::load that refuses an archive of another number of classes or
  /// dimension (the bank is left as it was). torch::load calls it.
  void load(torch::serialize::InputArchive& archive) override {
    const int64_t C = options.num_classes(), D = options.dim();
    detail::checked_load(*this,
                         {{"sums", {C, D}, torch::kFloat64},
                          {"pending_counts", {C}, torch::kLong},
                          {"centroids", {C, D}, c10::nullopt},
                          {"counts", {C}, torch::kLong},
                          {"valid", {C}, torch::kBool},
                          {"ema", {C, D}, torch::kFloat64}},
                         "drolt::CentroidBank", [&] { torch::nn::Module::load(archive); });
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "drolt::CentroidBank(num_classes=" << options.num_classes()
           << ", dim=" << options.dim() << ", momentum=" << options.momentum() << ")";
  }

  CentroidBankOptions options;

 private:
  torch::Tensor check_batch(const torch::Tensor& features, const torch::Tensor& labels,
                            const char* fn) const {
    return detail::bank_check_batch(features, labels, options.num_classes(), options.dim(),
                                    sums_.device(), fn);
  }

  void check_sums(const torch::Tensor& sums, const torch::Tensor& counts, const char* fn) const {
    const int64_t C = options.num_classes(), D = options.dim();
    TORCH_CHECK(sums.dim() == 2 && sums.size(0) == C && sums.size(1) == D, "drolt::CentroidBank::",
                fn, ": expected sums of shape [", C, ", ", D, "], got ", sums.sizes());
    TORCH_CHECK(c10::isFloatingType(sums.scalar_type()), "drolt::CentroidBank::", fn,
                ": expected floating-point sums, got ", sums.scalar_type());
    TORCH_CHECK(counts.dim() == 1 && counts.size(0) == C, "drolt::CentroidBank::", fn,
                ": expected counts of shape [", C, "], got ", counts.sizes());
    TORCH_CHECK(counts.scalar_type() != torch::kBool, "drolt::CentroidBank::", fn,
                ": expected integer or floating-point counts, got ", counts.scalar_type());
    TORCH_CHECK(counts.min().item<double>() >= 0, "drolt::CentroidBank::", fn,
                ": expected counts >= 0");
  }

  /// The EMA rule for one batch given its per-class float64 sums s [C, D] and
  /// int64 counts n [C] on the bank's device.
  void ema_step(const torch::Tensor& s, const torch::Tensor& n) {
    auto present = (n > 0).unsqueeze(1);
    auto mean = s / n.clamp_min(1).to(torch::kFloat64).unsqueeze(1);
    const double m = options.momentum();
    auto blended = torch::where(valid_.unsqueeze(1), m * ema_ + (1 - m) * mean, mean);
    ema_.copy_(torch::where(present, blended, ema_));
    counts_.add_(n);
    valid_.logical_or_(n > 0);
    centroids_.copy_(ema_.to(centroids_.scalar_type()));
  }

  torch::Tensor sums_, pending_, centroids_, counts_, valid_, ema_;
};

TORCH_MODULE(CentroidBank);

}  // namespace drolt
