#!/usr/bin/env bash
# Fills .gpu-deps/ (ignored by git) with what scripts/gpu-check.sh needs and a
# GPU machine without a package manager or network lacks: Catch2 v2 (headers and
# CMake package), Google Benchmark (headers, libbenchmark.so, libbenchmark_main.a,
# CMake package) and zlib's headers, all copied from this Debian 12 machine's
# packages (catch2, libbenchmark-dev, zlib1g-dev). The layout is a CMake prefix:
# pass .gpu-deps in CMAKE_PREFIX_PATH (gpu-check.sh does).
#
#   scripts/gpu-deps.sh [DEST]      # default DEST: .gpu-deps in the repository root
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.gpu-deps}
arch_lib=/usr/lib/x86_64-linux-gnu

need() {
  [ -e "$1" ] || { echo "gpu-deps: missing $1 (install the Debian package $2)" >&2; exit 1; }
}
need /usr/include/catch2/catch.hpp catch2
need /usr/lib/cmake/Catch2/Catch2Config.cmake catch2
need /usr/lib/libCatch2WithMain.a catch2
need /usr/include/benchmark/benchmark.h libbenchmark-dev
need "$arch_lib/cmake/benchmark/benchmarkConfig.cmake" libbenchmark-dev
need "$arch_lib/libbenchmark.so.1.7.1" libbenchmark1debian
need /usr/include/zlib.h zlib1g-dev
need /usr/include/zconf.h zlib1g-dev

rm -rf "$dest"
mkdir -p "$dest/include" "$dest/lib/cmake" "$dest/lib/x86_64-linux-gnu/cmake" "$dest/zlib/include" \
  "$dest/zlib/lib"

# Catch2 v2: header-only; its config computes the prefix from its own location.
cp -r /usr/include/catch2 "$dest/include/"
cp -r /usr/lib/cmake/Catch2 "$dest/lib/cmake/"
cp /usr/lib/libCatch2WithMain.a "$dest/lib/"  # its config checks that the file exists

# Google Benchmark 1.7.1: the imported targets point at
# <prefix>/lib/x86_64-linux-gnu/libbenchmark.so.1.7.1 and libbenchmark_main.a.
cp -r /usr/include/benchmark "$dest/include/"
cp -r "$arch_lib/cmake/benchmark" "$dest/lib/x86_64-linux-gnu/cmake/"
# Real files, no links (the device tool does not carry links): the imported
# location and the SONAME the executable asks for at run time.
cp -L "$arch_lib/libbenchmark.so.1.7.1" "$dest/lib/x86_64-linux-gnu/libbenchmark.so.1.7.1"
cp -L "$arch_lib/libbenchmark.so.1.7.1" "$dest/lib/x86_64-linux-gnu/libbenchmark.so.1debian"
cp -L "$arch_lib/libbenchmark_main.a" "$dest/lib/x86_64-linux-gnu/"

# zlib headers and the link-time name; the run time libz.so.1 is on every system.
# A prefix of its own, used only where the machine has no zlib.h.
cp /usr/include/zlib.h /usr/include/zconf.h "$dest/zlib/include/"
cp -L "$arch_lib/libz.so" "$dest/zlib/lib/libz.so"

# Fashion-MNIST (Debian's dataset-fashion-mnist), if installed: gpu-check.sh runs the
# demo trainer on the GPU with it.
fmnist=/usr/share/datasets/fashion-mnist
if [ -e "$fmnist/train-images-idx3-ubyte.gz" ]; then
  mkdir -p "$dest/fashion-mnist"
  cp "$fmnist"/*-ubyte.gz "$dest/fashion-mnist/"
else
  echo "gpu-deps: no $fmnist (Debian package dataset-fashion-mnist): the GPU trainer run will be skipped" >&2
fi

{
  echo "Filled by scripts/gpu-deps.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) from:"
  dpkg-query -W -f='  ${Package} ${Version}\n' catch2 libbenchmark-dev libbenchmark1debian zlib1g-dev dataset-fashion-mnist \
    2>/dev/null || true
} >"$dest/SOURCES.txt"
echo "gpu-deps: $(du -sh "$dest" | cut -f1) in $dest"
