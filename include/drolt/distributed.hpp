#pragma once
// drolt::dist: the centroid bank, gradients and parameters across processes,
// over a c10d process group (LibTorch's own distributed engine: Gloo on CPU,
// NCCL on GPU). docs/math.md, "The centroid bank": every process of a distributed run must hold
// the same centroids, those of one process that saw all the data, so the bank's
// per-class float64 sums and counts are all-reduced before the means are taken.
//
//   auto group = drolt::dist::make_group(drolt::dist::GroupOptions::from_env());
//   // NCCL on a CUDA build with a GPU (model, bank and loss on group.device), else Gloo
//   drolt::dist::broadcast_parameters(*model, group.pg());      // same start everywhere
//   ...each epoch: bank->clear_sums(); bank->accumulate(z, y) over this rank's shard;
//   drolt::dist::finalize(bank, group.pg());                    // global centroids
//   ...each step: loss.backward(); drolt::dist::allreduce_gradients(params, group.pg());
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
//
// The parts: drolt/distributed/config.hpp (the build-feature macros),
// drolt/distributed/group.hpp (process groups) and
// drolt/distributed/collectives.hpp (the collectives); this header includes all three.
#include "drolt/distributed/collectives.hpp"
#include "drolt/distributed/config.hpp"
#include "drolt/distributed/group.hpp"
