// The DRO-LT example trainer as a library, so drolt_train and the tests drive
// the same code.
//
// A Run trains one representation (a method, methods/*.hpp) and runs the
// classifier stages (stages/*.hpp) on it; registry.hpp names them, protocol.hpp
// lays out their epochs and table rows, losses.hpp picks the losses (the
// baselines' math is the library's: drolt/longtail_losses.hpp,
// drolt/posthoc.hpp, drolt/weight_balancing.hpp), the centroid refresh modes in centroids.hpp, the checkpoint pieces in
// checkpoint.hpp. Every epoch of a run, classifier stages included, is
// checkpointed (model, optimizers, samplers, centroid bank, loss radii, torch
// RNG state, epoch, log) and a resumed run continues bit for bit (same thread
// count, same device).
#pragma once

#include <drolt/data/samplers.hpp>
#include <drolt/drolt.hpp>
#include <drolt/metrics.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "amp.hpp"
#include "augment.hpp"
#include "centroids.hpp"
#include "checkpoint.hpp"
#include "config.hpp"
#include "data.hpp"
#include "losses.hpp"
#include "multiprocess.hpp"
#include "protocol.hpp"
#include "registry.hpp"
#include "validate.hpp"
#include "records.hpp"
#include "resnet.hpp"

namespace drolt_examples {

inline void make_dirs(const std::string& path) {
  std::string cur;
  std::stringstream ss(path);
  std::string part;
  if (!path.empty() && path[0] == '/') cur = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    cur += part + "/";
    ::mkdir(cur.c_str(), 0755);
  }
  if (!directory_exists(path)) throw std::runtime_error("cannot create output directory '" + path + "'");
}

inline bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

inline std::string format_duration(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "?";
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", t / 3600, (t / 60) % 60);
  } else if (t >= 60) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", t / 60, t % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lds", t);
  }
  return buf;
}

using Sampler = torch::data::samplers::Sampler<>;

/// A sampler of `kind` over `targets` with its own seed (instance: torch's
/// RandomSampler on the default generator). `epochs` is the progressive
/// sampler's horizon.
inline std::unique_ptr<Sampler> make_sampler(SamplerKind kind, const torch::Tensor& targets, int64_t k,
                                             uint64_t seed, int64_t epochs) {
  const auto o = drolt::data::ClassSamplerOptions().seed(seed);
  switch (kind) {
    case SamplerKind::instance:
      return std::make_unique<torch::data::samplers::RandomSampler>(targets.size(0));
    case SamplerKind::class_balanced:
      return std::make_unique<drolt::data::ClassBalancedSampler>(targets, o);
    case SamplerKind::class_aware:
      return std::make_unique<drolt::data::ClassAwareSampler>(targets, k, o);
    case SamplerKind::sqrt:
      return std::make_unique<drolt::data::SqrtSampler>(targets, o);
    case SamplerKind::progressive:
      return std::make_unique<drolt::data::ProgressiveSampler>(targets, std::max<int64_t>(epochs, 1), o);
  }
  throw std::logic_error("make_sampler: unknown sampler");
}

/// Begins epoch `epoch` (counted from the sampler's first) of `s`.
inline void begin_epoch(Sampler& s, int64_t epoch) {
  if (auto* p = dynamic_cast<drolt::data::ProgressiveSampler*>(&s)) p->set_epoch(epoch);
  s.reset(c10::nullopt);
}

/// The name of ResNet layer `layer` (0 the stem, 1..3 the stages): the
/// children "loss_<name>" / "bank_<name>" of the DRO-LT module.
inline std::string layer_name(int64_t layer) { return layer == 0 ? "stem" : "stage" + std::to_string(layer); }

/// Trains and evaluates one run (see the file comment and protocol.hpp).
class Run {
 public:
  Run(const TrainConfig& cfg, const DataBundle& data, RunSpec spec, DistContext dist)
      : cfg_(cfg),
        data_(data),
        spec_(spec),
        proto_(cfg, spec, data.counts),
        dist_(std::move(dist)),
        device_(dist_.device(name_of(cfg.device))) {
    const auto& rep = proto_.method();
    name_ = rep.name();
    pad_ = cfg.crop_pad >= 0 ? cfg.crop_pad : (data.height >= 32 ? 4 : 2);
    precision_.amp = cfg.amp;
    precision_.channels_last = cfg.channels_last;

    torch::manual_seed(static_cast<uint64_t>(cfg.seed));
    // DRO-LT layers other than the penultimate need the stages' pooled outputs.
    layers_ = rep.dro() ? cfg.dro_layers : std::vector<int64_t>{3};
    model_ = ResNet(ResNetOptions(cfg.depth, data.channels, data.num_classes)
                        .stage_features(layers_ != std::vector<int64_t>{3})
                        .cosine_scale(rep.base_loss() == BaseLoss::ldam ? cfg.ldam_scale : 0.0)
                        .imagenet_depth(cfg.imagenet_depth));
    model_->to(device_);
    if (cfg.channels_last) model_->to_channels_last();
    if (rep.dro()) {
      // One module for every DRO-LT layer: a loss (its own radii) and a bank each.
      auto opts = drolt::MultiLayerRobustCentroidLossOptions(dro_loss_options(cfg, data.counts, device_))
                      .bank_momentum(cfg.ema_momentum);
      const auto w = cfg.dro_weights();
      for (size_t i = 0; i < layers_.size(); ++i) opts.add_layer(layer_name(layers_[i]), model_->layer_dim(layers_[i]), w[i]);
      dro_ = drolt::MultiLayerRobustCentroidLoss(opts);
      dro_->to(device_);
      for (size_t i = 0; i < layers_.size(); ++i) {
        banks_.push_back(dro_->bank(i));
        losses_.push_back(dro_->loss(i));
        refresh_.push_back(make_centroid_refresh(cfg.centroid_mode,
                                                 CentroidSource{model_, data.train, banks_[i], device_, &dist_,
                                                                cfg.dro_start_epoch(), layers_[i], precision_}));
      }
    } else {  // the penultimate layer's bank (nearest-centroid metric)
      banks_.emplace_back(
          drolt::CentroidBankOptions(data.num_classes, model_->layer_dim(3)).momentum(cfg.ema_momentum));
      banks_.back()->to(device_);
    }
    if (rep.sampler() != SamplerKind::instance) {
      rep_sampler_ = make_sampler(rep.sampler(), data.train_y, cfg.class_aware_k,
                                  static_cast<uint64_t>(cfg.seed) * 7919 + 29, cfg.epochs - rep.first_sampler_epoch());
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(model_->parameters(), std::make_unique<torch::optim::SGDOptions>(
                                                  torch::optim::SGDOptions(cfg.lr)
                                                      .momentum(cfg.momentum)
                                                      .weight_decay(rep.weight_decay())));
    std::vector<torch::Tensor> radii;
    for (auto& l : losses_) {
      for (auto& p : l->parameters()) radii.push_back(p);
    }
    if (!radii.empty()) {
      // Learned radii join the feature extractor's SGD (docs/math.md, "Radius policies").
      groups.emplace_back(radii, std::make_unique<torch::optim::SGDOptions>(
                                                   torch::optim::SGDOptions(cfg.radius_lr)
                                                       .momentum(cfg.momentum)
                                                       .weight_decay(cfg.radius_weight_decay)));
    }
    opt_ = std::make_unique<torch::optim::SGD>(std::move(groups), torch::optim::SGDOptions(cfg.lr));
    // Several processes: the same settings on every rank (a named error on all
    // of them otherwise), then rank 0's initial weights everywhere (the same
    // seed gives the same ones already; this does not rely on it).
    dist_.check_same_settings(settings().dump());
    dist_.broadcast(*model_);
    for (auto& l : losses_) dist_.broadcast(*l);
  }

  Run(const Run&) = delete;  // the centroid refresh holds the address of dist_
  Run& operator=(const Run&) = delete;

  const std::string& name() const { return name_; }
  const Protocol& protocol() const { return proto_; }
  /// This run's place in a multi-process run (its gradient buckets' counters).
  const DistContext& dist() const { return dist_; }
  std::string checkpoint_path() const { return cfg_.out_dir + "/checkpoint-" + name_ + ".pt"; }
  /// The extra copy written after epoch `epoch` when cfg.save_at == epoch.
  std::string epoch_checkpoint_path(int64_t epoch) const {
    return cfg_.out_dir + "/checkpoint-" + name_ + "-e" + std::to_string(epoch) + ".pt";
  }
  ResNet& model() { return model_; }
  /// The DRO-LT loss and the bank of the first DRO-LT layer (the penultimate
  /// features by default); loss() is empty outside DRO-LT runs.
  drolt::RobustCentroidLoss& loss() { return losses_.empty() ? no_loss_ : losses_[0]; }
  drolt::CentroidBank& bank() { return banks_[0]; }
  const std::vector<drolt::RobustCentroidLoss>& losses() const { return losses_; }
  const std::vector<drolt::CentroidBank>& banks() const { return banks_; }
  /// LWS's per-class scales (undefined before an LWS stage or without one).
  torch::Tensor lws_scales() const {
    for (size_t i = 0; i < proto_.stage_count(); ++i) {
      if (const auto* lws = dynamic_cast<const LwsStage*>(&proto_.stage(i))) return lws->scales();
    }
    return {};
  }
  /// The representation's batch-norm buffers, as snapshotted when it finished (empty before).
  const std::vector<torch::Tensor>& representation_buffers() const { return joint_buffers_; }
  const std::vector<EpochRecord>& history() const { return history_; }
  int64_t next_epoch() const { return next_epoch_; }
  bool interrupted() const { return interrupted_; }
  std::string phase_of(int64_t e) const { return proto_.phase(e); }

  /// Runs (or resumes) to the end. Returns the results evaluated so far and
  /// written to <out>/result-<name>.json; empty when stopped by cfg.stop_after.
  std::vector<EvalResult> run(std::ostream& log) {
    const int64_t total = proto_.total_epochs(), E = proto_.representation_epochs();
    if (cfg_.resume && file_exists(checkpoint_path())) {
      try {
        load_checkpoint(checkpoint_path());
      } catch (const c10::Error& e) {
        throw std::runtime_error("cannot resume from '" + checkpoint_path() + "': " + e.what_without_backtrace() +
                                 "\n  (a checkpoint of another drolt_train version, or a damaged file? remove it "
                                 "to start this run over)");
      }
      rewrite_jsonl();  // drops lines of epochs after the checkpoint (they will run again)
      log << "[" << name_ << "] resumed from " << checkpoint_path() << " at epoch " << next_epoch_ << "/" << total
          << "\n";
    } else {
      if (cfg_.resume) {
        log << "[" << name_ << "] --resume: no checkpoint at " << checkpoint_path() << ", starting fresh\n";
      }
      if (proto_.method().dro() && !cfg_.warm_start.empty()) {
        load_warm_start(cfg_.warm_start);
        log << "[" << name_ << "] CE warm-up (epochs 1-" << next_epoch_ << ") taken from " << cfg_.warm_start
            << "\n";
      }
    }
    for (int64_t e = next_epoch_; e < total; ++e) {
      EpochRecord rec = proto_.in_representation(e) ? train_representation_epoch(e) : train_classifier_epoch(e);
      if ((e + 1) % cfg_.val_every == 0 || e + 1 == total || e + 1 == E || proto_.ends_stage(e)) {
        rec.val_acc = epoch_val_accuracy(e);
      }
      elapsed_ += seconds_since(rec_start_);
      next_epoch_ = e + 1;
      history_.push_back(rec);
      print_progress(log, rec);
      append_jsonl(rec);

      if (e + 1 == E) {
        if (cfg_.layer_analysis) write_layer_analysis(layer_analysis());
        snapshot_joint();
        for (size_t i = 0; i < proto_.stage_count(); ++i) {
          if (!proto_.stage(i).trains()) write_result(evaluate(i));
        }
      }
      if (proto_.ends_stage(e)) write_result(evaluate(proto_.stage_index_at(e)));
      if (cfg_.checkpoint_every > 0 && ((e + 1) % cfg_.checkpoint_every == 0 || e + 1 == total)) {
        save_checkpoint(checkpoint_path());
      }
      if (cfg_.save_at > 0 && next_epoch_ == cfg_.save_at) save_checkpoint(epoch_checkpoint_path(cfg_.save_at));
      // Several processes: rank 0 writes results and checkpoints that the others read.
      dist_.barrier();
      if (cfg_.stop_after >= 0 && next_epoch_ >= cfg_.stop_after && next_epoch_ < total) {
        log << "[" << name_ << "] stopping after epoch " << next_epoch_ << " (--stop-after)\n";
        interrupted_ = true;
        break;
      }
    }
    std::vector<EvalResult> out;
    if (interrupted_) return out;
    for (const auto& k : proto_.classifiers()) {
      const std::string p = result_path(proto_.row_name(k));
      if (file_exists(p)) {
        std::ifstream f(p);
        out.push_back(json::parse(f).get<EvalResult>());
      }
    }
    return out;
  }

  /// Nearest-centroid accuracy of one layer's pooled features.
  struct LayerAccuracy {
    int64_t layer = 0;
    int64_t dim = 0;
    GroupAccuracy test;  // Many / Medium / Few / All, %
  };

  /// The paper's layer analysis: for the stem and every stage (0..3, 3 the
  /// penultimate features), the test images classified by the nearest class
  /// mean of the training images' pooled features at that layer (exact means
  /// over the training set, eval mode). Layer 3 is the `nc` metric of evaluate().
  std::vector<LayerAccuracy> layer_analysis() {
    std::vector<LayerAccuracy> out;
    for (int64_t l = 0; l <= 3; ++l) {
      drolt::CentroidBank bank(data_.num_classes, model_->layer_dim(l));
      bank->accumulate(infer_features(*data_.train, l), data_.train_y);
      bank->finalize();
      auto pred =
          drolt::metrics::nearest_centroid_predict(infer_features(*data_.test, l), bank->centroids(), bank->valid());
      out.push_back(LayerAccuracy{
          l, model_->layer_dim(l),
          percent(drolt::metrics::split_accuracy(pred, data_.test_y, data_.group_counts, thresholds()))});
    }
    return out;
  }

  /// <out>/layers-<run>.csv: one line per layer.
  void write_layer_analysis(const std::vector<LayerAccuracy>& rows) const {
    if (!dist_.is_main()) return;
    std::ofstream f(cfg_.out_dir + "/layers-" + name_ + ".csv");
    f << "run,layer,name,dim,many,medium,few,all\n";
    for (const auto& r : rows) {
      f << name_ << "," << r.layer << "," << layer_name(r.layer) << "," << r.dim << "," << r.test.many << ","
        << r.test.medium << "," << r.test.few << "," << r.test.all << "\n";
    }
  }

  std::string result_path(const std::string& result_name) const {
    std::string n = result_name;
    std::replace(n.begin(), n.end(), '/', '_');
    return cfg_.out_dir + "/result-" + n + ".json";
  }

  // ---------------------------------------------------------------- checkpoints
  void save_checkpoint(const std::string& path) {
    if (!dist_.is_main()) return;  // every rank holds the same state
    namespace ck = checkpoint;
    torch::serialize::OutputArchive ar;
    ar.write("epoch", torch::tensor(next_epoch_, torch::kLong));
    ar.write("elapsed", torch::tensor(elapsed_, torch::kDouble));
    ar.write("fingerprint", ck::string_tensor(fingerprint().dump()));
    ar.write("libtorch", ck::string_tensor(ck::libtorch_version()));
    ar.write("history", ck::string_tensor(json(lines_).dump()));
    torch::serialize::OutputArchive m, o;
    model_->save(m);
    ar.write("model", m);
    opt_->save(o);
    ar.write("optimizer", o);
    for (size_t i = 0; i < banks_.size(); ++i) {
      torch::serialize::OutputArchive b;
      banks_[i]->save(b);
      ar.write(layer_key("bank", i), b);
    }
    for (size_t i = 0; i < losses_.size(); ++i) {
      torch::serialize::OutputArchive l;
      losses_[i]->save(l);
      ar.write(layer_key("loss", i), l);
    }
    if (rep_sampler_) {
      torch::serialize::OutputArchive s;
      rep_sampler_->save(s);
      ar.write("rep_sampler", s);
    }
    if (joint_weight_.defined()) {
      ar.write("joint_weight", joint_weight_);
      ar.write("joint_bias", joint_bias_);
      torch::serialize::OutputArchive jb;
      for (size_t i = 0; i < joint_buffers_.size(); ++i) jb.write("b" + std::to_string(i), joint_buffers_[i].cpu());
      ar.write("joint_buffers", jb);
    }
    if (stage_opt_) {
      torch::serialize::OutputArchive c, s;
      stage_opt_->save(c);
      ar.write("stage_optimizer", c);
      stage_sampler_->save(s);
      ar.write("stage_sampler", s);
      proto_.stage(stage_index_).save(ar);
    }
    proto_.method().save(ar);
    // The data order and augmentation draw from torch's default CPU generator.
    ar.write("rng", ck::cpu_rng_state());
    ck::write(ar, path);
  }

  /// Restores the run from the checkpoint at `path`, all or nothing: the
  /// checkpoint is first read into a fresh run (its own network, optimizers,
  /// banks, losses, samplers and stages), and only once all of it has been
  /// read is it read into this one; a checkpoint that fails part-way leaves
  /// this run (and the CPU generator) as it was.
  void load_checkpoint(const std::string& path) {
    const auto rng = checkpoint::cpu_rng_state();
    try {
      Run fresh(cfg_, data_, spec_, dist_);
      fresh.read_checkpoint(path);
    } catch (...) {
      checkpoint::set_cpu_rng_state(rng);
      throw;
    }
    read_checkpoint(path);
  }

  /// Reads the checkpoint at `path` into this run, part by part (see load_checkpoint).
  void read_checkpoint(const std::string& path) {
    namespace ck = checkpoint;
    torch::serialize::InputArchive ar;
    ck::read(ar, path);
    // Past the container's checks, any failure still names the file.
    ck::reading(path, [&] {
      ck::require_same_libtorch(ar, path);
      const std::string fp = ck::read_string(ar, "fingerprint");
      if (fp != fingerprint().dump()) {
        throw std::runtime_error("checkpoint '" + path +
                                 "' was written with different settings; refusing to resume.\n  checkpoint: " + fp +
                                 "\n  now:        " + fingerprint().dump());
      }
      next_epoch_ = ck::read_tensor(ar, "epoch").item<int64_t>();
      if (next_epoch_ < 0 || next_epoch_ > proto_.total_epochs()) {
        throw std::runtime_error("checkpoint '" + path + "' is at epoch " + std::to_string(next_epoch_) +
                                 ", expected one in [0, " + std::to_string(proto_.total_epochs()) + "]");
      }
      elapsed_ = ck::read_tensor(ar, "elapsed").item<double>();
      history_from_json(json::parse(ck::read_string(ar, "history")));
      torch::serialize::InputArchive m, o;
      ar.read("model", m);
      model_->load(m);
      model_->to(device_);
      if (cfg_.channels_last) model_->to_channels_last();
      ar.read("optimizer", o);
      opt_->load(o);
      ck::require_matching_state(*opt_, path, "optimizer");
      for (size_t i = 0; i < banks_.size(); ++i) {
        torch::serialize::InputArchive b;
        ar.read(layer_key("bank", i), b);
        banks_[i]->load(b);
        banks_[i]->to(device_);
      }
      for (size_t i = 0; i < losses_.size(); ++i) {
        torch::serialize::InputArchive l;
        ar.read(layer_key("loss", i), l);
        losses_[i]->load(l);
        losses_[i]->to(device_);
      }
      if (rep_sampler_) {
        torch::serialize::InputArchive s;
        ar.read("rep_sampler", s);
        rep_sampler_->load(s);
      }
      const int64_t E = proto_.representation_epochs();
      if (next_epoch_ >= E) {
        joint_weight_ = ck::read_tensor(ar, "joint_weight").to(device_);
        joint_bias_ = ck::read_tensor(ar, "joint_bias").to(device_);
        joint_buffers_.clear();
        torch::serialize::InputArchive jb;
        if (ar.try_read("joint_buffers", jb)) {
          const size_t n = model_->buffers().size();
          for (size_t i = 0; i < n; ++i) joint_buffers_.push_back(ck::read_tensor(jb, "b" + std::to_string(i)).to(device_));
        } else if (cfg_.stage_bn_train) {
          throw std::runtime_error("checkpoint '" + path +
                                   "' has no batch-norm statistics of the representation, which --crt-bn train "
                                   "needs to start its classifier stages (written by an older drolt_train?)");
        }
      }
      if (next_epoch_ > E) {
        // The stage of the last epoch run; the next epoch may begin another.
        const size_t i = proto_.stage_index_at(next_epoch_ - 1);
        auto ctx = stage_context();
        proto_.stage(i).load(ar, ctx);
        make_stage_state(i);
        torch::serialize::InputArchive c, s;
        ar.read("stage_optimizer", c);
        stage_opt_->load(c);
        ck::require_matching_state(*stage_opt_, path, "classifier stage's optimizer");
        ar.read("stage_sampler", s);
        stage_sampler_->load(s);
      }
      proto_.method().load(ar);
      ck::set_cpu_rng_state(ck::read_tensor(ar, "rng"));
    });
  }

  /// Starts a DRO-LT run from a CE run's checkpoint taken after epoch
  /// dro_start (`--save-at` on the CE run): the CE warm-up of both runs is the
  /// same computation (same seed, data order, schedule), so this reproduces a
  /// DRO-LT run trained from scratch exactly, without repeating the warm-up.
  /// Full-refresh centroids only (the cheap modes fill the bank during the last
  /// warm-up epoch, which a CE run does not do).
  void load_warm_start(const std::string& path) {
    namespace ck = checkpoint;
    if (cfg_.centroid_mode != CentroidMode::full) {
      throw std::runtime_error("--warm-start needs --centroids full (the previous / ema modes build their first "
                               "centroids during the last CE epoch)");
    }
    if (!file_exists(path)) throw std::runtime_error("--warm-start: no checkpoint '" + path + "'");
    torch::serialize::InputArchive ar;
    ck::read(ar, path);
    ck::reading(path, [&] {
      ck::require_same_libtorch(ar, path);
      const json theirs = json::parse(ck::read_string(ar, "fingerprint")), ours = fingerprint();
      ck::require_same(theirs, ours,
                       {"dataset", "rho", "n_max", "data_seed", "balanced_subset", "depth", "epochs", "batch", "lr", "seed", "schedule",
                        "device", "model"},
                       "--warm-start: ", path);
      if (theirs.value("run", std::string()) != "ce") {
        throw std::runtime_error("--warm-start: '" + path + "' is not a checkpoint of a CE run");
      }
      const int64_t epoch = ck::read_tensor(ar, "epoch").item<int64_t>();
      if (epoch != cfg_.dro_start_epoch()) {
        throw std::runtime_error("--warm-start: checkpoint '" + path + "' was taken after epoch " +
                                 std::to_string(epoch) + ", expected the DRO-LT start epoch " +
                                 std::to_string(cfg_.dro_start_epoch()) + " (--save-at on the CE run)");
      }
      next_epoch_ = epoch;
      elapsed_ = ck::read_tensor(ar, "elapsed").item<double>();
      history_from_json(json::parse(ck::read_string(ar, "history")));
      for (auto& h : history_) h.run = name_;
      torch::serialize::InputArchive m, o;
      ar.read("model", m);
      model_->load(m);
      model_->to(device_);
      if (cfg_.channels_last) model_->to_channels_last();
      // The CE optimizer has one parameter group (the network); ours may have a
      // second one for learned radii. Load into a one-group SGD over the same
      // parameters and move the per-parameter momentum buffers across.
      ar.read("optimizer", o);
      torch::optim::SGD ce_opt(model_->parameters(), torch::optim::SGDOptions(cfg_.lr)
                                                         .momentum(cfg_.momentum)
                                                         .weight_decay(cfg_.weight_decay));
      ce_opt.load(o);
      ck::require_matching_state(ce_opt, path, "CE optimizer");
      for (auto& kv : ce_opt.state()) opt_->state()[kv.first] = kv.second->clone();
      ck::set_cpu_rng_state(ck::read_tensor(ar, "rng"));
      // The warm-up's log lines, relabelled, so metrics.jsonl covers the whole run.
      for (auto& l : lines_) l["run"] = name_;
      rewrite_jsonl();
    });
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }

  /// "bank", "loss" for the first layer (the only one by default), "bank_<l>" for layer l after it.
  std::string layer_key(const char* what, size_t i) const {
    return i == 0 ? std::string(what) : std::string(what) + "_" + std::to_string(layers_[i]);
  }

  /// Settings that must match for a checkpoint to be resumed.
  json fingerprint() const {
    const auto& rep = proto_.method();
    json j{{"run", name_},
           {"dataset", name_of(cfg_.dataset)},
           {"rho", cfg_.rho},
           {"n_max", cfg_.n_max},
           {"data_seed", cfg_.data_seed},
           {"balanced_subset", cfg_.balanced_subset},
           {"depth", cfg_.depth},
           {"epochs", cfg_.epochs},
           {"batch", cfg_.batch_size},
           {"lr", cfg_.lr},
           {"seed", cfg_.seed},
           {"crt_epochs", proto_.trained_count() == 0 ? 0 : cfg_.stage_epochs},
           {"schedule", name_of(cfg_.schedule)},
           {"device", name_of(cfg_.device)},
           {"model", model_->is_cosine() ? "cosine" : "linear"},
           {"classifiers", proto_.classifiers()}};
    rep.describe(j);
    if (rep.dro()) {
      j["lambda"] = cfg_.dro_sum ? -1.0 : cfg_.lambda;
      j["temperature"] = cfg_.temperature;
      j["eps0"] = cfg_.radius.eps0();
      j["dro_start"] = cfg_.dro_start_epoch();
      j["dro_lr"] = cfg_.dro_lr;
      j["centroids"] = name_of(cfg_.centroid_mode);
      j["dro_layers"] = layers_;
      if (layers_.size() > 1) j["dro_layer_weights"] = cfg_.dro_weights();
    }
    if (dist_.active()) j["world_size"] = dist_.world();  // the data order depends on it
    if (cfg_.imagenet_depth) j["arch"] = cfg_.arch_name();
    if (cfg_.image_data()) {
      j["train_set"] = cfg_.train_set;
      j["make_longtail"] = cfg_.make_longtail;
      j["streaming"] = data_.train->streaming();
      if (data_.train->streaming()) j["image_size"] = cfg_.image_size;
    }
    if (cfg_.amp) j["amp"] = true;
    return j;
  }

  /// Every setting that must agree between the processes of one run: the
  /// checkpoint's fingerprint and the rest of what changes the computation
  /// (optimiser, schedule, losses, classifier stages) or the collectives
  /// (evaluation, checkpoints, resume). Per-process settings (--threads,
  /// --out, -q, plots) are not in it.
  json settings() const {
    json j = fingerprint();
    j["momentum"] = cfg_.momentum;
    j["wd"] = cfg_.weight_decay;
    j["gamma"] = cfg_.gamma;
    j["milestones"] = cfg_.milestones;
    j["warmup"] = cfg_.warmup_epochs;
    j["loss_cfg"] = name_of(cfg_.loss);
    j["cb_beta"] = cfg_.cb_beta;
    j["focal_gamma"] = cfg_.focal_gamma;
    j["ldam"] = {cfg_.ldam_margin, cfg_.ldam_scale};
    j["drw_start"] = cfg_.drw_start_epoch();
    j["class_aware_k"] = cfg_.class_aware_k;
    j["radius"] = cfg_.radius.name();
    j["dro_sum"] = cfg_.dro_sum;
    j["ema_momentum"] = cfg_.ema_momentum;
    j["radius_opt"] = {cfg_.radius_lr, cfg_.radius_weight_decay};
    j["stage"] = {cfg_.stage_lr, name_of(cfg_.stage_schedule), name_of(cfg_.stage_sampler), cfg_.crt_reinit,
                  cfg_.stage_bn_train};
    j["post_hoc_tau"] = {cfg_.tau_norm_tau, cfg_.la_tau};
    j["augment"] = {cfg_.flip, cfg_.crop_pad};
    j["eval"] = {cfg_.val_per_class, cfg_.test_limit, cfg_.val_every};
    j["checkpoints"] = {cfg_.checkpoint_every, cfg_.save_at, cfg_.stop_after, cfg_.resume, cfg_.warm_start};
    j["layer_analysis"] = cfg_.layer_analysis;
    j["channels_last"] = cfg_.channels_last;
    if (cfg_.image_data()) j["image"] = {cfg_.image_size, cfg_.resize, name_of(cfg_.loader)};
    return j;
  }

  /// Restores the history (and the log lines) saved in a checkpoint.
  void history_from_json(const json& a) {
    history_.clear();
    lines_.clear();
    for (const auto& j : a) {
      lines_.push_back(j);
      history_.push_back(j.get<EpochRecord>());
    }
  }

  void append_jsonl(const EpochRecord& r) {
    json j = r;
    j["seed"] = cfg_.seed;
    if (!losses_.empty() && r.phase != "ce") {
      auto radii = losses_[0]->radii().detach().cpu().to(torch::kDouble);
      j["radius_mean"] = radii.mean().item<double>();
      j["radius_min"] = radii.min().item<double>();
      j["radius_max"] = radii.max().item<double>();
    }
    lines_.push_back(j);
    if (!dist_.is_main()) return;  // rank 0 writes the log
    std::ofstream f(cfg_.out_dir + "/metrics.jsonl", std::ios::app);
    f << j.dump() << "\n";
  }

  /// metrics.jsonl = the other runs' lines + this run's lines as of the
  /// restored checkpoint.
  void rewrite_jsonl() {
    if (!dist_.is_main()) return;
    const std::string path = cfg_.out_dir + "/metrics.jsonl";
    std::vector<std::string> keep;
    {
      std::ifstream f(path);
      std::string line;
      while (std::getline(f, line)) {
        if (line.empty()) continue;
        json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || j.value("run", std::string()) != name_) keep.push_back(line);
      }
    }
    std::ofstream f(path, std::ios::trunc);
    for (const auto& l : keep) f << l << "\n";
    for (const auto& j : lines_) f << j.dump() << "\n";
  }

  void print_progress(std::ostream& log, const EpochRecord& r) {
    if (!cfg_.verbose || !dist_.is_main()) return;
    // Time left: mean epoch time of this stage kind so far (classifier epochs are
    // estimated at a third of a representation epoch until one has run).
    double bb = 0, cl = 0;
    int nb = 0, nc = 0;
    for (const auto& h : history_) {
      if (proto_.is_classifier_phase(h.phase)) {
        cl += h.seconds;
        ++nc;
      } else {
        bb += h.seconds;
        ++nb;
      }
    }
    const double mb = nb ? bb / nb : 0, mc = nc ? cl / nc : mb / 3;
    double left = 0;
    const int64_t total = proto_.total_epochs();
    for (int64_t e = next_epoch_; e < total; ++e) left += proto_.in_representation(e) ? mb : mc;
    char buf[512];
    if (proto_.is_classifier_phase(r.phase)) {
      std::snprintf(buf, sizeof(buf), "[%s] epoch %3lld/%lld %-3s lr %.4f loss %.4f train %5.1f%%", name_.c_str(),
                    static_cast<long long>(r.epoch + 1), static_cast<long long>(total), r.phase.c_str(), r.lr, r.loss,
                    r.train_acc);
    } else {
      std::snprintf(buf, sizeof(buf), "[%s] epoch %3lld/%lld %-3s lr %.4f loss %.4f (base %.4f dro %.4f) train %5.1f%%",
                    name_.c_str(), static_cast<long long>(r.epoch + 1), static_cast<long long>(total),
                    r.phase.c_str(), r.lr, r.loss, r.base_loss, r.dro, r.train_acc);
    }
    log << buf;
    if (!r.bound_gap.empty()) {  // the bound's relative gap, per DRO-LT layer
      log << " gap";
      for (double g : r.bound_gap) {
        std::snprintf(buf, sizeof(buf), " %.3f", g);
        log << buf;
      }
    }
    if (r.val_acc >= 0) {
      std::snprintf(buf, sizeof(buf), " val %5.1f%%", r.val_acc);
      log << buf;
    }
    std::snprintf(buf, sizeof(buf), " | %6.0f img/s %5.1fs", r.images_per_s, r.seconds);
    log << buf;
    if (r.centroid_seconds > 0) {
      std::snprintf(buf, sizeof(buf), " (centroids %.1fs)", r.centroid_seconds);
      log << buf;
    }
    log << " | left " << format_duration(left) << "\n";
    log.flush();
  }

  // ---------------------------------------------------------------- schedule
  double lr_factor(int64_t e) const {
    const int64_t w = std::min<int64_t>(cfg_.warmup_epochs, cfg_.epochs);
    if (e < w) return static_cast<double>(e + 1) / static_cast<double>(w);
    if (cfg_.schedule == Schedule::constant) return 1.0;
    if (cfg_.schedule == Schedule::cosine) {
      const double T = static_cast<double>(std::max<int64_t>(1, cfg_.epochs - w));
      return 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(e - w) / T));
    }
    double f = 1.0;
    for (double m : cfg_.milestones) {
      if (e >= static_cast<int64_t>(std::llround(m * static_cast<double>(cfg_.epochs)))) f *= cfg_.gamma;
    }
    return f;
  }

  // ---------------------------------------------------------------- helpers
  /// The images of training batch `idx` (the next one of the pass begun on
  /// data_.train), augmented when `augment`: by the loader when streaming, here
  /// (random crop with padding, flip) when in memory.
  torch::Tensor batch_x(const torch::Tensor& idx, bool augment) const {
    auto x = data_.train->next(idx);
    if (augment && !data_.train->streaming()) x = augment_batch(x, pad_, cfg_.flip);
    return precision_.input(x, device_);
  }

  /// The network's forward pass under --amp, its outputs in float32.
  ResNetOutput forward_model(const torch::Tensor& x) {
    ResNetOutput out;
    {
      AutocastGuard amp(precision_.amp);
      out = model_->forward(x);
    }
    if (precision_.amp) {
      out.features = Precision::float32(out.features);
      out.logits = Precision::float32(out.logits);
      out.stem = Precision::float32(out.stem);
      for (auto& t : out.stages) t = Precision::float32(t);
    }
    return out;
  }

  /// Penultimate features under --amp, in float32.
  torch::Tensor features_of(const torch::Tensor& x) {
    AutocastGuard amp(precision_.amp);
    return Precision::float32(model_->features(x));
  }

  /// This rank's share of a batch every rank drew alike (at least one image;
  /// `real` marks the images that do not only pad a share).
  std::vector<int64_t> share_of(const std::vector<size_t>& batch, std::vector<bool>& real) const {
    std::vector<int64_t> mine;
    real.clear();
    if (!dist_.active()) {
      mine.assign(batch.begin(), batch.end());
      real.assign(batch.size(), true);
      return mine;
    }
    const size_t m = std::max(batch.size(), static_cast<size_t>(dist_.world()));
    for (size_t i = static_cast<size_t>(dist_.rank()); i < m; i += static_cast<size_t>(dist_.world())) {
      mine.push_back(static_cast<int64_t>(batch[i % batch.size()]));
      real.push_back(i < batch.size());
    }
    return mine;
  }

  /// A run that diverged (a learning rate too high, say) stops at the first
  /// step whose loss is not finite, naming where and what, instead of training
  /// on NaN weights until an evaluation fails. With several processes the
  /// check is made once per epoch on the loss summed over every rank (all
  /// ranks stop together; a rank stopping alone would leave the others waiting
  /// in a collective). `step` < 0: that epoch-level check.
  void check_finite_loss(const std::string& phase, int64_t e, int64_t step, int64_t steps, double loss,
                         double base, double dro_part, double lr) const {
    if (std::isfinite(loss)) return;
    const bool cls = proto_.is_classifier_phase(phase), dro = !cls && proto_.dro_at(e);
    auto str = [](double v) {  // "nan", whatever its sign bit
      std::ostringstream o;
      if (std::isnan(v)) o << "nan";
      else o << v;
      return o.str();
    };
    std::ostringstream m;
    m << "[" << name_ << "] training diverged: the loss is " << str(loss) << " at epoch " << e + 1 << "/"
      << proto_.total_epochs() << " (phase " << phase << ")";
    if (step >= 0) {
      m << ", step " << step + 1 << " of " << steps;
    } else {
      m << ", mean over the epoch and every process";
    }
    if (dro) m << "; the base loss " << str(base) << ", the DRO-LT term " << str(dro_part);
    m << "; learning rate " << lr
      << ". Nothing of this epoch was kept (checkpoints and results are from earlier epochs): start the run "
         "again with "
      << (cls   ? "a lower --stage-lr"
          : !dro ? "a lower --lr or a longer --warmup"
          : cfg_.dro_lr > 0 ? "a lower --dro-lr, --lambda or --radius-lr"
                            : "a lower --lr, --lambda or --radius-lr, or a longer --warmup");
    TORCH_CHECK(false, m.str());
  }

  /// The running sums of a representation epoch (this rank's samples; every
  /// rank's once reduced).
  struct EpochSums {
    double loss = 0, base = 0, dro = 0;
    int64_t correct = 0, seen = 0;
    /// The bound's mean relative gap per DRO-LT layer, summed over the steps
    /// (on the device: read once at the end of the epoch).
    std::vector<torch::Tensor> gap_sum;
    int64_t gap_steps = 0;
    int64_t step = 0, steps = 0;  // for the message of a diverged run
  };

  /// Sets the learning rates of representation epoch e (the network's, and
  /// the learned radii's) and returns the network's.
  double set_representation_lr(int64_t e) {
    double lr = 0, radius_lr = 0;
    if (proto_.dro_at(e) && cfg_.dro_lr > 0) {  // the authors' constant learning rate
      lr = cfg_.dro_lr;
      radius_lr = cfg_.radius_lr;
    } else {
      const double f = lr_factor(e);
      lr = cfg_.lr * f;
      radius_lr = cfg_.radius_lr * f;
    }
    auto& groups = opt_->param_groups();
    static_cast<torch::optim::SGDOptions&>(groups[0].options()).lr(lr);
    if (groups.size() > 1) static_cast<torch::optim::SGDOptions&>(groups[1].options()).lr(radius_lr);
    return lr;
  }

  /// This rank's batches of representation epoch e, begun on data_.train;
  /// `keeps` (defined with several processes) select the rows that feed the
  /// centroid bank (not those that only pad a share).
  void representation_batches(int64_t e, std::vector<torch::Tensor>& batches, std::vector<torch::Tensor>& keeps) {
    if (proto_.sampler_at(e) == SamplerKind::instance) {
      const int64_t N = data_.train->size();
      // Several processes: this rank's share of an order drawn from (seed, epoch),
      // the same on every rank, and batch / WORLD_SIZE samples per step.
      DistContext::Shard shard;
      if (dist_.active()) shard = dist_.epoch_shard(N, cfg_.seed, e);
      auto perm = dist_.active() ? shard.idx : torch::randperm(N, torch::kLong);
      const int64_t NL = perm.size(0), BL = dist_.local_batch(cfg_.batch_size);
      for (int64_t s = 0; s < NL; s += BL) {
        const int64_t n = std::min(BL, NL - s);
        torch::Tensor keep;
        if (dist_.active()) keep = shard.real.narrow(0, s, n).nonzero().view(-1).to(device_);
        batches.push_back(perm.narrow(0, s, n));
        keeps.push_back(keep);
      }
    } else {
      // A re-balancing sampler (own generator, checkpointed); every rank draws
      // the same global batch and takes its share.
      begin_epoch(*rep_sampler_, e - proto_.method().first_sampler_epoch());
      std::vector<bool> real;
      while (auto batch = rep_sampler_->next(static_cast<size_t>(cfg_.batch_size))) {
        auto ids = share_of(*batch, real);
        torch::Tensor keep;
        if (dist_.active()) {
          std::vector<int64_t> k;
          for (size_t i = 0; i < real.size(); ++i) {
            if (real[i]) k.push_back(static_cast<int64_t>(i));
          }
          keep = torch::tensor(k, torch::kLong).to(device_);
        }
        batches.push_back(torch::tensor(ids, torch::kLong));
        keeps.push_back(keep);
      }
    }
    data_.train->begin(batches, /*augment=*/true, e);
  }

  /// One optimisation step of representation epoch e on the images `idx`;
  /// `feed`: its features feed the centroid refresh (rows `keep` when defined).
  void representation_step(const EpochRecord& rec, const LossSpec& spec, bool feed, const torch::Tensor& idx,
                            const torch::Tensor& keep, EpochSums& sums) {
    const int64_t e = rec.epoch, n = idx.size(0);
    auto x = batch_x(idx, true);
    auto y = data_.train_y.index_select(0, idx).to(device_);
    auto out = forward_model(x);
    std::vector<torch::Tensor> feats;
    for (int64_t l : layers_) feats.push_back(l == 3 ? out.features : l == 0 ? out.stem : out.stages[static_cast<size_t>(l - 1)]);
    const LossValue v = dro_.is_empty() ? compute_loss(spec, out.logits, feats[0], y, no_loss_, banks_[0])
                                        : compute_loss(spec, out.logits, feats, y, dro_);
    if (proto_.dro_at(e)) {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < losses_.size(); ++i) {
        auto g = drolt::bound_tightness(losses_[i], feats[i].detach(), y, banks_[i]).mean_relative_gap;
        if (sums.gap_sum.size() <= i) sums.gap_sum.push_back(g.to(torch::kDouble));
        else sums.gap_sum[i] += g.to(torch::kDouble);
      }
      ++sums.gap_steps;
    }
    opt_->zero_grad();
    if (dist_.active()) dist_.prepare_gradients(trained_parameters());  // all-reduces overlap backward()
    v.total.backward();
    if (dist_.active()) dist_.allreduce_gradients(trained_parameters());
    opt_->step();
    for (auto& l : losses_) l->project_();
    proto_.method().after_step(model_->classifier());
    for (size_t i = 0; feed && i < refresh_.size(); ++i) {
      auto fz = feats[i], fy = y;
      if (keep.defined()) {  // not the rows that only pad the shard
        fz = fz.index_select(0, keep);
        fy = fy.index_select(0, keep);
      }
      refresh_[i]->observe(fz, fy);
    }
    const double lt = v.total.item<double>(), lb = v.base.item<double>();
    const double ld = v.dro.defined() ? v.dro.item<double>() : 0.0;
    if (!dist_.active()) check_finite_loss(rec.phase, e, sums.step, sums.steps, lt, lb, ld, rec.lr);
    ++sums.step;
    sums.loss += lt * static_cast<double>(n);
    sums.base += lb * static_cast<double>(n);
    sums.dro += ld * static_cast<double>(n);
    sums.correct += out.logits.argmax(1).eq(y).sum().item<int64_t>();
    sums.seen += n;
  }

  /// The epoch's statistics into `rec`, over every rank's samples; with
  /// several processes also one set of batch-norm statistics for evaluation,
  /// refreshes and checkpoints.
  void finish_representation_epoch(EpochSums& s, EpochRecord& rec, Clock::time_point t_train) {
    std::vector<double> gaps;
    for (auto& g : s.gap_sum) gaps.push_back(g.item<double>());
    if (dist_.active()) {
      std::vector<double> local{s.loss, s.base, s.dro, static_cast<double>(s.correct), static_cast<double>(s.seen),
                                static_cast<double>(s.gap_steps)};
      local.insert(local.end(), gaps.begin(), gaps.end());
      auto t = dist_.sum(local);
      s.loss = t[0];
      s.base = t[1];
      s.dro = t[2];
      s.correct = static_cast<int64_t>(t[3]);
      s.seen = static_cast<int64_t>(t[4]);
      s.gap_steps = static_cast<int64_t>(t[5]);
      for (size_t i = 0; i < gaps.size(); ++i) gaps[i] = t[6 + i];
      dist_.average_buffers(*model_);
      check_finite_loss(rec.phase, rec.epoch, -1, 0, s.loss, s.base, s.dro, rec.lr);
    }
    for (double& g : gaps) g /= static_cast<double>(std::max<int64_t>(s.gap_steps, 1));
    rec.bound_gap = gaps;
    const double train_s = seconds_since(t_train);
    const double seen = static_cast<double>(s.seen);
    rec.loss = s.loss / seen;
    rec.base_loss = s.base / seen;
    rec.dro = proto_.dro_at(rec.epoch) ? s.dro / seen : 0.0;
    rec.train_acc = 100.0 * static_cast<double>(s.correct) / seen;
    rec.images_per_s = seen / std::max(train_s, 1e-9);
    rec.seconds = seconds_since(rec_start_);
  }

  EpochRecord train_representation_epoch(int64_t e) {
    rec_start_ = Clock::now();
    frozen_ready_ = false;  // the representation changes
    EpochRecord rec;
    rec.run = name_;
    rec.epoch = e;
    rec.phase = proto_.phase(e);
    rec.lr = set_representation_lr(e);
    const LossSpec spec = proto_.loss_at(e);
    const bool feed = !refresh_.empty() && refresh_[0]->observes(e);
    for (auto& r : refresh_) rec.centroid_seconds += r->before_epoch(e);
    model_->train();
    EpochSums sums;
    const auto t_train = Clock::now();
    std::vector<torch::Tensor> batches, keeps;
    representation_batches(e, batches, keeps);
    sums.steps = static_cast<int64_t>(batches.size());
    for (size_t b = 0; b < batches.size(); ++b) representation_step(rec, spec, feed, batches[b], keeps[b], sums);
    for (auto& r : refresh_) r->after_epoch(e);
    finish_representation_epoch(sums, rec, t_train);
    return rec;
  }

  // ---------------------------------------------------------------- classifier stages
  /// The joint classifier as the representation left it; every trained stage starts from it.
  void snapshot_joint() {
    joint_weight_ = model_->classifier()->weight.detach().clone();
    joint_bias_ = model_->classifier()->bias.detach().clone();
    // The representation's batch-norm statistics: with --stage-bn train every stage starts from them.
    joint_buffers_.clear();
    for (const auto& b : model_->buffers()) joint_buffers_.push_back(b.detach().clone());
  }

  /// Puts the representation's batch-norm statistics back (--stage-bn train, at a stage's start).
  void restore_joint_buffers() {
    torch::NoGradGuard g;
    auto bs = model_->buffers();
    TORCH_CHECK(bs.size() == joint_buffers_.size(), "drolt_train: expected ", bs.size(),
                " batch-norm buffers of the representation, have ", joint_buffers_.size());
    for (size_t i = 0; i < bs.size(); ++i) bs[i].copy_(joint_buffers_[i]);
    frozen_ready_ = false;  // the stage's features follow its own statistics
  }

  /// What the stages see of this run.
  StageContext stage_context() { return StageContext{model_, device_, data_.counts, train_f_, data_.train_y}; }

  /// Optimizer and sampler of trained stage i (classifiers() order), over its parameters.
  void make_stage_state(size_t i) {
    auto& stage = proto_.stage(i);
    auto ctx = stage_context();
    stage_index_ = i;
    stage_sampler_ = make_sampler(cfg_.stage_sampler, data_.train_y, cfg_.class_aware_k,
                                  static_cast<uint64_t>(cfg_.seed) * 7919 + 17, cfg_.stage_epochs);
    auto o = torch::optim::SGDOptions(cfg_.stage_lr).momentum(cfg_.momentum).weight_decay(stage.weight_decay());
    stage_opt_ = std::make_unique<torch::optim::SGD>(stage.parameters(ctx), o);
  }

  /// Trained stage i begins: from the joint classifier (and, with --stage-bn
  /// train, the representation's batch-norm statistics).
  void start_stage(size_t i) {
    {
      torch::NoGradGuard g;
      auto& fc = model_->classifier();
      fc->weight.copy_(joint_weight_);
      fc->bias.copy_(joint_bias_);
    }
    if (cfg_.stage_bn_train) restore_joint_buffers();
    auto ctx = stage_context();
    proto_.stage(i).start(ctx);
    make_stage_state(i);
  }

  /// This epoch's batches of a trained stage, begun on data_.train.
  std::vector<torch::Tensor> stage_batches(int64_t e, int64_t k) {
    begin_epoch(*stage_sampler_, k);
    std::vector<bool> real;
    std::vector<torch::Tensor> batches;
    while (auto batch = stage_sampler_->next(static_cast<size_t>(cfg_.batch_size))) {
      batches.push_back(torch::tensor(share_of(*batch, real), torch::kLong));
    }
    data_.train->begin(batches, /*augment=*/true, e);
    return batches;
  }

  /// One epoch of a trained classifier stage (cRT, LWS, ...; Kang et al. 2020):
  /// frozen feature extractor (eval mode; with --stage-bn train, train mode: its
  /// weights stay fixed, its batch-norm statistics follow the stage's batches),
  /// --stage-sampler sampling, --stage-lr with a cosine or constant schedule.
  EpochRecord train_classifier_epoch(int64_t e) {
    rec_start_ = Clock::now();
    const size_t index = proto_.stage_index_at(e);
    auto& stage = proto_.stage(index);
    const int64_t k = proto_.epoch_in_stage(e);
    if (k == 0) start_stage(index);
    EpochRecord rec;
    rec.run = name_;
    rec.epoch = e;
    rec.phase = proto_.phase(e);
    const double f = cfg_.stage_schedule == Schedule::cosine
                         ? 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(k) / static_cast<double>(cfg_.stage_epochs)))
                         : 1.0;
    static_cast<torch::optim::SGDOptions&>(stage_opt_->param_groups()[0].options()).lr(cfg_.stage_lr * f);
    rec.lr = cfg_.stage_lr * f;
    if (cfg_.stage_bn_train) {
      model_->train();
    } else {
      model_->eval();
    }
    auto ctx = stage_context();
    double sum_loss = 0;
    int64_t correct = 0, seen = 0, step_i = 0;
    const auto t_train = Clock::now();
    const auto batches = stage_batches(e, k);
    for (const auto& idx : batches) {
      const int64_t n = idx.size(0);
      auto x = batch_x(idx, true);
      auto y = data_.train_y.index_select(0, idx).to(device_);
      torch::Tensor feats;
      {
        torch::NoGradGuard g;
        feats = features_of(x);
      }
      auto logits = stage.train_logits(ctx, feats);
      auto loss = stage.train_loss(ctx, logits, y);
      stage_opt_->zero_grad();
      if (dist_.active()) dist_.prepare_gradients(stage.parameters(ctx));
      loss.backward();
      if (dist_.active()) dist_.allreduce_gradients(stage.parameters(ctx));
      stage_opt_->step();
      stage.after_step(ctx);
      const double lt = loss.item<double>();
      if (!dist_.active()) check_finite_loss(rec.phase, e, step_i, static_cast<int64_t>(batches.size()), lt, lt, 0, rec.lr);
      ++step_i;
      sum_loss += lt * static_cast<double>(n);
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      seen += n;
    }
    model_->train();
    finish_classifier_epoch(sum_loss, correct, seen, rec, t_train);
    return rec;
  }

  /// The statistics of a classifier epoch into `rec`, over every rank.
  void finish_classifier_epoch(double sum_loss, int64_t correct, int64_t seen, EpochRecord& rec,
                               Clock::time_point t_train) {
    if (cfg_.stage_bn_train) {
      dist_.average_buffers(*model_);  // one set of statistics over the ranks' shards
      frozen_ready_ = false;           // they changed: evaluation recomputes the features
    }
    if (dist_.active()) {
      auto t = dist_.sum({sum_loss, static_cast<double>(correct), static_cast<double>(seen)});
      sum_loss = t[0];
      correct = static_cast<int64_t>(t[1]);
      seen = static_cast<int64_t>(t[2]);
      check_finite_loss(rec.phase, rec.epoch, -1, 0, sum_loss, sum_loss, 0, rec.lr);
    }
    rec.loss = sum_loss / static_cast<double>(seen);
    rec.base_loss = rec.loss;
    rec.train_acc = 100.0 * static_cast<double>(correct) / static_cast<double>(seen);
    rec.images_per_s = static_cast<double>(seen) / std::max(seconds_since(t_train), 1e-9);
    rec.seconds = seconds_since(rec_start_);
  }

  // ---------------------------------------------------------------- evaluation
  drolt::metrics::SplitThresholds thresholds() const {
    drolt::metrics::SplitThresholds t;
    t.many_above = cfg_.many_above;
    t.few_below = cfg_.few_below;
    return t;
  }

  /// Pooled features of layer `layer` (3: the penultimate ones) of a whole
  /// split (eval mode), on the CPU.
  torch::Tensor infer_features(DataSplit& split, int64_t layer = 3) {
    torch::NoGradGuard g;
    model_->eval();
    std::vector<torch::Tensor> feats;
    const auto batches = sequential_batches(split.size(), 500);
    split.begin(batches, /*augment=*/false, 0);
    for (const auto& idx : batches) {
      auto x = precision_.input(split.next(idx), device_);
      if (layer == 3) {
        feats.push_back(features_of(x).cpu());
      } else {
        AutocastGuard amp(precision_.amp);
        feats.push_back(Precision::float32(model_->layer_features(x, layer)).cpu());
      }
    }
    model_->train();
    return batches.empty() ? torch::empty({0, model_->layer_dim(layer)}) : torch::cat(feats);
  }

  /// Features of the frozen representation (computed once after it is trained).
  void ensure_frozen_features() {
    if (frozen_ready_) return;
    train_f_ = infer_features(*data_.train);
    test_f_ = infer_features(*data_.test);
    val_f_ = data_.val ? infer_features(*data_.val) : torch::Tensor();
    frozen_ready_ = true;
  }

  /// tau of stage i (tau-norm, la): the configured one, or the best on the validation split.
  double tau_of(size_t i) {
    auto& stage = proto_.stage(i);
    const double fixed = stage.configured_tau();
    if (fixed >= 0) return fixed;
    auto ctx = stage_context();
    return drolt::choose_tau(stage.tau_grid(), [&](double t) {
      return drolt::metrics::accuracy(stage.scores(ctx, val_f_, t), data_.val_y);
    });
  }

  /// Validation accuracy (%) after epoch e, with the classifier of that epoch.
  double epoch_val_accuracy(int64_t e) {
    if (data_.val_size() == 0) return std::nan("");
    if (proto_.in_representation(e)) {
      torch::NoGradGuard g;
      model_->eval();
      std::vector<torch::Tensor> preds;
      const auto batches = sequential_batches(data_.val->size(), 500);
      data_.val->begin(batches, /*augment=*/false, 0);
      for (const auto& idx : batches) {
        preds.push_back(forward_model(precision_.input(data_.val->next(idx), device_)).logits.argmax(1).cpu());
      }
      model_->train();
      return percent(drolt::metrics::split_accuracy(torch::cat(preds), data_.val_y, data_.group_counts, thresholds())).all;
    }
    ensure_frozen_features();
    auto ctx = stage_context();
    const auto pred = proto_.stage_at(e).scores(ctx, val_f_, 0.0);
    return percent(drolt::metrics::split_accuracy(pred, data_.val_y, data_.group_counts, thresholds())).all;
  }

  /// Stage i (classifiers() order) evaluated on the test (and validation) split.
  EvalResult evaluate(size_t i) {
    ensure_frozen_features();
    auto& stage = proto_.stage(i);
    auto ctx = stage_context();
    EvalResult r;
    r.name = proto_.row_name(stage.name());
    r.representation = name_;
    r.classifier = stage.name();
    double tau = 0.0;
    if (stage.has_tau()) {
      tau = tau_of(i);
      r.tau = tau;
    }
    const auto th = thresholds();
    auto test = stage.scores(ctx, test_f_, tau);
    auto pred = test.argmax(1);
    auto pc = drolt::metrics::per_class_accuracy(pred, data_.test_y, data_.num_classes).mul(100.0).contiguous();
    r.per_class.assign(pc.data_ptr<double>(), pc.data_ptr<double>() + pc.numel());
    r.test = percent(drolt::metrics::split_accuracy(pred, data_.test_y, data_.group_counts, th));
    if (stage.probabilities()) {
      r.ece = 100.0 * drolt::metrics::expected_calibration_error(torch::softmax(test.to(torch::kDouble), 1), data_.test_y);
    }
    r.nc = nearest_centroid_accuracy();
    if (val_f_.defined() && val_f_.size(0) > 0) {
      r.val = percent(drolt::metrics::split_accuracy(stage.scores(ctx, val_f_, tau), data_.val_y, data_.group_counts, th));
    }
    if (!losses_.empty()) {
      auto radii = losses_[0]->radii().detach().cpu().to(torch::kDouble).contiguous();
      r.radii.assign(radii.data_ptr<double>(), radii.data_ptr<double>() + radii.numel());
    }
    r.train_seconds = elapsed_;
    r.mean_epoch_seconds = mean_representation_epoch_seconds();
    return r;
  }

  /// Nearest training centroid (exact means over a full pass, eval mode) on the
  /// penultimate features, on the test split.
  GroupAccuracy nearest_centroid_accuracy() {
    drolt::CentroidBank nc_bank(data_.num_classes, model_->feature_dim());
    nc_bank->accumulate(train_f_, data_.train_y);
    nc_bank->finalize();
    auto nc_pred = drolt::metrics::nearest_centroid_predict(test_f_, nc_bank->centroids(), nc_bank->valid());
    return percent(drolt::metrics::split_accuracy(nc_pred, data_.test_y, data_.group_counts, thresholds()));
  }

  double mean_representation_epoch_seconds() const {
    double s = 0;
    int n = 0;
    for (const auto& h : history_) {
      if (!proto_.is_classifier_phase(h.phase)) {
        s += h.seconds;
        ++n;
      }
    }
    return n ? s / n : 0;
  }

  void write_result(const EvalResult& r) {
    if (!dist_.is_main()) return;
    std::ofstream f(result_path(r.name));
    f << json(r).dump(2) << "\n";
  }

  /// Everything the representation's optimizer updates (the network and, for DRO-LT, learned radii).
  std::vector<torch::Tensor> trained_parameters() const {
    std::vector<torch::Tensor> p;
    for (auto& g : opt_->param_groups()) p.insert(p.end(), g.params().begin(), g.params().end());
    return p;
  }

  TrainConfig cfg_;
  const DataBundle& data_;
  RunSpec spec_;
  Protocol proto_;
  DistContext dist_;
  torch::Device device_;
  std::string name_;
  int64_t pad_ = 2;
  Precision precision_;
  ResNet model_{nullptr};
  std::vector<int64_t> layers_;  // DRO-LT layers (3: the penultimate features)
  std::vector<drolt::CentroidBank> banks_;
  std::vector<drolt::RobustCentroidLoss> losses_;
  std::vector<std::unique_ptr<CentroidRefresh>> refresh_;
  drolt::RobustCentroidLoss no_loss_{nullptr};
  drolt::MultiLayerRobustCentroidLoss dro_{nullptr};  // DRO-LT runs: every layer's loss and bank
  std::unique_ptr<torch::optim::SGD> opt_, stage_opt_;
  std::unique_ptr<Sampler> rep_sampler_, stage_sampler_;
  torch::Tensor joint_weight_, joint_bias_;
  size_t stage_index_ = 0;  // the trained stage whose state stage_opt_ and stage_sampler_ hold
  std::vector<torch::Tensor> joint_buffers_;  // the representation's batch-norm statistics
  torch::Tensor train_f_, val_f_, test_f_;
  bool frozen_ready_ = false;
  int64_t next_epoch_ = 0;
  double elapsed_ = 0;
  Clock::time_point rec_start_ = Clock::now();
  std::vector<EpochRecord> history_;
  std::vector<json> lines_;  // this run's metrics.jsonl lines, checkpointed with it
  bool interrupted_ = false;
};

}  // namespace drolt_examples
