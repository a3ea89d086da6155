// libFuzzer target for the IDX reader: any byte string, plain or gzip (zlib
// detects the gzip magic itself), must yield a tensor or a c10::Error, never a
// crash, a sanitizer report or an unbounded allocation.
#include <cstddef>
#include <cstdint>
#include <string>

#include "drolt/data/idx.hpp"
#include "input_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz_input_path("idx");
  if (!write_fuzz_input(path, data, size)) return 0;
  try {
    const torch::Tensor images = drolt::data::read_idx_images(path);
    // A successful read must have exactly the declared shape and be fully readable.
    if (images.numel() > 0) (void)images.sum().item<int64_t>();
  } catch (const c10::Error&) {
  }
  try {
    const torch::Tensor labels = drolt::data::read_idx_labels(path);
    if (labels.numel() > 0) (void)labels.max().item<int64_t>();
  } catch (const c10::Error&) {
  }
  return 0;
}
