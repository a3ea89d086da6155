// libFuzzer target for the ImageNet-LT / Places-LT list-file reader: an
// ImageList whose every label is in [0, num_classes), or a c10::Error, never a
// crash, a silently coerced label or an unbounded allocation.
#include <cstddef>
#include <cstdint>
#include <string>

#include "drolt/data/image_list.hpp"
#include "input_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz_input_path("list");
  if (!write_fuzz_input(path, data, size)) return 0;
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
