// drolt::dist over NCCL: a one-process NCCL group on the first GPU runs the
// bank collectives (dist::finalize, dist::ema_update, the collective itself
// runs with one process) and plain all-reduces and barriers on CUDA tensors.
// Without a CUDA device, or in a build without NCCL, each test says so with
// WARN and passes (CI has no GPU: there this file proves the NCCL path
// compiles and links).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <chrono>

#include "drolt/drolt.hpp"

#if DROLT_HAS_NCCL

using Catch::Matchers::Contains;

namespace {

drolt::dist::GroupOptions one_process() {
  drolt::dist::GroupOptions o;
  o.rank = 0;
  o.world_size = 1;
  o.local_rank = 0;
  o.port = 0;
  o.timeout = std::chrono::seconds(60);
  return o;
}

}  // namespace

TEST_CASE("nccl: a one-process NCCL group runs the bank collectives on the GPU", "[cuda][dist]") {
  if (!torch::cuda::is_available()) {
    WARN("NCCL test skipped: no CUDA device");
    return;
  }
  auto g = drolt::dist::make_nccl_group(one_process());
  CHECK(g.backend == "nccl");
  CHECK(g.device == torch::Device(torch::kCUDA, 0));
  CHECK(g.rank() == 0);
  CHECK(g.world_size() == 1);
  auto& pg = g.pg();
  const auto dev = g.device;

  // Plain collectives on CUDA tensors: identities with one rank.
  auto t = torch::arange(5, torch::TensorOptions().dtype(torch::kFloat64).device(dev));
  drolt::dist::allreduce_sum_(t, pg);
  CHECK(torch::equal(t.cpu(), torch::arange(5, torch::kFloat64)));
  auto n = torch::tensor({3, -7}, torch::kLong).to(dev);
  drolt::dist::allreduce_sum_(n, pg);
  CHECK(torch::equal(n.cpu(), torch::tensor({3, -7}, torch::kLong)));
  drolt::dist::barrier(pg);

  auto gen = at::detail::createCPUGenerator(11);
  auto x = torch::randn({64, 5}, gen);
  auto y = torch::randint(0, 3, {64}, gen).to(torch::kLong);

  SECTION("finalize: the centroids of a plain finalize") {
    drolt::CentroidBank bank(4, 5);
    bank->to(dev);
    bank->accumulate(x.to(dev), y.to(dev));
    drolt::dist::finalize(bank, pg);
    drolt::CentroidBank ref(4, 5);
    ref->accumulate(x, y);
    ref->finalize();
    CHECK(bank->centroids().device() == dev);
    CHECK(torch::equal(bank->counts().cpu(), ref->counts()));
    CHECK(torch::equal(bank->valid().cpu(), ref->valid()));
    CHECK_FALSE(bank->valid()[3].item<bool>());
    CHECK(torch::allclose(bank->centroids().cpu(), ref->centroids(), 1e-6, 1e-6));
    CHECK(bank->pending_counts().sum().item<int64_t>() == 0);
  }
  SECTION("ema_update: the EMA of a plain ema_update") {
    drolt::CentroidBank bank(drolt::CentroidBankOptions(4, 5).momentum(0.8));
    drolt::CentroidBank ref(drolt::CentroidBankOptions(4, 5).momentum(0.8));
    bank->to(dev);
    for (int64_t s = 0; s < 64; s += 16) {
      drolt::dist::ema_update(bank, x.slice(0, s, s + 16).to(dev), y.slice(0, s, s + 16).to(dev), pg);
      ref->ema_update(x.slice(0, s, s + 16), y.slice(0, s, s + 16));
    }
    CHECK(torch::equal(bank->counts().cpu(), ref->counts()));
    CHECK(torch::allclose(bank->centroids().cpu(), ref->centroids(), 1e-6, 1e-6));
  }
}

TEST_CASE("nccl: a bad LOCAL_RANK is refused with the number of GPUs", "[cuda][dist]") {
  if (!torch::cuda::is_available()) {
    WARN("NCCL test skipped: no CUDA device");
    return;
  }
  auto o = one_process();
  o.local_rank = 4096;
  CHECK_THROWS_WITH(drolt::dist::make_nccl_group(o), Contains("expected LOCAL_RANK in [0, "));
}

#elif DROLT_HAS_DISTRIBUTED

// The factory exists in every drolt::dist build and says what this one lacks.
TEST_CASE("nccl: without NCCL make_nccl_group names what is missing", "[cuda][dist]") {
  CHECK_THROWS_WITH(drolt::dist::make_nccl_group(drolt::dist::GroupOptions()),
                    Catch::Matchers::Contains("drolt::dist::make_nccl_group: this build has no NCCL"));
}

#endif
