# Shared by scripts/*.sh and .ci/run (source it; it defines functions and
# exports the ccache settings). Build-directory layout: everything under
# build/<purpose> (build/test, build/demo, build/reproduce, build/gpu,
# build/fuzz, build/ci-*), which .gitignore covers.
#
#   drolt_configure_debian DIR [CMAKE ARGS...]  Debian's LibTorch (CPU), Ninja, Release
#   drolt_pip_torch_cmake [VENV]                prints the CMAKE_PREFIX_PATH entries of
#                                               the LibTorch inside a pip torch (root first)
#   drolt_configure_pip DIR [CMAKE ARGS...]     that LibTorch, with CUDA and nvcc
#   drolt_python_tests VENV [PYTHON]            installs python/ into VENV (created from
#                                               PYTHON with the system's packages when
#                                               missing) and runs its pytest suite

# Cache hits across clones and worktrees: paths relative to the checkout.
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}

DROLT_DEBIAN_TORCH_DIR=${DROLT_DEBIAN_TORCH_DIR:-/usr/lib/x86_64-linux-gnu/cmake/Torch}

drolt_configure_debian() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
    -DTorch_DIR="$DROLT_DEBIAN_TORCH_DIR" "$@" >/dev/null
}

drolt_pip_torch_cmake() {
  local venv=${1:-${DROLT_TORCH_VENV:-/opt/drolt-torch}}
  local py=${PYTHON:-$venv/bin/python}
  local root
  root=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) || {
    echo "drolt: cannot import torch with $py (set DROLT_TORCH_VENV or PYTHON)" >&2
    return 1
  }
  # The LibTorch root first: Torch's find_library() would otherwise pick Debian's libc10.
  echo "$root;$root/share/cmake"
}

drolt_nvcc() { echo "${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"; }

drolt_configure_pip() {
  local dir=$1
  shift
  local prefix
  prefix=$(drolt_pip_torch_cmake) || return 1
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
    -DCMAKE_PREFIX_PATH="$prefix${DROLT_EXTRA_PREFIX:+;$DROLT_EXTRA_PREFIX}" \
    -DDROLT_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$(drolt_nvcc)" "$@" >/dev/null
}

drolt_python_tests() {
  local venv py=${2:-}
  venv=$(realpath -m "$1")  # absolute: the tests run from python/tests
  if [[ ! -x "$venv/bin/python" ]]; then
    "$py" -m venv --system-site-packages "$venv"
  fi
  local t0=$SECONDS
  # pip builds in the tree (python/build): objects of another torch must not be
  # reused, nor a stale egg-info's file list.
  rm -rf python/build python/drolt.egg-info
  # --no-build-isolation: build against the torch already in the environment.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation ./python || return 1
  echo "drolt: python package built and installed in $((SECONDS - t0)) s"
  # From python/tests, so that `import drolt` is the installed package. pytest
  # exits 5 when it collected no test at all: that is a failure here.
  local rc=0
  (cd python/tests && "$venv/bin/python" -m pytest -q -ra -p no:cacheprovider) || rc=$?
  if [[ $rc == 5 ]]; then echo "drolt: pytest collected no tests in python/tests" >&2; fi
  echo "drolt: python tests took $((SECONDS - t0)) s in all (rc $rc)"
  return "$rc"
}
