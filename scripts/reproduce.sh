#!/usr/bin/env bash
# Regenerates docs/results.md: CE, cRT and DRO-LT (eps = 0 / shared / sqrt-n /
# learned, each followed by classifier re-training) on Fashion-MNIST-LT
# (exp, rho = 100, n_max = 500) over several seeds, plus the centroid-mode
# comparison (full refresh pass / previous epoch's training passes / EMA).
#
#   scripts/reproduce.sh                        # everything: build, tune, runs, docs/results.md
#   SEEDS="0 1 2" JOBS=2 scripts/reproduce.sh   # defaults
#   RUNS=/tmp/r SKIP_BUILD=1 scripts/reproduce.sh
#
# Step 1 trains the CE network of every seed (it is also the "CE" and "cRT" rows)
# and keeps its checkpoint at the DRO-LT start epoch. Step 2 chooses lambda,
# temperature and the eps0 of the shared / sqrt-n policies on the VALIDATION
# split only (seed 0; skipped when $RUNS/tune/chosen.env exists). Step 3 runs
# the DRO-LT variants from the CE checkpoint (--warm-start: bit-identical to training them
# from scratch, since their CE warm-up is the same computation) and the two
# cheap centroid modes from scratch (they fill their bank during the last CE
# epoch). Runs with a summary.json are skipped and interrupted runs resume from
# their checkpoints, so the script can simply be started again.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
THREADS=${THREADS:-$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))}
RUNS=${RUNS:-out/reproduce}
BUILD=${BUILD:-build/reproduce}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT_MD=${OUT_MD:-docs/results.md}
TUNE="$RUNS/tune"
DEPTH=${DEPTH:-32}
EPOCHS=${EPOCHS:-40}
DRO_START=$((EPOCHS / 2))
EPS_LEARNED=${EPS_LEARNED:-0.5}
# Tuning grids (validation split only).
LAMBDAS=${LAMBDAS:-"0.3 0.5 0.8"}
TAUS=${TAUS:-"0.5 1 2"}
EPS_SHARED_GRID=${EPS_SHARED_GRID:-"0.25 0.5 1"}
EPS_SQRTN_GRID=${EPS_SQRTN_GRID:-"2 5 10"}

COMMON="--data $DATA --depth $DEPTH --epochs $EPOCHS --crt-epochs 10 --batch-size 128 --lr 0.1 --wd 2e-4 \
--warmup 5 --schedule multistep --milestones 0.8 0.9 --val-per-class 100 --val-every 5 --no-plots -q"

declare -A CONFIG
CONFIG[ce]="--method ce,crt --save-at $DRO_START"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  source scripts/lib/configure.sh
  DROLT_DEBIAN_TORCH_DIR=${Torch_DIR:-$DROLT_DEBIAN_TORCH_DIR} BUILD_TYPE=Release \
    drolt_configure_debian "$BUILD" -DDROLT_BUILD_TESTS=OFF -DDROLT_BUILD_EXAMPLES=ON
  cmake --build "$BUILD" --target drolt_train -j"$(nproc)"
fi
BIN="$BUILD/examples/drolt_train"

mkdir -p "$RUNS"
CMDS="$RUNS/commands.txt"
: > "$CMDS"
job() {  # config seed extra-args -> appends to $JOBFILE and $CMDS
  local cfg=$1 seed=$2 extra=${3:-}
  local out="$RUNS/$cfg/seed$seed"
  local cmd="$BIN ${CONFIG[$cfg]} $COMMON --seed $seed --threads $THREADS --out $out $extra"
  echo "$cmd" >> "$CMDS"
  if [[ ! -f "$out/summary.json" ]]; then
    echo "mkdir -p $out && $cmd --resume > $out.log 2>&1 && echo done $cfg seed $seed" >> "$JOBFILE"
  fi
}
run_jobs() {
  echo "running $(wc -l < "$JOBFILE") runs, $JOBS at a time, $THREADS thread(s) each (logs: $RUNS/*/seed*.log)"
  if ! xargs -P "$JOBS" -I{} -d '\n' bash -c '{}' < "$JOBFILE"; then
    # Every job ends with "> DIR.log 2>&1 && echo done ...": name the ones without a summary.
    echo "reproduce.sh: some runs failed; their last log lines:" >&2
    grep -o 'mkdir -p [^ ]*' "$JOBFILE" | cut -d' ' -f3 | while read -r d; do
      [[ -f "$d/summary.json" ]] || { echo "--- $d.log" >&2; tail -3 "$d.log" >&2 || true; }
    done
    echo "reproduce.sh: fix the cause (or remove the run's folder) and start the script again;" \
      "finished runs are kept" >&2
    exit 1
  fi
}

# ------------------------------------------------------------- step 1: CE (+ cRT)
start=$(date +%s)
JOBFILE="$RUNS/jobs-ce.txt"
: > "$JOBFILE"
for seed in $SEEDS; do job ce "$seed"; done
run_jobs

# ------------------------------------------------------------- step 2: tuning
if [[ ! -f "$TUNE/chosen.env" ]]; then
  mkdir -p "$TUNE"
  : > "$TUNE/commands.txt"
  WS="--warm-start $RUNS/ce/seed0/checkpoint-ce-e$DRO_START.pt"
  tjob() {  # name args
    local out="$TUNE/$1"
    local cmd="$BIN --method drolt --dro-start $DRO_START $2 $COMMON --seed 0 --threads $THREADS --out $out $WS"
    echo "$cmd" >> "$TUNE/commands.txt"
    [[ -f "$out/summary.json" ]] || echo "mkdir -p $out && $cmd --resume > $out.log 2>&1 && echo done tune $1" >> "$JOBFILE"
  }
  JOBFILE="$TUNE/jobs-1.txt"
  : > "$JOBFILE"
  for lam in $LAMBDAS; do
    for tau in $TAUS; do
      tjob "learned-l$lam-t$tau" "--policy learned --eps0 $EPS_LEARNED --lambda $lam --temperature $tau"
    done
  done
  run_jobs
  read -r LAMBDA TAU < <(python3 scripts/results_table.py --best-lambda-tau "$TUNE")
  echo "tuning: lambda $LAMBDA, temperature $TAU (best validation All, learned radii)"
  JOBFILE="$TUNE/jobs-2.txt"
  : > "$JOBFILE"
  for e in $EPS_SHARED_GRID; do tjob "shared-e$e" "--policy shared --eps0 $e --lambda $LAMBDA --temperature $TAU"; done
  for e in $EPS_SQRTN_GRID; do tjob "sqrtn-e$e" "--policy sqrtn --eps0 $e --lambda $LAMBDA --temperature $TAU"; done
  run_jobs
  python3 scripts/results_table.py --finish-tuning "$TUNE" "$LAMBDA" "$TAU"
fi
# shellcheck disable=SC1091
source "$TUNE/chosen.env"
echo "chosen on the validation split: lambda $LAMBDA, temperature $TAU, shared eps0 $EPS_SHARED, sqrt-n eps0 $EPS_SQRTN"

# ------------------------------------------------------------- step 3: DRO-LT runs
DRO="--dro-start $DRO_START --lambda $LAMBDA --temperature $TAU"
CONFIG[drolt-erm]="--method drolt --policy erm $DRO"
CONFIG[drolt-shared]="--method drolt --policy shared --eps0 $EPS_SHARED $DRO"
CONFIG[drolt-sqrtn]="--method drolt --policy sqrtn --eps0 $EPS_SQRTN $DRO"
CONFIG[drolt-learned]="--method drolt --policy learned --eps0 $EPS_LEARNED $DRO"
CONFIG[drolt-learned-previous]="--method drolt --policy learned --eps0 $EPS_LEARNED $DRO --centroids previous"
CONFIG[drolt-learned-ema]="--method drolt --policy learned --eps0 $EPS_LEARNED $DRO --centroids ema"
WARM=(drolt-learned drolt-sqrtn drolt-shared drolt-erm)
SCRATCH=(drolt-learned-previous drolt-learned-ema)
JOBFILE="$RUNS/jobs-dro.txt"
: > "$JOBFILE"
for seed in $SEEDS; do
  for cfg in "${WARM[@]}"; do
    job "$cfg" "$seed" "--warm-start $RUNS/ce/seed$seed/checkpoint-ce-e$DRO_START.pt"
  done
done
for seed in $SEEDS; do
  for cfg in "${SCRATCH[@]}"; do job "$cfg" "$seed"; done
done
run_jobs

# ------------------------------------------------------------- step 4: centroid-mode timing
# Epoch time of each centroid mode, measured one run at a time with all cores
# (the accuracy runs above share the CPU between $JOBS jobs): 4 CE + 4 DRO-LT epochs.
for mode in full previous ema; do
  out="$RUNS/timing/$mode"
  cmd="$BIN --method drolt --policy learned --eps0 $EPS_LEARNED --lambda $LAMBDA --temperature $TAU \
--centroids $mode --data $DATA --depth $DEPTH --epochs 8 --dro-start 4 --crt-epochs 1 --val-every 100 \
--test-limit 1000 --no-plots -q --seed 0 --threads $(nproc) --out $out"
  echo "$cmd" >> "$CMDS"
  if [[ ! -f "$out/summary.json" ]]; then
    rm -rf "$out" && mkdir -p "$out"
    eval "$cmd" > "$out.log" 2>&1
    echo "done timing $mode"
  fi
done
wall=$(( $(date +%s) - start ))

SETTINGS="$RUNS/settings.md"
cat > "$SETTINGS" <<EOF
## Setting

- Data: Fashion-MNIST-LT built from Debian's \`dataset-fashion-mnist\` (IDX files in \`$DATA\`):
  exponential profile, rho = 100, n_max = 500, per-class training counts
  500 / 299 / 179 / 107 / 64 / 38 / 23 / 13 / 8 / 5 (1,236 images; classes 0-3 Many,
  4-6 Medium, 7-9 Few). The subset is fixed (data seed 0); seeds vary initialisation,
  data order and augmentation.
- Validation: 100 images per class drawn from the training images the subset left out
  (balanced, 1,000 images); every choice was made on it. Test: the official balanced
  10,000-image test set, used only for reporting.
- Model: ResNet-$DEPTH (CIFAR-style, 16/32/64 channels, option-A shortcuts), 1-channel 28x28 input,
  random crop (pad 2) + horizontal flip, per-channel normalisation.
- Optimisation: SGD momentum 0.9, weight decay 2e-4, batch 128, lr 0.1 with 5 warm-up epochs,
  multistep decay x0.1 at 80% and 90% of $EPOCHS epochs.
- CE: $EPOCHS epochs of cross-entropy. cRT: the CE network's features frozen (eval mode), classifier
  re-initialised and re-trained for 10 epochs with class-balanced sampling (lr 0.1, cosine).
- DRO-LT: CE for $DRO_START epochs, then (1 - lambda) CE + lambda DRO-LT for $((EPOCHS - DRO_START)) epochs
  (lambda = $LAMBDA, temperature $TAU, the paper's batch normalisation of the loss, Euclidean
  distance) with the centroid bank refreshed at the start of every epoch by a full pass over the
  training set, then the same 10-epoch cRT stage. Radii: eps = 0 (ERM); shared eps0 = $EPS_SHARED;
  sqrt-n eps0 / sqrt(n_c) with eps0 = $EPS_SQRTN; learned, initial $EPS_LEARNED, in the feature
  extractor's SGD (lr 0.005, weight decay 1e-4, same schedule), kept >= 0.
  The CE warm-up is taken from the CE run of the same seed (\`--warm-start\`, bit-identical to
  retraining it; checked by tests/test_trainer.cpp).
- The reported model is the one at the end of training (no early stopping on the test set).
- Seeds: $SEEDS. Runs: $JOBS in parallel, $THREADS thread(s) each; the centroid-mode epoch
  times come from separate short runs, one at a time on all $(nproc) cores.
EOF

python3 scripts/results_table.py --runs "$RUNS" --out "$OUT_MD" --commands "$CMDS" --wall "$wall" \
  --settings "$SETTINGS" --tuning "$TUNE/tuning.md" --tuning-commands "$TUNE/commands.txt"
