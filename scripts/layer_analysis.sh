#!/usr/bin/env bash
# The layer analysis and DRO-LT at several layers on Fashion-MNIST-LT
# (exp, rho = 100, n_max = 500; the demo preset: ResNet-20, 30 epochs, DRO-LT
# from epoch 15 with learned radii, lambda 0.3), over several seeds:
#
#   ce         CE on the long-tailed set (1,230 images)
#   balanced   CE on a class-balanced set of the same size (123 per class)
#   drolt      DRO-LT at the penultimate layer (warm-started from ce's epoch 15)
#   drolt-all  DRO-LT at the stem and all three stages, weights 1/4 each
#
# Every run writes layers-<run>.csv (nearest-centroid accuracy per layer and
# split); the two DRO-LT runs also log the bound's gap per epoch. When a run
# completes, its small result files are copied to docs/data/layers/ and, with
# COMMIT=1, committed; then scripts/layer_report.py regenerates docs/layers.md
# and docs/figures/layers.png from docs/data/layers/.
#
#   scripts/layer_analysis.sh                 # SEEDS="0 1 2", build + runs + report
#   DROLT_TRAIN=build/test/examples/drolt_train SEEDS="0" scripts/layer_analysis.sh
#   COMMIT=1 nice scripts/layer_analysis.sh   # commit each seed's results as it completes
#
# Finished runs (result file present) are skipped and interrupted runs resume
# from their checkpoints (--resume), so the script can simply be started again.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-"0 1 2"}
RUNS=${RUNS:-out/layers}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-$(nproc)}
DATA_OUT=${DATA_OUT:-docs/data/layers}
COMMIT=${COMMIT:-0}

exe=${DROLT_TRAIN:-}
if [[ -z "$exe" ]]; then
  bash scripts/install-deps.sh
  source scripts/lib/configure.sh
  build=${BUILD_DIR:-build/demo}
  BUILD_TYPE=Release drolt_configure_debian "$build" -DDROLT_BUILD_TESTS=OFF -DDROLT_BUILD_EXAMPLES=ON
  cmake --build "$build" -j "${JOBS:-2}" --target drolt_train
  exe=$build/examples/drolt_train
fi

# The setting of the first demo preset (before the default recipe became DRO-LT + LDAM-DRW), spelled out.
common=(--depth 20 --epochs 30 --dro-start 15 --stage-epochs 10 --val-every 5 --lambda 0.3 --loss ce --no-drw
        --centroids full --dro-lr 0 --data "$DATA" --threads "$THREADS" --layer-analysis --no-plots -q --resume)

# run NAME SEED DONE ARGS...: trains unless the file DONE exists, then keeps its results.
run() {
  local name=$1 seed=$2 result=$3
  shift 3
  local out="$RUNS/s$seed/$name"
  mkdir -p "$out"
  if [[ ! -f "$out/$result" ]]; then
    echo "== $(date +%H:%M:%S) seed $seed: $name"
    "$exe" "${common[@]}" --seed "$seed" --out "$out" "$@" >"$out/log.txt" 2>&1 ||
      { echo "run $name (seed $seed) failed; see $out/log.txt" >&2; tail -5 "$out/log.txt" >&2; exit 1; }
  fi
  local keep="$DATA_OUT/s$seed/$name"
  mkdir -p "$keep"
  cp "$out"/layers-*.csv "$out"/result-*.json "$out"/metrics.jsonl "$keep"/
}

for seed in $SEEDS; do
  run ce "$seed" summary.json --method ce --classifier joint --save-at 15
  run balanced "$seed" summary.json --method ce --classifier joint --balanced-subset
  warm="$RUNS/s$seed/ce/checkpoint-ce-e15.pt"
  run drolt "$seed" summary.json --method drolt --warm-start "$warm"
  run drolt-all "$seed" summary.json --method drolt --warm-start "$warm" --dro-layers 0,1,2,3
  python3 scripts/layer_report.py "$DATA_OUT" docs/layers.md docs/figures
  if [[ "$COMMIT" == 1 ]]; then
    git add "$DATA_OUT/s$seed" docs/layers.md docs/figures/layers.png docs/figures/layers.csv docs/figures/bound_gap.png
    git commit -qm "docs/layers.md: layer analysis and DRO-LT at several layers, seed $seed" || true
  fi
done
python3 scripts/layer_report.py "$DATA_OUT" docs/layers.md docs/figures
