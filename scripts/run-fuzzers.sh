#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (AddressSanitizer +
# UndefinedBehaviorSanitizer) against a LibTorch install and runs each for a
# bounded time. Exits non-zero if a target fails to build or finds a crash,
# a sanitizer error, a leak, a timeout or an out-of-memory input.
#
#   scripts/run-fuzzers.sh [SECONDS]         (default 60 per target)
#
# Environment:
#   CXX               clang++ with libFuzzer (default: clang++, Debian's clang 14)
#   DROLT_FUZZ_BUILD  build/output folder (default: build/fuzz)
#   TORCH_PREFIX      LibTorch headers/libraries prefix (default: Debian's /usr);
#                     for a pip/tarball LibTorch give the folder holding include/ and lib/
#   FUZZ_JOBS         compile jobs (default 2)
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS]  (SECONDS: positive integer, time per target)" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cxx="${CXX:-clang++}"
out="${DROLT_FUZZ_BUILD:-$root/build/fuzz}"
# The ccache settings of every build script (no CMake here: clang++ directly).
CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root}
source "$root/scripts/lib/configure.sh"
prefix="${TORCH_PREFIX:-/usr}"
jobs="${FUZZ_JOBS:-2}"
mkdir -p "$out"

if [ "$prefix" = /usr ]; then
  libdir=/usr/lib/x86_64-linux-gnu
  [ -e "$libdir/libtorch_cpu.so" ] || libdir=/usr/lib
else
  libdir="$prefix/lib"
fi
# /usr/include is already a system directory; naming it again with -isystem
# reorders it before the C++ headers and breaks their #include_next.
includes=(-isystem "$prefix/include/torch/csrc/api/include")
[ "$prefix" = /usr ] || includes=(-isystem "$prefix/include" "${includes[@]}")
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(ccache)

targets=(idx cifar checkpoint image list inaturalist)

build() {
  local name="$1"
  local extra_libs=()
  # The image decoders: Debian's libturbojpeg0-dev and libpng-dev.
  [ "$name" = image ] && extra_libs=(-lturbojpeg -lpng16)
  echo "== building fuzz_$name"
  # -O1 keeps the sanitizers' reports readable while running fast enough;
  # -D_GLIBCXX_USE_CXX11_ABI=1 matches Debian's and the cxx11-ABI LibTorch builds.
  "${launcher[@]}" "$cxx" -std=c++17 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Wno-unused-parameter \
    -I "$root/include" "${includes[@]}" \
    "$root/fuzz/fuzz_$name.cpp" -o "$out/fuzz_$name" \
    -L "$libdir" -Wl,-rpath,"$libdir" -ltorch -ltorch_cpu -lc10 -lz "${extra_libs[@]}"
}

# Compile in parallel (the torch headers are slow), then run one at a time.
pids=()
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  build "$t" > "$out/build_$t.log" 2>&1 &
  pids+=("$!")
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "build of fuzz_${targets[$i]} failed:" >&2
    cat "$out/build_${targets[$i]}.log" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit 1

# LibTorch keeps some allocations alive until exit on purpose; report only real
# leaks from the readers (a leak check after every input would flag those).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

for t in "${targets[@]}"; do
  corpus="$out/corpus_$t"
  artifacts="$out/artifacts_$t/"
  mkdir -p "$corpus" "$artifacts"
  echo "== running fuzz_$t for ${seconds}s"
  # New inputs go to the build folder's corpus; the committed seeds stay read-only.
  if ! "$out/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
      -max_len=16384 -print_final_stats=1 -artifact_prefix="$artifacts" \
      "$corpus" "$root/fuzz/corpus/$t" > "$out/run_$t.log" 2>&1; then
    echo "fuzz_$t FAILED (crash input and log under $artifacts, $out/run_$t.log):" >&2
    tail -n 60 "$out/run_$t.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^Done" "$out/run_$t.log" || true
  fi
done
exit "$status"
