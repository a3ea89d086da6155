// The fused CUDA kernels of the header library, compiled into the package when
// torch is a CUDA build and nvcc is found (python/setup.py): the file
// registers them with the loss at load time, as linking drolt::cuda does in CMake.
#include "drolt/cuda/fused_kernels.cu"
