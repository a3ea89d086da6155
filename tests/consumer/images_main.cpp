// An outside program using drolt::images through find_package(drolt COMPONENTS
// images): PNG round trip (lossless) and a JPEG decode at reduced size.
#include <drolt/data/image_codec.hpp>

#include <cstdio>

int main() {
  const torch::Tensor img = torch::randint(0, 256, {48, 64, 3}, torch::kUInt8);
  const auto png = drolt::data::encode_png(img);
  const torch::Tensor back = drolt::data::decode_image(png.data(), png.size());
  const auto jpg = drolt::data::encode_jpeg(img, 90);
  const torch::Tensor small = drolt::data::decode_image(
      jpg.data(), jpg.size(), drolt::data::ImageDecodeOptions().min_size(12));
  const bool ok = torch::equal(back, img) && small.size(0) == 12 && small.size(1) == 16;
  std::printf("consumer_images: PNG %zu bytes, JPEG decoded at %lld x %lld: %s\n", png.size(),
              static_cast<long long>(small.size(1)), static_cast<long long>(small.size(0)),
              ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}
