# drolt_enable_cuda(): turns on the CUDA language with architectures that
# LibTorch's CMake and current nvcc agree on. Call it before find_package(Torch):
# Torch's CMake (Caffe2/public/cuda.cmake) turns CMAKE_CUDA_ARCHITECTURES OFF and
# adds -gencode flags from TORCH_CUDA_ARCH_LIST to CMAKE_CUDA_FLAGS instead
# (autodetected, with architectures CUDA 13 rejects, when unset), so the list is
# chosen there. Values the project or the environment set first are kept.
# drolt's own build and droltConfig.cmake (for find_package(drolt COMPONENTS
# cuda)) both use it. A macro: the variables land in the caller's scope.
macro(drolt_enable_cuda)
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    # A100, H100/H200, plus PTX for newer cards.
    set(CMAKE_CUDA_ARCHITECTURES 80-real 90-real 90-virtual)
  endif()
  enable_language(CUDA)
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "8.0;9.0+PTX")
  endif()
endmacro()
