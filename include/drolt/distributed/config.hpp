#pragma once
// drolt::dist's build features: which parts of LibTorch's c10d this build can
// use, as macros (drolt/distributed.hpp is the umbrella of drolt::dist).
//
// Availability. The collectives take any c10d::ProcessGroup (1.13: the group
// itself; 2.x: the ProcessGroup whose collectives dispatch to the Backend
// registered for the tensors' device, e.g. ProcessGroupNCCL for CUDA tensors;
// as_process_group() wraps a bare Backend). Group creation:
//   Gloo (CPU): LibTorch built with Gloo (USE_C10D_GLOO, set by Torch's CMake
//     targets) plus gloo's headers, which only ProcessGroupGloo.hpp's
//     declarations need (Debian: libgloo-dev; see docs/distributed.md for why
//     Debian's headers also serve the PyPI LibTorch 2.x);
//   NCCL (GPU): LibTorch 2.x built with NCCL (USE_C10D_NCCL) plus nccl.h
//     (PyPI: the nvidia-nccl package; drolt's CMake adds it).
// DROLT_HAS_DISTRIBUTED says whether drolt::dist is compiled at all (LibTorch
// 1.13 with Gloo, or any 2.x with c10d); DROLT_HAS_GLOO and DROLT_HAS_NCCL say
// which backends make_gloo_group / make_nccl_group can build (without one, the
// function still exists and throws a c10::Error naming what is missing).
// Define DROLT_HAS_DISTRIBUTED=0 to turn it all off. Everything else in drolt
// builds the same without it.
#include <torch/torch.h>
#include <torch/version.h>

#if defined(__has_include)
#define DROLT_DETAIL_HAS_INCLUDE(x) __has_include(x)
#else
#define DROLT_DETAIL_HAS_INCLUDE(x) 0
#endif

#if TORCH_VERSION_MAJOR >= 2
#define DROLT_DIST_C10D_V2 1  // ProcessGroup dispatching to Backends
#else
#define DROLT_DIST_C10D_V2 0
#endif

#ifndef DROLT_HAS_GLOO
#if DROLT_DETAIL_HAS_INCLUDE(<gloo/algorithm.h>) && \
    DROLT_DETAIL_HAS_INCLUDE(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>) && \
    defined(USE_C10D_GLOO) && \
    ((TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR == 13) || TORCH_VERSION_MAJOR >= 2)
#define DROLT_HAS_GLOO 1
#else
#define DROLT_HAS_GLOO 0
#endif
#endif

#ifndef DROLT_HAS_NCCL
#if DROLT_DIST_C10D_V2 && defined(USE_C10D_NCCL) && DROLT_DETAIL_HAS_INCLUDE(<nccl.h>) && \
    DROLT_DETAIL_HAS_INCLUDE(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#define DROLT_HAS_NCCL 1
#else
#define DROLT_HAS_NCCL 0
#endif
#endif

#ifndef DROLT_HAS_DISTRIBUTED
// 1.13's c10d is used only with Gloo (the tested combination); every 2.x
// LibTorch ships c10d's ProcessGroup, Backend and TCPStore headers.
#if (DROLT_DIST_C10D_V2 && defined(USE_DISTRIBUTED)) || \
    (TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR == 13 && DROLT_HAS_GLOO)
#define DROLT_HAS_DISTRIBUTED 1
#else
#define DROLT_HAS_DISTRIBUTED 0
#endif
#endif

#if !DROLT_HAS_DISTRIBUTED
#undef DROLT_HAS_GLOO
#define DROLT_HAS_GLOO 0
#undef DROLT_HAS_NCCL
#define DROLT_HAS_NCCL 0
#endif
