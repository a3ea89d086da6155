#!/usr/bin/env bash
# The README's test command: installs dependencies, builds drolt's tests against
# Debian's LibTorch with warnings as errors, and runs them with CTest.
#   BUILD_DIR (default build/test)  extra CMake args in DROLT_CMAKE_ARGS
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}  # cache hits across clones
build=${BUILD_DIR:-build/test}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} \
  -DTorch_DIR=/usr/lib/x86_64-linux-gnu/cmake/Torch \
  -DDROLT_BUILD_TESTS=ON -DDROLT_BUILD_EXAMPLES=ON -DDROLT_WARNINGS_AS_ERRORS=ON \
  ${DROLT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "${JOBS:-2}"
ctest --test-dir "$build" --output-on-failure -j "${JOBS:-2}" ${CTEST_ARGS:-}
