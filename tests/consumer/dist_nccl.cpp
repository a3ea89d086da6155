// An outside program on a CUDA LibTorch: find_package(drolt) must hand it
// nccl.h and libnccl again, so drolt::dist's NCCL groups compile and link here.
#include <drolt/distributed.hpp>

#include <cstdio>

static_assert(DROLT_HAS_NCCL, "find_package(drolt) did not bring NCCL (nccl.h) on a CUDA LibTorch");

int main() {
  if (!torch::cuda::is_available()) {
    std::printf("dist_nccl: NCCL compiled and linked; no CUDA device, no group made\n");
    return 0;
  }
  drolt::dist::GroupOptions o;
  o.port = 0;
  auto g = drolt::dist::make_nccl_group(o);
  auto t = torch::ones({4}, torch::TensorOptions().device(g.device));
  drolt::dist::allreduce_sum_(t, g.pg());
  std::printf("dist_nccl: one-process NCCL group on %s, sum %g\n", g.device.str().c_str(),
              t.sum().item<double>());
  return t.sum().item<double>() == 4.0 ? 0 : 1;
}
