// drolt_train: trains a CIFAR-style ResNet on a long-tailed data set with one
// or more representation methods (ce, resample, reweight, focal, ldam-drw,
// drolt, la-loss, weight-balancing: registry.hpp), evaluates classifier stages on each (joint, crt, lws, tau-norm, ncm,
// la), and prints Many / Medium / Few / All test accuracy and ECE, one row per
// (representation, classifier).
//
//   drolt_train --preset demo                       # ce, crt, drolt(learned), < 10 min on 2 cores
//   drolt_train --method drolt --policy sqrtn --eps0 1 --out runs/sqrtn
//   drolt_train --method ce,drolt --classifier joint,crt,lws,tau-norm,ncm,la
//   drolt_train --method la-loss,weight-balancing
//   drolt_train --dataset cifar100 --data /path/to/cifar-100-binary --depth 32 --epochs 200
//   drolt_train --dataset list --data /data/imagenet --train-set ImageNet_LT_train.txt
//               --val-set ImageNet_LT_val.txt --test-set ImageNet_LT_test.txt --arch resnet50
//               --device cuda --amp                   # (one line; see examples/README.md)
//
// See examples/common/protocol.hpp for the protocol and docs/results.md for results.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "common/config.hpp"
#include "common/registry.hpp"
#include "common/data.hpp"
#include "common/report.hpp"
#include "common/trainer.hpp"

namespace de = drolt_examples;

namespace {

/// The words of the command line that become typed settings once parsed (apply_words).
struct Words {
  std::string preset, policy, loss, weighting, sampler, resample_sampler, reweight, schedule, centroids,
      stage_schedule, stage_sampler, arch, stage_bn, dataset, loader, profile, device, dist_backend;
  std::vector<std::string> methods, classifiers;
  double eps0 = 0.5;
  bool no_crt_reinit = false, no_flip = false, no_plots = false, quiet = false;
};

void add_run_and_data_options(CLI::App& app, de::TrainConfig& cfg, Words& w) {
  app.add_option("--preset", w.preset,
                 "demo (ce, crt, ldam-drw and the default drolt recipe on Fashion-MNIST-LT, ResNet-14, < 2 min), paper, official (the authors' recipe), smoke");
  app.add_option("-m,--method", w.methods,
                 "representations: " + de::registry_choices(de::method_registry()) + " (several allowed, comma separated)");
  app.add_option("--classifier", w.classifiers,
                 "classifier stages on every representation: " + de::registry_choices(de::stage_registry()) +
                     " (comma separated; default: each method's own)");
  app.add_option("--policy", w.policy, "DRO-LT radius policy: erm, shared, sqrtn, learned");
  app.add_option("--dataset", w.dataset,
                 "fashion-mnist, cifar10, cifar100, or your images: list (ImageNet-LT / Places-LT list files), "
                 "folder (class-folder trees), inaturalist (iNaturalist 2018 / 2019 JSON)");
  app.add_option("--data", cfg.data_dir,
                 "data directory (IDX .gz files or CIFAR binary files); list, inaturalist: the root of the image paths");
  app.add_option("--train-set", cfg.train_set, "list, folder, inaturalist: the training list file / folder / JSON");
  app.add_option("--val-set", cfg.val_set, "list, folder, inaturalist: the validation list file / folder / JSON");
  app.add_option("--test-set", cfg.test_set, "list, folder, inaturalist: the test list file / folder / JSON");
  app.add_option("--loader", w.loader,
                 "images: memory (decode once, keep in memory; one image size), stream (decode on loader threads "
                 "every epoch, ImageNet transforms), auto (memory for images up to 64x64)");
  app.add_option("--image-size", cfg.image_size, "images, stream: side of the training and evaluation crops");
  app.add_option("--resize", cfg.resize, "images, stream: shorter side before the evaluation center crop (0: size*8/7)");
  app.add_option("--workers", cfg.workers, "images, stream: decoding threads per loader");
  app.add_flag("--make-longtail", cfg.make_longtail,
               "images: draw a long-tailed subset (--profile, --rho, --n-max) and a validation split from a "
               "balanced training set, as for the built-in sets");
  app.add_option("--profile", w.profile, "long-tail profile: exp or step");
  app.add_option("--rho", cfg.rho, "imbalance ratio n_max / n_min");
  app.add_option("--n-max", cfg.n_max, "training images of the largest class");
  app.add_option("--val-per-class", cfg.val_per_class, "balanced validation images per class (left-out data)");
  app.add_option("--data-seed", cfg.data_seed, "seed of the long-tailed subset and validation split");
  app.add_option("--test-limit", cfg.test_limit, "evaluate on the first N test images only (0 = all)");
  app.add_flag("--balanced-subset", cfg.balanced_subset,
               "train on a class-balanced subset as large as the long-tailed one (its class groups stay the long-tailed "
               "profile's)");
  app.add_option("--many-above", cfg.many_above, "Many group: classes with more training images than this");
  app.add_option("--few-below", cfg.few_below, "Few group: classes with fewer training images than this");
}

void add_training_options(CLI::App& app, de::TrainConfig& cfg, Words& w) {
  app.add_option("--depth", cfg.depth, "ResNet depth 6n+2: 8, 20, 32, 44, 56, 110");
  app.add_option("--arch", w.arch,
                 "network: resnet8, resnet20, resnet32, ... (CIFAR ResNets, as --depth) or resnet10, resnet18, "
                 "resnet34, resnet50 (torchvision's ImageNet ResNets, for 224 px images)");
  app.add_flag("--amp", cfg.amp, "CUDA: bf16 autocast for the network (DRO-LT and the centroids stay float32)");
  app.add_flag("--channels-last", cfg.channels_last, "CUDA: channels-last convolutions");
  app.add_option("--epochs", cfg.epochs, "representation epochs (drolt: CE warm-up + DRO-LT)");
  app.add_option("--batch-size", cfg.batch_size, "mini-batch size");
  app.add_option("--lr", cfg.lr, "SGD learning rate");
  app.add_option("--momentum", cfg.momentum, "SGD momentum");
  app.add_option("--wd", cfg.weight_decay, "weight decay");
  app.add_option("--warmup", cfg.warmup_epochs, "linear learning-rate warm-up epochs");
  app.add_option("--schedule", w.schedule, "multistep, cosine or constant");
  app.add_option("--milestones", cfg.milestones, "multistep milestones as fractions of --epochs");
  app.add_option("--gamma", cfg.gamma, "multistep decay factor");
  app.add_option("--loss", w.loss, "drolt: the classifier loss next to DRO-LT: ce, focal, ldam (default)");
  app.add_option("--weighting", w.weighting, "drolt: class weights of that loss: none, inverse, effective, nmax");
  app.add_option("--sampler", w.sampler,
                 "drolt: sampler of the DRO-LT epochs: " + de::enum_choices<de::SamplerKind>());
  app.add_option("--resample-sampler", w.resample_sampler, "resample: its sampler (default class-balanced)");
  app.add_option("--reweight", w.reweight, "reweight: its class weights (default inverse)");
  app.add_option("--cb-beta", cfg.cb_beta, "beta of effective-number weights (and DRW)");
  app.add_option("--focal-gamma", cfg.focal_gamma, "focal loss gamma (0 = CE)");
  app.add_option("--ldam-margin", cfg.ldam_margin, "LDAM largest margin m");
  app.add_option("--ldam-scale", cfg.ldam_scale, "LDAM cosine classifier scale s");
  app.add_option("--drw-start", cfg.drw_start, "DRW from this epoch (-1: 0.8 * epochs)");
  app.add_flag("--drw,!--no-drw", cfg.drw, "drolt with --loss ldam: DRW too (on by default)");
  app.add_option("--class-aware-k", cfg.class_aware_k, "class-aware sampler: images of one class in a row");
  app.add_option("--la-loss-tau", cfg.la_loss_tau, "la-loss: tau of the logit-adjusted loss (1: Balanced Softmax, 0: CE)");
  app.add_option("--wb-wd", cfg.wb_weight_decay, "weight-balancing: the tuned weight decay of both its stages");
  app.add_option("--max-norm", cfg.max_norm, "weight-balancing: MaxNorm radius of each class's classifier weights");
}

void add_dro_and_stage_options(CLI::App& app, de::TrainConfig& cfg, Words& w) {
  app.add_option("--lambda", cfg.lambda, "DRO-LT weight: (1 - lambda) L + lambda DRO, in [0, 1] (default 0.1, the default recipe)");
  app.add_flag("--dro-sum", cfg.dro_sum, "CE + DRO-LT, summed (the authors' code; --lambda unused)");
  app.add_option("--temperature", cfg.temperature, "DRO-LT temperature tau > 0");
  app.add_option("--eps0", w.eps0, "radius: shared value / sqrt-n numerator / learned initial value");
  app.add_option("--dro-start", cfg.dro_start, "first DRO-LT epoch (CE before it); default epochs/2");
  app.add_option("--dro-lr", cfg.dro_lr, "constant learning rate of the DRO-LT epochs (0: the schedule goes on)");
  app.add_option("--centroids", w.centroids,
                 "centroid mode: full (refresh pass), previous (last epoch's training pass), ema");
  app.add_option("--dro-layers", cfg.dro_layers,
                 "DRO-LT at these layers, each with its own bank and radii: 0 the stem, 1-3 the "
                 "stages (3 = penultimate, the default)")
      ->delimiter(',');
  app.add_option("--dro-layer-weights", cfg.dro_layer_weights,
                 "weight w_l of each --dro-layers entry in sum_l w_l L_DRO (default 1/L each)")
      ->delimiter(',');
  app.add_option("--ema-momentum", cfg.ema_momentum, "EMA centroid momentum");
  app.add_option("--radius-lr", cfg.radius_lr, "SGD learning rate of learned radii");
  app.add_option("--radius-wd", cfg.radius_weight_decay, "weight decay of learned radii");
  app.add_option("--stage-epochs,--crt-epochs", cfg.stage_epochs, "epochs of each trained classifier stage (crt, lws, wb)");
  app.add_option("--stage-lr,--crt-lr", cfg.stage_lr, "learning rate of the trained classifier stages");
  app.add_option("--stage-schedule,--crt-schedule", w.stage_schedule, "their schedule: cosine or constant");
  app.add_option("--stage-sampler,--crt-sampler", w.stage_sampler, "their sampler (default class-balanced)");
  app.add_flag("--no-crt-reinit", w.no_crt_reinit, "crt goes on training the joint classifier (the authors' code)");
  app.add_option("--stage-bn,--crt-bn", w.stage_bn,
                 "batch norm in the classifier stages: eval (default: the representation's statistics, features "
                 "frozen) or train (batch statistics, running ones updated from the re-balanced batches, as Kang "
                 "et al.'s cRT code)");
  app.add_option("--tau-norm-tau", cfg.tau_norm_tau, "tau-norm's tau in [0, 1] (-1: chosen on validation)");
  app.add_option("--la-tau", cfg.la_tau, "logit adjustment's tau (-1: chosen on validation)");
}

void add_runtime_options(CLI::App& app, de::TrainConfig& cfg, Words& w) {
  app.add_option("--crop-pad", cfg.crop_pad, "random-crop padding (-1: 4 for 32x32, 2 for 28x28)");
  app.add_flag("--no-flip", w.no_flip, "no horizontal flips");
  app.add_option("--seed", cfg.seed, "seed of initialisation, data order and augmentation");
  app.add_option("--threads", cfg.threads, "CPU threads (0 = all cores)");
  app.add_option("--device", w.device, "cpu or cuda");
  app.add_option("--dist-backend", w.dist_backend,
                 "several processes (WORLD_SIZE > 1): auto (nccl with --device cuda, gloo on cpu), gloo or nccl");
  app.add_option("--dist-bucket-mb", cfg.dist_bucket_mb,
                 "several processes: gradient buckets of this many MB, all-reduced during backward (0: after it)");
  app.add_option("-o,--out,--out-dir", cfg.out_dir, "output directory (checkpoints, metrics.jsonl, summary.json, table.md, plots)");
  app.add_flag("--resume", cfg.resume, "continue from the checkpoints in --out");
  app.add_option("--checkpoint-every", cfg.checkpoint_every, "checkpoint every N epochs (0 = never)");
  app.add_option("--save-at", cfg.save_at, "also keep the checkpoint taken after epoch N (checkpoint-<run>-eN.pt)");
  app.add_option("--warm-start", cfg.warm_start,
                 "drolt: take the CE warm-up from a CE run's checkpoint saved with --save-at <dro-start>");
  app.add_option("--stop-after", cfg.stop_after, "stop a run after N epochs as if interrupted (tests --resume)");
  app.add_option("--val-every", cfg.val_every, "validation accuracy every N epochs");
  app.add_flag("--layer-analysis", cfg.layer_analysis,
               "after each representation: nearest-centroid accuracy at every layer for Many / Medium / Few "
               "(layers-<run>.csv)");
  app.add_flag("--no-plots", w.no_plots, "do not call gnuplot");
  app.add_flag("-q,--quiet", w.quiet, "no per-epoch progress lines");
}

/// --arch: a CIFAR ResNet depth or an ImageNet ResNet.
void apply_arch(const CLI::App& app, de::TrainConfig& cfg, const std::string& arch) {
  const std::string digits = arch.rfind("resnet", 0) == 0 ? arch.substr(6) : std::string();
  const bool number = !digits.empty() && digits.size() <= 4 && digits.find_first_not_of("0123456789") == std::string::npos;
  const int64_t d = number ? std::stoll(digits) : -1;
  if (d == 10 || d == 18 || d == 34 || d == 50) {
    if (app.count("--depth") > 0) {
      throw std::invalid_argument("--depth " + std::to_string(cfg.depth) + " and --arch " + arch +
                                  ": expected --depth only with a CIFAR ResNet, got an ImageNet one");
    }
    cfg.imagenet_depth = d;
  } else if (d >= 8 && (d - 2) % 6 == 0) {
    if (app.count("--depth") > 0 && cfg.depth != d) {
      throw std::invalid_argument("--arch " + arch + " and --depth " + std::to_string(cfg.depth) +
                                  ": expected one depth, got two");
    }
    cfg.depth = d;
    cfg.imagenet_depth = 0;
  } else {
    throw std::invalid_argument("--arch: expected resnet10, resnet18, resnet34, resnet50 (ImageNet) or a CIFAR "
                                "resnet of depth 6n+2 (resnet8, resnet20, resnet32, ...), got '" + arch + "'");
  }
}

/// The strings of the command line become the typed configuration here, once.
void apply_words(const CLI::App& app, de::TrainConfig& cfg, const Words& w) {
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  if (given("--dataset")) cfg.dataset = de::parse_enum<de::Dataset>("--dataset", w.dataset);
  if (given("--loader")) cfg.loader = de::parse_enum<de::Loader>("--loader", w.loader);
  if (given("--profile")) cfg.profile = de::parse_enum<de::Profile>("--profile", w.profile);
  if (given("--device")) cfg.device = de::parse_enum<de::Device>("--device", w.device);
  if (given("--dist-backend")) cfg.dist_backend = de::parse_enum<de::DistBackend>("--dist-backend", w.dist_backend);
  if (given("--method")) cfg.methods = de::parse_names("--method", de::method_registry(), w.methods);
  if (given("--classifier")) cfg.classifiers = de::parse_names("--classifier", de::stage_registry(), w.classifiers);
  if (given("--policy") || given("--eps0")) {
    cfg.radius = de::parse_policy(given("--policy") ? w.policy : cfg.radius.name(),
                                  given("--eps0") ? w.eps0 : cfg.radius.eps0());
  }
  if (given("--loss")) cfg.loss = de::parse_enum<de::BaseLoss>("--loss", w.loss);
  if (given("--weighting")) cfg.weighting = de::parse_enum<drolt::ClassWeighting>("--weighting", w.weighting);
  if (given("--sampler")) cfg.sampler = de::parse_enum<de::SamplerKind>("--sampler", w.sampler);
  if (given("--resample-sampler")) {
    cfg.resample_sampler = de::parse_enum<de::SamplerKind>("--resample-sampler", w.resample_sampler);
  }
  if (given("--reweight")) cfg.reweight = de::parse_enum<drolt::ClassWeighting>("--reweight", w.reweight);
  if (given("--schedule")) cfg.schedule = de::parse_enum<de::Schedule>("--schedule", w.schedule);
  if (given("--centroids")) cfg.centroid_mode = de::parse_enum<de::CentroidMode>("--centroids", w.centroids);
  if (given("--stage-schedule")) {
    cfg.stage_schedule = de::parse_enum<de::Schedule>("--stage-schedule", w.stage_schedule);
    if (cfg.stage_schedule == de::Schedule::multistep) {
      throw std::invalid_argument("--stage-schedule: expected cosine or constant, got 'multistep'");
    }
  }
  if (given("--stage-bn")) {
    if (w.stage_bn != "eval" && w.stage_bn != "train") {
      throw std::invalid_argument("--stage-bn: expected eval or train, got '" + w.stage_bn + "'");
    }
    cfg.stage_bn_train = w.stage_bn == "train";
  }
  if (given("--stage-sampler")) cfg.stage_sampler = de::parse_enum<de::SamplerKind>("--stage-sampler", w.stage_sampler);
  if (given("--arch")) apply_arch(app, cfg, w.arch);
  if (w.no_crt_reinit) cfg.crt_reinit = false;
  if (w.no_flip) cfg.flip = false;
  if (w.no_plots) cfg.plots = false;
  if (w.quiet) cfg.verbose = false;
}

/// The command line into `cfg`: the preset first, then the options given
/// override it (parsed twice). Returns the exit status of a refused command
/// line (its message printed), or -1.
int parse_command_line(int argc, char** argv, de::TrainConfig& cfg) {
  CLI::App app{"drolt_train: DRO-LT (Samuel & Chechik, ICCV 2021) example trainer on long-tailed data"};
  Words w;
  add_run_and_data_options(app, cfg, w);
  add_training_options(app, cfg, w);
  add_dro_and_stage_options(app, cfg, w);
  add_runtime_options(app, cfg, w);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (!w.preset.empty()) {
      de::TrainConfig base;
      de::apply_preset(w.preset, base);
      cfg = base;  // re-parse onto the preset's values so explicit options win
      w = Words{};
      app.parse(argc, argv);
    }
    apply_words(app, cfg, w);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "drolt_train: " << e.what() << "\n";
    return 2;
  }
  const std::string dataset = de::name_of(cfg.dataset);
  if ((cfg.dataset == de::Dataset::cifar10 || cfg.dataset == de::Dataset::cifar100) &&
      cfg.data_dir == de::TrainConfig().data_dir) {
    std::cerr << "drolt_train: --dataset " << dataset << " needs --data DIR (the binary CIFAR files)\n";
    return 2;
  }
  if ((cfg.dataset == de::Dataset::list || cfg.dataset == de::Dataset::inaturalist) && !app.count("--data")) {
    std::cerr << "drolt_train: --dataset " << dataset
              << " needs --data DIR (the root the image paths of --train-set are relative to)\n";
    return 2;
  }
  try {
    de::validate(cfg);
  } catch (const std::exception& e) {
    std::cerr << "drolt_train: " << e.what();
    return 2;
  }
  return -1;
}

/// Trains and evaluates everything `cfg` asks for; the exit status.
int train(const de::TrainConfig& cfg) {
  if (cfg.device == de::Device::cuda && !torch::cuda::is_available()) {
    std::cerr << "drolt_train: --device cuda: this LibTorch has no CUDA or no GPU is visible\n";
    return 2;
  }
  // Several processes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, as
  // PyTorch's launchers and scripts/launch-local.sh set them): meet the other
  // ranks first (NCCL on cuda:LOCAL_RANK with --device cuda, Gloo on the CPU);
  // a rank that never comes makes this fail after DROLT_DIST_TIMEOUT seconds.
  de::DistContext dist;
  try {
    dist = de::DistContext::from_env(de::name_of(cfg.device), de::name_of(cfg.dist_backend), cfg.dist_bucket_mb);
  } catch (const c10::Error& e) {
    std::cerr << "drolt_train: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "drolt_train: " << e.what() << "\n";
    return 1;
  }
  const auto world = static_cast<unsigned>(dist.world());
  // By default the cores are shared out between the processes of this machine.
  const int threads = cfg.threads > 0 ? cfg.threads
                                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency() / world));
  torch::set_num_threads(threads);
  if (dist.active()) {
    std::cout << "rank " << dist.rank() << " of " << world << " (global batch " << cfg.batch_size << ", "
              << cfg.batch_size / static_cast<int64_t>(world) << " per process)\n";
  }

  try {
    const auto t0 = std::chrono::steady_clock::now();
    de::DataBundle data = de::load_data(cfg);
    std::cout << data.description << ": " << data.train->size() << " training images (";
    for (size_t c = 0; c < data.counts.size() && c < 20; ++c) std::cout << (c ? "," : "") << data.counts[c];
    std::cout << (data.counts.size() > 20 ? ",..." : "") << "), " << data.val_size() << " validation, "
              << data.test->size() << " test; "
              << de::network_name(cfg)
              << (cfg.amp ? " (bf16 autocast)" : "") << ", " << threads << " thread(s), device " << dist.device(de::name_of(cfg.device))
              << "\n";
    auto rep = de::run_experiment(cfg, data, std::cout, dist);
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

}  // namespace

int main(int argc, char** argv) {
  de::TrainConfig cfg;
  const int refused = parse_command_line(argc, argv, cfg);
  if (refused >= 0) return refused;
  return train(cfg);
}
