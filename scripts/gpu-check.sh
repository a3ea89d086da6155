#!/usr/bin/env bash
# GPU check of the fused CUDA path, for a machine with one NVIDIA GPU, CUDA 13,
# CMake, ninja and Python's torch (2.11, CUDA) but no package manager and no
# network. Catch2 and Google Benchmark come from .gpu-deps/ (fill it beforehand,
# on a Debian 12 machine, with scripts/gpu-deps.sh, and carry it along).
#
#   scripts/gpu-check.sh OUTDIR
#
# Steps, each with its own time limit, all within DROLT_GPU_CHECK_BUDGET seconds
# (default 470, under 8 minutes), most important first:
#   1. configure + build drolt_tests, drolt_bench and drolt_train against that torch
#      (TORCH_CUDA_ARCH_LIST = the GPU's compute capability)
#   2. the CUDA tests: drolt_tests "[cuda]" (fused vs reference on fresh random
#      inputs, all dtypes, odd shapes, a feature equal to a centroid, ...)
#   3. the CUDA benchmarks (5 repetitions of >= 0.5 s, medians in the JSON)
#   4. the demo trainer with --device cuda on Fashion-MNIST-LT, if .gpu-deps has it
#   5. compute-sanitizer memcheck and racecheck on the small CUDA tests, if present
# OUTDIR receives summary.txt, env.txt, build.txt, tests-cuda.txt, bench-cuda.txt,
# bench-cuda.json, train-cuda.txt and sanitizer.txt (8 files). Exit status 0
# only when every step passed and the CUDA tests really ran on a GPU.
#
# Environment: PYTHON (default python3), CUDACXX (default nvcc on PATH, else
# /usr/local/cuda/bin/nvcc), TORCH_CUDA_ARCH_LIST, JOBS (default nproc),
# BUILD_DIR (default build/gpu), DROLT_GPU_CHECK_BUDGET, DROLT_GPU_CHECK_BUILD_LIMIT
# (seconds for the build step, default 300).
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$root"

t0=$SECONDS
budget=${DROLT_GPU_CHECK_BUDGET:-470}
build=${BUILD_DIR:-build/gpu}
summary=$out/summary.txt
: >"$summary"
status=0
say() { echo "[gpu-check +$((SECONDS - t0))s] $*" | tee -a "$summary"; }

# run_step NAME LIMIT LOG CMD...: runs CMD with a time limit (never past the budget).
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((budget - (SECONDS - t0)))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -le 5 ]; then
    say "$name: NOT RUN (time budget spent)"
    status=1
    return 1
  fi
  echo "\$ $*" >>"$log"
  local s=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local verdict=ok
  [ $rc -eq 0 ] || verdict=FAILED
  [ $rc -eq 124 ] && verdict="TIMED OUT"
  say "$name: $verdict (rc=$rc, $((SECONDS - s))s of ${limit}s, log $(basename "$log"))"
  [ $rc -eq 0 ] || status=1
  return $rc
}

# ------------------------------------------------------------------ environment
py=${PYTHON:-python3}
source scripts/lib/configure.sh
nvcc=$(drolt_nvcc)
torch_cmake=$(PYTHON=$py drolt_pip_torch_cmake) || {
  say "cannot import torch with $py (set PYTHON)"
  exit 1
}
torch_root=${torch_cmake%%;*}
cap=$("$py" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}.{n}")' \
  2>/dev/null) || cap=""
arch_list=${TORCH_CUDA_ARCH_LIST:-${cap:-8.0;9.0+PTX}}
jobs=${JOBS:-$(nproc)}
deps=$root/.gpu-deps
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)  cpus: $(nproc)"
  echo "git: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown) $(git -C "$root" status --porcelain 2>/dev/null | wc -l) changed files"
  echo "python: $py  torch: $("$py" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>&1)"
  echo "nvcc: $nvcc"
  "$nvcc" --version 2>&1 | tail -2
  echo "cmake: $(cmake --version | head -1)  ninja: $(ninja --version 2>/dev/null || echo none)"
  echo "compute capability: ${cap:-unknown}  TORCH_CUDA_ARCH_LIST: $arch_list"
  echo "compute-sanitizer: $(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo none)"
  echo
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
} >"$out/env.txt" 2>&1
say "torch at $torch_root; GPU capability ${cap:-none}; arch list $arch_list; $jobs jobs"
[ -d "$deps/lib/cmake/Catch2" ] || say "warning: $deps has no Catch2 (run scripts/gpu-deps.sh and carry .gpu-deps)"

# ------------------------------------------------------------------ 1. build
# The LibTorch root first, so Torch's find_library() cannot pick a system libc10.
prefix="$torch_cmake;$deps"
[ -e /usr/include/zlib.h ] || prefix="$prefix;$deps/zlib"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
run_step "configure" 120 "$out/build.txt" cmake -S . -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DDROLT_WITH_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DTORCH_CUDA_ARCH_LIST="$arch_list" \
  -DDROLT_BUILD_TESTS=ON -DDROLT_BUILD_EXAMPLES=ON -DDROLT_BUILD_BENCH=ON &&
  run_step "build" "${DROLT_GPU_CHECK_BUILD_LIMIT:-300}" "$out/build.txt" cmake --build "$build" -j "$jobs" --target drolt_tests drolt_bench drolt_train
built=$?
tests=$build/tests/drolt_tests
bench=$build/bench/drolt_bench
if [ $built -ne 0 ] || [ ! -x "$tests" ]; then
  say "build failed: see build.txt"
  exit 1
fi

# ------------------------------------------------------------------ 2. tests
run_step "CUDA tests" 120 "$out/tests-cuda.txt" "$tests" "[cuda]" --durations yes
if grep -q "CUDA test skipped" "$out/tests-cuda.txt"; then
  say "the CUDA tests were SKIPPED: no usable GPU (or drolt::cuda not linked)"
  status=1
fi

# ------------------------------------------------------------------ 3. benchmarks
if [ -x "$bench" ]; then
  run_step "CUDA benchmarks" 150 "$out/bench-cuda.txt" "$bench" --benchmark_filter=/cuda \
    --benchmark_min_time=0.5 --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/bench-cuda.json" --benchmark_out_format=json
fi

# ------------------------------------------------------------------ 4. trainer on the GPU
train=$build/examples/drolt_train
if [ -x "$train" ] && [ -e "$deps/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
  run_step "demo trainer --device cuda" 120 "$out/train-cuda.txt" "$train" --preset demo \
    --device cuda --data "$deps/fashion-mnist" --no-plots --out "$build/demo-cuda"
else
  say "demo trainer --device cuda: skipped (no drolt_train or no $deps/fashion-mnist)"
fi

# ------------------------------------------------------------------ 5. compute-sanitizer
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$san" ]; then
  for tool in memcheck racecheck; do
    run_step "compute-sanitizer $tool" 90 "$out/sanitizer.txt" "$san" --tool "$tool" \
      --error-exitcode 3 "$tests" "[cuda][small]"
  done
else
  say "compute-sanitizer: not found, skipped"
fi

say "done in $((SECONDS - t0))s: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
