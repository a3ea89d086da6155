// Experiment driver and reporting for the example trainer: runs the requested
// methods, prints the comparison table, writes summary.json / table.md /
// per-class CSVs, and draws PNG plots with gnuplot when it is installed.
#pragma once

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "data.hpp"
#include "trainer.hpp"
#include "validate.hpp"

namespace drolt_examples {

struct Report {
  std::vector<EvalResult> results;  // in table order
  std::vector<EpochRecord> history;  // every epoch of every run, in order
  std::vector<std::string> files;   // files written (table, json, csv, png)
  std::vector<std::string> plots;   // PNGs actually drawn
  bool interrupted = false;         // a run stopped early (--stop-after)
  double seconds = 0;
};

inline std::string pct(double v) {
  if (!std::isfinite(v)) return "   -  ";
  char b[16];
  std::snprintf(b, sizeof(b), "%6.2f", v);
  return b;
}

/// The comparison table (Many / Medium / Few / All, ECE, nearest-centroid All,
/// validation All), one row per (representation, classifier), as Markdown;
/// `counts` and `thresholds` give the split sizes in the footer.
inline std::string format_table(const std::vector<EvalResult>& rs, const std::vector<int64_t>& counts,
                                const drolt::metrics::SplitThresholds& thresholds = {}) {
  int many = 0, med = 0, few = 0;
  for (auto n : counts) {
    if (n > thresholds.many_above) {
      ++many;
    } else if (n < thresholds.few_below) {
      ++few;
    } else {
      ++med;
    }
  }
  std::ostringstream o;
  o << "| method                  |  Many  | Medium |  Few   |  All   |  ECE   | NC All | val All |\n";
  o << "|-------------------------|--------|--------|--------|--------|--------|--------|---------|\n";
  for (const auto& r : rs) {
    std::string n = r.name;
    n.resize(std::max<size_t>(n.size(), 23), ' ');
    o << "| " << n << " | " << pct(r.test.many) << " | " << pct(r.test.medium) << " | " << pct(r.test.few) << " | "
      << pct(r.test.all) << " | " << pct(r.ece) << " | " << pct(r.nc.all) << " | " << pct(r.val.all) << "  |\n";
  }
  o << "(test top-1 %, classes: " << many << " Many (n>" << thresholds.many_above << "), " << med << " Medium ("
    << thresholds.few_below << ".." << thresholds.many_above << "), " << few << " Few (n<" << thresholds.few_below
    << "); ECE = expected calibration error, 15 bins, %; NC = nearest training centroid on the penultimate "
       "features; val = balanced validation split)\n";
  return o.str();
}

/// One result per representation that has radii (they do not change in the
/// classifier stages).
inline std::vector<const EvalResult*> radii_rows(const std::vector<EvalResult>& rs) {
  std::vector<const EvalResult*> out;
  for (const auto& r : rs) {
    if (r.radii.empty()) continue;
    bool seen = false;
    for (const auto* o : out) seen = seen || o->representation == r.representation;
    if (!seen) out.push_back(&r);
  }
  return out;
}

inline bool have_gnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

/// Per-class test accuracy from head to tail (paper's Fig. 4) and learned radius
/// against class size (Fig. 2). Returns the PNGs drawn; prints why when skipped.
inline std::vector<std::string> draw_plots(const TrainConfig& cfg, const DataBundle& data,
                                           const std::vector<EvalResult>& rs, std::ostream& log) {
  std::vector<std::string> drawn;
  if (!cfg.plots) return drawn;
  if (!have_gnuplot()) {
    log << "plots skipped: gnuplot not found (install gnuplot-nox); the CSV files hold the data\n";
    return drawn;
  }
  const std::string dir = cfg.out_dir;
  // Fig. 4 analogue. Class order: by training count, head first.
  std::vector<size_t> order(data.counts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return data.group_counts[a] > data.group_counts[b]; });
  {
    std::ofstream gp(dir + "/per_class_accuracy.gp");
    gp << "set terminal pngcairo size 900,500 noenhanced\n"
       << "set output '" << dir << "/per_class_accuracy.png'\n"
       << "set title 'Per-class test accuracy, head to tail (" << data.description << ")'\n"
       << "set xlabel 'class (sorted by training count, head -> tail)'\nset ylabel 'test accuracy (%)'\n"
       << "set yrange [0:100]\nset key bottom left\nset grid\n";
    if (data.counts.size() <= 20) {
      gp << "set xtics (";
      for (size_t i = 0; i < order.size(); ++i) {
        gp << (i ? ", " : "") << "'" << data.counts[order[i]] << "' " << i;
      }
      gp << ")\nset xlabel 'training images of the class (head -> tail)'\n";
    }
    gp << "plot ";
    for (size_t k = 0; k < rs.size(); ++k) {
      gp << (k ? ", " : "") << "'-' using 1:2 with linespoints lw 2 title '" << rs[k].name << "'";
    }
    gp << "\n";
    for (const auto& r : rs) {
      for (size_t i = 0; i < order.size(); ++i) {
        const double v = order[i] < r.per_class.size() ? r.per_class[order[i]] : std::nan("");
        if (std::isfinite(v)) gp << i << " " << v << "\n";
      }
      gp << "e\n";
    }
  }
  if (std::system(("gnuplot '" + dir + "/per_class_accuracy.gp' 2>/dev/null").c_str()) == 0) {
    drawn.push_back(dir + "/per_class_accuracy.png");
  } else {
    log << "plot failed: gnuplot " << dir << "/per_class_accuracy.gp\n";
  }
  // Fig. 2 analogue: every representation with learned radii.
  std::vector<const EvalResult*> with_radii;
  if (cfg.radius.is_learned()) with_radii = radii_rows(rs);
  if (!with_radii.empty()) {
    {
      std::ofstream gp(dir + "/learned_radii.gp");
      gp << "set terminal pngcairo size 800,500 noenhanced\n"
         << "set output '" << dir << "/learned_radii.png'\n"
         << "set title 'Learned radius per class vs class size (initial eps0 = " << cfg.radius.eps0() << ")'\n"
         << "set xlabel 'training images of the class'\nset ylabel 'learned radius eps_c'\n"
         << "set logscale x\nset grid\nset key top right\n";
      gp << "plot ";
      for (size_t k = 0; k < with_radii.size(); ++k) {
        gp << (k ? ", " : "") << "'-' using 1:2 with points pt 7 ps 1.5 title '" << with_radii[k]->representation << "'";
      }
      gp << "\n";
      for (const auto* r : with_radii) {
        for (size_t c = 0; c < r->radii.size() && c < data.counts.size(); ++c) {
          gp << data.counts[c] << " " << r->radii[c] << "\n";
        }
        gp << "e\n";
      }
    }
    if (std::system(("gnuplot '" + dir + "/learned_radii.gp' 2>/dev/null").c_str()) == 0) {
      drawn.push_back(dir + "/learned_radii.png");
    } else {
      log << "plot failed: gnuplot " << dir << "/learned_radii.gp\n";
    }
  }
  return drawn;
}

/// The results table and the learned radii, on `log`; returns the table.
inline std::string print_summary(const TrainConfig& cfg, const DataBundle& data, const std::vector<EvalResult>& all,
                                 std::ostream& log) {
  drolt::metrics::SplitThresholds thresholds;
  thresholds.many_above = cfg.many_above;
  thresholds.few_below = cfg.few_below;
  const std::string table = format_table(all, data.group_counts, thresholds);
  log << "\n" << data.description << ", " << network_name(cfg) << ", " << cfg.epochs << " epochs"
      << " + " << cfg.stage_epochs << " epochs per trained classifier stage"
      << ", seed " << cfg.seed << "\n"
      << table;
  for (const auto* r : radii_rows(all)) {
    log << "radii (" << r->representation << "), class: n -> eps:";
    for (size_t c = 0; c < r->radii.size() && c < data.counts.size() && c < 20; ++c) {
      char b[48];
      std::snprintf(b, sizeof(b), " %zu:%lld->%.3f", c, static_cast<long long>(data.counts[c]), r->radii[c]);
      log << b;
    }
    log << (r->radii.size() > 20 ? " ..." : "") << "\n";
  }
  return table;
}

/// table.md, summary.json, per_class.csv and radii-<run>.csv in cfg.out_dir, listed in rep.files.
inline void write_report_files(const TrainConfig& cfg, const DataBundle& data, const std::vector<EvalResult>& all,
                               const std::string& table, Report& rep) {
  const std::string dir = cfg.out_dir;
  {
    std::ofstream f(dir + "/table.md");
    f << data.description << ", " << network_name(cfg) << ", seed " << cfg.seed << "\n\n" << table;
    rep.files.push_back(dir + "/table.md");
  }
  {
    json j;
    j["dataset"] = data.description;
    j["counts"] = data.counts;
    j["class_names"] = data.class_names;
    j["depth"] = cfg.depth;
    if (cfg.imagenet_depth) j["arch"] = cfg.arch_name();
    j["seed"] = cfg.seed;
    j["epochs"] = cfg.epochs;
    j["crt_epochs"] = cfg.stage_epochs;  // the keys of older summaries (they govern every trained stage)
    j["crt_bn"] = cfg.stage_bn_train ? "train" : "eval";
    j["policy"] = cfg.radius.name();
    j["lambda"] = cfg.lambda;
    j["dro_sum"] = cfg.dro_sum;
    j["temperature"] = cfg.temperature;
    j["eps0"] = cfg.radius.eps0();
    j["centroids"] = name_of(cfg.centroid_mode);
    j["loss"] = name_of(cfg.loss);  // drolt's base loss (with DRW when drw and LDAM)
    j["drw"] = cfg.drw;
    j["dro_lr"] = cfg.dro_lr;
    j["threads"] = torch::get_num_threads();
    j["wall_seconds"] = rep.seconds;
    j["results"] = json::array();
    for (const auto& r : all) j["results"].push_back(r);
    std::ofstream f(dir + "/summary.json");
    f << j.dump(2) << "\n";
    rep.files.push_back(dir + "/summary.json");
  }
  {
    std::ofstream f(dir + "/per_class.csv");
    f << "class,name,train_count";
    for (const auto& r : all) f << "," << r.name;
    f << "\n";
    for (size_t c = 0; c < data.counts.size(); ++c) {
      f << c << "," << (c < data.class_names.size() ? data.class_names[c] : "") << "," << data.counts[c];
      for (const auto& r : all) f << "," << (c < r.per_class.size() ? r.per_class[c] : std::nan(""));
      f << "\n";
    }
    rep.files.push_back(dir + "/per_class.csv");
  }
  for (const auto* r : radii_rows(all)) {
    const std::string p = dir + "/radii-" + r->representation + ".csv";
    std::ofstream f(p);
    f << "class,train_count,radius\n";
    for (size_t c = 0; c < r->radii.size(); ++c) f << c << "," << data.counts[c] << "," << r->radii[c] << "\n";
    rep.files.push_back(p);
  }
}

/// Runs every requested representation on `data`, each with its classifier
/// stages (protocol.hpp), and writes the outputs into cfg.out_dir. `dist` is
/// this process's place in a multi-process run (one process by default).
inline Report run_experiment(const TrainConfig& cfg, const DataBundle& data, std::ostream& log,
                             const DistContext& dist = DistContext()) {
  validate(cfg);
  make_dirs(cfg.out_dir);
  const auto t0 = std::chrono::steady_clock::now();
  if (!cfg.resume && dist.is_main()) {
    std::remove((cfg.out_dir + "/metrics.jsonl").c_str());
  }
  Report rep;
  std::vector<EvalResult> all;
  // When the CE network is trained anyway, DRO-LT (full-refresh centroids, the
  // same linear classifier) takes its CE warm-up from it instead of
  // recomputing it: the same computation, bit for bit (tests/test_trainer.cpp).
  const bool ce_run = cfg.wants(Method::ce) || cfg.wants(Method::crt);
  const bool share_warmup = ce_run && cfg.wants(Method::drolt) && cfg.centroid_mode == CentroidMode::full &&
                            cfg.loss != BaseLoss::ldam && cfg.warm_start.empty() && cfg.dro_start_epoch() > 0 &&
                            cfg.save_at < 0;
  std::string shared_ckpt;
  for (const auto& spec : runs_of(cfg)) {
    if (rep.interrupted) break;
    TrainConfig run_cfg = cfg;
    const bool is_ce = spec.method == Method::ce || spec.method == Method::crt;
    if (is_ce && share_warmup) run_cfg.save_at = cfg.dro_start_epoch();
    if (spec.method == Method::drolt && share_warmup && file_exists(shared_ckpt)) run_cfg.warm_start = shared_ckpt;
    Run run(run_cfg, data, spec, dist);
    if (is_ce && share_warmup) shared_ckpt = run.epoch_checkpoint_path(cfg.dro_start_epoch());
    auto rs = run.run(log);
    rep.history.insert(rep.history.end(), run.history().begin(), run.history().end());
    rep.interrupted = rep.interrupted || run.interrupted();
    all.insert(all.end(), rs.begin(), rs.end());
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rep.interrupted) return rep;
  rep.results = all;
  if (!dist.is_main()) return rep;  // rank 0 reports and writes the files

  const std::string table = print_summary(cfg, data, all, log);
  write_report_files(cfg, data, all, table, rep);
  const std::string dir = cfg.out_dir;
  rep.files.push_back(dir + "/metrics.jsonl");
  rep.plots = draw_plots(cfg, data, all, log);
  for (const auto& p : rep.plots) rep.files.push_back(p);
  log << "outputs in " << dir << "/: table.md summary.json per_class.csv metrics.jsonl";
  for (const auto& p : rep.plots) log << " " << p.substr(dir.size() + 1);
  log << "\n";
  return rep;
}

}  // namespace drolt_examples
