#!/usr/bin/env bash
# Regenerates docs/results.md: the structure of the paper's Tables 1, 2 and 4 and
# Figures 2, 4, 6, 7 (plus the bound gap over epochs) on Fashion-MNIST-LT
# (exponential profile, n_max = 500, rho = 100, 50, 10), every baseline, both
# recipes (ours and the authors'), over several seeds.
#
#   scripts/reproduce.sh                          # tune, every run, docs/results.md
#   COMMIT=1 nice -n 10 scripts/reproduce.sh      # ... committing each run's small files as it completes
#   SMOKE=1 SKIP_BUILD=1 scripts/reproduce.sh     # whole pipeline in minutes, to /tmp (never docs/)
#   DEVICE=cuda JOBS=1 scripts/reproduce.sh       # the same on a GPU machine
#   scripts/repro_progress.py --runs out/reproduce2  # runs done / left, measured and projected hours
#
# In the background: `COMMIT=1 nohup nice -n 19 setsid scripts/reproduce.sh > log 2>&1 &`.
# Linux's autogroup scheduler shares the CPU between sessions before nice
# counts, so a setsid'ed run still takes half of a 2-core machine from a build
# in another session; `echo 19 > /proc/<its pid>/autogroup` makes it yield.
#
# Steps (every one resumable; start the script again after an interruption):
#  1. Tuning, on the VALIDATION split only, seed 0, rho = 100, with the same
#     budget for every method: TUNE_BUDGET (6) training runs, a grid of 3 values of
#     the method's main hyper-parameter x 2 values of a second one (table below).
#     DRO-LT's lambda x temperature {0.07 (the code's default), 1.0 (the authors')}
#     is one such 3 x 2 grid and uses up the budget of its variant. The post-hoc
#     classifiers' tau (tau-norm: 11 values, logit adjustment: 9) are chosen on the
#     validation split inside every run at no training cost, for every
#     representation alike. The authors' recipe is run as published: no tuning.
#       method          grid (6 runs)                                   chosen by (val All of row)
#       ce              lr {0.05 0.1 0.2} x wd {2e-4 5e-4}              crt (the CE network is cRT's, LWS's, LA's)
#       resample        sampler {class-balanced sqrt progressive} x lr {0.05 0.1}   resample
#       reweight        beta {0.99 0.999 0.9999} x lr {0.05 0.1}        reweight (effective number)
#       focal           gamma {0.5 1 2} x lr {0.05 0.1}                 focal
#       ldam-drw        margin {0.3 0.5 1.0} x DRW start {0.6 0.8} E    ldam-drw
#       drolt-erm       lambda {0.3 0.5 0.8} x temperature {0.07 1.0}   drolt-erm (+ cRT)
#       drolt-learned   lambda {0.3 0.5 0.8} x temperature {0.07 1.0}   drolt-learned (+ cRT)
#       drolt-shared    eps0 {0.25 0.5 1} x temperature {0.07 1.0}, learned's lambda    drolt-shared
#       drolt-sqrtn     eps0 {2 5 10} x temperature {0.07 1.0}, learned's lambda        drolt-sqrtn
#     The DRO-LT runs start from the chosen CE run's checkpoint (--warm-start), so
#     they inherit CE's lr and wd. "DRO-LT (best variant)" is the variant with the
#     best seed-0 validation All among the four. The epochs (EPOCHS) are fixed for
#     every method, not tuned. Seed 0 at rho = 100 of each method IS its winning
#     tuning run (a link, no retraining): that cell carries selection optimism, and
#     the report also gives the paired statistics over seeds != 0.
#     1c. Validation only, outside the budget and used for no choice: DRO-LT
#     (learned) + cRT at CE's runner-up learning rate, lambda as in its grid,
#     temperature 1.0 (does inheriting CE's lr hold DRO-LT back?).
#     1d. CE with its chosen arguments and cRT / LWS with batch norm in train mode
#     (--crt-bn train, as Kang et al.'s code), every seed of rho = 100.
#  2. Every (rho, seed, method) of the tables: SEEDS_100 (5 seeds) at rho = 100,
#     SEEDS_OTHER (3) at rho = 50 and 10, with the values chosen in step 1.
#     One ratio at a time, rho = 100 first. CE (classifiers joint, cRT, LWS,
#     tau-norm, LA) first, saving its checkpoint at the DRO-LT start; the four DRO-LT
#     variants warm-start from it (bit-identical to their own CE warm-up). The authors' recipe (--preset official) trains its
#     own CE phase, its 200 + 80 epochs scaled to EPOCHS + 0.4 EPOCHS (5
#     warm-up epochs, classifier stage 2 x CRT_EPOCHS as their 20).
#  3. scripts/results_table.py regenerates docs/results.md and docs/figures/repro-*.png
#     from docs/data/results with whatever is complete; missing cells say so.
#
# Each run is skipped when its summary.json exists (in RUNS, or kept in
# docs/data/results by an earlier sitting) and resumed (--resume) when
# interrupted; a CE checkpoint that DRO-LT runs need and this machine lacks is
# retrained up to the DRO-LT start. After it completes, its small files (summary.json, result-*.json,
# metrics.jsonl, args.txt, host.jsonl: host, CPU model, GPU name, device, threads,
# wall seconds of every sitting) are copied to docs/data/results/<rho>/<seed>/<run>/
# (tuning: docs/data/results/tune/<method>/<value>/), never checkpoints, and with
# COMMIT=1 committed (git add of that folder only).
#
# Compute, an ESTIMATE (not a measurement of the full set): scaled up from the
# epoch times of `SMOKE=1 JOBS=1 THREADS=1 nice -n 10 scripts/reproduce.sh` on
# this 2-core AMD EPYC machine while other work shared it (ResNet-32, 1 thread):
# CE epoch 21.7 s at rho = 100 (1,236 images), cRT / LWS epoch 6.6 s, DRO-LT
# epoch 24.2 s (7.3 s of it the centroid refresh), the authors' recipe 83.9 s per
# DRO-LT epoch and 27.5 s per classifier epoch (class-aware loader: 5,000 draws),
# about 28 s of start-up and evaluation per run (500 test images; the full
# 10,000 cost more). The full set is 54 tuning runs + 101 main runs (rho = 100:
# seeds 1-4 x 10 methods + seed 0's authors' recipe; rho = 50 and 10: 3 seeds x
# 10), epochs scaled by the training-set size at rho = 50 (1,394) and 10 (2,040):
# about 47 thread-hours, i.e. about 23 h of wall time with JOBS=2 on 2 idle
# cores. The report sums the measured wall times of the runs that exist.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
JOBS=${JOBS:-2}
THREADS=${THREADS:-$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
DEVICE=${DEVICE:-cpu}
COMMIT=${COMMIT:-0}
BUILD=${BUILD:-build/reproduce}
DEPTH=${DEPTH:-32}
if [[ "$SMOKE" == 1 ]]; then
  # Whole pipeline, tiny: 2 epochs, rho = 100, seed 0 (tuning, so the main
  # runs are links) and seed 1 (real main runs), a 500-image test set, one value
  # per grid axis but two of CE's lr and of lambda (the selection code runs), to /tmp.
  RUNS=${RUNS:-/tmp/drolt-smoke/runs}
  DATA_OUT=${DATA_OUT:-/tmp/drolt-smoke/data}
  OUT_MD=${OUT_MD:-/tmp/drolt-smoke/results.md}
  FIG_DIR=${FIG_DIR:-/tmp/drolt-smoke/figures}
  EPOCHS=${EPOCHS:-2}; CRT_EPOCHS=${CRT_EPOCHS:-1}; WARMUP=${WARMUP:-1}
  RHOS=${RHOS:-100}; SEEDS_100=${SEEDS_100:-"0 1"}; SEEDS_OTHER=${SEEDS_OTHER:-0}
  EXTRA=${EXTRA:-"--test-limit 500 --val-every 100"}
  SMALL_GRIDS=1
  SMOKE_FLAG=--smoke
  README_OUT=${README_OUT:-}
  COMMIT=0
else
  RUNS=${RUNS:-out/reproduce2}
  DATA_OUT=${DATA_OUT:-docs/data/results}
  OUT_MD=${OUT_MD:-docs/results.md}
  FIG_DIR=${FIG_DIR:-docs/figures}
  EPOCHS=${EPOCHS:-40}; CRT_EPOCHS=${CRT_EPOCHS:-10}; WARMUP=${WARMUP:-5}
  RHOS=${RHOS:-"100 50 10"}; SEEDS_100=${SEEDS_100:-"0 1 2 3 4"}; SEEDS_OTHER=${SEEDS_OTHER:-"0 1 2"}
  EXTRA=${EXTRA:-"--val-every 5"}
  SMALL_GRIDS=${SMALL_GRIDS:-0}
  README_OUT=${README_OUT:-README.md}  # its generated result blocks
fi
DRO_START=$((EPOCHS / 2))
OFFICIAL_DRO=$(( EPOCHS * 80 / 200 > 0 ? EPOCHS * 80 / 200 : 1 ))   # the authors' 200 CE + 80 DRO-LT epochs, scaled
OFFICIAL_EPOCHS=$((EPOCHS + OFFICIAL_DRO))
EPS_LEARNED=0.5
DRW_FRACS="0.6 0.8"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  source scripts/lib/configure.sh
  DROLT_DEBIAN_TORCH_DIR=${Torch_DIR:-$DROLT_DEBIAN_TORCH_DIR} BUILD_TYPE=Release \
    drolt_configure_debian "$BUILD" -DDROLT_BUILD_TESTS=OFF -DDROLT_BUILD_EXAMPLES=ON
  cmake --build "$BUILD" --target drolt_train -j"$(nproc)"
fi
BIN=${DROLT_TRAIN:-$BUILD/examples/drolt_train}
[[ -x "$BIN" ]] || { echo "reproduce.sh: no trainer at $BIN (build it or set DROLT_TRAIN)" >&2; exit 1; }

# COMMON: every run. RECIPE: ours (every run but the authors' recipe, whose preset sets its own).
COMMON=(--data "$DATA" --depth "$DEPTH" --val-per-class 100 --threads "$THREADS" --device "$DEVICE" --no-plots -q)
RECIPE="--epochs $EPOCHS --crt-epochs $CRT_EPOCHS --batch-size 128 --warmup $WARMUP --schedule multistep --milestones 0.8 0.9"
# shellcheck disable=SC2206
COMMON+=($EXTRA)
mkdir -p "$RUNS" "$DATA_OUT"
LOCK="$RUNS/.lock"
CMDS="$RUNS/commands.txt"
touch "$CMDS"

# Where this run runs: one JSON line per sitting.
source scripts/lib/host.sh
host_line() {  # start_epoch_s wall_s finished(0/1)
  local gpu="" cpu
  cpu=$(drolt_cpu_model)
  if [[ "$DEVICE" == cuda* ]] && command -v nvidia-smi >/dev/null; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  fi
  python3 -c 'import json,sys; print(json.dumps(dict(host=sys.argv[1], cpu=sys.argv[2], gpu=sys.argv[3],
device=sys.argv[4], threads=int(sys.argv[5]), jobs=int(sys.argv[6]), start=int(sys.argv[7]),
wall_s=int(sys.argv[8]), finished=sys.argv[9] == "1")))' \
    "$(hostname)" "${cpu:-unknown}" "$gpu" "$DEVICE" "$THREADS" "$JOBS" "$1" "$2" "$3"
}

# keep OUT REL: copies OUT's small files to DATA_OUT/REL and, with COMMIT=1, commits
# every uncommitted file under DATA_OUT (so a commit that failed before, say on a
# busy index, is swept into the next one); a failed commit is retried and reported.
keep() {
  local out=$1 rel=$2 dst="$DATA_OUT/$2"
  (
    flock 9
    mkdir -p "$dst"
    cp "$out"/summary.json "$out"/result-*.json "$out"/metrics.jsonl "$out"/args.txt "$out"/host.jsonl "$dst"/
    [[ "$COMMIT" == 1 ]] && commit_data "$rel"
    true
  ) 9>"$LOCK"
}
commit_data() {  # MESSAGE-SUFFIX; the caller holds the lock
  local try
  for try in 1 2 3 4 5; do
    if git add -- "$DATA_OUT" && { git diff --cached --quiet -- "$DATA_OUT" ||
         git commit -qm "docs/data/results: $1 (scripts/reproduce.sh)" -- "$DATA_OUT"; }; then
      return 0
    fi
    sleep $((try * 5))
  done
  echo "reproduce.sh: could not commit $DATA_OUT after $1 (kept on disk; the next run's commit sweeps it)" >&2
}

# train REL ARGS...: one drolt_train run in RUNS/REL unless finished.
train() {
  local rel=$1; shift
  local out="$RUNS/$rel"
  if [[ -f "$out/summary.json" ]]; then
    [[ -f "$DATA_OUT/$rel/summary.json" ]] || keep "$out" "$rel"
    return 0
  fi
  # Kept by an earlier sitting whose RUNS folder is gone (another machine): done.
  [[ -f "$DATA_OUT/$rel/summary.json" ]] && return 0
  mkdir -p "$out"
  printf '%s\n' "$*" > "$out/args.txt"
  echo "$BIN ${COMMON[*]} $* --out $out" >> "$CMDS"
  echo "== $(date +%H:%M:%S) $rel"
  local t0 rc=0 last
  # A sitting that was killed (the machine's session ended) left its start time
  # in .sitting: count it, up to the newest file it wrote (at most an epoch short).
  if [[ -f "$out/.sitting" ]]; then
    t0=$(cat "$out/.sitting")
    last=$(find "$out" -maxdepth 1 -type f ! -name .sitting -printf '%T@\n' | sort -n | tail -1 | cut -d. -f1)
    host_line "$t0" "$(( ${last:-$t0} > t0 ? ${last:-$t0} - t0 : 0 ))" 0 >> "$out/host.jsonl"
  fi
  t0=$(date +%s)
  echo "$t0" > "$out/.sitting"
  "$BIN" "${COMMON[@]}" "$@" --out "$out" --resume > "$out/log.txt" 2>&1 || rc=$?
  host_line "$t0" "$(( $(date +%s) - t0 ))" "$(( rc == 0 ))" >> "$out/host.jsonl"
  rm -f "$out/.sitting"
  if (( rc != 0 )) || [[ ! -f "$out/summary.json" ]]; then
    echo "reproduce.sh: $rel failed (exit $rc); last lines of $out/log.txt:" >&2
    tail -3 "$out/log.txt" >&2 || true
    touch "$RUNS/.failed"
    return 1
  fi
  keep "$out" "$rel"
}

# A pool of JOBS background runs; `barrier` waits for all and stops on a failure.
spawn() {
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  train "$@" &
}
barrier() {
  wait || true
  if [[ -f "$RUNS/.failed" ]]; then
    rm -f "$RUNS/.failed"
    echo "reproduce.sh: some runs failed (see above); fix the cause and start the script again;" \
      "finished runs are kept" >&2
    exit 1
  fi
}
# choose DIR ROW: the args.txt of DIR's sub-run with the best validation All of ROW;
# choose_dir DIR ROW: its folder name. Both read the kept copies in DATA_OUT (every
# finished run is kept there), so a sitting on a machine without RUNS chooses the same.
choose() { python3 scripts/results_table.py --choose "$DATA_OUT/$1" "$2"; }
choose_dir() { python3 scripts/results_table.py --choose-dir "$DATA_OUT/$1" "$2"; }
ckpt() { echo "$RUNS/$1/checkpoint-ce-e$DRO_START.pt"; }
# done_run REL: REL has finished (here, or kept by an earlier sitting).
done_run() { [[ -f "$RUNS/$1/summary.json" || -f "$DATA_OUT/$1/summary.json" ]]; }
# warm DRO-REL CE-REL: "--warm-start <CE-REL's checkpoint>" for a DRO-LT run that is
# still to train; nothing for one that is done (no checkpoint retrained for it).
warm() {
  done_run "$1" && return 0
  local c
  c=$(ensure_ckpt "$2") || { touch "$RUNS/.failed"; return 1; }
  echo "--warm-start $c"
}
# ensure_ckpt REL: the CE warm-up checkpoint of REL, retrained up to the DRO-LT
# start from REL's kept args.txt when its RUNS folder is gone (the DRO-LT runs
# need it; checkpoints are never committed). Prints the path.
ensure_ckpt() {
  local rel=$1 c out="$RUNS/$1"
  c=$(ckpt "$rel")
  if [[ ! -f "$c" && -f "$DATA_OUT/$rel/args.txt" ]]; then
    echo "== $(date +%H:%M:%S) $rel: retraining the CE warm-up to epoch $DRO_START (checkpoint not on this machine)" >&2
    mkdir -p "$out"
    # shellcheck disable=SC2046
    "$BIN" "${COMMON[@]}" $(cat "$DATA_OUT/$rel/args.txt") --method ce --stop-after "$DRO_START" \
      --out "$out" --resume > "$out/log-ckpt.txt" 2>&1 || true
  fi
  [[ -f "$c" ]] || { echo "reproduce.sh: no CE checkpoint $c for the DRO-LT runs of $rel" >&2; exit 1; }
  echo "$c"
}

# ------------------------------------------------------------------ grids
if [[ "$SMALL_GRIDS" == 1 ]]; then
  G_LR="0.1"; G_WD="2e-4"; G_SAMPLER="class-balanced"; G_BETA="0.999"; G_GAMMA="1"
  G_MARGIN="0.5"; DRW_FRACS="0.8"; G_LAMBDA="0.3 0.5"; G_TEMP="1.0"; G_SHARED="0.5"; G_SQRTN="5"
else
  G_LR="0.05 0.1"; G_WD="2e-4 5e-4"; G_SAMPLER="class-balanced sqrt progressive"
  G_BETA="0.99 0.999 0.9999"; G_GAMMA="0.5 1 2"; G_MARGIN="0.3 0.5 1.0"
  G_LAMBDA="0.3 0.5 0.8"; G_TEMP="0.07 1.0"; G_SHARED="0.25 0.5 1"; G_SQRTN="2 5 10"
fi
G_CE_LR=${G_CE_LR:-$([[ "$SMALL_GRIDS" == 1 ]] && echo "0.05 0.1" || echo "0.05 0.1 0.2")}
rm -f "$RUNS/.failed"
start=$(date +%s)
T=tune  # folder of the tuning runs (seed 0, rho 100)
# shellcheck disable=SC2206
TS=(--seed 0 --rho 100 $RECIPE)

# ------------------------------------------------------------------ step 1a: CE and the baselines
for lr in $G_CE_LR; do for wd in $G_WD; do
  spawn "$T/ce/lr$lr-wd$wd" "${TS[@]}" --method ce,crt --classifier joint,crt,lws,tau-norm,la \
    --lr "$lr" --wd "$wd" --save-at "$DRO_START"
done; done
for s in $G_SAMPLER; do for lr in $G_LR; do
  spawn "$T/resample/$s-lr$lr" "${TS[@]}" --method resample --resample-sampler "$s" \
    --classifier joint,crt,lws --lr "$lr" --wd 2e-4
done; done
for b in $G_BETA; do for lr in $G_LR; do
  spawn "$T/reweight/beta$b-lr$lr" "${TS[@]}" --method reweight --reweight effective --cb-beta "$b" \
    --classifier joint --lr "$lr" --wd 2e-4
done; done
for g in $G_GAMMA; do for lr in $G_LR; do
  spawn "$T/focal/gamma$g-lr$lr" "${TS[@]}" --method focal --focal-gamma "$g" --classifier joint \
    --lr "$lr" --wd 2e-4
done; done
for m in $G_MARGIN; do for f in $DRW_FRACS; do
  drw=$(python3 -c "print(int(round($f * $EPOCHS)))")
  spawn "$T/ldam-drw/m$m-drw$f" "${TS[@]}" --method ldam-drw --ldam-margin "$m" --drw-start "$drw" \
    --classifier joint --lr 0.1 --wd 2e-4
done; done
barrier

CE_ARGS=$(choose "$T/ce" crt)
CE_BEST=$(choose_dir "$T/ce" crt)
CE_LRWD=$(echo "$CE_ARGS" | grep -o -- '--lr [^ ]* --wd [^ ]*')
echo "chosen on the validation split: CE $CE_LRWD"

# ------------------------------------------------------------------ step 1b: DRO-LT
# DRO-LT on CE with the full centroid refresh, spelled out: the trainer's default recipe is
# DRO-LT + LDAM-DRW now, and every run here was made with these (the defaults of their time).
DRO_PIN=(--loss ce --no-drw --centroids full)
DRO_NOC=(--method drolt --dro-start "$DRO_START" --loss ce --no-drw)  # (for --centroids previous)
DRO=(--method drolt --dro-start "$DRO_START" "${DRO_PIN[@]}")
CE_TUNED="$T/ce/$CE_BEST"  # its checkpoint at the DRO-LT start is every DRO-LT tuning run's warm start
# shellcheck disable=SC2206
CE_LRWD_A=($CE_LRWD)
# (the $(warm ...) words are split on purpose: "--warm-start PATH" or nothing)
# shellcheck disable=SC2046
for lam in $G_LAMBDA; do for t in $G_TEMP; do
  r="$T/drolt-learned/l$lam-t$t"
  spawn "$r" "${TS[@]}" "${CE_LRWD_A[@]}" "${DRO[@]}" $(warm "$r" "$CE_TUNED") --policy learned \
    --eps0 $EPS_LEARNED --lambda "$lam" --temperature "$t" --classifier crt,joint,lws
  r="$T/drolt-erm/l$lam-t$t"
  spawn "$r" "${TS[@]}" "${CE_LRWD_A[@]}" "${DRO[@]}" $(warm "$r" "$CE_TUNED") --policy erm \
    --lambda "$lam" --temperature "$t" --classifier crt,joint
done; done
barrier
LAMBDA=$(choose "$T/drolt-learned" drolt-learned | grep -o -- '--lambda [^ ]*' | cut -d' ' -f2)
# shellcheck disable=SC2046
for t in $G_TEMP; do
  for e in $G_SHARED; do
    r="$T/drolt-shared/e$e-t$t"
    spawn "$r" "${TS[@]}" "${CE_LRWD_A[@]}" "${DRO[@]}" $(warm "$r" "$CE_TUNED") --policy shared --eps0 "$e" \
      --lambda "$LAMBDA" --temperature "$t" --classifier crt,joint
  done
  for e in $G_SQRTN; do
    r="$T/drolt-sqrtn/e$e-t$t"
    spawn "$r" "${TS[@]}" "${CE_LRWD_A[@]}" "${DRO[@]}" $(warm "$r" "$CE_TUNED") --policy sqrtn --eps0 "$e" \
      --lambda "$LAMBDA" --temperature "$t" --classifier crt,joint
  done
done
barrier

# The chosen arguments of every method, minus the tuning run's seed / rho / warm start.
declare -A ARGS
strip() { sed -E 's/--seed [^ ]+ //; s/--rho [^ ]+ //; s/ ?--warm-start [^ ]+//; s/ ?--loss [^ ]+//; s/ ?--no-drw//; s/ ?--centroids [^ ]+//'; }
for m in ce resample reweight focal ldam-drw drolt-erm drolt-learned drolt-shared drolt-sqrtn; do
  row=$m; [[ $m == ce ]] && row=crt
  ARGS[$m]=$(choose "$T/$m" "$row" | strip)
  best=$(choose_dir "$T/$m" "$row")
  printf '%s\n' "$best" > "$DATA_OUT/$T/$m/chosen.txt"
  echo "chosen for $m: $best"
done
ARGS[official]="--preset official --method drolt --epochs $OFFICIAL_EPOCHS --dro-start $EPOCHS \
--crt-epochs $((CRT_EPOCHS * 2)) --warmup $WARMUP"

# ------------------------------------------------------------------ step 1c: learning-rate sensitivity
# Validation only, seed 0, rho = 100, used for no choice and outside every method's
# budget: DRO-LT (learned) + cRT at CE's runner-up learning rate (the lr of CE's
# grid, other than the chosen one, whose run at the chosen wd has the best cRT
# validation All), lambda as in its grid, temperature 1.0, warm-started from that CE
# run. It asks whether inheriting CE's lr is what holds DRO-LT back.
CE_LR=$(echo "$CE_LRWD" | cut -d' ' -f2)
CE_WD=$(echo "$CE_LRWD" | cut -d' ' -f4)
# shellcheck disable=SC2086
SENS_LR=$(python3 - "$DATA_OUT/$T/ce" "$CE_LR" "$CE_WD" $G_CE_LR <<'PY'
import json, os, sys
d, chosen, wd, lrs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
best = None
for lr in lrs:
    p = os.path.join(d, f"lr{lr}-wd{wd}", "result-crt.json")
    if lr == chosen or not os.path.exists(p):
        continue
    v = json.load(open(p))["val"]["all"]
    if best is None or v > best[1]:
        best = (lr, v)
print(best[0] if best else "")
PY
)
if [[ -n "$SENS_LR" ]]; then
  echo "learning-rate sensitivity (validation only): DRO-LT learned at lr $SENS_LR"
  # shellcheck disable=SC2046
  for lam in $G_LAMBDA; do
    r="sens/drolt-learned-lr$SENS_LR/l$lam-t1.0"
    spawn "$r" "${TS[@]}" --lr "$SENS_LR" --wd "$CE_WD" "${DRO[@]}" $(warm "$r" "$T/ce/lr$SENS_LR-wd$CE_WD") \
      --policy learned --eps0 $EPS_LEARNED --lambda "$lam" --temperature 1.0 --classifier crt,joint
  done
  barrier
fi

# ------------------------------------------------------------------ step 1d: cRT's batch-norm mode
# Not a choice either: CE with its chosen arguments, then cRT and LWS with the
# batch-norm layers in train mode (--crt-bn train, as Kang et al.'s code), every
# seed of rho = 100, next to the eval-mode cRT / LWS of the main CE runs.
for seed in $SEEDS_100; do
  # shellcheck disable=SC2086
  spawn "rho100/seed$seed/ce-crtbn" --seed "$seed" --rho 100 \
    $(echo "${ARGS[ce]}" | sed -E 's/ --save-at [^ ]+//; s/--classifier [^ ]+/--classifier joint,crt,lws/') --crt-bn train
done
barrier

# ------------------------------------------------------------------ step 2: every (rho, seed, method)
seeds_of() { if [[ $1 == 100 ]]; then echo "$SEEDS_100"; else echo "$SEEDS_OTHER"; fi; }
# link REL METHOD: rho 100 seed 0 is the winning tuning run itself.
link() {
  local rel=$1 m=$2 best
  best=$(cat "$DATA_OUT/$T/$m/chosen.txt")
  [[ -f "$DATA_OUT/$rel/summary.json" ]] && return 0
  if [[ -f "$RUNS/$T/$m/$best/summary.json" ]]; then  # (ensure_ckpt may have left a partial folder)
    mkdir -p "$(dirname "$RUNS/$rel")"
    [[ -e "$RUNS/$rel" ]] || ln -s "$(realpath "$RUNS/$T/$m/$best")" "$RUNS/$rel"
    keep "$RUNS/$rel" "$rel"
  else  # this machine lacks the tuning run's folder: its kept copy is the same files
    keep "$DATA_OUT/$T/$m/$best" "$rel"
  fi
}
main() {  # rho seed method extra...
  local rho=$1 seed=$2 m=$3; shift 3
  local rel="rho$rho/seed$seed/$m"
  if [[ $rho == 100 && $seed == 0 && $m != official ]]; then link "$rel" "$m"; return; fi
  local pin=()
  [[ $m == drolt-* ]] && pin=("${DRO_PIN[@]}")
  # shellcheck disable=SC2086
  spawn "$rel" --seed "$seed" --rho "$rho" ${ARGS[$m]} "${pin[@]}" "$@"
}
# One imbalance ratio at a time (rho = 100 first), and inside it one seed at a
# time, so that an interrupted set has whole seeds (every method of a seed, so
# every paired difference, exists): CE (its checkpoint is the DRO-LT warm-up)
# and the baselines, longest first; then the authors' recipe (the longest run)
# and the DRO-LT variants, while the next seed's CE and baselines fill the pool.
# Only the DRO-LT runs wait (barrier) for their seed's CE checkpoint.
for rho in $RHOS; do
  for seed in $(seeds_of "$rho"); do
    for m in ce reweight resample focal ldam-drw; do main "$rho" "$seed" "$m"; done
    barrier
    main "$rho" "$seed" official
    for m in drolt-learned drolt-erm drolt-shared drolt-sqrtn; do
      [[ $rho == 100 && $seed == 0 ]] && { main "$rho" "$seed" "$m"; continue; }
      # shellcheck disable=SC2046
      main "$rho" "$seed" "$m" $(warm "rho$rho/seed$seed/$m" "rho$rho/seed$seed/ce")
    done
  done
  barrier
done

# ------------------------------------------------------------------ step 4: v3 (issue 27), rho = 100
# 4a. A fair DRO-LT grid: step 1b spent DRO-LT's six runs on lambda x temperature
#     at CE's inherited learning rate, and temperature 0.07 collapsed, so DRO-LT
#     had three useful runs against six for every baseline. This grid is six runs
#     at temperature 1.0, learned radii (eps0 0.5), over the DRO-LT phase's own
#     learning rate {the schedule goes on (--dro-lr 0, as in step 1b), constant
#     0.02, constant 0.005 (the authors')} x lambda {0.3, 0.5}. Its two
#     "schedule" cells are step 1b's runs with the same arguments (kept copies, no
#     retraining). Chosen on the validation All of the cRT row, like step 1b.
# 4b. The other grids, in one pool (every one chooses on validation, seed 0):
#     - DRO-LT added to the best baseline: LDAM-DRW (its chosen margin and DRW
#       start, lr 0.1) as DRO-LT's base loss (--loss ldam --drw), learned radii,
#       temperature 1.0, lambda {0.1, 0.3, 0.5} x the DRO-LT phase's lr {the
#       schedule, constant 0.02}, chosen on the joint classifier's validation All
#       (LDAM-DRW's own row is its joint classifier). Like every DRO-LT run its
#       epochs before --dro-start are plain CE, here on LDAM's cosine classifier
#       (scale s), so no CE or LDAM-DRW checkpoint is its warm-up: each run trains
#       its own. LDAM (+ DRW from --drw-start) and DRO-LT then run together.
#     - the logit-adjusted loss (--method la-loss, tau 1: Balanced Softmax), lr
#       {0.05 0.1 0.2} x wd {2e-4 5e-4} (CE's grid), chosen on its joint row;
#     - weight balancing (--method weight-balancing: CE with a tuned weight decay
#       and MaxNorm, then its "wb" stage: a class-balanced loss, weight decay and
#       MaxNorm on the frozen features, instance-sampled), --wb-wd {5e-4 2e-3 5e-3}
#       x --max-norm {0.1 1.0} (the radius's scale is not the paper's: their
#       threshold is relative), lr 0.1, chosen on the wb row;
#     - and seed 0 of every radius policy at 4a's choice (below), which needs no
#       choice but the fair grid's.
# 4c. SEEDS_100 seeds, one seed at a time (so an interrupted set has whole seeds:
#     every paired difference of the v3 section gains a seed at once), each with
#     - the fair choice (lr, lambda) applied to every radius policy (eps = 0, shared
#       and sqrt-n with step 1b's eps0, learned), evaluated with cRT, LWS and post-hoc
#       logit adjustment, warm-started from the seed's CE run; seed 0 of learned is
#       the tuning run;
#     - learned with --centroids previous against full, paired (it trains its own
#       CE phase: it has no full-refresh warm-up to share);
#     - DRO-LT + LDAM-DRW, the logit-adjusted loss and weight balancing at their
#       choices (seed 0 of each is its winning tuning run).
if [[ "${V3:-1}" == 1 ]]; then
  if [[ "$SMALL_GRIDS" == 1 ]]; then G3_DROLR=${G3_DROLR:-"0 0.02"}; G3_LAMBDA=${G3_LAMBDA:-"0.3"}
  else G3_DROLR=${G3_DROLR:-"0 0.02 0.005"}; G3_LAMBDA=${G3_LAMBDA:-"0.3 0.5"}; fi
  F="$T/drolt-fair"
  # shellcheck disable=SC2046
  for dlr in $G3_DROLR; do for lam in $G3_LAMBDA; do
    r="$F/lr$dlr-l$lam"
    if [[ $dlr == 0 && -f "$DATA_OUT/$T/drolt-learned/l$lam-t1.0/summary.json" ]]; then
      [[ -f "$DATA_OUT/$r/summary.json" ]] || keep "$DATA_OUT/$T/drolt-learned/l$lam-t1.0" "$r"
      continue
    fi
    spawn "$r" "${TS[@]}" "${CE_LRWD_A[@]}" "${DRO[@]}" $(warm "$r" "$CE_TUNED") --policy learned \
      --eps0 $EPS_LEARNED --lambda "$lam" --temperature 1.0 --dro-lr "$dlr" --classifier crt,joint,lws,la
  done; done
  barrier
  FAIR=$(choose "$F" drolt-learned | grep -o -- '--lambda [^ ]*\( --temperature [^ ]*\)\?\( --dro-lr [^ ]*\)\?')
  FAIR_LAMBDA=$(echo "$FAIR" | grep -o -- '--lambda [^ ]*' | cut -d' ' -f2)
  FAIR_DROLR=$(echo "$FAIR" | grep -o -- '--dro-lr [^ ]*' | cut -d' ' -f2 || true)
  FAIR_DROLR=${FAIR_DROLR:-0}
  choose_dir "$F" drolt-learned > "$DATA_OUT/$F/chosen.txt"
  echo "fair grid, chosen on the validation split: lambda $FAIR_LAMBDA, --dro-lr $FAIR_DROLR"
  FAIR_A=(--lambda "$FAIR_LAMBDA" --temperature 1.0 --dro-lr "$FAIR_DROLR" --classifier crt,joint,lws,la)
  eps_of() { grep -o -- '--eps0 [^ ]*' <<<"${ARGS[$1]}" | cut -d' ' -f2; }
  declare -A POL=([drolt3-erm]="--policy erm" [drolt3-learned]="--policy learned --eps0 $EPS_LEARNED"
    [drolt3-shared]="--policy shared --eps0 $(eps_of drolt-shared)" [drolt3-sqrtn]="--policy sqrtn --eps0 $(eps_of drolt-sqrtn)")
  # v3 SEED METHOD: one run of the fair choice (a radius policy, or learned with previous centroids).
  v3() {
    local seed=$1 m=$2 r="rho100/seed$1/$2" pol ce_rel w extra=() dro=("${DRO[@]}")
    pol=${POL[${m%-prev}]}
    [[ $m == *-prev ]] && { extra=(--centroids previous); dro=("${DRO_NOC[@]}"); }
    if [[ $seed == 0 && $m == drolt3-learned ]]; then  # the winning tuning run itself
      [[ -f "$DATA_OUT/$r/summary.json" ]] || keep "$DATA_OUT/$F/$(cat "$DATA_OUT/$F/chosen.txt")" "$r"
      return 0
    fi
    if [[ $seed == 0 ]]; then ce_rel="$CE_TUNED"; else ce_rel="rho100/seed$seed/ce"; fi
    if [[ $m == *-prev ]]; then w=(); else read -ra w <<<"$(warm "$r" "$ce_rel")"; fi
    # shellcheck disable=SC2086
    spawn "$r" --seed "$seed" --rho 100 $RECIPE "${CE_LRWD_A[@]}" "${dro[@]}" "${w[@]}" $pol "${FAIR_A[@]}" "${extra[@]}"
  }

  # 4b. the other grids, and seed 0 of the radius policies, in one pool.
  if [[ "$SMALL_GRIDS" == 1 ]]; then G3L_LAMBDA=${G3L_LAMBDA:-"0.3"}; G3L_DROLR=${G3L_DROLR:-"0"}
  else G3L_LAMBDA=${G3L_LAMBDA:-"0.1 0.3 0.5"}; G3L_DROLR=${G3L_DROLR:-"0 0.02"}; fi
  LDAM_A=$(grep -o -- '--ldam-margin [^ ]* --drw-start [^ ]*' <<<"${ARGS[ldam-drw]}")
  # shellcheck disable=SC2206
  LDAM_A=($LDAM_A --lr 0.1 --wd 2e-4 --method drolt --dro-start "$DRO_START" --loss ldam --drw --centroids full \
    --policy learned --eps0 "$EPS_LEARNED" --temperature 1.0 --classifier joint,crt)
  FL="$T/drolt-ldam"
  if [[ "$SMALL_GRIDS" == 1 ]]; then G3_LALR="0.1"; G3_LAWD="2e-4"; G3_WBWD="5e-3"; G3_MAXN="0.1"
  else G3_LALR="0.05 0.1 0.2"; G3_LAWD="2e-4 5e-4"; G3_WBWD="5e-4 2e-3 5e-3"; G3_MAXN="0.1 1.0"; fi
  # (DRO-LT + LDAM-DRW's grid first: it decides the default recipe)
  for lam in $G3L_LAMBDA; do for dlr in $G3L_DROLR; do
    spawn "$FL/l$lam-lr$dlr" "${TS[@]}" "${LDAM_A[@]}" --lambda "$lam" --dro-lr "$dlr"
  done; done
  for m in drolt3-learned-prev drolt3-erm drolt3-shared drolt3-sqrtn; do v3 0 "$m"; done
  for lr in $G3_LALR; do for wd in $G3_LAWD; do
    spawn "$T/la-loss/lr$lr-wd$wd" "${TS[@]}" --method la-loss --la-loss-tau 1 --classifier joint \
      --lr "$lr" --wd "$wd"
  done; done
  for wd in $G3_WBWD; do for mn in $G3_MAXN; do
    spawn "$T/wb/wd$wd-mn$mn" "${TS[@]}" --method weight-balancing --wb-wd "$wd" --max-norm "$mn" \
      --classifier joint,wb --stage-sampler instance --lr 0.1
  done; done
  barrier
  choose_dir "$FL" drolt-learned/nocrt > "$DATA_OUT/$FL/chosen.txt"
  LDAM_CH=$(choose "$FL" drolt-learned/nocrt)
  LDAM_L=$(grep -o -- '--lambda [^ ]*' <<<"$LDAM_CH" | cut -d' ' -f2)
  LDAM_D=$(grep -o -- '--dro-lr [^ ]*' <<<"$LDAM_CH" | cut -d' ' -f2)
  echo "DRO-LT + LDAM-DRW, chosen on the validation split: lambda $LDAM_L, --dro-lr $LDAM_D"
  for m in la-loss wb; do
    row=la-loss; [[ $m == wb ]] && row=weight-balancing/wb
    choose_dir "$T/$m" "$row" > "$DATA_OUT/$T/$m/chosen.txt"
    ARGS[$m]=$(choose "$T/$m" "$row" | strip)
    echo "chosen for $m: $(cat "$DATA_OUT/$T/$m/chosen.txt")"
  done

  # 4c. one seed at a time, longest runs first.
  for seed in $SEEDS_100; do
    r="rho100/seed$seed/drolt3-ldam"
    if [[ $seed == 0 ]]; then
      [[ -f "$DATA_OUT/$r/summary.json" ]] || keep "$DATA_OUT/$FL/$(cat "$DATA_OUT/$FL/chosen.txt")" "$r"
    else
      v3 "$seed" drolt3-learned-prev
      # The seed's CE warm-up checkpoint, retrained here (foreground, next to the one
      # run above) when a radius-policy run still needs it and this machine lacks it.
      for m in drolt3-learned drolt3-erm drolt3-shared drolt3-sqrtn; do
        done_run "rho100/seed$seed/$m" || { ensure_ckpt "rho100/seed$seed/ce" > /dev/null; break; }
      done
      spawn "$r" --seed "$seed" --rho 100 $RECIPE "${LDAM_A[@]}" --lambda "$LDAM_L" --dro-lr "$LDAM_D"
    fi
    for m in wb la-loss; do main 100 "$seed" "$m"; done
    for m in drolt3-learned drolt3-erm drolt3-shared drolt3-sqrtn; do v3 "$seed" "$m"; done
    barrier
  done
fi

wall=$(( $(date +%s) - start ))

# ------------------------------------------------------------------ step 3: the report
python3 scripts/results_table.py --data "$DATA_OUT" --out "$OUT_MD" --figures "$FIG_DIR" \
  --rhos "$RHOS" --seeds-100 "$SEEDS_100" --seeds-other "$SEEDS_OTHER" --epochs "$EPOCHS" \
  --crt-epochs "$CRT_EPOCHS" --depth "$DEPTH" --warmup "$WARMUP" --wall "$wall" ${SMOKE_FLAG:+"$SMOKE_FLAG"} \
  ${README_OUT:+--readme "$README_OUT" --demo-data docs/data/demo}
if [[ "$COMMIT" == 1 ]]; then
  git add -- "$OUT_MD" "$FIG_DIR"/repro-*.png ${README_OUT:+"$README_OUT"}
  git commit -qm "docs/results.md: regenerated by scripts/reproduce.sh from docs/data/results" || true
fi
