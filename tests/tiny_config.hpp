#pragma once
// The tiny trainer configuration shared by tests/test_trainer.cpp and
// tests/test_distributed.cpp: 4 synthetic classes of 12x12 images, counts
// 60/27/12/6 (exp, rho 10), ResNet-8, 4 epochs (DRO-LT from epoch 2) + 2 cRT epochs.
#include <string>
#include <vector>

#include "../examples/common/config.hpp"
#include "../examples/common/protocol.hpp"

inline drolt_examples::TrainConfig tiny_trainer_config(const std::string& out) {
  drolt_examples::TrainConfig c;
  c.dataset = drolt_examples::Dataset::synthetic;
  c.synthetic_classes = 4;
  c.synthetic_size = 12;
  c.n_max = 60;
  c.rho = 10;
  c.val_per_class = 10;
  c.depth = 8;
  c.epochs = 4;
  c.dro_start = 2;
  c.stage_epochs = 2;
  c.batch_size = 32;
  c.lr = 0.05;
  c.warmup_epochs = 1;
  c.methods = {drolt_examples::Method::ce, drolt_examples::Method::crt, drolt_examples::Method::drolt};
  c.radius = drolt::RadiusPolicy::learned(0.5);
  // The DRO-LT defaults before the default recipe became DRO-LT + LDAM-DRW (the
  // golden values and every test here were written for these).
  c.loss = drolt_examples::BaseLoss::ce;
  c.drw = false;
  c.ldam_margin = 0.5;
  c.lambda = 0.5;
  c.dro_lr = 0;
  c.centroid_mode = drolt_examples::CentroidMode::full;
  c.seed = 3;
  c.out_dir = out;
  c.verbose = false;
  return c;
}

/// The run of `c` for --method `m` (its representation and classifier stages).
inline drolt_examples::RunSpec tiny_run_spec(const drolt_examples::TrainConfig& c, const std::string& m) {
  auto only = c;
  only.methods = {m};
  return drolt_examples::runs_of(only).at(0);
}
