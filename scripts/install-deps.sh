#!/usr/bin/env bash
# Installs what drolt's builds, tests, demo and benchmarks need on Debian 12.
#   scripts/install-deps.sh            Debian packages (LibTorch 1.13 CPU, Catch2, python3-torch, ...)
#   scripts/install-deps.sh --pip-torch  also PyPI's torch wheel (LibTorch 2.x with CUDA)
#                                         into $DROLT_TORCH_VENV (default /opt/drolt-torch),
#                                         with pytest
set -euo pipefail
want_pip=0
[[ "${1:-}" == "--pip-torch" ]] && want_pip=1

pkgs=(build-essential cmake ninja-build ccache pkg-config
      libtorch-dev libgloo-dev libopenblas0-pthread zlib1g-dev
      catch2 libbenchmark-dev libcli11-dev nlohmann-json3-dev gnuplot-nox
      libturbojpeg0-dev libpng-dev
      dataset-fashion-mnist
      python3-torch python3-pytest python3-venv python3-dev python3-wheel)  # python/
if [[ $want_pip == 1 ]]; then pkgs+=(clang libclang-rt-14-dev python3-venv); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $want_pip == 1 ]]; then
  venv=${DROLT_TORCH_VENV:-/opt/drolt-torch}
  torch_version=${DROLT_PIP_TORCH_VERSION:-2.11.0}
  if ! "$venv/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.startswith('$torch_version') else 1)" 2>/dev/null; then
    echo "install-deps: installing torch==$torch_version from PyPI into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "torch==$torch_version"
  fi
  # The Python package (python/, built with --no-build-isolation: setuptools'
  # bdist_wheel needs wheel) and its tests under that torch.
  "$venv/bin/python" -c "import pytest, wheel" 2>/dev/null ||
    "$venv/bin/pip" install -q --disable-pip-version-check pytest wheel
fi
