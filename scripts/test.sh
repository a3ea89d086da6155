#!/usr/bin/env bash
# The README's test command: installs dependencies, builds drolt's tests against
# Debian's LibTorch with warnings as errors, and runs them with CTest; then
# builds the Python package (python/) against Debian's python3-torch and runs
# its pytest suite.
#   BUILD_DIR (default build/test)  extra CMake args in DROLT_CMAKE_ARGS
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/lib/configure.sh
build=${BUILD_DIR:-build/test}
# shellcheck disable=SC2086  # DROLT_CMAKE_ARGS is a list of arguments
drolt_configure_debian "$build" -DDROLT_BUILD_TESTS=ON -DDROLT_BUILD_EXAMPLES=ON \
  -DDROLT_WARNINGS_AS_ERRORS=ON ${DROLT_CMAKE_ARGS:-}
cmake --build "$build" -j "${JOBS:-2}"
ctest --test-dir "$build" --output-on-failure -j "${JOBS:-2}" ${CTEST_ARGS:-}
# The Python package against Debian's python3-torch, installed the way
# docs/python.md tells a Debian user to: a venv that sees the system packages.
drolt_python_tests "$build/python-venv" "${PYTHON:-/usr/bin/python3}"
