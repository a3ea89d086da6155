// libFuzzer target for the iNaturalist JSON reader: an ImageList with labels
// in [0, num_classes) and one class name per class, or a c10::Error, never a
// crash, an escaped nlohmann exception or a silently coerced id.
#include <cstddef>
#include <cstdint>
#include <string>

#include "drolt/data/inaturalist.hpp"
#include "input_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz_input_path("inat");
  if (!write_fuzz_input(path, data, size)) return 0;
  try {
    const auto list = drolt::data::read_inaturalist(path, "/root");
    if (list.paths.empty() || list.paths.size() != list.labels.size()) __builtin_trap();
    if (static_cast<int64_t>(list.class_names.size()) != list.num_classes) __builtin_trap();
    for (const int64_t y : list.labels) {
      if (y < 0 || y >= list.num_classes) __builtin_trap();
    }
  } catch (const c10::Error&) {
  }
  return 0;
}
