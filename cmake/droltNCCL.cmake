# NCCL for drolt::dist's NCCL groups (nccl.h and libnccl), used by drolt's own
# build and again by the installed package config. Only a CUDA LibTorch (one
# with the torch_cuda target) has ProcessGroupNCCL; PyPI's torch gets NCCL from
# the nvidia-nccl package, installed next to torch in site-packages.
#
# drolt_find_nccl(<mode>): mode OFF, AUTO (use NCCL when found) or ON (fail
# when not found). Sets DROLT_NCCL_FOUND, DROLT_NCCL_INCLUDE_DIR and
# DROLT_NCCL_LIBRARY in the caller's scope.
function(drolt_find_nccl mode)
  set(DROLT_NCCL_FOUND FALSE PARENT_SCOPE)
  string(TOUPPER "${mode}" mode)
  if(mode STREQUAL "OFF" OR NOT mode)
    return()
  endif()
  if(NOT TARGET torch_cuda)
    if(mode STREQUAL "ON")
      message(FATAL_ERROR "drolt: DROLT_WITH_NCCL=ON needs a CUDA LibTorch (no torch_cuda target)")
    endif()
    return()
  endif()
  set(_hints)
  if(TORCH_INSTALL_PREFIX)
    list(APPEND _hints "${TORCH_INSTALL_PREFIX}/../nvidia/nccl")
  endif()
  foreach(_v NCCL_ROOT NCCL_HOME NCCL_DIR)
    if(DEFINED ENV{${_v}})
      list(APPEND _hints "$ENV{${_v}}")
    endif()
  endforeach()
  find_path(DROLT_NCCL_INCLUDE_DIR nccl.h HINTS ${_hints} PATH_SUFFIXES include
            PATHS /usr/local/cuda /usr)
  # The wheel ships only the versioned name libnccl.so.2.
  find_library(DROLT_NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR HINTS ${_hints} PATH_SUFFIXES lib lib64
               PATHS /usr/local/cuda /usr)
  if(DROLT_NCCL_INCLUDE_DIR AND DROLT_NCCL_LIBRARY)
    set(DROLT_NCCL_FOUND TRUE PARENT_SCOPE)
    set(DROLT_NCCL_INCLUDE_DIR "${DROLT_NCCL_INCLUDE_DIR}" PARENT_SCOPE)
    set(DROLT_NCCL_LIBRARY "${DROLT_NCCL_LIBRARY}" PARENT_SCOPE)
  elseif(mode STREQUAL "ON")
    message(FATAL_ERROR "drolt: DROLT_WITH_NCCL=ON but nccl.h / libnccl were not found "
      "(looked in ${_hints}; set NCCL_ROOT)")
  endif()
endfunction()
