// libFuzzer target for the IDX reader: any byte string, plain or gzip (zlib
// detects the gzip magic itself), must yield a tensor or a c10::Error, never a
// crash, a sanitizer report or an unbounded allocation.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "drolt/data/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The readers take a path: write the input to a per-process file.
  static const std::string path = "/tmp/drolt_fuzz_idx_" + std::to_string(::getpid()) + ".bin";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
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
