// libFuzzer target for the image decoders (JPEG through libjpeg-turbo, PNG
// through libpng): any byte string must yield an image of the promised shape
// or a c10::Error, never a crash, a sanitizer report, a longjmp past C++
// objects or an unbounded allocation.
#include <cstddef>
#include <cstdint>

#include "drolt/data/image_codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Small enough that a header declaring a huge image fails the size check
  // instead of exhausting the fuzzer's memory limit.
  const auto base = drolt::data::ImageDecodeOptions().max_pixels(int64_t{1} << 22);
  for (const int64_t channels : {0, 1, 3}) {
    for (const int64_t min_size : {0, 7}) {
      try {
        const torch::Tensor img = drolt::data::decode_image(
            data, size, drolt::data::ImageDecodeOptions(base).channels(channels).min_size(min_size),
            "fuzz input");
        // A decoded image has the promised layout and is fully readable.
        if (img.dim() != 3 || img.size(0) < 1 || img.size(1) < 1) __builtin_trap();
        if (channels != 0 && img.size(2) != channels) __builtin_trap();
        if (img.size(2) != 1 && img.size(2) != 3) __builtin_trap();
        if (img.size(0) * img.size(1) > (int64_t{1} << 22)) __builtin_trap();
        (void)img.sum().item<int64_t>();
      } catch (const c10::Error&) {
      }
    }
  }
  return 0;
}
