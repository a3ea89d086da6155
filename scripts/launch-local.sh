#!/usr/bin/env bash
# Starts N processes of the drolt trainer on this machine, as PyTorch's
# launchers do: each gets RANK, LOCAL_RANK (= RANK: with --device cuda, process
# r uses GPU r, so N is at most the number of GPUs), WORLD_SIZE,
# MASTER_ADDR=127.0.0.1 and MASTER_PORT, and they meet over Gloo (--device cpu)
# or NCCL (--device cuda); see docs/distributed.md.
#
#   scripts/launch-local.sh N [trainer args...]
#   scripts/launch-local.sh 2 --preset smoke --method ce --out out/two        # CPU, Gloo
#   scripts/launch-local.sh 4 --preset demo --device cuda --out out/four-gpus # NCCL, GPUs 0-3
#
# Environment:
#   DROLT_TRAIN         trainer binary (default: the first of build/demo/ and
#                       build/test/examples/drolt_train that exists, as
#                       scripts/demo.sh and scripts/test.sh build them)
#   MASTER_PORT         rendezvous port (default: a free one)
#   OMP_NUM_THREADS     threads per process (default: cores / N, at least 1)
#   DROLT_DIST_TIMEOUT  seconds before a missing, dead or hung rank makes the
#                       others fail (the trainer's default applies when unset)
# Rank 0 prints as usual; the others' lines are prefixed with [rank r]. When a
# rank fails, the others are stopped and the script exits with its status.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ || "$1" -lt 1 ]]; then
  echo "usage: $0 N [trainer args...]   (N >= 1 processes)" >&2
  exit 2
fi
n=$1
shift

exe=${DROLT_TRAIN:-}
if [[ -z "$exe" ]]; then
  for c in "$root/build/demo/examples/drolt_train" "$root/build/test/examples/drolt_train"; do
    if [[ -x "$c" ]]; then exe=$c; break; fi
  done
fi
if [[ -z "$exe" || ! -x "$exe" ]]; then
  if [[ -n "${DROLT_TRAIN:-}" ]]; then
    echo "launch-local: DROLT_TRAIN=$DROLT_TRAIN: expected an executable trainer binary, got none there" >&2
  else
    echo "launch-local: no trainer binary: expected build/demo/examples/drolt_train or build/test/examples/drolt_train (run scripts/demo.sh or scripts/test.sh, or set DROLT_TRAIN)" >&2
  fi
  exit 2
fi

if [[ -z "${MASTER_PORT:-}" ]]; then
  # A port the kernel hands out as free (tiny race until rank 0 binds it).
  MASTER_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
                echo $((29500 + RANDOM % 2000)))
fi
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
  cores=$(nproc 2>/dev/null || echo 1)
  OMP_NUM_THREADS=$((cores / n))
  ((OMP_NUM_THREADS >= 1)) || OMP_NUM_THREADS=1
fi
export MASTER_ADDR=127.0.0.1 MASTER_PORT WORLD_SIZE=$n OMP_NUM_THREADS

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ((r = 0; r < n; r++)); do
  if ((r == 0)); then
    RANK=0 LOCAL_RANK=0 "$exe" "$@" &
  else
    RANK=$r LOCAL_RANK=$r "$exe" "$@" > >(sed -u "s/^/[rank $r] /") 2>&1 &
  fi
  pids+=($!)
done

status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  set +e
  wait -n -p done_pid "${running[@]}"
  rc=$?
  set -e
  still=()
  for p in "${running[@]}"; do [[ "$p" == "${done_pid:-}" ]] || still+=("$p"); done
  running=("${still[@]}")
  if ((rc != 0)); then
    echo "launch-local: a rank exited with status $rc; stopping the others" >&2
    status=$rc
    break
  fi
done
cleanup
wait 2>/dev/null || true
trap - EXIT
exit "$status"
