#!/usr/bin/env bash
# The cost of a DRO-LT epoch against a CE epoch of the same run, per centroid
# mode, on an idle machine: docs/results.md's v3 section reads its output.
#
#   scripts/epoch_cost.sh                       # prints the table
#   OUT=docs/data/results/epoch-cost.md scripts/epoch_cost.sh   # ... and keeps it
#
# Each configuration is one drolt_train run on Fashion-MNIST-LT (rho = 100,
# 1,236 training images, ResNet-32 as in docs/results.md, batch 128): CE epochs
# up to --dro-start, then DRO-LT epochs, so both costs come from the same
# process. The runs are interleaved over REPEATS rounds; a cell is the median
# over the rounds of each run's median epoch (epoch 1 and the first DRO-LT
# epoch left out: one-time costs). Needs DROLT_TRAIN (a Release build).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DROLT_TRAIN:-build/demo/examples/drolt_train}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-$(nproc)}
REPEATS=${REPEATS:-3}
EPOCHS=${EPOCHS:-8}
[[ -x "$BIN" ]] || { echo "epoch_cost.sh: no trainer at $BIN (set DROLT_TRAIN)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A CONF=(
  [full]="--loss ce --no-drw --centroids full"
  [previous]="--loss ce --no-drw --centroids previous"
  [recipe]=""
)
ORDER="full previous recipe"
for r in $(seq 1 "$REPEATS"); do
  for k in $ORDER; do
    # shellcheck disable=SC2086
    "$BIN" --data "$DATA" --rho 100 --depth 32 --threads "$THREADS" --method drolt ${CONF[$k]} \
      --epochs "$EPOCHS" --dro-start $((EPOCHS / 2)) --warmup 1 --classifier joint --test-limit 500 \
      --val-every 1000 --no-plots -q --out "$tmp/$k-$r" > /dev/null
  done
done
source scripts/lib/host.sh
cpu=$(drolt_cpu_model)
python3 - "$tmp" "$REPEATS" "$cpu" "$THREADS" "$EPOCHS" "$(git rev-parse --short HEAD)" $ORDER <<'PY' | tee "${OUT:-/dev/null}"
import json, os, statistics, sys
tmp, reps, cpu, threads, epochs, commit, *order = sys.argv[1:]
label = {"full": "DRO-LT on CE, `--centroids full` (refresh pass)",
         "previous": "DRO-LT on CE, `--centroids previous`",
         "recipe": "the default recipe (DRO-LT + LDAM-DRW, full refresh)"}
print(f"Measured by `scripts/epoch_cost.sh` on {cpu}, {threads} threads, idle, commit {commit}: ResNet-32, "
      f"Fashion-MNIST-LT rho = 100 (1,236 images, batch 128), {epochs} epochs per run (half CE, half DRO-LT), "
      f"{reps} interleaved rounds; seconds per epoch, medians.\n")
print("| configuration | CE epoch (s) | DRO-LT epoch (s) | of it, centroid pass (s) | DRO-LT / CE |")
print("|---|---|---|---|---|")
for k in order:
    ce_m, dro_m, cen_m, ratio = [], [], [], []
    for r in range(1, int(reps) + 1):
        ce, dro, cen = [], [], []
        first_dro = True
        for line in open(os.path.join(tmp, f"{k}-{r}", "metrics.jsonl")):
            m = json.loads(line)
            if m.get("epoch", 0) <= 1:
                continue
            if m.get("phase") == "ce":
                ce.append(m["seconds"])
            elif m.get("phase") == "dro":
                if first_dro:
                    first_dro = False
                    continue
                dro.append(m["seconds"])
                cen.append(m.get("centroid_seconds", 0.0))
        c, d = statistics.median(ce), statistics.median(dro)
        ce_m.append(c); dro_m.append(d); cen_m.append(statistics.median(cen)); ratio.append(d / c)
    md = statistics.median
    print(f"| {label[k]} | {md(ce_m):.2f} | {md(dro_m):.2f} | {md(cen_m):.2f} | {md(ratio):.2f} |")
PY
