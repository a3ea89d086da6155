#pragma once
/// \file
/// JPEG (libjpeg-turbo's TurboJPEG API) and PNG (libpng) decoding to 8-bit
/// gray or RGB, and the matching encoders. Needs the `drolt::images` CMake
/// target (TurboJPEG and libpng).
///
///     torch::Tensor hwc = drolt::data::read_image("cat.jpg",
///         drolt::data::ImageDecodeOptions().channels(3).min_size(256));
///     // uint8 [H, W, 3]; a JPEG much larger than 256 px is downscaled while decoding
///
/// The format is recognised by its magic bytes, never by the file name (real
/// collections hold PNGs named .jpg). Every problem is a c10::Error naming the
/// file: missing, empty, truncated, corrupt, too large, or neither JPEG nor PNG.
#include <png.h>
#include <torch/torch.h>
#include <turbojpeg.h>

#include <algorithm>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "drolt/data/detail/io.hpp"

namespace drolt {
namespace data {

struct ImageDecodeOptions {
  /// Channels of the result: 1 (gray) or 3 (RGB), converting as needed (gray is
  /// replicated; RGB becomes ITU-R 601 luma, as PIL's convert("L"); alpha is
  /// dropped), or 0 for the file's own (1 for gray files, 3 otherwise).
  TORCH_ARG(int64_t, channels) = 3;
  /// JPEG only: decode at the smallest of libjpeg-turbo's DCT scaling factors
  /// (1/8, 1/4, 3/8, ..., 1) whose shorter side is still >= min_size. Much
  /// cheaper than decoding at full size and resizing. 0 decodes at full size.
  TORCH_ARG(int64_t, min_size) = 0;
  /// Largest accepted width * height of the decoded image (guards against a
  /// corrupt header declaring gigapixels).
  TORCH_ARG(int64_t, max_pixels) = int64_t{1} << 28;
};

enum class ImageFormat { unknown, jpeg, png };

/// The format from the first bytes: JPEG (FF D8 FF) or PNG (89 'PNG' 0D 0A 1A 0A).
inline ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::jpeg;
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) return ImageFormat::png;
  return ImageFormat::unknown;
}

namespace detail {

inline void check_decode_options(const ImageDecodeOptions& o, const char* caller) {
  TORCH_CHECK(o.channels() == 0 || o.channels() == 1 || o.channels() == 3, caller,
              ": expected channels 0, 1 or 3, got ", o.channels());
  TORCH_CHECK(o.min_size() >= 0, caller, ": expected min_size >= 0, got ", o.min_size());
  TORCH_CHECK(o.max_pixels() > 0, caller, ": expected max_pixels > 0, got ", o.max_pixels());
}

/// Converts interleaved 8-bit pixels with `from` channels (1 gray, 2 gray +
/// alpha, 3 RGB, 4 RGBA) to `to` channels (1 or 3).
inline void convert_channels(const uint8_t* src, int from, uint8_t* dst, int to, size_t pixels) {
  for (size_t i = 0; i < pixels; ++i, src += from, dst += to) {
    if (from <= 2) {
      for (int c = 0; c < to; ++c) dst[c] = src[0];
    } else if (to == 3) {
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    } else {
      // PIL's L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded.
      const uint32_t y = 19595u * src[0] + 38470u * src[1] + 7471u * src[2] + 0x8000u;
      dst[0] = static_cast<uint8_t>(y >> 16);
    }
  }
}

/// One TurboJPEG handle per thread: creating one costs more than decoding a
/// thumbnail, and a handle must not be shared between threads.
class TjHandle {
 public:
  explicit TjHandle(bool compress) : handle_(compress ? tjInitCompress() : tjInitDecompress()) {
    TORCH_CHECK(handle_ != nullptr, "drolt::data: libjpeg-turbo could not create a ",
                compress ? "compressor" : "decompressor", ": ", tjGetErrorStr2(nullptr));
  }
  TjHandle(const TjHandle&) = delete;
  TjHandle& operator=(const TjHandle&) = delete;
  ~TjHandle() { tjDestroy(handle_); }
  tjhandle get() const { return handle_; }

 private:
  tjhandle handle_;
};

inline tjhandle tj_decompressor() {
  thread_local TjHandle handle(false);
  return handle.get();
}

inline tjhandle tj_compressor() {
  thread_local TjHandle handle(true);
  return handle.get();
}

/// At most this many pixels per byte of a JPEG file: every 8 x 8 block of a
/// Huffman-coded component costs at least one bit (progressive DC scan; two in
/// a baseline scan). Arithmetic-coded files are held to the same bound.
constexpr uint64_t kJpegPixelsPerByte = 512;
/// At most this many bytes of filtered rows per byte of a PNG's compressed
/// data: deflate's largest expansion (a 258-byte match in two bits).
constexpr uint64_t kDeflateBytesPerByte = 1032;

inline torch::Tensor decode_jpeg(const uint8_t* data, size_t size, const ImageDecodeOptions& o,
                                 const std::string& name, const char* caller) {
  tjhandle tj = tj_decompressor();
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, data, static_cast<unsigned long>(size), &width, &height, &subsamp,
                          &colorspace) != 0) {
    TORCH_CHECK(false, caller, ": '", name, "' is not a readable JPEG: libjpeg-turbo reports '",
                tjGetErrorStr2(tj), "'");
  }
  TORCH_CHECK(width > 0 && height > 0, caller, ": '", name,
              "' is corrupt: expected a positive JPEG size, got ", width, " x ", height);
  TORCH_CHECK(static_cast<int64_t>(width) * height <= o.max_pixels(), caller, ": '", name,
              "' is too large: expected at most ", o.max_pixels(), " pixels, got ", width, " x ",
              height);
  // Memory only for pixels the file can hold: a Huffman-coded block costs at
  // least one bit of every scan that holds it, so no JPEG encodes more than
  // kJpegPixelsPerByte pixels per byte. A tiny file declaring a huge image is
  // refused here, before libjpeg allocates whole-image (progressive) buffers.
  TORCH_CHECK(static_cast<uint64_t>(width) * static_cast<uint64_t>(height) <=
                  kJpegPixelsPerByte * static_cast<uint64_t>(size),
              caller, ": '", name, "' is truncated or corrupt: its header declares ", width, " x ",
              height, " pixels, more than its ", size, " bytes can hold (at most ",
              kJpegPixelsPerByte, " pixels per byte)");
  // The smallest scaling factor (at most 1) that keeps the shorter side >= min_size.
  tjscalingfactor factor{1, 1};
  if (o.min_size() > 0) {
    int n = 0;
    const tjscalingfactor* factors = tjGetScalingFactors(&n);
    const int shorter = std::min(width, height);
    for (int i = 0; i < n && factors != nullptr; ++i) {
      const tjscalingfactor f = factors[i];
      if (f.num > f.denom) continue;
      if (TJSCALED(shorter, f) < o.min_size()) continue;
      if (static_cast<int64_t>(f.num) * factor.denom < static_cast<int64_t>(factor.num) * f.denom) {
        factor = f;
      }
    }
  }
  const int w = TJSCALED(width, factor), h = TJSCALED(height, factor);
  const bool gray_file = colorspace == TJCS_GRAY;
  const bool cmyk_file = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const int64_t channels = o.channels() != 0 ? o.channels() : (gray_file ? 1 : 3);
  // TurboJPEG converts YCbCr / gray / RGB to gray or RGB itself, but CMYK only to CMYK.
  const int decoded_channels = cmyk_file ? 4 : static_cast<int>(channels);
  const int pixel_format = cmyk_file ? TJPF_CMYK : (channels == 1 ? TJPF_GRAY : TJPF_RGB);
  // Neither buffer is filled before decoding (torch::empty, new[] without
  // value-initialisation): pages are committed as decoded rows arrive.
  std::unique_ptr<uint8_t[]> cmyk;
  torch::Tensor out = torch::empty({h, w, channels}, torch::kUInt8);
  uint8_t* target = out.data_ptr<uint8_t>();
  if (cmyk_file) {
    cmyk.reset(new uint8_t[static_cast<size_t>(w) * static_cast<size_t>(h) * 4]);
    target = cmyk.get();
  }
  // Warnings (a truncated stream, corrupt data the decoder papered over) are
  // errors: the pixels would be partly made up. Scans are limited so that a
  // crafted progressive file cannot take minutes.
  const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  if (tjDecompress2(tj, data, static_cast<unsigned long>(size), target, w, w * decoded_channels, h,
                    pixel_format, flags) != 0) {
    const bool warning = tjGetErrorCode(tj) == TJERR_WARNING;
    TORCH_CHECK(false, caller, ": '", name, "' is ",
                warning ? "truncated or corrupt" : "not a decodable JPEG",
                ": libjpeg-turbo reports '", tjGetErrorStr2(tj), "'");
  }
  if (cmyk_file) {
    // libjpeg writes Adobe's inverted CMYK, so each byte is already 255 - ink.
    uint8_t* dst = out.data_ptr<uint8_t>();
    const size_t pixels = static_cast<size_t>(w) * static_cast<size_t>(h);
    std::vector<uint8_t> rgb(channels == 1 ? pixels * 3 : 0);
    uint8_t* rgb_dst = channels == 1 ? rgb.data() : dst;
    for (size_t i = 0; i < pixels; ++i) {
      const uint8_t* p = cmyk.get() + 4 * i;
      for (int c = 0; c < 3; ++c) {
        rgb_dst[3 * i + static_cast<size_t>(c)] =
            static_cast<uint8_t>((uint32_t{p[c]} * p[3] + 127u) / 255u);
      }
    }
    if (channels == 1) convert_channels(rgb.data(), 3, dst, 1, pixels);
  }
  return out;
}

struct PngReadState {
  const uint8_t* data;
  size_t size;
  size_t offset;
  char message[256];
};

inline void png_error_handler(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngReadState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof(state->message), "%s", message != nullptr ? message : "");
  png_longjmp(png, 1);
}

inline void png_warning_handler(png_structp, png_const_charp) {}

inline void png_read_handler(png_structp png, png_bytep out, png_size_t n) {
  auto* state = static_cast<PngReadState*>(png_get_io_ptr(png));
  if (n > state->size - state->offset) png_error(png, "unexpected end of file (truncated)");
  std::memcpy(out, state->data + state->offset, n);
  state->offset += n;
}

/// Frees libpng's read structures on every way out, longjmp included (the
/// holder lives in the frame that called setjmp, so it is destroyed normally).
struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<uint8_t> pixels;
  std::vector<png_bytep> rows;
  ~PngReader() { png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr); }
};

inline torch::Tensor decode_png(const uint8_t* data, size_t size, const ImageDecodeOptions& o,
                                const std::string& name, const char* caller) {
  PngReadState state{data, size, 0, {0}};
  PngReader reader;
  reader.png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, png_error_handler, png_warning_handler);
  TORCH_CHECK(reader.png != nullptr, caller, ": libpng could not create a reader");
  reader.info = png_create_info_struct(reader.png);
  TORCH_CHECK(reader.info != nullptr, caller, ": libpng could not create a reader");
  // What is changed after setjmp lives in `reader` or `state` (in memory, since
  // their addresses escape) or is volatile, so it is intact after a longjmp.
  std::vector<uint8_t>& pixels = reader.pixels;
  std::vector<png_bytep>& rows = reader.rows;
  volatile int stored_channels = 0;
  volatile png_uint_32 width = 0, height = 0;
  if (setjmp(png_jmpbuf(reader.png)) != 0) {
    const bool truncated = state.offset >= state.size ||
                           std::strstr(state.message, "truncated") != nullptr ||
                           std::strstr(state.message, "Not enough image data") != nullptr;
    TORCH_CHECK(false, caller, ": '", name, "' is ", truncated ? "truncated" : "corrupt",
                ": libpng reports '", state.message, "'");
  }
  png_set_read_fn(reader.png, &state, png_read_handler);
  // Bound the work and memory a crafted header can cause before the size check.
  png_set_user_limits(reader.png, 1u << 20, 1u << 20);
  png_set_chunk_malloc_max(reader.png, 8u << 20);
  png_read_info(reader.png, reader.info);
  width = png_get_image_width(reader.png, reader.info);
  height = png_get_image_height(reader.png, reader.info);
  if (static_cast<int64_t>(width) * static_cast<int64_t>(height) > o.max_pixels()) {
    std::snprintf(state.message, sizeof(state.message),
                  "image is too large: %u x %u pixels, more than the %lld allowed",
                  static_cast<unsigned>(width), static_cast<unsigned>(height),
                  static_cast<long long>(o.max_pixels()));
    png_longjmp(reader.png, 1);
  }
  {
    // Memory only for rows the file can hold: the filtered rows (a filter byte
    // plus the packed samples each) inflate from what is left of the file.
    const uint64_t row_bits = static_cast<uint64_t>(width) *
                              png_get_channels(reader.png, reader.info) *
                              png_get_bit_depth(reader.png, reader.info);
    const uint64_t declared = static_cast<uint64_t>(height) * (1 + (row_bits + 7) / 8);
    const uint64_t left = static_cast<uint64_t>(state.size - state.offset);
    if (declared > kDeflateBytesPerByte * (left + 1)) {
      std::snprintf(state.message, sizeof(state.message),
                    "truncated: the header declares %u x %u pixels (%llu bytes of rows), more "
                    "than the %llu bytes left can hold (deflate inflates at most %llu-fold)",
                    static_cast<unsigned>(width), static_cast<unsigned>(height),
                    static_cast<unsigned long long>(declared),
                    static_cast<unsigned long long>(left),
                    static_cast<unsigned long long>(kDeflateBytesPerByte));
      png_longjmp(reader.png, 1);
    }
  }
  const png_byte color_type = png_get_color_type(reader.png, reader.info);
  // Always 8 bits per sample: palettes expanded, low bit depths widened,
  // 16 bits scaled down (rounded), transparency dropped. No gamma correction:
  // the stored values are the pixels, as in PIL and torchvision.
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(reader.png);
  if (color_type == PNG_COLOR_TYPE_GRAY) png_set_expand_gray_1_2_4_to_8(reader.png);
  png_set_scale_16(reader.png);
  png_set_strip_alpha(reader.png);
  png_set_interlace_handling(reader.png);
  png_read_update_info(reader.png, reader.info);
  stored_channels = png_get_channels(reader.png, reader.info);
  if (png_get_bit_depth(reader.png, reader.info) != 8 ||
      (stored_channels != 1 && stored_channels != 3) ||
      png_get_rowbytes(reader.png, reader.info) != static_cast<size_t>(width) * stored_channels) {
    std::snprintf(state.message, sizeof(state.message), "unsupported pixel layout");
    png_longjmp(reader.png, 1);
  }
  const size_t row_bytes = static_cast<size_t>(width) * static_cast<size_t>(stored_channels);
  if (png_get_interlace_type(reader.png, reader.info) == PNG_INTERLACE_NONE) {
    // Row by row, the buffer growing as rows arrive: a truncated file costs
    // memory only for the rows it holds.
    for (png_uint_32 r = 0; r < height; ++r) {
      pixels.resize(pixels.size() + row_bytes);
      png_read_row(reader.png, pixels.data() + static_cast<size_t>(r) * row_bytes, nullptr);
    }
  } else {
    // Adam7 passes revisit every row: the whole image at once (bounded above).
    pixels.resize(row_bytes * static_cast<size_t>(height));
    rows.resize(height);
    for (png_uint_32 r = 0; r < height; ++r) {
      rows[r] = pixels.data() + static_cast<size_t>(r) * row_bytes;
    }
    png_read_image(reader.png, rows.data());
  }
  // Reads the chunks after the image and checks their CRCs: a file cut after
  // the last row is still truncated.
  png_read_end(reader.png, nullptr);

  const int from = stored_channels;
  const int64_t channels = o.channels() != 0 ? o.channels() : from;
  torch::Tensor out = torch::empty(
      {static_cast<int64_t>(height), static_cast<int64_t>(width), channels}, torch::kUInt8);
  const size_t count = static_cast<size_t>(width) * static_cast<size_t>(height);
  if (channels == from) {
    std::memcpy(out.data_ptr<uint8_t>(), pixels.data(), pixels.size());
  } else {
    convert_channels(pixels.data(), from, out.data_ptr<uint8_t>(), static_cast<int>(channels),
                     count);
  }
  return out;
}

}  // namespace detail

/// Decodes a JPEG or PNG held in memory into uint8 [H, W, C]. `name` is the
/// file name the error messages give.
inline torch::Tensor decode_image(const uint8_t* data, size_t size,
                                  const ImageDecodeOptions& options = {},
                                  const std::string& name = "<memory>") {
  constexpr const char* caller = "drolt::data::decode_image";
  detail::check_decode_options(options, caller);
  TORCH_CHECK(size > 0, caller, ": '", name, "' is empty: expected a JPEG or PNG image");
  switch (sniff_image_format(data, size)) {
    case ImageFormat::jpeg:
      return detail::decode_jpeg(data, size, options, name, caller);
    case ImageFormat::png:
      return detail::decode_png(data, size, options, name, caller);
    case ImageFormat::unknown:
      break;
  }
  char got[64];
  const size_t n = std::min<size_t>(size, 8);
  size_t used = 0;
  for (size_t i = 0; i < n; ++i) {
    used += static_cast<size_t>(
        std::snprintf(got + used, sizeof(got) - used, "%s%02X", i > 0 ? " " : "", data[i]));
  }
  TORCH_CHECK(false, caller, ": '", name,
              "' is not an image: expected JPEG (FF D8 FF) or PNG (89 50 4E 47 0D 0A 1A 0A) magic "
              "bytes, got ",
              got);
  return {};
}

/// Reads and decodes a JPEG or PNG file into uint8 [H, W, C].
inline torch::Tensor read_image(const std::string& path, const ImageDecodeOptions& options = {}) {
  const std::vector<uint8_t> bytes = detail::read_file_bytes(path, "drolt::data::read_image");
  return decode_image(bytes.data(), bytes.size(), options, path);
}

namespace detail {

/// [H, W] or [H, W, C] uint8 with C in {1, 3}, contiguous, or a c10::Error.
inline torch::Tensor check_hwc(const torch::Tensor& image, const char* caller) {
  TORCH_CHECK(image.defined() && (image.dim() == 2 || image.dim() == 3), caller,
              ": expected an image of shape [H, W] or [H, W, C], got ",
              image.defined() ? image.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(image.scalar_type() == torch::kUInt8, caller, ": expected uint8 pixels, got ",
              image.scalar_type());
  torch::Tensor hwc = image.dim() == 2 ? image.unsqueeze(2) : image;
  TORCH_CHECK(hwc.size(2) == 1 || hwc.size(2) == 3, caller, ": expected 1 or 3 channels, got ",
              hwc.size(2));
  TORCH_CHECK(hwc.size(0) > 0 && hwc.size(1) > 0 && hwc.size(0) <= 65535 && hwc.size(1) <= 65535,
              caller, ": expected height and width in [1, 65535], got ", hwc.size(0), " x ",
              hwc.size(1));
  return hwc.to(torch::kCPU).contiguous();
}

}  // namespace detail

/// Encodes uint8 [H, W] or [H, W, C] (C = 1 or 3) as an 8-bit PNG (lossless).
inline std::vector<uint8_t> encode_png(const torch::Tensor& image) {
  constexpr const char* caller = "drolt::data::encode_png";
  const torch::Tensor hwc = detail::check_hwc(image, caller);
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(hwc.size(1));
  img.height = static_cast<png_uint_32>(hwc.size(0));
  img.format = hwc.size(2) == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  const bool sized =
      png_image_write_to_memory(&img, nullptr, &size, 0, hwc.data_ptr<uint8_t>(), 0, nullptr) != 0;
  TORCH_CHECK(sized, caller, ": libpng reports '", img.message, "'");
  std::vector<uint8_t> out(size);
  const bool written = png_image_write_to_memory(&img, out.data(), &size, 0,
                                                 hwc.data_ptr<uint8_t>(), 0, nullptr) != 0;
  png_image_free(&img);
  TORCH_CHECK(written, caller, ": libpng reports '", img.message, "'");
  out.resize(size);
  return out;
}

/// Encodes uint8 [H, W] or [H, W, C] (C = 1 or 3) as a baseline JPEG of the
/// given quality (1-100); RGB is stored as YCbCr 4:4:4 unless `chroma_420`.
inline std::vector<uint8_t> encode_jpeg(const torch::Tensor& image, int quality = 95,
                                        bool chroma_420 = false) {
  constexpr const char* caller = "drolt::data::encode_jpeg";
  TORCH_CHECK(quality >= 1 && quality <= 100, caller, ": expected quality in [1, 100], got ",
              quality);
  const torch::Tensor hwc = detail::check_hwc(image, caller);
  const bool gray = hwc.size(2) == 1;
  const int w = static_cast<int>(hwc.size(1)), h = static_cast<int>(hwc.size(0));
  tjhandle tj = detail::tj_compressor();
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(
      tj, hwc.data_ptr<uint8_t>(), w, 0, h, gray ? TJPF_GRAY : TJPF_RGB, &buffer, &size,
      gray ? TJSAMP_GRAY : (chroma_420 ? TJSAMP_420 : TJSAMP_444), quality, TJFLAG_ACCURATEDCT);
  std::vector<uint8_t> out;
  if (rc == 0) out.assign(buffer, buffer + size);
  tjFree(buffer);
  TORCH_CHECK(rc == 0, caller, ": libjpeg-turbo reports '", tjGetErrorStr2(tj), "'");
  return out;
}

/// Writes bytes to a file, or throws naming it.
inline void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  TORCH_CHECK(f != nullptr, "drolt::data::write_file_bytes: cannot open '", path, "' for writing");
  const size_t put = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool closed = std::fclose(f) == 0;
  TORCH_CHECK(put == bytes.size() && closed, "drolt::data::write_file_bytes: writing '", path,
              "' failed: expected ", bytes.size(), " bytes written, got ", put);
}

}  // namespace data
}  // namespace drolt
