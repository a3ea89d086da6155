// The DRO-LT example trainer as a library, so drolt_train and the tests drive
// the same code.
//
// A *run* trains one backbone and evaluates it:
//   run "ce"            : cross-entropy for cfg.epochs, evaluated as "ce";
//                         then (if crt is asked for) classifier re-training with
//                         class-balanced sampling, evaluated as "crt".
//   run "drolt-<policy>": CE for dro_start epochs, then (1 - lambda) CE + lambda
//                         DRO-LT with centroids refreshed every epoch (mode
//                         full / previous / ema) up to cfg.epochs, evaluated as
//                         "drolt-<policy>/nocrt", then classifier re-training,
//                         evaluated as "drolt-<policy>" (the paper's protocol).
// Every epoch of a run, including the re-training epochs, is checkpointed
// (model, optimizers, centroid bank, loss radii, torch RNG state, epoch) and a
// resumed run continues bit for bit (same thread count, same device).
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

#include "augment.hpp"
#include "config.hpp"
#include "data.hpp"
#include "multiprocess.hpp"
#include "resnet.hpp"

namespace drolt_examples {

using json = nlohmann::json;

/// Many / Medium / Few / All accuracy in percent (NaN for an empty split).
struct SplitAccuracy {
  double many = std::nan(""), medium = std::nan(""), few = std::nan(""), all = std::nan("");
};

inline SplitAccuracy percent(const drolt::metrics::SplitAccuracy& s) {
  return SplitAccuracy{100.0 * s.many, 100.0 * s.medium, 100.0 * s.few, 100.0 * s.overall};
}

inline json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
inline double number_or_nan(const json& j) { return j.is_null() ? std::nan("") : j.get<double>(); }

/// What one evaluated model scored on the test set (percentages).
struct EvalResult {
  std::string name;
  SplitAccuracy test;        // classifier: many / medium / few / all
  SplitAccuracy nc;          // nearest training centroid on the penultimate features
  SplitAccuracy val;         // classifier on the validation split (model selection)
  std::vector<double> per_class;  // test accuracy per class, %
  std::vector<double> radii;      // effective radii per class (DRO-LT runs), else empty
  double train_seconds = 0;       // wall time of the run up to this evaluation
  double mean_epoch_seconds = 0;  // mean wall time of a feature-learning epoch
};

/// One line of the per-epoch log.
struct EpochRecord {
  std::string run, phase;
  int64_t epoch = 0;  // 0-based, global over the phases of a run
  double lr = 0, loss = 0, ce = 0, dro = 0, train_acc = 0, val_acc = -1;
  double seconds = 0, centroid_seconds = 0, images_per_s = 0;
};

inline json to_json(const SplitAccuracy& s) {
  return json{{"many", number_or_null(s.many)},
              {"medium", number_or_null(s.medium)},
              {"few", number_or_null(s.few)},
              {"all", number_or_null(s.all)}};
}
inline json per_class_json(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(number_or_null(x));
  return a;
}
inline json to_json(const EvalResult& r) {
  return json{{"name", r.name},
              {"test", to_json(r.test)},
              {"nearest_centroid", to_json(r.nc)},
              {"val", to_json(r.val)},
              {"per_class", per_class_json(r.per_class)},
              {"radii", r.radii},
              {"train_seconds", r.train_seconds},
              {"mean_epoch_seconds", r.mean_epoch_seconds}};
}
inline EvalResult eval_result_from_json(const json& j) {
  auto split = [](const json& s) {
    SplitAccuracy a;
    a.many = number_or_nan(s.at("many"));
    a.medium = number_or_nan(s.at("medium"));
    a.few = number_or_nan(s.at("few"));
    a.all = number_or_nan(s.at("all"));
    return a;
  };
  EvalResult r;
  r.name = j.at("name").get<std::string>();
  r.test = split(j.at("test"));
  r.nc = split(j.at("nearest_centroid"));
  r.val = split(j.at("val"));
  for (const auto& v : j.at("per_class")) r.per_class.push_back(number_or_nan(v));
  r.radii = j.at("radii").get<std::vector<double>>();
  r.train_seconds = j.value("train_seconds", 0.0);
  r.mean_epoch_seconds = j.value("mean_epoch_seconds", 0.0);
  return r;
}

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

/// Trains and evaluates one run (see the file comment).
class Run {
 public:
  Run(const TrainConfig& cfg, const DataBundle& data, bool dro, bool with_crt)
      : cfg_(cfg), data_(data), dro_(dro), with_crt_(with_crt), device_(cfg.device) {
    name_ = dro ? "drolt-" + cfg.radius_policy : "ce";
    total_epochs_ = cfg.epochs + (with_crt ? cfg.crt_epochs : 0);
    pad_ = cfg.crop_pad >= 0 ? cfg.crop_pad : (data.train_x.size(2) >= 32 ? 4 : 2);

    torch::manual_seed(static_cast<uint64_t>(cfg.seed));
    model_ = ResNet(ResNetOptions(cfg.depth, data.channels, data.num_classes));
    model_->to(device_);
    bank_ = drolt::CentroidBank(drolt::CentroidBankOptions(data.num_classes, model_->feature_dim())
                                    .momentum(cfg.ema_momentum));
    bank_->to(device_);
    if (dro_) {
      auto counts = torch::tensor(data.counts, torch::kLong);
      loss_ = drolt::RobustCentroidLoss(drolt::RobustCentroidLossOptions(data.num_classes)
                                            .temperature(cfg.temperature)
                                            .radius(drolt::RadiusPolicy::parse(cfg.radius_policy, cfg.eps0))
                                            .class_counts(counts)
                                            // Labels were checked when the data was read; on
                                            // CUDA the per-call checks would cost a host sync.
                                            .validate_values(!device_.is_cuda()));
      loss_->to(device_);
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(model_->parameters(), std::make_unique<torch::optim::SGDOptions>(
                                                  torch::optim::SGDOptions(cfg.lr)
                                                      .momentum(cfg.momentum)
                                                      .weight_decay(cfg.weight_decay)));
    if (dro_ && !loss_->parameters().empty()) {
      // Learned radii join the feature extractor's SGD (spec section 5).
      groups.emplace_back(loss_->parameters(), std::make_unique<torch::optim::SGDOptions>(
                                                   torch::optim::SGDOptions(cfg.radius_lr)
                                                       .momentum(cfg.momentum)
                                                       .weight_decay(cfg.radius_weight_decay)));
    }
    opt_ = std::make_unique<torch::optim::SGD>(std::move(groups), torch::optim::SGDOptions(cfg.lr));
    // Several processes: rank 0's initial weights everywhere (the same seed gives
    // the same ones already; this does not rely on it).
    dist_.broadcast(*model_);
    if (dro_) dist_.broadcast(*loss_);
  }

  const std::string& name() const { return name_; }
  std::string checkpoint_path() const { return cfg_.out_dir + "/checkpoint-" + name_ + ".pt"; }
  /// The extra copy written after epoch `epoch` when cfg.save_at == epoch.
  std::string epoch_checkpoint_path(int64_t epoch) const {
    return cfg_.out_dir + "/checkpoint-" + name_ + "-e" + std::to_string(epoch) + ".pt";
  }
  ResNet& model() { return model_; }
  drolt::RobustCentroidLoss& loss() { return loss_; }
  drolt::CentroidBank& bank() { return bank_; }
  const std::vector<EpochRecord>& history() const { return history_; }
  int64_t next_epoch() const { return next_epoch_; }
  bool interrupted() const { return interrupted_; }

  std::string phase_of(int64_t e) const {
    if (e >= cfg_.epochs) return "crt";
    if (dro_ && e >= cfg_.dro_start_epoch()) return "dro";
    return "ce";
  }

  /// Runs (or resumes) to the end. Returns the results evaluated so far and
  /// written to <out>/result-<name>.json; empty when stopped by cfg.stop_after.
  std::vector<EvalResult> run(std::ostream& log) {
    if (cfg_.resume && file_exists(checkpoint_path())) {
      try {
        load_checkpoint(checkpoint_path());
      } catch (const c10::Error& e) {
        throw std::runtime_error("cannot resume from '" + checkpoint_path() + "': " + e.what_without_backtrace() +
                                 "\n  (a checkpoint of another drolt_train version, or a damaged file? remove it "
                                 "to start this run over)");
      }
      rewrite_jsonl();  // drops lines of epochs after the checkpoint (they will run again)
      log << "[" << name_ << "] resumed from " << checkpoint_path() << " at epoch " << next_epoch_ << "/"
          << total_epochs_ << "\n";
    } else {
      if (cfg_.resume) {
        log << "[" << name_ << "] --resume: no checkpoint at " << checkpoint_path() << ", starting fresh\n";
      }
      if (dro_ && !cfg_.warm_start.empty()) {
        load_warm_start(cfg_.warm_start);
        log << "[" << name_ << "] CE warm-up (epochs 1-" << next_epoch_ << ") taken from " << cfg_.warm_start
            << "\n";
      }
    }
    for (int64_t e = next_epoch_; e < total_epochs_; ++e) {
      EpochRecord rec;
      if (e < cfg_.epochs) {
        rec = train_backbone_epoch(e);
      } else {
        rec = train_classifier_epoch(e);
      }
      if ((e + 1) % cfg_.val_every == 0 || e + 1 == total_epochs_ || e + 1 == cfg_.epochs) {
        rec.val_acc = evaluate_split(data_.val_x, data_.val_y).all;
      }
      elapsed_ += seconds_since(rec_start_);
      next_epoch_ = e + 1;
      history_.push_back(rec);
      print_progress(log, rec);
      append_jsonl(rec);

      if (e + 1 == cfg_.epochs) {
        auto r = evaluate(with_crt_ ? (dro_ ? name_ + "/nocrt" : std::string("ce")) : name_);
        write_result(r);
      }
      if (e + 1 == total_epochs_ && with_crt_) {
        auto r = evaluate(dro_ ? name_ : std::string("crt"));
        write_result(r);
      }
      if (cfg_.checkpoint_every > 0 && ((e + 1) % cfg_.checkpoint_every == 0 || e + 1 == total_epochs_)) {
        save_checkpoint(checkpoint_path());
      }
      if (cfg_.save_at > 0 && next_epoch_ == cfg_.save_at) save_checkpoint(epoch_checkpoint_path(cfg_.save_at));
      // Several processes: rank 0 writes results and checkpoints that the others read.
      dist_.barrier();
      if (cfg_.stop_after >= 0 && next_epoch_ >= cfg_.stop_after && next_epoch_ < total_epochs_) {
        log << "[" << name_ << "] stopping after epoch " << next_epoch_ << " (--stop-after)\n";
        interrupted_ = true;
        break;
      }
    }
    std::vector<EvalResult> out;
    if (interrupted_) return out;
    for (const auto& n : result_names()) {
      const std::string p = result_path(n);
      if (file_exists(p)) {
        std::ifstream f(p);
        out.push_back(eval_result_from_json(json::parse(f)));
      }
    }
    return out;
  }

  std::vector<std::string> result_names() const {
    if (!with_crt_) return {name_};
    if (dro_) return {name_, name_ + "/nocrt"};
    return {"ce", "crt"};
  }

  std::string result_path(const std::string& result_name) const {
    std::string n = result_name;
    std::replace(n.begin(), n.end(), '/', '_');
    return cfg_.out_dir + "/result-" + n + ".json";
  }

  // ---------------------------------------------------------------- checkpoints
  void save_checkpoint(const std::string& path) {
    if (!dist_.is_main()) return;  // every rank holds the same state
    torch::serialize::OutputArchive ar;
    ar.write("epoch", torch::tensor(next_epoch_, torch::kLong));
    ar.write("elapsed", torch::tensor(elapsed_, torch::kDouble));
    ar.write("fingerprint", string_tensor(fingerprint()));
    ar.write("history", string_tensor(json(lines_).dump()));
    torch::serialize::OutputArchive m, o, b;
    model_->save(m);
    ar.write("model", m);
    opt_->save(o);
    ar.write("optimizer", o);
    bank_->save(b);
    ar.write("bank", b);
    if (dro_) {
      torch::serialize::OutputArchive l;
      loss_->save(l);
      ar.write("loss", l);
    }
    if (crt_opt_) {
      torch::serialize::OutputArchive c;
      crt_opt_->save(c);
      ar.write("crt_optimizer", c);
      torch::serialize::OutputArchive sa;
      sampler_->save(sa);
      ar.write("crt_sampler", sa);
    }
    // The data order and augmentation of the feature-learning epochs are drawn
    // from torch's default CPU generator (augmentation in every phase).
    ar.write("rng", cpu_rng_state());
    const std::string tmp = path + ".tmp";
    ar.save_to(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      throw std::runtime_error("cannot write checkpoint '" + path + "'");
    }
  }

  void load_checkpoint(const std::string& path) {
    torch::serialize::InputArchive ar;
    ar.load_from(path);
    torch::Tensor t;
    ar.read("fingerprint", t);
    const std::string fp = tensor_string(t);
    if (fp != fingerprint()) {
      throw std::runtime_error("checkpoint '" + path +
                               "' was written with different settings; refusing to resume.\n  checkpoint: " +
                               fp + "\n  now:        " + fingerprint());
    }
    ar.read("epoch", t);
    next_epoch_ = t.item<int64_t>();
    ar.read("elapsed", t);
    elapsed_ = t.item<double>();
    ar.read("history", t);
    history_from_json(json::parse(tensor_string(t)));
    torch::serialize::InputArchive m, o, b;
    ar.read("model", m);
    model_->load(m);
    model_->to(device_);
    ar.read("optimizer", o);
    opt_->load(o);
    ar.read("bank", b);
    bank_->load(b);
    bank_->to(device_);
    if (dro_) {
      torch::serialize::InputArchive l;
      ar.read("loss", l);
      loss_->load(l);
      loss_->to(device_);
    }
    if (next_epoch_ > cfg_.epochs) {
      make_crt_state();
      torch::serialize::InputArchive c;
      ar.read("crt_optimizer", c);
      crt_opt_->load(c);
      torch::serialize::InputArchive sa;
      ar.read("crt_sampler", sa);
      sampler_->load(sa);
    }
    ar.read("rng", t);
    set_cpu_rng_state(t);
  }

  /// Starts a DRO-LT run from a CE run's checkpoint taken after epoch
  /// dro_start (`--save-at` on the CE run): the CE warm-up of both runs is the
  /// same computation (same seed, data order, schedule), so this reproduces a
  /// DRO-LT run trained from scratch exactly, without repeating the warm-up.
  /// Full-refresh centroids only (the cheap modes fill the bank during the last
  /// warm-up epoch, which a CE run does not do).
  void load_warm_start(const std::string& path) {
    if (cfg_.centroid_mode != "full") {
      throw std::runtime_error("--warm-start needs --centroids full (the previous / ema modes build their first "
                               "centroids during the last CE epoch)");
    }
    if (!file_exists(path)) throw std::runtime_error("--warm-start: no checkpoint '" + path + "'");
    torch::serialize::InputArchive ar;
    ar.load_from(path);
    torch::Tensor t;
    ar.read("fingerprint", t);
    const json theirs = json::parse(tensor_string(t)), ours = json::parse(fingerprint());
    for (const char* k : {"dataset", "rho", "n_max", "data_seed", "depth", "epochs", "batch", "lr", "seed",
                          "schedule", "device"}) {
      if (theirs.value(k, json()) != ours.value(k, json())) {
        throw std::runtime_error(std::string("--warm-start: checkpoint '") + path + "' differs in '" + k +
                                 "': " + theirs.value(k, json()).dump() + " vs " + ours.value(k, json()).dump());
      }
    }
    if (theirs.value("run", std::string()) != "ce") {
      throw std::runtime_error("--warm-start: '" + path + "' is not a checkpoint of a CE run");
    }
    ar.read("epoch", t);
    const int64_t epoch = t.item<int64_t>();
    if (epoch != cfg_.dro_start_epoch()) {
      throw std::runtime_error("--warm-start: checkpoint '" + path + "' was taken after epoch " +
                               std::to_string(epoch) + ", expected the DRO-LT start epoch " +
                               std::to_string(cfg_.dro_start_epoch()) + " (--save-at on the CE run)");
    }
    next_epoch_ = epoch;
    ar.read("elapsed", t);
    elapsed_ = t.item<double>();
    ar.read("history", t);
    history_from_json(json::parse(tensor_string(t)));
    for (auto& h : history_) h.run = name_;
    torch::serialize::InputArchive m, o;
    ar.read("model", m);
    model_->load(m);
    model_->to(device_);
    // The CE optimizer has one parameter group (the network); ours may have a
    // second one for learned radii. Load into a one-group SGD over the same
    // parameters and move the per-parameter momentum buffers across.
    ar.read("optimizer", o);
    torch::optim::SGD ce_opt(model_->parameters(), torch::optim::SGDOptions(cfg_.lr)
                                                       .momentum(cfg_.momentum)
                                                       .weight_decay(cfg_.weight_decay));
    ce_opt.load(o);
    for (auto& kv : ce_opt.state()) opt_->state()[kv.first] = kv.second->clone();
    ar.read("rng", t);
    set_cpu_rng_state(t);
    // The warm-up's log lines, relabelled, so metrics.jsonl covers the whole run.
    for (auto& l : lines_) l["run"] = name_;
    rewrite_jsonl();
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }

  static torch::Tensor string_tensor(const std::string& s) {
    auto t = torch::empty({static_cast<int64_t>(s.size())}, torch::kUInt8);
    std::copy(s.begin(), s.end(), t.data_ptr<uint8_t>());
    return t;
  }
  static std::string tensor_string(const torch::Tensor& t) {
    auto c = t.contiguous().to(torch::kUInt8);
    const auto* p = c.data_ptr<uint8_t>();
    return std::string(p, p + c.numel());
  }
  static torch::Tensor cpu_rng_state() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  }
  static void set_cpu_rng_state(const torch::Tensor& s) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s);
  }

  /// Settings that must match for a checkpoint to be resumed.
  std::string fingerprint() const {
    json j{{"run", name_},          {"dataset", cfg_.dataset},   {"rho", cfg_.rho},
           {"n_max", cfg_.n_max},   {"data_seed", cfg_.data_seed}, {"depth", cfg_.depth},
           {"epochs", cfg_.epochs}, {"batch", cfg_.batch_size},  {"lr", cfg_.lr},
           {"seed", cfg_.seed},     {"crt_epochs", with_crt_ ? cfg_.crt_epochs : 0},
           {"schedule", cfg_.schedule}, {"device", cfg_.device}};
    if (dro_) {
      j["lambda"] = cfg_.lambda;
      j["temperature"] = cfg_.temperature;
      j["eps0"] = cfg_.eps0;
      j["dro_start"] = cfg_.dro_start_epoch();
      j["centroids"] = cfg_.centroid_mode;
    }
    if (dist_.active()) j["world_size"] = dist_.world();  // the data order depends on it
    return j.dump();
  }

  /// Restores the history (and the log lines) saved in a checkpoint.
  void history_from_json(const json& a) {
    history_.clear();
    lines_.clear();
    for (const auto& j : a) {
      lines_.push_back(j);
      EpochRecord r;
      r.run = j.at("run");
      r.phase = j.at("phase");
      r.epoch = j.at("epoch");
      r.lr = j.at("lr");
      r.loss = j.at("loss");
      r.ce = j.at("ce");
      r.dro = j.at("dro");
      r.train_acc = j.at("train_acc");
      r.val_acc = j.value("val_acc", -1.0);
      r.seconds = j.at("seconds");
      r.centroid_seconds = j.at("centroid_seconds");
      r.images_per_s = j.at("images_per_s");
      history_.push_back(r);
    }
  }

  json record_json(const EpochRecord& r) const {
    json j{{"run", r.run},
           {"phase", r.phase},
           {"epoch", r.epoch},
           {"lr", r.lr},
           {"loss", r.loss},
           {"ce", r.ce},
           {"dro", r.dro},
           {"train_acc", r.train_acc},
           {"seconds", r.seconds},
           {"centroid_seconds", r.centroid_seconds},
           {"images_per_s", r.images_per_s},
           {"seed", cfg_.seed}};
    if (r.val_acc >= 0) j["val_acc"] = r.val_acc;
    return j;
  }

  void append_jsonl(const EpochRecord& r) {
    json j = record_json(r);
    if (dro_ && r.phase != "ce") {
      auto radii = loss_->radii().detach().cpu().to(torch::kDouble);
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
    // Time left: mean epoch time of this phase kind so far (classifier epochs are
    // estimated at a third of a backbone epoch until one has run).
    double bb = 0, cl = 0;
    int nb = 0, nc = 0;
    for (const auto& h : history_) {
      if (h.phase == "crt") {
        cl += h.seconds;
        ++nc;
      } else {
        bb += h.seconds;
        ++nb;
      }
    }
    const double mb = nb ? bb / nb : 0, mc = nc ? cl / nc : mb / 3;
    double left = 0;
    for (int64_t e = next_epoch_; e < total_epochs_; ++e) left += e < cfg_.epochs ? mb : mc;
    char buf[512];
    if (r.phase == "crt") {
      std::snprintf(buf, sizeof(buf), "[%s] epoch %3lld/%lld %-3s lr %.4f loss %.4f train %5.1f%%", name_.c_str(),
                    static_cast<long long>(r.epoch + 1), static_cast<long long>(total_epochs_), r.phase.c_str(),
                    r.lr, r.loss, r.train_acc);
    } else {
      std::snprintf(buf, sizeof(buf), "[%s] epoch %3lld/%lld %-3s lr %.4f loss %.4f (ce %.4f dro %.4f) train %5.1f%%",
                    name_.c_str(), static_cast<long long>(r.epoch + 1), static_cast<long long>(total_epochs_),
                    r.phase.c_str(), r.lr, r.loss, r.ce, r.dro, r.train_acc);
    }
    log << buf;
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
    if (cfg_.schedule == "cosine") {
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
  torch::Tensor batch_x(const torch::Tensor& idx, bool augment) const {
    auto x = data_.train_x.index_select(0, idx);
    if (augment) x = augment_batch(x, pad_, cfg_.flip);
    return x.to(device_);
  }

  /// Features of the whole training set (eval mode, no augmentation) into the bank.
  void refresh_centroids_full() {
    torch::NoGradGuard g;
    model_->eval();
    bank_->reset();
    const int64_t B = 512;
    // This process's rows (all of them with one process); with several,
    // finalize() adds up every rank's sums and counts.
    auto rows = dist_.rows(data_.train_x.size(0));
    for (int64_t s = 0; s < rows.size(0); s += B) {
      auto idx = rows.narrow(0, s, std::min(B, rows.size(0) - s));
      bank_->accumulate(model_->features(data_.train_x.index_select(0, idx).to(device_)),
                        data_.train_y.index_select(0, idx).to(device_));
    }
    dist_.finalize(bank_);
    model_->train();
  }

  EpochRecord train_backbone_epoch(int64_t e) {
    rec_start_ = Clock::now();
    EpochRecord rec;
    rec.run = name_;
    rec.epoch = e;
    rec.phase = phase_of(e);
    const double f = lr_factor(e);
    auto& groups = opt_->param_groups();
    static_cast<torch::optim::SGDOptions&>(groups[0].options()).lr(cfg_.lr * f);
    if (groups.size() > 1) static_cast<torch::optim::SGDOptions&>(groups[1].options()).lr(cfg_.radius_lr * f);
    rec.lr = cfg_.lr * f;

    const bool dro_phase = rec.phase == "dro";
    const int64_t start = cfg_.dro_start_epoch();
    // Cheap centroid modes build their centroids during training passes, starting
    // one epoch before the first DRO-LT epoch.
    const bool feed_bank = dro_ && e >= start - 1 && cfg_.centroid_mode != "full";
    if (dro_phase && cfg_.centroid_mode == "full") {
      const auto t0 = Clock::now();
      refresh_centroids_full();
      rec.centroid_seconds = seconds_since(t0);
    }
    if (feed_bank && cfg_.centroid_mode == "previous") bank_->reset();

    model_->train();
    const int64_t N = data_.train_x.size(0);
    // Several processes: this rank's share of an order drawn from (seed, epoch),
    // the same on every rank, and batch / WORLD_SIZE samples per step.
    DistContext::Shard shard;
    if (dist_.active()) shard = dist_.epoch_shard(N, cfg_.seed, e);
    auto perm = dist_.active() ? shard.idx : torch::randperm(N, torch::kLong);
    const int64_t NL = perm.size(0), BL = dist_.local_batch(cfg_.batch_size);
    double sum_loss = 0, sum_ce = 0, sum_dro = 0;
    int64_t correct = 0, seen = 0;
    const double lambda = dro_phase ? cfg_.lambda : 0.0;
    const auto t_train = Clock::now();
    for (int64_t s = 0; s < NL; s += BL) {
      const int64_t n = std::min(BL, NL - s);
      auto idx = perm.narrow(0, s, n);
      auto x = batch_x(idx, true);
      auto y = data_.train_y.index_select(0, idx).to(device_);
      auto out = model_->forward(x);
      auto ce = torch::nn::functional::cross_entropy(out.logits, y);
      torch::Tensor loss = ce;
      torch::Tensor dro;
      if (dro_phase) {
        dro = loss_->forward(out.features, y, bank_);
        loss = (1.0 - lambda) * ce + lambda * dro;
      }
      opt_->zero_grad();
      loss.backward();
      if (dist_.active()) dist_.allreduce_gradients(trained_parameters());
      opt_->step();
      if (dro_) loss_->project_();
      if (feed_bank) {
        auto fz = out.features, fy = y;
        if (dist_.active()) {  // not the rows that only pad the shard
          auto keep = shard.real.narrow(0, s, n).nonzero().view(-1).to(device_);
          fz = fz.index_select(0, keep);
          fy = fy.index_select(0, keep);
        }
        if (cfg_.centroid_mode == "previous") {
          bank_->accumulate(fz, fy);
        } else {
          dist_.ema_update(bank_, fz, fy);
        }
      }
      sum_loss += loss.item<double>() * static_cast<double>(n);
      sum_ce += ce.item<double>() * static_cast<double>(n);
      if (dro.defined()) sum_dro += dro.item<double>() * static_cast<double>(n);
      correct += out.logits.argmax(1).eq(y).sum().item<int64_t>();
      seen += n;
    }
    if (feed_bank && cfg_.centroid_mode == "previous") dist_.finalize(bank_);
    if (dist_.active()) {
      // The epoch's statistics over every rank's samples, and one set of
      // batch-norm statistics for evaluation, refreshes and checkpoints.
      auto t = dist_.sum({sum_loss, sum_ce, sum_dro, static_cast<double>(correct), static_cast<double>(seen)});
      sum_loss = t[0];
      sum_ce = t[1];
      sum_dro = t[2];
      correct = static_cast<int64_t>(t[3]);
      seen = static_cast<int64_t>(t[4]);
      dist_.average_buffers(*model_);
    }
    const double train_s = seconds_since(t_train);
    rec.loss = sum_loss / static_cast<double>(seen);
    rec.ce = sum_ce / static_cast<double>(seen);
    rec.dro = dro_phase ? sum_dro / static_cast<double>(seen) : 0.0;
    rec.train_acc = 100.0 * static_cast<double>(correct) / static_cast<double>(seen);
    rec.images_per_s = static_cast<double>(seen) / std::max(train_s, 1e-9);
    rec.seconds = seconds_since(rec_start_);
    return rec;
  }

  void make_crt_state() {
    sampler_ = std::make_unique<drolt::data::ClassBalancedSampler>(
        data_.train_y, drolt::data::ClassSamplerOptions().seed(static_cast<uint64_t>(cfg_.seed) * 7919 + 17));
    crt_opt_ = std::make_unique<torch::optim::SGD>(model_->classifier()->parameters(),
                                                   torch::optim::SGDOptions(cfg_.crt_lr)
                                                       .momentum(cfg_.momentum)
                                                       .weight_decay(cfg_.weight_decay));
  }

  /// One epoch of classifier re-training (cRT, Kang et al. 2020): frozen feature
  /// extractor in eval mode, re-initialised classifier, class-balanced sampling
  /// (class uniform, then an image of that class uniform), cosine learning rate.
  EpochRecord train_classifier_epoch(int64_t e) {
    rec_start_ = Clock::now();
    const int64_t k = e - cfg_.epochs;  // 0-based re-training epoch
    if (k == 0) {
      torch::NoGradGuard g;
      auto& fc = model_->classifier();
      torch::nn::init::kaiming_normal_(fc->weight);
      torch::nn::init::zeros_(fc->bias);
      make_crt_state();
    }
    EpochRecord rec;
    rec.run = name_;
    rec.epoch = e;
    rec.phase = "crt";
    const double f = 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(k) / static_cast<double>(cfg_.crt_epochs)));
    static_cast<torch::optim::SGDOptions&>(crt_opt_->param_groups()[0].options()).lr(cfg_.crt_lr * f);
    rec.lr = cfg_.crt_lr * f;

    model_->eval();
    // Class-balanced sampling with replacement (library sampler, own generator,
    // state checkpointed): as many draws per epoch as training images.
    sampler_->reset();
    double sum_loss = 0;
    int64_t correct = 0, seen = 0;
    const auto t_train = Clock::now();
    while (auto batch = sampler_->next(static_cast<size_t>(cfg_.batch_size))) {
      std::vector<int64_t> ids(batch->begin(), batch->end());
      if (dist_.active()) {
        // Every rank draws the same batch and takes its share (at least one image).
        std::vector<int64_t> mine;
        const size_t m = std::max(ids.size(), static_cast<size_t>(dist_.world()));
        for (size_t i = static_cast<size_t>(dist_.rank()); i < m; i += static_cast<size_t>(dist_.world())) {
          mine.push_back(ids[i % ids.size()]);
        }
        ids.swap(mine);
      }
      const auto n = static_cast<int64_t>(ids.size());
      auto idx = torch::tensor(ids, torch::kLong);
      auto x = batch_x(idx, true);
      auto y = data_.train_y.index_select(0, idx).to(device_);
      torch::Tensor feats;
      {
        torch::NoGradGuard g;
        feats = model_->features(x);
      }
      auto logits = model_->classify(feats);
      auto loss = torch::nn::functional::cross_entropy(logits, y);
      crt_opt_->zero_grad();
      loss.backward();
      if (dist_.active()) dist_.allreduce_gradients(model_->classifier()->parameters());
      crt_opt_->step();
      sum_loss += loss.item<double>() * static_cast<double>(n);
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      seen += n;
    }
    model_->train();
    if (dist_.active()) {
      auto t = dist_.sum({sum_loss, static_cast<double>(correct), static_cast<double>(seen)});
      sum_loss = t[0];
      correct = static_cast<int64_t>(t[1]);
      seen = static_cast<int64_t>(t[2]);
    }
    rec.loss = sum_loss / static_cast<double>(seen);
    rec.ce = rec.loss;
    rec.train_acc = 100.0 * static_cast<double>(correct) / static_cast<double>(seen);
    rec.images_per_s = static_cast<double>(seen) / std::max(seconds_since(t_train), 1e-9);
    rec.seconds = seconds_since(rec_start_);
    return rec;
  }

  /// Features and predictions of a whole split, eval mode.
  std::pair<torch::Tensor, torch::Tensor> infer(const torch::Tensor& xs) {
    torch::NoGradGuard g;
    model_->eval();
    std::vector<torch::Tensor> feats, preds;
    const int64_t N = xs.size(0), B = 500;
    for (int64_t s = 0; s < N; s += B) {
      auto out = model_->forward(xs.narrow(0, s, std::min(B, N - s)).to(device_));
      feats.push_back(out.features.cpu());
      preds.push_back(out.logits.argmax(1).cpu());
    }
    model_->train();
    return {torch::cat(feats), torch::cat(preds)};
  }

  SplitAccuracy evaluate_split(const torch::Tensor& xs, const torch::Tensor& ys) {
    if (!xs.defined() || xs.size(0) == 0) return SplitAccuracy{};
    auto fp = infer(xs);
    return percent(drolt::metrics::split_accuracy(fp.second, ys, data_.counts));
  }

  EvalResult evaluate(const std::string& result_name) {
    EvalResult r;
    r.name = result_name;
    auto test = infer(data_.test_x);
    auto pc = drolt::metrics::per_class_accuracy(test.second, data_.test_y, data_.num_classes).mul(100.0).contiguous();
    r.per_class.assign(pc.data_ptr<double>(), pc.data_ptr<double>() + pc.numel());
    r.test = percent(drolt::metrics::split_accuracy(test.second, data_.test_y, data_.counts));
    // Nearest training centroid (exact means over a full pass, eval mode) on the
    // penultimate features.
    auto train = infer(data_.train_x);
    drolt::CentroidBank nc_bank(data_.num_classes, model_->feature_dim());
    nc_bank->accumulate(train.first, data_.train_y);
    nc_bank->finalize();
    auto nc_pred = drolt::metrics::nearest_centroid_predict(test.first, nc_bank->centroids(), nc_bank->valid());
    r.nc = percent(drolt::metrics::split_accuracy(nc_pred, data_.test_y, data_.counts));
    if (data_.val_x.defined()) r.val = evaluate_split(data_.val_x, data_.val_y);
    if (dro_) {
      auto radii = loss_->radii().detach().cpu().to(torch::kDouble).contiguous();
      r.radii.assign(radii.data_ptr<double>(), radii.data_ptr<double>() + radii.numel());
    }
    r.train_seconds = elapsed_;
    double s = 0;
    int n = 0;
    for (const auto& h : history_) {
      if (h.phase != "crt") {
        s += h.seconds;
        ++n;
      }
    }
    r.mean_epoch_seconds = n ? s / n : 0;
    return r;
  }

  void write_result(const EvalResult& r) {
    if (!dist_.is_main()) return;
    std::ofstream f(result_path(r.name));
    f << to_json(r).dump(2) << "\n";
  }

  /// Everything the optimizer updates (the network and, for DRO-LT, learned radii).
  std::vector<torch::Tensor> trained_parameters() const {
    std::vector<torch::Tensor> p;
    for (auto& g : opt_->param_groups()) p.insert(p.end(), g.params().begin(), g.params().end());
    return p;
  }

  TrainConfig cfg_;
  const DataBundle& data_;
  bool dro_, with_crt_;
  torch::Device device_;
  std::string name_;
  int64_t total_epochs_ = 0;
  int64_t pad_ = 2;
  ResNet model_{nullptr};
  drolt::CentroidBank bank_{nullptr};
  drolt::RobustCentroidLoss loss_{nullptr};
  std::unique_ptr<torch::optim::SGD> opt_, crt_opt_;
  std::unique_ptr<drolt::data::ClassBalancedSampler> sampler_;
  int64_t next_epoch_ = 0;
  double elapsed_ = 0;
  Clock::time_point rec_start_ = Clock::now();
  std::vector<EpochRecord> history_;
  std::vector<json> lines_;  // this run's metrics.jsonl lines, checkpointed with it
  bool interrupted_ = false;
  const DistContext& dist_ = process_dist();
};

}  // namespace drolt_examples
