// How a DRO-LT run keeps its centroid bank up to date (docs/math.md, "The centroid bank"), behind
// one interface with three modes:
//   full     : a pass over the training set (eval mode, no augmentation) at
//              the start of every DRO-LT epoch; the paper's choice;
//   previous : the features of the previous epoch's training pass;
//   ema      : a per-class exponential moving average over training batches.
// The cheap modes start feeding the bank one epoch before the first DRO-LT
// epoch, so that epoch has centroids. With several processes the sums and
// counts of every rank are added (DistContext).
#pragma once

#include <drolt/centroid_bank.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>

#include "amp.hpp"
#include "config.hpp"
#include "data.hpp"
#include "multiprocess.hpp"
#include "resnet.hpp"

namespace drolt_examples {

/// What a refresh needs: the model, the training set and the bank it fills.
struct CentroidSource {
  ResNet model;
  std::shared_ptr<DataSplit> train;  // the training images, read without augmentation
  drolt::CentroidBank bank;
  torch::Device device;
  const DistContext* dist;
  int64_t first_dro_epoch;
  int64_t layer = 3;  // the ResNet layer whose pooled features the bank holds
  Precision precision{};
};

class CentroidRefresh {
 public:
  virtual ~CentroidRefresh() = default;
  /// Before the training pass of epoch `e`; returns the seconds it took.
  virtual double before_epoch(int64_t e) = 0;
  /// Whether the training pass of epoch `e` feeds observe().
  virtual bool observes(int64_t e) const = 0;
  /// The features of one training batch (this process's real rows).
  virtual void observe(const torch::Tensor& features, const torch::Tensor& labels) = 0;
  /// After the training pass of epoch `e`.
  virtual void after_epoch(int64_t e) = 0;
};

namespace detail {

class FullRefresh : public CentroidRefresh {
 public:
  explicit FullRefresh(CentroidSource s) : s_(std::move(s)) {}
  double before_epoch(int64_t e) override {
    if (e < s_.first_dro_epoch) return 0.0;
    const auto t0 = std::chrono::steady_clock::now();
    torch::NoGradGuard g;
    s_.model->eval();
    s_.bank->clear_sums();
    const int64_t B = 512;
    // This process's rows (all of them with one process); with several,
    // finalize() adds up every rank's sums and counts.
    auto rows = s_.dist->rows(s_.train->size());
    std::vector<torch::Tensor> batches;
    for (int64_t i = 0; i < rows.size(0); i += B) batches.push_back(rows.narrow(0, i, std::min(B, rows.size(0) - i)));
    s_.train->begin(batches, /*augment=*/false, e);
    for (const auto& idx : batches) {
      auto x = s_.precision.input(s_.train->next(idx), s_.device);
      torch::Tensor f;
      {
        AutocastGuard amp(s_.precision.amp);
        f = s_.model->layer_features(x, s_.layer);
      }
      s_.bank->accumulate(Precision::float32(f), s_.train->targets().index_select(0, idx).to(s_.device));
    }
    s_.dist->finalize(s_.bank);
    s_.model->train();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  bool observes(int64_t) const override { return false; }
  void observe(const torch::Tensor&, const torch::Tensor&) override {}
  void after_epoch(int64_t) override {}

 private:
  CentroidSource s_;
};

class PreviousEpochRefresh : public CentroidRefresh {
 public:
  explicit PreviousEpochRefresh(CentroidSource s) : s_(std::move(s)) {}
  double before_epoch(int64_t e) override {
    if (observes(e)) s_.bank->clear_sums();
    return 0.0;
  }
  bool observes(int64_t e) const override { return e >= s_.first_dro_epoch - 1; }
  void observe(const torch::Tensor& f, const torch::Tensor& y) override { s_.bank->accumulate(f, y); }
  void after_epoch(int64_t e) override {
    if (observes(e)) s_.dist->finalize(s_.bank);
  }

 private:
  CentroidSource s_;
};

class EmaRefresh : public CentroidRefresh {
 public:
  explicit EmaRefresh(CentroidSource s) : s_(std::move(s)) {}
  double before_epoch(int64_t) override { return 0.0; }
  bool observes(int64_t e) const override { return e >= s_.first_dro_epoch - 1; }
  void observe(const torch::Tensor& f, const torch::Tensor& y) override { s_.dist->ema_update(s_.bank, f, y); }
  void after_epoch(int64_t) override {}

 private:
  CentroidSource s_;
};

}  // namespace detail

inline std::unique_ptr<CentroidRefresh> make_centroid_refresh(CentroidMode mode, CentroidSource source) {
  switch (mode) {
    case CentroidMode::full:
      return std::make_unique<detail::FullRefresh>(std::move(source));
    case CentroidMode::previous:
      return std::make_unique<detail::PreviousEpochRefresh>(std::move(source));
    case CentroidMode::ema:
      return std::make_unique<detail::EmaRefresh>(std::move(source));
  }
  throw std::logic_error("make_centroid_refresh: unknown mode");
}

}  // namespace drolt_examples
