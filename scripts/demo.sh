#!/usr/bin/env bash
# The README's main command: installs dependencies, builds the example trainer
# against Debian's LibTorch and runs the demo preset (CE, cRT and DRO-LT with
# learned radii on Fashion-MNIST-LT, from Debian's dataset-fashion-mnist).
# Extra arguments go to drolt_train, e.g. `scripts/demo.sh --out-dir out/demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}  # cache hits across clones
build=${BUILD_DIR:-build/demo}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTorch_DIR=/usr/lib/x86_64-linux-gnu/cmake/Torch \
  -DDROLT_BUILD_TESTS=OFF -DDROLT_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" -j "${JOBS:-2}" --target drolt_train
exec "$build/examples/drolt_train" --preset demo "$@"
