// drolt_train: trains a CIFAR-style ResNet on a long-tailed data set with
// cross-entropy (ce), classifier re-training (crt) or DRO-LT (drolt), and prints
// Many / Medium / Few / All test accuracy.
//
//   drolt_train --preset demo                       # ce, crt, drolt(learned), < 10 min on 2 cores
//   drolt_train --method drolt --policy sqrtn --eps0 1 --out runs/sqrtn
//   drolt_train --dataset cifar100 --data /path/to/cifar-100-binary --depth 32 --epochs 200
//
// See examples/common/trainer.hpp for the protocol and docs/results.md for results.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "common/config.hpp"
#include "common/data.hpp"
#include "common/report.hpp"
#include "common/trainer.hpp"

namespace de = drolt_examples;

namespace {

/// Presets: settings chosen on the validation split (docs/results.md); any
/// option given on the command line overrides them.
void apply_preset(const std::string& name, de::TrainConfig& c) {
  if (name.empty()) return;
  if (name == "demo") {
    // ce, crt and drolt(learned) on Fashion-MNIST-LT, ResNet-20, in < 10 min on 2 cores.
    // DRO-LT takes its 15-epoch CE warm-up from the CE run (shared, bit-identical).
    c.methods = {"ce", "crt", "drolt"};
    c.radius_policy = "learned";
    c.lambda = 0.3;  // chosen on the validation split for docs/results.md (ResNet-32)
    c.depth = 20;
    c.epochs = 30;
    c.dro_start = 15;
    c.crt_epochs = 10;
    c.val_every = 5;
    c.out_dir = "out/demo";
    return;
  }
  if (name == "paper") {
    // The setting of docs/results.md (scripts/reproduce.sh passes it explicitly).
    c.methods = {"ce", "crt", "drolt"};
    c.lambda = 0.3;  // the validation split's choice (docs/results.md)
    c.depth = 32;
    c.epochs = 40;
    c.dro_start = 20;
    c.crt_epochs = 10;
    c.val_every = 5;
    c.out_dir = "out/paper";
    return;
  }
  if (name == "smoke") {
    c.methods = {"ce", "crt", "drolt"};
    c.depth = 8;
    c.epochs = 3;
    c.crt_epochs = 1;
    c.warmup_epochs = 1;
    c.test_limit = 1000;
    return;
  }
  throw std::invalid_argument("--preset: unknown preset '" + name + "' (expected demo, paper or smoke)");
}

std::vector<std::string> split_commas(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const auto& s : in) {
    std::string cur;
    for (char ch : s) {
      if (ch == ',') {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur += ch;
      }
    }
    if (!cur.empty()) out.push_back(cur);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  de::TrainConfig cfg;
  CLI::App app{"drolt_train: DRO-LT (Samuel & Chechik, ICCV 2021) example trainer on long-tailed data"};
  std::string preset;
  std::vector<std::string> methods;
  app.add_option("--preset", preset, "demo (ce, crt, drolt on Fashion-MNIST-LT in < 10 min), paper, smoke");
  app.add_option("-m,--method", methods, "ce, crt, drolt (several allowed, comma separated)");
  app.add_option("--policy", cfg.radius_policy, "DRO-LT radius policy: erm, shared, sqrtn, learned");
  app.add_option("--dataset", cfg.dataset, "fashion-mnist, cifar10, cifar100");
  app.add_option("--data", cfg.data_dir, "data directory (IDX .gz files or CIFAR binary files)");
  app.add_option("--profile", cfg.profile, "long-tail profile: exp or step");
  app.add_option("--rho", cfg.rho, "imbalance ratio n_max / n_min");
  app.add_option("--n-max", cfg.n_max, "training images of the largest class");
  app.add_option("--val-per-class", cfg.val_per_class, "balanced validation images per class (left-out data)");
  app.add_option("--data-seed", cfg.data_seed, "seed of the long-tailed subset and validation split");
  app.add_option("--test-limit", cfg.test_limit, "evaluate on the first N test images only (0 = all)");
  app.add_option("--depth", cfg.depth, "ResNet depth 6n+2: 8, 20, 32, 44, 56, 110");
  app.add_option("--epochs", cfg.epochs, "feature-learning epochs (CE, or CE warm-up + DRO-LT)");
  app.add_option("--batch-size", cfg.batch_size, "mini-batch size");
  app.add_option("--lr", cfg.lr, "SGD learning rate");
  app.add_option("--momentum", cfg.momentum, "SGD momentum");
  app.add_option("--wd", cfg.weight_decay, "weight decay");
  app.add_option("--warmup", cfg.warmup_epochs, "linear learning-rate warm-up epochs");
  app.add_option("--schedule", cfg.schedule, "multistep or cosine");
  app.add_option("--milestones", cfg.milestones, "multistep milestones as fractions of --epochs");
  app.add_option("--gamma", cfg.gamma, "multistep decay factor");
  app.add_option("--lambda", cfg.lambda, "DRO-LT weight: (1 - lambda) CE + lambda DRO, in [0, 1]");
  app.add_option("--temperature", cfg.temperature, "DRO-LT temperature tau > 0");
  app.add_option("--eps0", cfg.eps0, "radius: shared value / sqrt-n numerator / learned initial value");
  app.add_option("--dro-start", cfg.dro_start, "first DRO-LT epoch (CE before it); default epochs/2");
  app.add_option("--centroids", cfg.centroid_mode, "centroid mode: full (refresh pass), previous (last epoch's training pass), ema");
  app.add_option("--ema-momentum", cfg.ema_momentum, "EMA centroid momentum");
  app.add_option("--radius-lr", cfg.radius_lr, "SGD learning rate of learned radii");
  app.add_option("--radius-wd", cfg.radius_weight_decay, "weight decay of learned radii");
  app.add_option("--crt-epochs", cfg.crt_epochs, "classifier re-training epochs (crt, drolt)");
  app.add_option("--crt-lr", cfg.crt_lr, "classifier re-training learning rate");
  app.add_option("--crop-pad", cfg.crop_pad, "random-crop padding (-1: 4 for 32x32, 2 for 28x28)");
  bool no_flip = false;
  app.add_flag("--no-flip", no_flip, "no horizontal flips");
  app.add_option("--seed", cfg.seed, "seed of initialisation, data order and augmentation");
  app.add_option("--threads", cfg.threads, "CPU threads (0 = all cores)");
  app.add_option("--device", cfg.device, "cpu or cuda");
  app.add_option("-o,--out,--out-dir", cfg.out_dir, "output directory (checkpoints, metrics.jsonl, summary.json, table.md, plots)");
  app.add_flag("--resume", cfg.resume, "continue from the checkpoints in --out");
  app.add_option("--checkpoint-every", cfg.checkpoint_every, "checkpoint every N epochs (0 = never)");
  app.add_option("--save-at", cfg.save_at, "also keep the checkpoint taken after epoch N (checkpoint-<run>-eN.pt)");
  app.add_option("--warm-start", cfg.warm_start,
                 "drolt: take the CE warm-up from a CE run's checkpoint saved with --save-at <dro-start>");
  app.add_option("--stop-after", cfg.stop_after, "stop a run after N epochs as if interrupted (tests --resume)");
  app.add_option("--val-every", cfg.val_every, "validation accuracy every N epochs");
  bool no_plots = false, quiet = false;
  app.add_flag("--no-plots", no_plots, "do not call gnuplot");
  app.add_flag("-q,--quiet", quiet, "no per-epoch progress lines");

  // Apply the preset first, then let explicit options override it: parse twice.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (!preset.empty()) {
      de::TrainConfig base;
      apply_preset(preset, base);
      // Re-parse onto the preset's values so explicit options win.
      cfg = base;
      methods.clear();
      no_flip = false;
      no_plots = false;
      quiet = false;
      app.parse(argc, argv);
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "drolt_train: " << e.what() << "\n";
    return 2;
  }
  if (!methods.empty()) cfg.methods = split_commas(methods);
  if (no_flip) cfg.flip = false;
  if (no_plots) cfg.plots = false;
  if (quiet) cfg.verbose = false;
  if (cfg.dataset != "fashion-mnist" && cfg.data_dir == de::TrainConfig().data_dir) {
    std::cerr << "drolt_train: --dataset " << cfg.dataset << " needs --data DIR (the binary CIFAR files)\n";
    return 2;
  }

  try {
    de::validate(cfg);
  } catch (const std::exception& e) {
    std::cerr << "drolt_train: " << e.what();
    return 2;
  }
  if (cfg.device == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "drolt_train: --device cuda: this LibTorch has no CUDA or no GPU is visible\n";
    return 2;
  }
  // Several processes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, as PyTorch's
  // launchers and scripts/launch-local.sh set them): meet the other ranks first;
  // a rank that never comes makes this fail after DROLT_DIST_TIMEOUT seconds.
  struct DistTeardown {  // the process group goes before static destruction
    ~DistTeardown() { de::process_dist() = de::DistContext(); }
  } dist_teardown;
  try {
    de::process_dist() = de::DistContext::from_env();
  } catch (const std::exception& e) {
    std::cerr << "drolt_train: " << e.what() << "\n";
    return 1;
  }
  const auto world = static_cast<unsigned>(de::process_dist().world());
  // By default the cores are shared out between the processes of this machine.
  const int threads = cfg.threads > 0 ? cfg.threads
                                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency() / world));
  torch::set_num_threads(threads);
  if (de::process_dist().active()) {
    std::cout << "rank " << de::process_dist().rank() << " of " << world << " (global batch " << cfg.batch_size
              << ", " << cfg.batch_size / static_cast<int64_t>(world) << " per process)\n";
  }

  try {
    const auto t0 = std::chrono::steady_clock::now();
    de::DataBundle data = de::load_data(cfg);
    std::cout << data.description << ": " << data.train_x.size(0) << " training images (";
    for (size_t c = 0; c < data.counts.size() && c < 20; ++c) std::cout << (c ? "," : "") << data.counts[c];
    std::cout << (data.counts.size() > 20 ? ",..." : "") << "), " << (data.val_x.defined() ? data.val_x.size(0) : 0)
              << " validation, " << data.test_x.size(0) << " test; ResNet-" << cfg.depth << ", " << threads
              << " thread(s), device " << cfg.device << "\n";
    auto rep = de::run_experiment(cfg, data, std::cout);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep.interrupted) {
      std::cout << "stopped early (--stop-after); continue with --resume\n";
      return 0;
    }
    std::cout << "wall time " << de::format_duration(s) << "\n";
  } catch (const c10::Error& e) {
    // E.g. a rank that died or hung (drolt::dist): the message, not the C++ backtrace.
    std::cerr << "drolt_train: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "drolt_train: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
