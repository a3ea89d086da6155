// End-to-end tests of the example trainer (examples/common/*.hpp) on a few
// hundred generated images: the loss goes down, the phases switch, a resumed
// run reproduces an uninterrupted one bit for bit, and the outputs are written.
#include <catch2/catch.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "../examples/common/config.hpp"
#include "../examples/common/data.hpp"
#include "../examples/common/report.hpp"
#include "../examples/common/resnet.hpp"
#include "../examples/common/trainer.hpp"
#include "tiny_config.hpp"

namespace de = drolt_examples;

namespace {

std::string tmpdir(const std::string& name) {
  const std::string d = std::string(DROLT_TEST_TMPDIR) + "/trainer-" + name;
  std::system(("rm -rf '" + d + "'").c_str());
  return d;
}

de::TrainConfig tiny_config(const std::string& out) { return tiny_trainer_config(out); }

de::RunSpec dro_spec(const de::TrainConfig& c) { return tiny_run_spec(c, de::Method::drolt); }

/// Equal, or both NaN.
bool same_number(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

size_t count_lines(const std::string& path) {
  std::ifstream f(path);
  size_t n = 0;
  std::string line;
  while (std::getline(f, line)) n += !line.empty();
  return n;
}

std::vector<std::pair<std::string, torch::Tensor>> state_of(torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& kv : m.named_parameters()) out.emplace_back(kv.key(), kv.value().detach().clone());
  for (const auto& kv : m.named_buffers()) out.emplace_back(kv.key(), kv.value().detach().clone());
  return out;
}

void require_identical(torch::nn::Module& a, torch::nn::Module& b) {
  auto sa = state_of(a), sb = state_of(b);
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].first);
    REQUIRE(sa[i].first == sb[i].first);
    REQUIRE(torch::equal(sa[i].second, sb[i].second));
  }
}

/// A fixed batch of 4 classes: logits [16, 4], features [16, 8], labels, and a
/// bank finalized from 40 other random features, drawn after manual_seed(seed).
struct FixedBatch {
  torch::Tensor logits, features, y;
  drolt::CentroidBank bank{4, 8};
};
FixedBatch fixed_batch(uint64_t seed) {
  torch::manual_seed(seed);
  FixedBatch b;
  b.logits = torch::randn({16, 4});
  b.features = torch::randn({16, 8});
  b.y = torch::tensor({0, 1, 2, 3, 0, 0, 1, 2, 3, 0, 1, 0, 0, 2, 1, 0}, torch::kLong);
  b.bank->accumulate(torch::randn({40, 8}), torch::arange(4).repeat(10));
  b.bank->finalize();
  return b;
}

}  // namespace

TEST_CASE("ResNet family: shapes of features, logits and stage features", "[trainer]") {
  torch::manual_seed(0);
  for (int depth : {8, 20}) {
    de::ResNet net(de::ResNetOptions(depth, 1, 7).stage_features(true));
    auto out = net->forward(torch::randn({3, 1, 28, 28}));
    CHECK(out.features.sizes() == torch::IntArrayRef({3, 64}));
    CHECK(out.logits.sizes() == torch::IntArrayRef({3, 7}));
    REQUIRE(out.stages.size() == 3);
    CHECK(out.stages[0].size(1) == 16);
    CHECK(out.stages[1].size(1) == 32);
    CHECK(torch::equal(out.stages[2], out.features));
  }
  de::ResNet rgb(de::ResNetOptions(32, 3, 100));
  CHECK(rgb->forward(torch::randn({2, 3, 32, 32})).logits.sizes() == torch::IntArrayRef({2, 100}));
  CHECK_THROWS(de::ResNet(de::ResNetOptions(31, 3, 10)));
}

TEST_CASE("trainer: bad input stops before training", "[trainer]") {
  auto c = tiny_config(tmpdir("bad"));
  de::validate(c);
  auto expect_bad = [&](auto edit) {
    auto d = c;
    edit(d);
    CHECK_THROWS_AS(de::validate(d), std::invalid_argument);
  };
  expect_bad([](de::TrainConfig& d) { d.methods.clear(); });
  expect_bad([](de::TrainConfig& d) { d.lambda = 1.5; });
  expect_bad([](de::TrainConfig& d) { d.lambda = -0.1; });
  expect_bad([](de::TrainConfig& d) { d.temperature = 0; });
  expect_bad([](de::TrainConfig& d) { d.stage_lr = INFINITY; });
  expect_bad([](de::TrainConfig& d) { d.radius_lr = INFINITY; });
  expect_bad([](de::TrainConfig& d) { d.weight_decay = INFINITY; });
  {  // LibTorch refuses a scalar a float cannot hold in the middle of the first step
    auto d = c;
    d.lr = 1e300;
    CHECK_THROWS_WITH(de::validate(d), Catch::Contains("--lr: expected a positive learning rate no larger than a "
                                                       "float holds (3.4e38), got 1e+300"));
  }
  // A sentinel is accepted exactly as documented: -1, no other negative value.
  auto refused = [&](auto edit, const std::string& message) {
    auto d = c;
    edit(d);
    CHECK_THROWS_WITH(de::validate(d), Catch::Contains(message));
  };
  refused([](de::TrainConfig& d) { d.la_tau = -2; }, "--la-tau: expected a value in [0, 10] (or -1: chosen on validation), got -2");
  refused([](de::TrainConfig& d) { d.tau_norm_tau = -0.5; },
          "--tau-norm-tau: expected a value in [0, 1] (or -1: chosen on validation), got -0.5");
  refused([](de::TrainConfig& d) { d.dro_start = -3; }, "--dro-start: expected >= 0 (or -1, its default), got -3");
  refused([](de::TrainConfig& d) { d.drw_start = -2; }, "--drw-start: expected >= 0 (or -1, its default), got -2");
  refused([](de::TrainConfig& d) { d.save_at = -5; }, "--save-at: expected >= 0 (or -1, its default), got -5");
  refused([](de::TrainConfig& d) { d.stop_after = -7; }, "--stop-after: expected >= 0 (or -1, its default), got -7");
  {
    auto d = c;
    d.la_tau = -1;
    d.tau_norm_tau = -1;
    d.dro_start = -1;
    d.drw_start = -1;
    de::validate(d);  // the sentinels themselves
  }
  expect_bad([](de::TrainConfig& d) { d.batch_size = 0; });
  expect_bad([](de::TrainConfig& d) { d.depth = 30; });
  expect_bad([](de::TrainConfig& d) { d.classifiers = {de::ClassifierKind::lws}; d.stage_epochs = 0; });
  expect_bad([](de::TrainConfig& d) { d.classifiers = {de::ClassifierKind::tau_norm}; d.val_per_class = 0; });
  // Words of the command line are checked where they become enums, with the flag named.
  CHECK_THROWS_WITH(de::parse_names("--method", de::method_registry(), {"ce,svm"}),
                    "--method: expected ce, crt, resample, reweight, focal, ldam-drw, drolt, la-loss or "
                    "weight-balancing, got 'svm'");
  CHECK_THROWS_WITH(de::parse_names("--classifier", de::stage_registry(), {"joint,svm"}),
                    "--classifier: expected joint, crt, lws, tau-norm, ncm, la or wb, got 'svm'");
  expect_bad([](de::TrainConfig& d) { d.methods = {"svm"}; });
  expect_bad([](de::TrainConfig& d) { d.classifiers = {"svm"}; });
  expect_bad([](de::TrainConfig& d) { d.la_loss_tau = -1; });
  expect_bad([](de::TrainConfig& d) { d.max_norm = 0; });
  expect_bad([](de::TrainConfig& d) { d.wb_weight_decay = -1; });
  // One answer to "does this stage train?": the stage's own. wb trains, so it needs epochs.
  CHECK(de::stage_trains("wb", c));
  CHECK_FALSE(de::stage_trains("tau-norm", c));
  expect_bad([](de::TrainConfig& d) { d.methods = {de::Method::weight_balancing}; d.stage_epochs = 0; });
  CHECK_THROWS_WITH(de::parse_policy("huge", 0.5), "--policy: expected erm, shared, sqrtn or learned, got 'huge'");
  CHECK_THROWS_WITH(de::parse_enum<de::CentroidMode>("--centroids", "batch"),
                    "--centroids: expected full, previous or ema, got 'batch'");
  const bool parsed = de::parse_names("--classifier", de::stage_registry(), {"joint,crt", "la"}) ==
                      std::vector<std::string>{de::ClassifierKind::joint, de::ClassifierKind::crt,
                                               de::ClassifierKind::logit_adjust};
  CHECK(parsed);
  // Counts that would overflow the epoch arithmetic are refused, naming the
  // flag, the bound and the value.
  auto too_big = [&](auto edit, const std::string& flag, int64_t limit) {
    auto d = c;
    edit(d);
    CHECK_THROWS_WITH(de::validate(d), Catch::Contains(flag + ": expected at most " + std::to_string(limit) +
                                                       ", got 9223372036854775807"));
  };
  const int64_t huge = std::numeric_limits<int64_t>::max();
  too_big([&](de::TrainConfig& d) { d.epochs = huge; }, "--epochs", de::kMaxEpochs);
  too_big([&](de::TrainConfig& d) { d.stage_epochs = huge; }, "--stage-epochs", de::kMaxEpochs);
  too_big([&](de::TrainConfig& d) { d.dro_start = huge; }, "--dro-start", de::kMaxEpochs);
  too_big([&](de::TrainConfig& d) { d.batch_size = huge; }, "--batch-size", de::kMaxBatch);
  too_big([&](de::TrainConfig& d) { d.n_max = huge; }, "--n-max", de::kMaxImagesPerClass);
  {
    auto d = c;
    d.threads = std::numeric_limits<int>::max();
    CHECK_THROWS_WITH(de::validate(d), Catch::Contains("--threads: expected at most 4096, got 2147483647"));
  }
  auto at_bound = c;
  at_bound.epochs = de::kMaxEpochs;
  de::validate(at_bound);  // the bound itself is allowed
  auto missing = c;
  missing.dataset = de::Dataset::fashion_mnist;
  missing.data_dir = std::string(DROLT_TEST_TMPDIR) + "/no-such-dir";
  CHECK_THROWS_WITH(de::load_data(missing), Catch::Contains("does not exist"));
}

TEST_CASE("trainer: tiny end-to-end run of ce, crt and drolt", "[trainer]") {
  const auto cfg = tiny_config(tmpdir("e2e"));
  const auto data = de::load_data(cfg);
  REQUIRE(data.counts == std::vector<int64_t>({60, 27, 12, 6}));
  REQUIRE(data.train_x.size(0) == 105);
  REQUIRE(data.val_x.size(0) == 40);

  std::ostringstream log;
  auto rep = de::run_experiment(cfg, data, log);
  REQUIRE_FALSE(rep.interrupted);

  // Results: CE, cRT on CE features, DRO-LT with and without re-training.
  std::vector<std::string> names;
  for (const auto& r : rep.results) names.push_back(r.name);
  REQUIRE(names == std::vector<std::string>({"ce", "crt", "drolt-learned", "drolt-learned/nocrt"}));
  for (const auto& r : rep.results) {
    CHECK(r.test.all >= 0);
    CHECK(r.test.all <= 100);
    CHECK(r.per_class.size() == 4);
  }
  // Learned radii: one per class, non-negative, moved away from eps0.
  const auto& dro = rep.results[2];
  REQUIRE(dro.radii.size() == 4);
  for (double e : dro.radii) CHECK(e >= 0);
  CHECK(dro.radii[0] < 0.5);

  // Phases of each run, in order: CE warm-up, DRO-LT, classifier re-training.
  std::vector<std::string> ce_phases, dro_phases;
  for (const auto& h : rep.history) (h.run == "ce" ? ce_phases : dro_phases).push_back(h.phase);
  CHECK(ce_phases == std::vector<std::string>({"ce", "ce", "ce", "ce", "crt", "crt"}));
  CHECK(dro_phases == std::vector<std::string>({"ce", "ce", "dro", "dro", "crt", "crt"}));
  for (const auto& h : rep.history) {
    if (h.phase == "dro") {
      CHECK(h.dro > 0);
      CHECK(std::isfinite(h.loss));
    }
    if (h.phase == "ce") CHECK(h.dro == 0);
  }

  // The training loss goes down during CE training.
  REQUIRE(rep.history.size() == 12);
  CHECK(rep.history[3].loss < rep.history[0].loss);
  CHECK(rep.history[3].train_acc > rep.history[0].train_acc);

  // Outputs.
  const std::string d = cfg.out_dir;
  CHECK(count_lines(d + "/metrics.jsonl") == 12);
  {
    std::ifstream f(d + "/metrics.jsonl");
    std::string first;
    std::getline(f, first);
    auto j = de::json::parse(first);
    CHECK(j.at("run") == "ce");
    CHECK(j.at("phase") == "ce");
    CHECK(j.contains("images_per_s"));
  }
  {
    std::ifstream f(d + "/summary.json");
    auto j = de::json::parse(f);
    CHECK(j.at("results").size() == 4);
    CHECK(j.at("counts") == de::json({60, 27, 12, 6}));
    CHECK(j.at("crt_bn") == "eval");
  }
  std::ifstream table(d + "/table.md");
  std::stringstream ts;
  ts << table.rdbuf();
  CHECK_THAT(ts.str(), Catch::Contains("| crt") && Catch::Contains("Many") && Catch::Contains("Few"));
  CHECK_THAT(log.str(), Catch::Contains("drolt-learned"));
  CHECK(count_lines(d + "/per_class.csv") == 5);
  CHECK(count_lines(d + "/radii-drolt-learned.csv") == 5);
  CHECK(de::file_exists(d + "/checkpoint-ce.pt"));
  CHECK(de::file_exists(d + "/checkpoint-drolt-learned.pt"));
  if (de::have_gnuplot()) {
    CHECK(de::file_exists(d + "/per_class_accuracy.png"));
    CHECK(de::file_exists(d + "/learned_radii.png"));
    CHECK(rep.plots.size() == 2);
  } else {
    CHECK(rep.plots.empty());
  }
}

TEST_CASE("trainer: --resume reproduces an uninterrupted run exactly", "[trainer]") {
  for (const std::string mode : {"full", "ema"}) {
    for (int64_t stop : {3, 5}) {  // during DRO-LT, during classifier re-training
      DYNAMIC_SECTION("centroids " << mode << ", interrupted after epoch " << stop) {
        auto cfg = tiny_config(tmpdir("resume-a"));
        de::make_dirs(cfg.out_dir);
        cfg.methods = {de::Method::drolt};
        cfg.centroid_mode = de::parse_enum<de::CentroidMode>("--centroids", mode);
        const auto data = de::load_data(cfg);
        std::ostringstream log;

        de::Run whole(cfg, data, dro_spec(cfg), {});
        auto ra = whole.run(log);
        REQUIRE(ra.size() == 2);

        auto cb = cfg;
        cb.out_dir = tmpdir("resume-b");
        de::make_dirs(cb.out_dir);
        cb.stop_after = stop;
        de::Run first(cb, data, dro_spec(cb), {});
        CHECK(first.run(log).empty());
        CHECK(first.interrupted());
        CHECK(first.next_epoch() == stop);

        cb.stop_after = -1;
        cb.resume = true;
        de::Run second(cb, data, dro_spec(cb), {});  // fresh objects: everything comes from the checkpoint
        auto rb = second.run(log);
        REQUIRE(rb.size() == 2);
        CHECK_THAT(log.str(), Catch::Contains("resumed from"));

        require_identical(*whole.model(), *second.model());
        require_identical(*whole.loss(), *second.loss());
        require_identical(*whole.bank(), *second.bank());
        for (size_t i = 0; i < ra.size(); ++i) {
          CHECK(ra[i].name == rb[i].name);
          CHECK(ra[i].per_class == rb[i].per_class);
          CHECK(ra[i].radii == rb[i].radii);
        }
        // The resumed run's history and metrics.jsonl cover every epoch once.
        CHECK(count_lines(cb.out_dir + "/metrics.jsonl") == whole.history().size());
        REQUIRE(second.history().size() == whole.history().size());
        for (size_t i = 0; i < whole.history().size(); ++i) {
          CHECK(second.history()[i].loss == whole.history()[i].loss);
        }
      }
    }
  }
}

/// The bytes of a file, and writing them back.
std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

TEST_CASE("trainer: --resume from a damaged checkpoint stops with a message naming it", "[trainer]") {
  auto cfg = tiny_config(tmpdir("resume-bad"));
  de::make_dirs(cfg.out_dir);
  cfg.methods = {de::Method::drolt};
  cfg.stop_after = 1;
  const auto data = de::load_data(cfg);
  std::ostringstream log;
  de::Run first(cfg, data, dro_spec(cfg), {});
  first.run(log);
  REQUIRE(first.interrupted());
  const std::string path = first.checkpoint_path();
  const std::string good = file_bytes(path);
  REQUIRE(good.size() > 1000);
  std::string damaged = good, why;
  SECTION("a foreign file") {
    damaged = "PK\x03\x04 not a checkpoint";
    why = "is not a drolt checkpoint";
  }
  SECTION("one flipped byte") {
    damaged[good.size() / 2] = static_cast<char>(damaged[good.size() / 2] ^ 0x10);
    why = "checksum";
  }
  SECTION("truncated") {
    damaged.resize(good.size() - 7);
    why = "truncated";
  }
  write_bytes(path, damaged);
  cfg.stop_after = -1;
  cfg.resume = true;
  de::Run second(cfg, data, dro_spec(cfg), {});
  try {
    second.run(log);
    FAIL("resuming from a damaged checkpoint did not throw");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("cannot resume from '" + path + "'"));
    CHECK_THAT(e.what(), Catch::Contains("drolt::read_archive: '" + path + "'"));
    CHECK_THAT(e.what(), Catch::Contains(why));
    CHECK_THAT(e.what(), Catch::Contains("remove it"));
  }
  // The undamaged bytes resume.
  write_bytes(path, good);
  de::Run third(cfg, data, dro_spec(cfg), {});
  CHECK(third.run(log).size() == 2);
}

TEST_CASE("trainer: a diverging run stops at its first non-finite loss, naming the epoch, step and flag",
          "[trainer]") {
  auto cfg = tiny_config(tmpdir("diverge"));
  de::make_dirs(cfg.out_dir);
  std::ostringstream log;
  std::string msg, where, hint;
  size_t kept = 0;  // epochs recorded before the diverged one
  de::RunSpec spec;
  auto data = de::load_data(cfg);
  SECTION("representation stage, CE: NaN images (a corrupt data set)") {
    cfg.methods = {de::Method::ce};
    spec = tiny_run_spec(cfg, de::Method::ce);
    data.train = std::make_shared<de::TensorSplit>(torch::full_like(data.train_x, NAN), data.train_y);
    where = "at epoch 1/4 (phase ce), step 1 of 4; learning rate";
    kept = 0;
    hint = "a lower --lr or a longer --warmup";
  }
  // The largest learning rate a float holds: the weights overflow within a few
  // steps (which one depends on rounding: not checked).
  SECTION("representation stage, DRO-LT") {
    cfg.methods = {de::Method::drolt};
    cfg.dro_lr = 3e38;  // the DRO-LT epochs' constant learning rate (the authors' recipe)
    spec = dro_spec(cfg);
    where = "at epoch 3/6 (phase dro), step ";
    kept = 2;
    hint = "a lower --dro-lr, --lambda or --radius-lr";
  }
  SECTION("classifier stage (cRT)") {
    cfg.methods = {de::Method::crt};
    cfg.stage_lr = 3e38;
    spec = tiny_run_spec(cfg, de::Method::crt);
    where = "at epoch 5/6 (phase crt), step ";
    kept = 4;
    hint = "a lower --stage-lr";
  }
  de::Run run(cfg, data, spec, {});
  try {
    run.run(log);
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
  }
  CHECK_THAT(msg, Catch::Contains("training diverged: the loss is nan") && Catch::Contains(where) &&
                      Catch::Contains(hint));
  // Nothing of the diverged epoch was written: its metrics line, a checkpoint of
  // it (the CE run diverged in its first epoch: none at all), a summary.
  CHECK(count_lines(cfg.out_dir + "/metrics.jsonl") == kept);
  if (kept == 0) CHECK_FALSE(de::file_exists(run.checkpoint_path()));
  CHECK_FALSE(de::file_exists(cfg.out_dir + "/summary.json"));
}

TEST_CASE("trainer: DRO-LT warm-started from a CE checkpoint equals a run from scratch", "[trainer]") {
  auto cfg = tiny_config(tmpdir("warm-a"));
  de::make_dirs(cfg.out_dir);
  cfg.methods = {de::Method::drolt};
  const auto data = de::load_data(cfg);
  std::ostringstream log;
  de::Run scratch(cfg, data, dro_spec(cfg), {});
  auto ra = scratch.run(log);

  auto cc = tiny_config(tmpdir("warm-ce"));
  de::make_dirs(cc.out_dir);
  cc.save_at = cc.dro_start_epoch();
  de::Run ce(cc, data, tiny_run_spec(cc, de::Method::crt), {});
  ce.run(log);
  const std::string ckpt = ce.epoch_checkpoint_path(cc.save_at);
  REQUIRE(de::file_exists(ckpt));

  auto cw = cfg;
  cw.out_dir = tmpdir("warm-b");
  de::make_dirs(cw.out_dir);
  cw.warm_start = ckpt;
  de::Run warm(cw, data, dro_spec(cw), {});
  auto rb = warm.run(log);
  CHECK_THAT(log.str(), Catch::Contains("CE warm-up (epochs 1-2) taken from"));
  require_identical(*scratch.model(), *warm.model());
  require_identical(*scratch.loss(), *warm.loss());
  REQUIRE(ra.size() == rb.size());
  for (size_t i = 0; i < ra.size(); ++i) CHECK(ra[i].per_class == rb[i].per_class);
  REQUIRE(warm.history().size() == scratch.history().size());
  CHECK(count_lines(cw.out_dir + "/metrics.jsonl") == scratch.history().size());

  // A damaged CE checkpoint is refused with a c10::Error naming it.
  {
    auto bytes = file_bytes(ckpt);
    bytes[bytes.size() / 3] = static_cast<char>(bytes[bytes.size() / 3] ^ 0x01);
    const std::string copy = cw.out_dir + "/flipped.pt";
    write_bytes(copy, bytes);
    auto cd = cw;
    cd.warm_start = copy;
    cd.out_dir = tmpdir("warm-d");
    de::make_dirs(cd.out_dir);
    de::Run damaged(cd, data, dro_spec(cd), {});
    CHECK_THROWS_AS(damaged.run(log), c10::Error);
    de::Run again(cd, data, dro_spec(cd), {});
    CHECK_THROWS_WITH(again.run(log), Catch::Contains("'" + copy + "' is damaged"));
  }
  // A checkpoint from another epoch or another seed is refused.
  auto bad = cw;
  bad.seed = cw.seed + 1;
  bad.out_dir = tmpdir("warm-c");
  de::make_dirs(bad.out_dir);
  de::Run other(bad, data, dro_spec(bad), {});
  CHECK_THROWS_WITH(other.run(log), Catch::Contains("differs in 'seed'"));
}

// ---------------------------------------------------------------- methods

TEST_CASE("trainer losses: LDAM subtracts s * Delta_y from the target logit only", "[trainer]") {
  // The math is the library's (test_baselines.cpp); this pins the trainer's wiring of margins and scale.
  de::LossSpec spec;
  spec.base = de::BaseLoss::ldam;
  spec.ldam_margins = drolt::ldam_margins({100, 16, 1, 81}, 0.5);  // largest (class 2) 0.5, class 0 0.5 / sqrt(10)
  spec.ldam_scale = 30.0;
  auto logits = torch::zeros({2, 4});
  auto y = torch::tensor({2, 0}, torch::kLong);
  auto shifted = logits.clone();
  shifted[0][2] -= 15.0;
  shifted[1][0] -= 15.0 / std::sqrt(10.0);
  CHECK(de::base_loss(spec, logits, y).item<double>() ==
        Approx(torch::nn::functional::cross_entropy(shifted, y).item<double>()).epsilon(1e-6));
}

TEST_CASE("trainer: the official preset's loss is CE(n_c / n_max) + DRO-LT on a fixed batch", "[trainer]") {
  de::TrainConfig c;
  de::apply_preset("official", c);
  de::validate(c);
  const std::vector<int64_t> counts{60, 27, 12, 6};
  c.methods = {de::Method::drolt};
  const auto runs = de::runs_of(c);
  REQUIRE(runs.size() == 1);
  const de::Protocol proto(c, runs[0], counts);
  const int64_t e = c.dro_start_epoch();
  CHECK(e == 200);
  CHECK(proto.sampler_at(e) == de::SamplerKind::class_aware);
  CHECK(proto.sampler_at(e - 1) == de::SamplerKind::instance);  // the CE model before it
  CHECK(proto.phase(e) == "dro");
  CHECK(proto.total_epochs() == 300);  // 200 CE + 80 DRO-LT + 20 classifier epochs
  CHECK(proto.row_name(de::ClassifierKind::crt) == "drolt-learned");

  auto batch = fixed_batch(4);
  const auto &logits = batch.logits, &features = batch.features, &y = batch.y;
  auto& bank = batch.bank;
  drolt::RobustCentroidLoss dro(de::dro_loss_options(c, counts, torch::kCPU));
  const auto v = de::compute_loss(proto.loss_at(e), logits, features, y, dro, bank);
  namespace F = torch::nn::functional;
  auto w = torch::tensor({1.0f, 27.0f / 60, 12.0f / 60, 6.0f / 60});
  auto ce = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().weight(w));
  drolt::RobustCentroidLoss ref(drolt::RobustCentroidLossOptions(4).temperature(1.0).radius(
      drolt::RadiusPolicy::learned(0.5)));
  auto expect = ce + ref->forward(features, y, bank);
  CHECK(v.total.item<double>() == Approx(expect.item<double>()).epsilon(1e-6));
  CHECK(v.base.item<double>() == Approx(ce.item<double>()).epsilon(1e-6));
  // The warm-up is plain CE.
  const auto warm = de::compute_loss(proto.loss_at(e - 1), logits, features, y, dro, bank);
  CHECK_FALSE(warm.dro.defined());
  CHECK(warm.total.item<double>() == Approx(F::cross_entropy(logits, y).item<double>()).epsilon(1e-6));
}

TEST_CASE("trainer: --method drolt's defaults are the default recipe, DRO-LT + LDAM-DRW", "[trainer]") {
  de::TrainConfig c;  // the defaults, as `drolt_train --method drolt` sees them
  c.methods = {de::Method::drolt};
  c.epochs = 40;
  de::validate(c);
  const std::vector<int64_t> counts{60, 27, 12, 6};
  const auto runs = de::runs_of(c);
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].classifiers == std::vector<std::string>{"joint"});  // its own classifier, no cRT
  const de::Protocol proto(c, runs[0], counts);
  CHECK(proto.row_name(de::ClassifierKind::joint) == "drolt-learned/nocrt");
  CHECK(c.dro_start_epoch() == 20);
  CHECK(c.drw_start_epoch() == 32);
  CHECK(c.centroid_mode == de::CentroidMode::full);
  CHECK(proto.phase(19) == "ce");  // plain CE (on the cosine classifier) before DRO-LT
  CHECK(proto.phase(20) == "dro");

  auto batch = fixed_batch(5);
  const auto &logits = batch.logits, &features = batch.features, &y = batch.y;
  auto& bank = batch.bank;
  drolt::RobustCentroidLoss dro(de::dro_loss_options(c, counts, torch::kCPU));
  drolt::RobustCentroidLoss ref(drolt::RobustCentroidLossOptions(4).temperature(1.0).radius(
      drolt::RadiusPolicy::learned(0.5)));
  const auto d = ref->forward(features, y, bank);
  namespace dfn = drolt::functional;
  const auto margins = drolt::ldam_margins(counts, 0.3);
  for (int64_t e : {20, 31, 32, 39}) {
    INFO("epoch " << e);
    // LDAM, largest margin 0.3, scale 30; DRW (effective-number weights, beta 0.9999) from epoch 32 on.
    auto opts = dfn::LDAMLossFuncOptions().scale(30.0);
    if (e >= 32) opts.weight(de::weights_of(drolt::ClassWeighting::effective_number, counts, 0.9999));
    const auto ldam = dfn::ldam_loss(logits, y, margins, opts);
    const auto v = de::compute_loss(proto.loss_at(e), logits, features, y, dro, bank);
    CHECK(v.base.item<double>() == Approx(ldam.item<double>()).epsilon(1e-6));
    CHECK(v.total.item<double>() == Approx((0.9 * ldam + 0.1 * d).item<double>()).epsilon(1e-6));
  }
  // DRO-LT on CE, the paper's protocol, keeps cRT next to its joint classifier.
  c.loss = de::BaseLoss::ce;
  CHECK(de::runs_of(c).at(0).classifiers == std::vector<std::string>{"crt", "joint"});

  // The demo: CE with cRT, LDAM-DRW and the default recipe, one row each.
  de::TrainConfig demo;
  de::apply_preset("demo", demo);
  de::validate(demo);
  std::vector<std::string> rows;
  for (const auto& r : de::runs_of(demo)) {
    const de::Protocol p(demo, r, counts);
    for (const auto& k : p.classifiers()) rows.push_back(p.row_name(k));
  }
  CHECK(rows == std::vector<std::string>{"ce", "crt", "ldam-drw", "drolt-learned/nocrt"});
}

TEST_CASE("trainer: every representation with every classifier, one row per pair", "[trainer]") {
  auto cfg = tiny_config(tmpdir("methods"));
  cfg.methods = {de::Method::ce, de::Method::resample, de::Method::reweight, de::Method::focal, de::Method::ldam_drw,
                 de::Method::drolt};
  cfg.classifiers = {de::ClassifierKind::joint, de::ClassifierKind::crt, de::ClassifierKind::lws,
                     de::ClassifierKind::tau_norm, de::ClassifierKind::ncm, de::ClassifierKind::logit_adjust};
  cfg.resample_sampler = de::SamplerKind::class_aware;
  cfg.la_tau = 0;  // logit adjustment with tau 0 is the joint classifier
  cfg.plots = false;
  const auto data = de::load_data(cfg);
  std::ostringstream log;
  auto rep = de::run_experiment(cfg, data, log);
  std::vector<std::string> names;
  for (const auto& r : rep.results) names.push_back(r.name);
  const std::vector<std::string> expect{
      "ce",           "crt",          "ce/lws",         "ce/tau-norm",         "ce/ncm",         "ce/la",
      "resample",     "resample/crt", "resample/lws",   "resample/tau-norm",   "resample/ncm",   "resample/la",
      "reweight",     "reweight/crt", "reweight/lws",   "reweight/tau-norm",   "reweight/ncm",   "reweight/la",
      "focal",        "focal/crt",    "focal/lws",      "focal/tau-norm",      "focal/ncm",      "focal/la",
      "ldam-drw",     "ldam-drw/crt", "ldam-drw/lws",   "ldam-drw/tau-norm",   "ldam-drw/ncm",   "ldam-drw/la",
      "drolt-learned/nocrt", "drolt-learned", "drolt-learned/lws", "drolt-learned/tau-norm", "drolt-learned/ncm",
      "drolt-learned/la"};
  REQUIRE(names == expect);
  for (size_t i = 0; i < rep.results.size(); ++i) {
    const auto& r = rep.results[i];
    INFO(r.name);
    CHECK(r.test.all >= 0);
    CHECK(r.test.all <= 100);
    if (r.classifier == "ncm") {
      CHECK(std::isnan(r.ece));
    } else {
      CHECK(r.ece >= 0);
      CHECK(r.ece <= 100);
    }
    if (r.classifier == "tau-norm") {
      CHECK(r.tau >= 0);
      CHECK(r.tau <= 1);
    }
    if (r.classifier == "la") {
      CHECK(r.tau == 0);
      CHECK(r.per_class == rep.results[i - 5].per_class);  // = the joint row of the same representation
      CHECK(same_number(r.ece, rep.results[i - 5].ece));
    }
  }
  // The representation is trained once per method: 4 epochs + 2 cRT + 2 LWS each.
  std::map<std::string, std::vector<std::string>> phases;
  for (const auto& h : rep.history) phases[h.run].push_back(h.phase);
  CHECK(phases["focal"] == std::vector<std::string>({"focal", "focal", "focal", "focal", "crt", "crt", "lws", "lws"}));
  CHECK(phases["ldam-drw"] == std::vector<std::string>({"ldam", "ldam", "ldam", "ldam", "crt", "crt", "lws", "lws"}));
  CHECK(phases["drolt-learned"] == std::vector<std::string>({"ce", "ce", "dro", "dro", "crt", "crt", "lws", "lws"}));
  CHECK_THAT(log.str(), Catch::Contains("| ldam-drw/lws") && Catch::Contains("ECE"));
}

TEST_CASE("trainer: --resume is bit-identical in every stage kind", "[trainer]") {
  // DRO-LT on a class-aware loader with CE(n_c / n_max) (the official recipe's
  // shape), then cRT and LWS, the read-off classifiers in between.
  auto base = tiny_config(tmpdir("stages-a"));
  base.methods = {de::Method::drolt};
  base.classifiers = {de::ClassifierKind::joint, de::ClassifierKind::crt, de::ClassifierKind::lws,
                      de::ClassifierKind::tau_norm, de::ClassifierKind::ncm, de::ClassifierKind::logit_adjust};
  base.sampler = de::SamplerKind::class_aware;
  base.weighting = drolt::ClassWeighting::count_ratio;
  base.dro_sum = true;
  base.stage_sampler = de::SamplerKind::progressive;
  const auto data = de::load_data(base);
  std::ostringstream log;
  de::make_dirs(base.out_dir);
  de::Run whole(base, data, dro_spec(base), {});
  auto ra = whole.run(log);
  REQUIRE(ra.size() == 6);
  REQUIRE(whole.lws_scales().defined());
  CHECK_FALSE(torch::equal(whole.lws_scales(), torch::ones({4})));  // LWS did learn
  for (int64_t stop : {1, 3, 4, 5, 6, 7}) {  // warm-up, DRO-LT, end of it, cRT, between stages, LWS
    DYNAMIC_SECTION("interrupted after epoch " << stop) {
      auto cb = base;
      cb.out_dir = tmpdir("stages-b");
      de::make_dirs(cb.out_dir);
      cb.stop_after = stop;
      de::Run first(cb, data, dro_spec(cb), {});
      CHECK(first.run(log).empty());
      cb.stop_after = -1;
      cb.resume = true;
      de::Run second(cb, data, dro_spec(cb), {});
      auto rb = second.run(log);
      REQUIRE(rb.size() == ra.size());
      require_identical(*whole.model(), *second.model());
      require_identical(*whole.loss(), *second.loss());
      CHECK(torch::equal(whole.lws_scales(), second.lws_scales()));
      for (size_t i = 0; i < ra.size(); ++i) {
        INFO(ra[i].name);
        CHECK(ra[i].name == rb[i].name);
        CHECK(ra[i].per_class == rb[i].per_class);
        CHECK(same_number(ra[i].ece, rb[i].ece));
        CHECK(same_number(ra[i].tau, rb[i].tau));
      }
      REQUIRE(second.history().size() == whole.history().size());
      for (size_t i = 0; i < whole.history().size(); ++i) CHECK(second.history()[i].loss == whole.history()[i].loss);
    }
  }
}

TEST_CASE("trainer: --crt-bn train updates batch-norm statistics in the classifier stages, each from the "
          "representation's, and resumes exactly", "[trainer]") {
  auto base = tiny_config(tmpdir("crt-bn-a"));
  base.methods = {de::Method::ce};
  base.classifiers = {de::ClassifierKind::joint, de::ClassifierKind::crt, de::ClassifierKind::lws};
  const auto data = de::load_data(base);
  const auto spec = tiny_run_spec(base, de::Method::ce);
  std::ostringstream log;
  auto buffers_of = [](de::Run& r) {
    std::vector<torch::Tensor> out;
    for (const auto& b : r.model()->buffers()) out.push_back(b.detach().clone());
    return out;
  };
  auto same = [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      if (!torch::equal(a[i], b[i])) return false;
    }
    return true;
  };
  // The representation alone: its statistics at the end of epoch 4.
  auto cr = base;
  cr.stop_after = 4;
  de::make_dirs(cr.out_dir);
  de::Run rep(cr, data, spec, {});
  CHECK(rep.run(log).empty());
  const auto rep_buffers = buffers_of(rep);
  REQUIRE_FALSE(rep_buffers.empty());

  // eval (the default): the stages leave them as they are.
  auto ce = base;
  ce.out_dir = tmpdir("crt-bn-eval");
  de::make_dirs(ce.out_dir);
  de::Run frozen(ce, data, spec, {});
  const auto ra = frozen.run(log);
  REQUIRE(ra.size() == 3);
  CHECK(same(buffers_of(frozen), rep_buffers));

  // train: they follow the stage's batches; the snapshot every stage starts from is the representation's.
  auto ct = base;
  ct.stage_bn_train = true;
  ct.out_dir = tmpdir("crt-bn-train");
  de::make_dirs(ct.out_dir);
  de::Run moving(ct, data, spec, {});
  auto rt = moving.run(log);
  REQUIRE(rt.size() == 3);
  CHECK_FALSE(same(buffers_of(moving), rep_buffers));
  CHECK(same(moving.representation_buffers(), rep_buffers));
  // The joint row is read off before any stage: the same in both modes.
  CHECK(ra[0].name == rt[0].name);
  CHECK(ra[0].per_class == rt[0].per_class);

  SECTION("LWS starts from the representation's statistics, not from where cRT left them") {
    // Without augmentation both runs' LWS stages see the same batches (the stage sampler has its own
    // seed), so LWS after cRT must end exactly as LWS alone.
    auto na = ct;
    na.crop_pad = 0;
    na.flip = false;
    na.out_dir = tmpdir("crt-bn-both");
    de::make_dirs(na.out_dir);
    auto nb = na;
    nb.classifiers = {de::ClassifierKind::joint, de::ClassifierKind::lws};
    nb.out_dir = tmpdir("crt-bn-lws");
    de::make_dirs(nb.out_dir);
    const auto data_na = de::load_data(na);
    // (one at a time: a Run seeds torch's generator when it is made)
    de::Run both(na, data_na, tiny_run_spec(na, de::Method::ce), {});
    auto r_both = both.run(log);
    de::Run lws_only(nb, data_na, tiny_run_spec(nb, de::Method::ce), {});
    auto r_lws = lws_only.run(log);
    REQUIRE(r_both.size() == 3);
    REQUIRE(r_lws.size() == 2);
    CHECK(r_both[2].name == r_lws[1].name);
    CHECK(r_both[2].per_class == r_lws[1].per_class);
    CHECK(same(buffers_of(both), buffers_of(lws_only)));
    CHECK(torch::equal(both.lws_scales(), lws_only.lws_scales()));
  }

  for (int64_t stop : {5, 6, 7}) {  // inside cRT, between the stages, inside LWS
    DYNAMIC_SECTION("interrupted after epoch " << stop) {
      auto cb = ct;
      cb.out_dir = tmpdir("crt-bn-b");
      de::make_dirs(cb.out_dir);
      cb.stop_after = stop;
      de::Run first(cb, data, spec, {});
      CHECK(first.run(log).empty());
      cb.stop_after = -1;
      cb.resume = true;
      de::Run second(cb, data, spec, {});
      auto rb = second.run(log);
      REQUIRE(rb.size() == rt.size());
      require_identical(*moving.model(), *second.model());
      for (size_t i = 0; i < rt.size(); ++i) {
        INFO(rt[i].name);
        CHECK(rt[i].per_class == rb[i].per_class);
        CHECK(same_number(rt[i].ece, rb[i].ece));
      }
    }
  }
}

TEST_CASE("trainer: DRO-LT at several layers, each with its own bank and radii, resumes exactly", "[trainer]") {
  // The loss: the base term plus sum_l w_l L_DRO(layer l), with the module's weights.
  torch::manual_seed(6);
  auto logits = torch::randn({12, 4});
  auto y = torch::tensor({0, 1, 2, 3, 0, 0, 1, 2, 0, 1, 0, 3}, torch::kLong);
  std::vector<torch::Tensor> feats{torch::randn({12, 5}), torch::randn({12, 7})};
  for (const auto& w : {std::vector<double>{0.5, 0.5}, std::vector<double>{0.2, 0.8}}) {
    drolt::MultiLayerRobustCentroidLoss dro(drolt::MultiLayerRobustCentroidLossOptions(drolt::RobustCentroidLossOptions(4))
                                                .add_layer("a", 5, w[0])
                                                .add_layer("b", 7, w[1]));
    for (size_t l = 0; l < 2; ++l) {
      dro->bank(l)->accumulate(torch::randn({20, feats[l].size(1)}), torch::arange(4).repeat(5));
      dro->bank(l)->finalize();
    }
    de::LossSpec spec;
    spec.dro = true;
    spec.lambda = 0.25;
    const auto v = de::compute_loss(spec, logits, feats, y, dro);
    const double d0 = dro->loss(0)->forward(feats[0], y, dro->bank(0)).item<double>();
    const double d1 = dro->loss(1)->forward(feats[1], y, dro->bank(1)).item<double>();
    const double ce = torch::nn::functional::cross_entropy(logits, y).item<double>();
    CHECK(v.dro.item<double>() == Approx(w[0] * d0 + w[1] * d1).epsilon(1e-6));
    CHECK(v.total.item<double>() == Approx(0.75 * ce + 0.25 * (w[0] * d0 + w[1] * d1)).epsilon(1e-6));
  }

  auto cfg = tiny_config(tmpdir("layers-a"));
  de::make_dirs(cfg.out_dir);
  cfg.methods = {de::Method::drolt};
  cfg.dro_layers = {0, 2, 3};
  cfg.centroid_mode = de::CentroidMode::ema;
  auto bad = cfg;
  bad.dro_layers = {3, 4, 3};
  CHECK_THROWS_WITH(de::validate(bad), Catch::Contains("--dro-layers: expected layers in 0..3 (0 the stem, 3 the "
                                                       "penultimate), got 4") &&
                                           Catch::Contains("--dro-layers: expected distinct layers, got 3 twice"));
  bad = cfg;
  bad.dro_layer_weights = {0.5, 0.5};
  CHECK_THROWS_WITH(de::validate(bad), Catch::Contains("--dro-layer-weights: expected one weight per --dro-layers "
                                                       "entry (3), got 2"));
  bad.dro_layer_weights = {0.5, -1, std::nan("")};
  CHECK_THROWS_WITH(de::validate(bad), Catch::Contains("--dro-layer-weights: expected finite weights >= 0, got -1") &&
                                           Catch::Contains("got nan"));
  bad.dro_layer_weights = {0, 0, 0};
  CHECK_THROWS_WITH(de::validate(bad), Catch::Contains("--dro-layer-weights: expected at least one weight > 0"));
  const auto data = de::load_data(cfg);
  std::ostringstream log;
  de::Run whole(cfg, data, dro_spec(cfg), {});
  auto ra = whole.run(log);
  REQUIRE(ra.size() == 2);
  REQUIRE(whole.banks().size() == 3);
  CHECK(whole.banks()[0]->centroids().size(1) == 16);  // the stem of ResNet-8
  CHECK(whole.banks()[1]->centroids().size(1) == 32);
  CHECK(whole.banks()[2]->centroids().size(1) == 64);
  for (const auto& b : whole.banks()) CHECK(b->valid().all().item<bool>());
  int dro_epochs = 0;
  for (const auto& h : whole.history()) {
    CHECK(std::isfinite(h.loss));
    if (h.dro == 0) continue;
    ++dro_epochs;  // the bound's gap, per layer, in (0, 1) with learned radii from 0.5
    REQUIRE(h.bound_gap.size() == 3);
    for (double g : h.bound_gap) CHECK((g > 0 && g < 1));
  }
  CHECK(dro_epochs == 2);

  auto cb = cfg;
  cb.out_dir = tmpdir("layers-b");
  de::make_dirs(cb.out_dir);
  cb.stop_after = 3;
  de::Run first(cb, data, dro_spec(cb), {});
  CHECK(first.run(log).empty());
  cb.stop_after = -1;
  cb.resume = true;
  de::Run second(cb, data, dro_spec(cb), {});
  auto rb = second.run(log);
  REQUIRE(rb.size() == 2);
  require_identical(*whole.model(), *second.model());
  for (size_t l = 0; l < 3; ++l) {
    auto la = whole.losses()[l], lb = second.losses()[l];
    auto ba = whole.banks()[l], bb = second.banks()[l];
    require_identical(*la, *lb);
    require_identical(*ba, *bb);
  }
  for (size_t i = 0; i < ra.size(); ++i) CHECK(ra[i].per_class == rb[i].per_class);
}

TEST_CASE("trainer: layer analysis, balanced subset of the same size, the bound's gap at eps = 0", "[trainer]") {
  auto cfg = tiny_config(tmpdir("analysis"));
  de::make_dirs(cfg.out_dir);
  cfg.methods = {de::Method::drolt};
  cfg.layer_analysis = true;
  cfg.radius = drolt::RadiusPolicy::shared(0.0);
  const auto data = de::load_data(cfg);
  std::ostringstream log;
  de::Run run(cfg, data, dro_spec(cfg), {});
  auto rs = run.run(log);
  REQUIRE(rs.size() == 2);
  // The analysis at the last layer is the nearest-centroid metric of the results.
  const auto layers = run.layer_analysis();
  REQUIRE(layers.size() == 4);
  CHECK(layers[0].dim == 16);
  CHECK(layers[3].dim == 64);
  for (const auto& r : rs) {
    CHECK(layers[3].test.all == r.nc.all);
    CHECK(layers[3].test.medium == r.nc.medium);  // (no Many class here)
    CHECK(layers[3].test.few == r.nc.few);
  }
  // ... and the CSV written after the representation holds the same rows.
  std::ifstream f(cfg.out_dir + "/layers-" + run.name() + ".csv");
  std::string line;
  std::getline(f, line);
  CHECK(line == "run,layer,name,dim,many,medium,few,all");
  int rows = 0;
  while (std::getline(f, line)) {
    std::stringstream ss(line);
    std::vector<std::string> cells;
    for (std::string c; std::getline(ss, c, ',');) cells.push_back(c);
    REQUIRE(cells.size() == 8);
    CHECK(cells[1] == std::to_string(rows));
    CHECK(std::stod(cells[7]) == Approx(layers[static_cast<size_t>(rows)].test.all).margin(1e-4));
    ++rows;
  }
  CHECK(rows == 4);
  // eps = 0: the bound is exact, its gap 0.
  for (const auto& h : run.history()) {
    if (h.dro == 0) continue;
    REQUIRE(h.bound_gap.size() == 1);
    CHECK(h.bound_gap[0] == Approx(0).margin(1e-12));
  }

  // A balanced subset of the same size: 105 / 4 = 26 per class, the long-tailed
  // profile's splits.
  auto bc = cfg;
  bc.balanced_subset = true;
  const auto bal = de::load_data(bc);
  CHECK(bal.counts == std::vector<int64_t>{26, 26, 26, 26});
  CHECK(bal.group_counts == data.counts);
  CHECK(bal.train_y.size(0) == 104);
  CHECK(torch::bincount(bal.train_y).eq(26).all().item<bool>());
  CHECK(data.group_counts == data.counts);

  // Combinations the analysis and the balanced subset cannot serve are refused.
  auto bad = cfg;
  bad.dataset = de::Dataset::folder;
  bad.balanced_subset = true;
  CHECK_THROWS_WITH(de::validate(bad), Catch::Contains("--balanced-subset: expected a built-in data set"));
  bad = cfg;
  bad.imagenet_depth = 18;
  CHECK_THROWS_WITH(de::validate(bad), Catch::Contains("--layer-analysis: expected a CIFAR ResNet"));
}

#ifdef DROLT_HAS_IMAGES
#include <drolt/data/image_codec.hpp>

namespace {

/// Writes an IDX file (big-endian header: magic, then the sizes) of uint8 data.
void write_idx(const std::string& path, uint32_t magic, const std::vector<uint32_t>& dims, const torch::Tensor& data) {
  std::vector<uint8_t> bytes;
  auto put = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<uint8_t>(v >> s));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  auto c = data.contiguous();
  bytes.insert(bytes.end(), c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
  drolt::data::write_file_bytes(path, bytes);
}

/// A Fashion-MNIST-like set, generated: 10 classes of 12x12 gray images (a fixed
/// pattern per class plus noise), class by class; per_class images of each.
void fake_split(int64_t per_class, uint64_t seed, torch::Tensor& images, torch::Tensor& labels) {
  torch::manual_seed(77);
  auto templates = torch::upsample_nearest2d(torch::rand({10, 1, 6, 6}), {12, 12});
  torch::manual_seed(seed);
  labels = torch::arange(10, torch::kLong).repeat_interleave(per_class);
  auto x = (templates.index_select(0, labels) + 0.4 * torch::randn({10 * per_class, 1, 12, 12})).clamp(0, 1);
  images = x.mul(255).round().to(torch::kUInt8).squeeze(1);  // [N, 12, 12]
}

/// The same images as IDX files (idx/), as PNG files in class folders
/// (folder/train/classK/NNNNN.png, folder/test/...) and as list files
/// (train.txt, test.txt: "train/classK/NNNNN.png K", relative to folder/).
void write_fake_fashion(const std::string& root) {
  std::system(("mkdir -p '" + root + "/idx' '" + root + "/folder'").c_str());
  for (const char* split : {"train", "test"}) {
    const bool train = std::string(split) == "train";
    torch::Tensor x, y;
    fake_split(train ? 26 : 8, train ? 1 : 2, x, y);
    const std::string prefix = train ? "train" : "t10k";
    const auto n = static_cast<uint32_t>(x.size(0));
    write_idx(root + "/idx/" + prefix + "-images-idx3-ubyte", 0x803, {n, 12, 12}, x);
    write_idx(root + "/idx/" + prefix + "-labels-idx1-ubyte", 0x801, {n}, y.to(torch::kUInt8));
    std::ofstream list(root + "/folder/" + split + ".txt");
    for (int64_t c = 0; c < 10; ++c) {
      std::system(("mkdir -p '" + root + "/folder/" + split + "/class" + std::to_string(c) + "'").c_str());
    }
    for (int64_t i = 0; i < x.size(0); ++i) {
      const int64_t c = y[i].item<int64_t>();
      char name[64];
      std::snprintf(name, sizeof(name), "%s/class%lld/%05lld.png", split, static_cast<long long>(c),
                    static_cast<long long>(i));
      drolt::data::write_file_bytes(root + "/folder/" + name, drolt::data::encode_png(x[i]));
      list << name << " " << c << "\n";
    }
  }
}

de::TrainConfig fake_fashion_config(const std::string& out) {
  auto c = tiny_config(out);
  c.n_max = 20;
  c.rho = 10;
  c.val_per_class = 5;
  c.many_above = 10;
  c.few_below = 4;
  c.methods = {de::Method::drolt};
  return c;
}

}  // namespace

TEST_CASE("trainer: PNG list files and class folders train bit for bit as the IDX files", "[trainer][images]") {
  const std::string root = tmpdir("fake-fashion");
  write_fake_fashion(root);
  auto idx = fake_fashion_config(tmpdir("fake-idx"));
  idx.dataset = de::Dataset::fashion_mnist;
  idx.data_dir = root + "/idx";
  auto list = fake_fashion_config(tmpdir("fake-list"));
  list.dataset = de::Dataset::list;
  list.data_dir = root + "/folder";
  list.train_set = root + "/folder/train.txt";
  list.test_set = root + "/folder/test.txt";
  list.make_longtail = true;
  auto folder = fake_fashion_config(tmpdir("fake-folder"));
  folder.dataset = de::Dataset::folder;
  folder.train_set = root + "/folder/train";
  folder.test_set = root + "/folder/test";
  folder.make_longtail = true;
  for (auto* c : {&idx, &list, &folder}) de::validate(*c);

  const auto a = de::load_data(idx);
  for (auto* c : {&list, &folder}) {
    INFO(de::name_of(c->dataset));
    const auto b = de::load_data(*c);
    // The same long-tailed subset, validation split and test set, to the bit.
    REQUIRE(b.counts == a.counts);
    REQUIRE_FALSE(b.train->streaming());
    REQUIRE(b.channels == 1);
    REQUIRE(torch::equal(b.train_x, a.train_x));
    REQUIRE(torch::equal(b.train_y, a.train_y));
    REQUIRE(torch::equal(b.val_x, a.val_x));
    REQUIRE(torch::equal(b.test_x, a.test_x));
    REQUIRE(torch::equal(b.test_y, a.test_y));
  }
  REQUIRE(a.counts.front() == 20);
  REQUIRE(a.counts.back() == 2);

  // The same training: DRO-LT (CE warm-up, DRO-LT, cRT), same weights and metrics.
  const auto spec = dro_spec(idx);
  const auto b = de::load_data(list);
  for (auto* c : {&idx, &list}) de::make_dirs(c->out_dir);
  // One after the other: a Run seeds torch's generator when constructed.
  std::ostringstream log;
  auto pa = std::make_unique<de::Run>(idx, a, spec, de::DistContext());
  const auto res_a = pa->run(log);
  auto pb = std::make_unique<de::Run>(list, b, spec, de::DistContext());
  const auto res_b = pb->run(log);
  de::Run& ra = *pa;
  de::Run& rb = *pb;
  require_identical(*ra.model(), *rb.model());
  REQUIRE(torch::equal(ra.loss()->radii(), rb.loss()->radii()));
  REQUIRE(res_a.size() == res_b.size());
  REQUIRE_FALSE(res_a.empty());
  for (size_t i = 0; i < res_a.size(); ++i) {
    CHECK(res_a[i].test.all == res_b[i].test.all);
    CHECK(res_a[i].test.few == res_b[i].test.few);
    CHECK(res_a[i].per_class == res_b[i].per_class);
    CHECK(same_number(res_a[i].ece, res_b[i].ece));
  }
  for (size_t e = 0; e < ra.history().size(); ++e) CHECK(ra.history()[e].loss == rb.history()[e].loss);
}

TEST_CASE("trainer: a streamed JPEG class-folder set trains end to end, ImageNet ResNet-10", "[trainer][images]") {
  const std::string root = tmpdir("jpeg-set");
  torch::manual_seed(5);
  const int64_t C = 3;
  for (const char* split : {"train", "val", "test"}) {
    const int64_t per_class = std::string(split) == "train" ? 8 : 3;
    for (int64_t c = 0; c < C; ++c) {
      const std::string dir = root + "/" + split + "/c" + std::to_string(c);
      std::system(("mkdir -p '" + dir + "'").c_str());
      for (int64_t i = 0; i < per_class; ++i) {
        // Sizes differ (the streaming loader resizes); class c is brightest in channel c.
        const int64_t h = 66 + 4 * i, w = 80 - 2 * i;
        auto img = torch::rand({h, w, 3}) * 0.5;
        img.select(2, c).add_(0.5);
        auto u8 = img.mul(255).clamp(0, 255).to(torch::kUInt8);
        drolt::data::write_file_bytes(dir + "/" + std::to_string(i) + ".jpg", drolt::data::encode_jpeg(u8, 90));
      }
    }
  }
  auto c = tiny_config(tmpdir("jpeg-run"));
  c.dataset = de::Dataset::folder;
  c.train_set = root + "/train";
  c.val_set = root + "/val";
  c.test_set = root + "/test";
  c.loader = de::Loader::automatic;  // over 64 px: streamed
  c.image_size = 32;
  c.workers = 2;
  c.imagenet_depth = 10;
  c.batch_size = 8;
  c.epochs = 2;
  c.dro_start = 1;
  c.stage_epochs = 1;
  c.many_above = 5;
  c.few_below = 2;
  c.methods = {de::Method::drolt};
  de::validate(c);
  const auto data = de::load_data(c);
  REQUIRE(data.train->streaming());
  REQUIRE(data.counts == std::vector<int64_t>({8, 8, 8}));
  REQUIRE(data.val_size() == 9);
  REQUIRE(data.class_names == std::vector<std::string>({"c0", "c1", "c2"}));
  de::make_dirs(c.out_dir);
  de::Run run(c, data, dro_spec(c), de::DistContext());
  std::ostringstream log;
  const auto res = run.run(log);
  REQUIRE(res.size() == 2);  // DRO-LT + cRT, DRO-LT's joint classifier
  for (const auto& r : res) {
    CHECK(r.test.all >= 0);
    CHECK(r.test.all <= 100);
    CHECK(r.per_class.size() == 3);
  }
  REQUIRE(run.history().size() == 3);
  for (const auto& h : run.history()) CHECK(std::isfinite(h.loss));
  CHECK(run.history()[1].dro > 0);
  CHECK(run.model()->feature_dim() == 512);
  // A second pass of the same epoch gives the same images: the loader's draws
  // depend on (seed, epoch, position) only.
  std::vector<torch::Tensor> batches = {torch::arange(0, 5, torch::kLong), torch::arange(5, 24, torch::kLong)};
  data.train->begin(batches, true, 7);
  auto x1 = torch::cat({data.train->next(batches[0]), data.train->next(batches[1])});
  data.train->begin({torch::arange(0, 24, torch::kLong)}, true, 7);
  auto x2 = data.train->next(torch::arange(0, 24, torch::kLong));
  CHECK(x1.sizes() == torch::IntArrayRef({24, 3, 32, 32}));
  CHECK(torch::equal(x1, x2));
}

TEST_CASE("trainer: image data, --arch and --amp flag combinations are refused with the reason", "[trainer][images]") {
  auto c = tiny_config(tmpdir("image-bad"));
  auto msg = [&](auto edit) {
    auto d = c;
    edit(d);
    try {
      de::validate(d);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(msg([](de::TrainConfig& d) { d.amp = true; }), Catch::Contains("--amp: expected --device cuda"));
  CHECK_THAT(msg([](de::TrainConfig& d) { d.channels_last = true; }), Catch::Contains("--channels-last"));
  CHECK_THAT(msg([](de::TrainConfig& d) {
               d.imagenet_depth = 50;
               d.dro_layers = {2, 3};
             }),
             Catch::Contains("layer 3 (the penultimate features) only"));
  CHECK_THAT(msg([](de::TrainConfig& d) { d.imagenet_depth = 42; }), Catch::Contains("--arch: expected resnet10"));
  CHECK_THAT(msg([](de::TrainConfig& d) { d.dataset = de::Dataset::list; }), Catch::Contains("expected --train-set (a list file)"));
  CHECK_THAT(msg([](de::TrainConfig& d) { d.train_set = "x.txt"; }),
             Catch::Contains("expected --dataset list, folder or inaturalist, got --dataset synthetic"));
  // The words of --dataset, --loader, --profile, --device and --dist-backend become enums once, at the command line.
  CHECK_THROWS_WITH(de::parse_enum<de::Loader>("--loader", "disk"), "--loader: expected auto, memory or stream, got 'disk'");
  CHECK_THROWS_WITH(de::parse_enum<de::Dataset>("--dataset", "mnist"),
                    "--dataset: expected fashion-mnist, cifar10, cifar100, synthetic, list, folder or inaturalist, got "
                    "'mnist'");
  CHECK_THROWS_WITH(de::parse_enum<de::Device>("--device", "tpu"), "--device: expected cpu or cuda, got 'tpu'");
  CHECK_THAT(msg([](de::TrainConfig& d) {
               d.dataset = de::Dataset::folder;
               d.train_set = d.test_set = "/tmp";
               d.classifiers = {de::ClassifierKind::tau_norm};
             }),
             Catch::Contains("give --val-set"));
  // A folder of images of different sizes cannot be held in memory.
  const std::string root = tmpdir("mixed-sizes");
  std::system(("mkdir -p '" + root + "/a' '" + root + "/b'").c_str());
  drolt::data::write_file_bytes(root + "/a/1.png", drolt::data::encode_png(torch::zeros({8, 8}, torch::kUInt8)));
  drolt::data::write_file_bytes(root + "/b/1.png", drolt::data::encode_png(torch::zeros({9, 8}, torch::kUInt8)));
  auto d = c;
  d.dataset = de::Dataset::folder;
  d.train_set = d.test_set = root;
  d.loader = de::Loader::memory;
  CHECK_THROWS_WITH(de::load_data(d), Catch::Contains("--loader memory needs images of one size"));
}
#endif  // DROLT_HAS_IMAGES

// ---------------------------------------------------------------- golden values
//
// Behaviour pinned bit for bit: tiny fixed-seed runs of every representation
// method (ce, crt, resample, reweight, focal, ldam-drw, drolt with each radius
// policy and with the other base losses, the official recipe's shape) and every
// classifier stage (joint, crt, lws, tau-norm, ncm, la), recorded with the
// trainer as it was before it became a registry of methods and stages
// (tests/golden/trainer-torch<major>.<minor>.txt, hex floats). A refactor that
// moves any per-class accuracy, ECE, chosen tau, radius, loss or accuracy of an
// epoch fails here. The values depend on the LibTorch version (its kernels) and
// the machine's floating-point kernels: one file per LibTorch version; record a
// missing one with DROLT_GOLDEN_RECORD=1 on the old code. One thread, so that
// the intra-op split cannot change a sum. The CPU's instruction set picks
// LibTorch's, oneDNN's, OpenBLAS's and MKL's kernels, and their rounding: the
// values are recorded and compared with every one of them pinned to AVX2
// (kGoldenEnv; OpenBLAS reads its variable when it loads, so the variables must
// be set before the process starts). CTest's trainer_golden test sets them;
// these test cases are hidden from a plain run of drolt_tests.

namespace {

/// The kernel choices the golden values are pinned to (tests/CMakeLists.txt sets them for trainer_golden).
const std::vector<std::pair<const char*, const char*>> kGoldenEnv = {
    {"ATEN_CPU_CAPABILITY", "avx2"},   {"ONEDNN_MAX_CPU_ISA", "AVX2"}, {"DNNL_MAX_CPU_ISA", "AVX2"},
    {"OPENBLAS_CORETYPE", "Haswell"}, {"MKL_ENABLE_INSTRUCTIONS", "AVX2"}, {"MKL_CBWR", "AVX2"}};

/// The variables of kGoldenEnv that are not set as pinned, as "NAME=value" (empty: all are).
std::string golden_env_missing() {
  std::string out;
  for (const auto& [name, value] : kGoldenEnv) {
    const char* v = std::getenv(name);
    if (v == nullptr || std::string(v) != value) out += std::string(out.empty() ? "" : " ") + name + "=" + value;
  }
  return out;
}

struct GoldenValues {
  std::vector<std::pair<std::string, double>> values;
  void add(const std::string& key, double v) { values.emplace_back(key, v); }
  void add_result(const std::string& tag, const de::EvalResult& r) {
    const std::string k = tag + "/" + r.name;
    for (size_t c = 0; c < r.per_class.size(); ++c) add(k + "/class" + std::to_string(c), r.per_class[c]);
    add(k + "/ece", r.ece);
    add(k + "/tau", r.tau);
    add(k + "/val", r.val.all);
    add(k + "/nc", r.nc.all);
    for (size_t c = 0; c < r.radii.size(); ++c) add(k + "/radius" + std::to_string(c), r.radii[c]);
  }
  void add_epoch(const std::string& tag, const de::EpochRecord& h) {
    const std::string k = tag + "/" + h.run + "/e" + std::to_string(h.epoch) + "/" + h.phase;
    add(k + "/lr", h.lr);
    add(k + "/loss", h.loss);
    add(k + "/base", h.base_loss);
    add(k + "/dro", h.dro);
    add(k + "/train", h.train_acc);
    add(k + "/val", h.val_acc);
    for (size_t i = 0; i < h.bound_gap.size(); ++i) add(k + "/gap" + std::to_string(i), h.bound_gap[i]);
  }
  void add_report(const std::string& tag, const de::Report& rep) {
    for (const auto& r : rep.results) add_result(tag, r);
    for (const auto& h : rep.history) add_epoch(tag, h);
  }
};

std::string golden_path() {
  return std::string(DROLT_TEST_GOLDEN_DIR) + "/trainer-torch" + std::to_string(TORCH_VERSION_MAJOR) + "." +
         std::to_string(TORCH_VERSION_MINOR) + ".txt";
}

/// The committed checkpoint of the format before the registry (see golden_config "official").
std::string golden_checkpoint_path() { return std::string(DROLT_TEST_GOLDEN_DIR) + "/checkpoint-format1.pt"; }

/// The official recipe's shape, tiny: CE(n_c / n_max) + DRO-LT summed on a
/// class-aware loader at a constant learning rate, then a classifier stage that
/// goes on training the joint classifier with batch statistics.
de::TrainConfig golden_official(const std::string& out) {
  auto c = tiny_config(out);
  c.methods = {de::Method::drolt};
  c.weighting = drolt::ClassWeighting::count_ratio;
  c.sampler = de::SamplerKind::class_aware;
  c.dro_sum = true;
  c.dro_lr = 0.01;
  c.crt_reinit = false;
  c.stage_lr = 0.02;
  c.stage_schedule = de::Schedule::constant;
  c.stage_sampler = de::SamplerKind::class_aware;
  c.stage_bn_train = true;
  c.plots = false;
  return c;
}

/// Restores the thread count on leaving.
struct ThreadsGuard {
  int saved = torch::get_num_threads();
  explicit ThreadsGuard(int n) { torch::set_num_threads(n); }
  ~ThreadsGuard() { torch::set_num_threads(saved); }
};

}  // namespace

TEST_CASE("trainer: golden values of every method and classifier stage, bit for bit", "[.][golden]") {
  INFO("the golden values are pinned to these kernels; run `ctest -R trainer_golden`, or set them before the "
       "process starts");
  REQUIRE(golden_env_missing() == "");
  ThreadsGuard one_thread(1);
  GoldenValues g;
  std::ostringstream log;
  {  // every representation method with every classifier stage, tau chosen on validation
    auto c = tiny_config(tmpdir("golden-all"));
    c.methods = {de::Method::ce,    de::Method::crt,      de::Method::resample, de::Method::reweight,
                 de::Method::focal, de::Method::ldam_drw, de::Method::drolt};
    c.classifiers = {de::ClassifierKind::joint,    de::ClassifierKind::crt, de::ClassifierKind::lws,
                     de::ClassifierKind::tau_norm, de::ClassifierKind::ncm, de::ClassifierKind::logit_adjust};
    c.plots = false;
    g.add_report("all", de::run_experiment(c, de::load_data(c), log));
  }
  // DRO-LT with the other radius policies, the paper's protocol (cRT, joint).
  for (const auto& policy : {std::make_pair("erm", 0.0), std::make_pair("shared", 0.5), std::make_pair("sqrtn", 1.0)}) {
    auto c = tiny_config(tmpdir("golden-policy"));
    c.methods = {de::Method::drolt};
    c.radius = de::parse_policy(policy.first, policy.second);
    c.plots = false;
    g.add_report(policy.first, de::run_experiment(c, de::load_data(c), log));
  }
  {  // DRO-LT with LDAM + DRW at two layers, EMA centroids, square-root sampling
    auto c = tiny_config(tmpdir("golden-ldam"));
    c.methods = {de::Method::drolt};
    c.loss = de::BaseLoss::ldam;
    c.drw = true;
    c.drw_start = 3;
    c.sampler = de::SamplerKind::sqrt;
    c.centroid_mode = de::CentroidMode::ema;
    c.dro_layers = {2, 3};
    c.classifiers = {de::ClassifierKind::joint, de::ClassifierKind::lws};
    c.plots = false;
    g.add_report("dro-ldam", de::run_experiment(c, de::load_data(c), log));
  }
  {  // DRO-LT with focal loss and effective-number weights, previous-epoch centroids, progressive sampling
    auto c = tiny_config(tmpdir("golden-focal"));
    c.methods = {de::Method::drolt};
    c.loss = de::BaseLoss::focal;
    c.weighting = drolt::ClassWeighting::effective_number;
    c.sampler = de::SamplerKind::progressive;
    c.centroid_mode = de::CentroidMode::previous;
    c.lambda = 0.7;
    c.classifiers = {de::ClassifierKind::tau_norm, de::ClassifierKind::logit_adjust};
    c.plots = false;
    g.add_report("dro-focal", de::run_experiment(c, de::load_data(c), log));
  }
  {  // the official recipe's shape; its checkpoint after epoch 5 is the committed format-1 checkpoint
    auto c = golden_official(tmpdir("golden-official"));
    g.add_report("official", de::run_experiment(c, de::load_data(c), log));
  }

  const std::string path = golden_path();
  if (std::getenv("DROLT_GOLDEN_RECORD") != nullptr) {
    std::ofstream f(path, std::ios::trunc);
    char buf[64];
    for (const auto& kv : g.values) {
      std::snprintf(buf, sizeof(buf), "%a", kv.second);
      f << kv.first << " " << buf << "\n";
    }
    REQUIRE(f.good());
    WARN("recorded " << g.values.size() << " golden values in " << path);
    // The checkpoint of the format before the registry, taken mid-stage: written
    // once, by the old trainer (a later recording keeps it).
    if (de::file_exists(golden_checkpoint_path())) return;
    auto c = golden_official(tmpdir("golden-ckpt"));
    c.stop_after = 5;
    const auto data = de::load_data(c);
    de::make_dirs(c.out_dir);
    de::Run run(c, data, tiny_run_spec(c, de::Method::drolt), {});
    run.run(log);
    REQUIRE(run.interrupted());
    write_bytes(golden_checkpoint_path(), file_bytes(run.checkpoint_path()));
    return;
  }
  std::ifstream f(path);
  // One file per LibTorch version (each rounds differently): a LibTorch without
  // one fails here until its values are recorded (DROLT_GOLDEN_RECORD=1).
  INFO("golden values: " << path << " (record them with DROLT_GOLDEN_RECORD=1 on the trainer they pin)");
  REQUIRE(f.good());
  std::vector<std::pair<std::string, double>> expect;
  std::string key, value;
  while (f >> key >> value) expect.emplace_back(key, std::strtod(value.c_str(), nullptr));
  REQUIRE(g.values.size() == expect.size());
  size_t differ = 0;
  for (size_t i = 0; i < expect.size(); ++i) {
    const bool same = g.values[i].first == expect[i].first && same_number(g.values[i].second, expect[i].second);
    if (!same && ++differ <= 10) {
      char a[64], b[64];
      std::snprintf(a, sizeof(a), "%a", g.values[i].second);
      std::snprintf(b, sizeof(b), "%a", expect[i].second);
      FAIL_CHECK(g.values[i].first << " = " << a << " (" << g.values[i].second << "), golden " << expect[i].first
                                   << " = " << b << " (" << expect[i].second << ")");
    }
  }
  CHECK(differ == 0);
}

TEST_CASE("trainer: a checkpoint of the format before the registry resumes to the golden values",
          "[.][golden]") {
  INFO("the golden values are pinned to these kernels; run `ctest -R trainer_golden`");
  REQUIRE(golden_env_missing() == "");
  ThreadsGuard one_thread(1);
  auto c = golden_official(tmpdir("golden-resume"));
  de::make_dirs(c.out_dir);
  c.resume = true;
  const auto data = de::load_data(c);
  de::Run run(c, data, tiny_run_spec(c, de::Method::drolt), {});
  const std::string ckpt = golden_checkpoint_path();
  REQUIRE(de::file_exists(ckpt));
  write_bytes(run.checkpoint_path(), file_bytes(ckpt));
  std::ostringstream log;
  if (TORCH_VERSION_MAJOR != 1 || TORCH_VERSION_MINOR != 13) {
    // Written by Debian's LibTorch 1.13: another LibTorch pairs its optimizer
    // state with the wrong parameters, and resuming must refuse that by name
    // instead of training on (or failing deep inside SGD::step).
    CHECK_THROWS_WITH(run.run(log), Catch::Contains("momentum buffer of a parameter of shape") &&
                                        Catch::Contains("optimizer states do not carry across versions"));
    return;
  }
  const auto results = run.run(log);
  CHECK_THAT(log.str(), Catch::Contains("resumed from") && Catch::Contains("at epoch 5/6"));
  GoldenValues g;
  for (const auto& r : results) g.add_result("official", r);
  REQUIRE(g.values.size() > 8);
  std::ifstream f(golden_path());
  REQUIRE(f.good());
  std::map<std::string, double> expect;
  std::string key, value;
  while (f >> key >> value) expect[key] = std::strtod(value.c_str(), nullptr);
  for (const auto& kv : g.values) {
    INFO(kv.first);
    REQUIRE(expect.count(kv.first) == 1);
    CHECK(same_number(kv.second, expect.at(kv.first)));
  }
}

// ---------------------------------------------------------------- methods added through the registry

TEST_CASE("trainer: la-loss is CE on logits + tau log pi, weight balancing projects each class's weights",
          "[trainer]") {
  auto c = tiny_config(tmpdir("la-loss-unit"));
  const std::vector<int64_t> counts{60, 27, 12, 6};
  torch::manual_seed(5);
  auto logits = torch::randn({16, 4});
  auto y = torch::tensor({0, 1, 2, 3, 0, 0, 1, 2, 3, 0, 1, 0, 0, 2, 1, 0}, torch::kLong);
  namespace F = torch::nn::functional;
  for (double tau : {0.0, 1.0, 2.5}) {
    c.la_loss_tau = tau;
    c.methods = {de::Method::la_loss};
    const de::Protocol proto(c, de::runs_of(c).at(0), counts);
    CHECK(proto.row_name("joint") == "la-loss");
    const auto spec = proto.loss_at(0);
    CHECK_FALSE(spec.dro);
    const double got = de::base_loss(spec, logits, y).item<double>();
    // float64 reference: log_softmax of logits + tau log(n_c / n)
    auto prior = torch::tensor(counts, torch::kDouble) / 105.0;
    auto z = logits.to(torch::kDouble) + tau * prior.log().unsqueeze(0);
    const double ref = -torch::log_softmax(z, 1).gather(1, y.unsqueeze(1)).mean().item<double>();
    CHECK(got == Approx(ref).epsilon(1e-6));
    if (tau == 0) CHECK(got == Approx(F::cross_entropy(logits, y).item<double>()).epsilon(1e-6));
  }
  // A class without training images has no prior: refused, naming it.
  c.methods = {de::Method::la_loss};
  CHECK_THROWS_WITH(de::Protocol(c, de::runs_of(c).at(0), {10, 0, 3, 1}),
                    Catch::Contains("--method la-loss: expected every class to have training images, got 0 for class 1"));

  // MaxNorm: rows longer than r are scaled onto the sphere of radius r, shorter ones and the bias stay.
  torch::nn::Linear fc(3, 4);
  {
    torch::NoGradGuard g;
    fc->weight.copy_(torch::tensor({{3.0f, 4.0f, 0.0f}, {0.06f, 0.0f, 0.08f}, {0.0f, 0.0f, 0.0f}, {1.0f, 1.0f, 1.0f}}));
  }
  const auto bias = fc->bias.detach().clone();
  de::ClassifierMaxNorm().apply_(fc, 0.5);
  auto norms = fc->weight.detach().to(torch::kDouble).norm(2, 1);
  CHECK(norms[0].item<double>() == Approx(0.5).epsilon(1e-6));
  CHECK(norms[1].item<double>() == Approx(0.1).epsilon(1e-6));
  CHECK(norms[2].item<double>() == 0.0);
  CHECK(norms[3].item<double>() == Approx(0.5).epsilon(1e-6));
  CHECK(fc->weight[0][0].item<double>() == Approx(0.3).epsilon(1e-6));  // the direction stays
  CHECK(torch::equal(fc->bias.detach(), bias));
}

TEST_CASE("trainer: --method la-loss and weight-balancing train through the registry and resume exactly",
          "[trainer]") {
  auto c = tiny_config(tmpdir("new-methods"));
  c.methods = {de::Method::la_loss, de::Method::weight_balancing};
  c.max_norm = 0.3;
  c.plots = false;
  const auto data = de::load_data(c);
  std::ostringstream log;
  auto rep = de::run_experiment(c, data, log);
  std::vector<std::string> names;
  for (const auto& r : rep.results) names.push_back(r.name);
  REQUIRE(names == std::vector<std::string>({"la-loss", "weight-balancing", "weight-balancing/wb"}));
  std::map<std::string, std::vector<std::string>> phases;
  for (const auto& h : rep.history) phases[h.run].push_back(h.phase);
  CHECK(phases["la-loss"] == std::vector<std::string>({"ce", "ce", "ce", "ce"}));
  CHECK(phases["weight-balancing"] == std::vector<std::string>({"ce", "ce", "ce", "ce", "wb", "wb"}));
  for (const auto& r : rep.results) {
    CHECK(r.test.all >= 0);
    CHECK(r.per_class.size() == 4);
  }
  // MaxNorm held after every step of both stages: every class's weights within the radius at the end.
  auto cw = c;
  cw.methods = {de::Method::weight_balancing};
  cw.out_dir = tmpdir("wb-resume-a");
  de::make_dirs(cw.out_dir);
  de::Run whole(cw, data, tiny_run_spec(cw, de::Method::weight_balancing), {});
  const auto ra = whole.run(log);
  REQUIRE(ra.size() == 2);
  const auto norms = whole.model()->classifier()->weight.detach().norm(2, 1);
  CHECK(norms.max().item<double>() <= 0.3 * (1 + 1e-6));
  CHECK(norms.max().item<double>() >= 0.3 * (1 - 1e-6));  // the projection was active
  {  // the representation alone (no wb stage): MaxNorm after every one of its steps too
    auto cj = cw;
    cj.classifiers = {de::ClassifierKind::joint};
    cj.out_dir = tmpdir("wb-joint");
    de::make_dirs(cj.out_dir);
    de::Run joint(cj, data, tiny_run_spec(cj, de::Method::weight_balancing), {});
    REQUIRE(joint.run(log).size() == 1);
    const auto n = joint.model()->classifier()->weight.detach().norm(2, 1);
    CHECK(n.max().item<double>() <= 0.3 * (1 + 1e-6));
    CHECK(n.max().item<double>() >= 0.3 * (1 - 1e-6));
  }
  // Interrupted in the wb stage and resumed: the same numbers.
  cw.out_dir = tmpdir("wb-resume-b");
  de::make_dirs(cw.out_dir);
  cw.stop_after = 5;
  de::Run first(cw, data, tiny_run_spec(cw, de::Method::weight_balancing), {});
  CHECK(first.run(log).empty());
  cw.stop_after = -1;
  cw.resume = true;
  de::Run second(cw, data, tiny_run_spec(cw, de::Method::weight_balancing), {});
  const auto rb = second.run(log);
  REQUIRE(rb.size() == 2);
  CHECK(rb[1].name == "weight-balancing/wb");
  CHECK(rb[1].per_class == ra[1].per_class);
  require_identical(*whole.model(), *second.model());
}

TEST_CASE("trainer: a checkpoint that fails part-way leaves the run as it was", "[trainer]") {
  auto c = tiny_config(tmpdir("partial-ckpt"));
  de::make_dirs(c.out_dir);
  c.methods = {de::Method::drolt};
  c.stop_after = 3;
  const auto data = de::load_data(c);
  std::ostringstream log;
  de::Run first(c, data, dro_spec(c), {});
  first.run(log);
  REQUIRE(first.interrupted());
  // The checkpoint's settings, epoch, log and network, but no optimizer: it
  // fails after the network would have been read.
  torch::serialize::InputArchive in;
  drolt::read_archive(in, first.checkpoint_path());
  torch::serialize::OutputArchive out, model;
  for (const char* key : {"epoch", "elapsed", "fingerprint", "history"}) {
    torch::Tensor t;
    in.read(key, t);
    out.write(key, t);
  }
  first.model()->save(model);
  out.write("model", model);
  drolt::write_archive(out, first.checkpoint_path());

  c.stop_after = -1;
  c.resume = true;
  de::Run second(c, data, dro_spec(c), {});
  const auto before = state_of(*second.model());
  torch::manual_seed(77);
  const auto rng_before = torch::rand({3});
  torch::manual_seed(77);
  CHECK_THROWS_WITH(second.run(log), Catch::Contains("optimizer"));
  CHECK(torch::equal(torch::rand({3}), rng_before));  // the CPU generator as it was
  CHECK(second.next_epoch() == 0);
  CHECK(second.history().empty());
  const auto after = state_of(*second.model());
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    INFO(after[i].first);
    CHECK(torch::equal(after[i].second, before[i].second));  // not the checkpoint's network
  }
  CHECK_FALSE(torch::equal(state_of(*first.model())[0].second, before[0].second));
}
