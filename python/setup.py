"""Builds drolt's operators (csrc/drolt_ops.cpp over ../include) with
torch.utils.cpp_extension, against the torch of the environment:

    pip install --no-build-isolation ./python

CUDA: the fused kernels (../include/drolt/cuda/fused_kernels.cu, through
csrc/cuda_kernels.cu) are compiled
when torch is a CUDA build and nvcc is found (CUDA_HOME); DROLT_CUDA=0 or 1
forces the choice. TORCH_CUDA_ARCH_LIST defaults to drolt's "8.0;9.0+PTX".
"""
import os

from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
include = os.path.normpath(os.path.join(here, "..", "include"))
if not os.path.isfile(os.path.join(include, "drolt", "loss.hpp")):
    raise RuntimeError(
        "drolt: expected the C++ headers at %s: install from a checkout of the "
        "repository (pip install --no-build-isolation ./python)" % include)

want = os.environ.get("DROLT_CUDA", "auto")
try:
    import torch  # noqa: E402
except ImportError as e:
    raise RuntimeError("drolt: building the package needs the environment's torch; install "
                       "it with `pip install --no-build-isolation ./python`") from e
from torch.utils import cpp_extension  # noqa: E402

cuda = (want == "1" or (want == "auto" and torch.version.cuda is not None
                        and cpp_extension.CUDA_HOME is not None))
sources = [os.path.join("csrc", "drolt_ops.cpp")]
cxx = ["-std=c++17", "-O3"]
if cuda:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    sources.append(os.path.join("csrc", "cuda_kernels.cu"))  # includes drolt/cuda/fused_kernels.cu
    ext = cpp_extension.CUDAExtension(
        "drolt._C", sources, include_dirs=[include],
        define_macros=[("DROLT_HAS_CUDA_KERNELS", "1")],
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17"]})
else:
    ext = cpp_extension.CppExtension("drolt._C", sources, include_dirs=[include],
                                     extra_compile_args={"cxx": cxx})

setup(ext_modules=[ext],
      cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)})
