// libFuzzer target for the CIFAR binary reader (CIFAR-10 and CIFAR-100 record
// layouts, plain or gzip): a tensor or a c10::Error, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "drolt/data/cifar.hpp"
#include "input_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz_input_path("cifar");
  if (!write_fuzz_input(path, data, size)) return 0;
  for (const auto variant :
       {drolt::data::CifarVariant::cifar10, drolt::data::CifarVariant::cifar100_fine,
        drolt::data::CifarVariant::cifar100_coarse}) {
    try {
      const auto batch = drolt::data::read_cifar_file(path, variant);
      // Labels must be in range whenever a read succeeds.
      const int64_t hi = batch.labels.max().item<int64_t>();
      if (hi >= drolt::data::cifar_num_classes(variant)) __builtin_trap();
    } catch (const c10::Error&) {
    }
  }
  return 0;
}
