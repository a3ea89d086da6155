#!/usr/bin/env bash
# The README's main command: installs dependencies, builds the example trainer
# against Debian's LibTorch and runs the demo preset (CE, cRT and DRO-LT with
# learned radii on Fashion-MNIST-LT, from Debian's dataset-fashion-mnist).
# Extra arguments go to drolt_train, e.g. `scripts/demo.sh --out-dir out/demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/lib/configure.sh
build=${BUILD_DIR:-build/demo}
BUILD_TYPE=Release drolt_configure_debian "$build" -DDROLT_BUILD_TESTS=OFF -DDROLT_BUILD_EXAMPLES=ON
cmake --build "$build" -j "${JOBS:-2}" --target drolt_train
exec "$build/examples/drolt_train" --preset demo "$@"
