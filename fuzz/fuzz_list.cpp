// libFuzzer target for the ImageNet-LT / Places-LT list-file reader: an
// ImageList whose every label is in [0, num_classes), or a c10::Error, never a
// crash, a silently coerced label or an unbounded allocation.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "drolt/data/image_list.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/drolt_fuzz_list_" + std::to_string(::getpid()) + ".txt";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  for (const int64_t num_classes : {0, 10}) {
    try {
      const auto list = drolt::data::read_image_list(path, "/root", num_classes);
      if (list.paths.empty() || list.paths.size() != list.labels.size()) __builtin_trap();
      if (num_classes > 0 && list.num_classes != num_classes) __builtin_trap();
      for (const int64_t y : list.labels) {
        if (y < 0 || y >= list.num_classes) __builtin_trap();
      }
    } catch (const c10::Error&) {
    }
  }
  return 0;
}
