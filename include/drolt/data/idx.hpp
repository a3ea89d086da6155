#pragma once
/// \file
/// IDX reader (MNIST, Fashion-MNIST, KMNIST): plain or gzip-compressed files,
/// free functions plus a `torch::data` dataset.
///
///     drolt::data::IdxDataset train("/usr/share/datasets/fashion-mnist",
///                                   drolt::data::Split::train);
///     auto loader = torch::data::make_data_loader(
///         train.map(torch::data::transforms::Stack<>()), 128);
#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "drolt/data/detail/io.hpp"
#include "drolt/data/split.hpp"

namespace drolt {
namespace data {
namespace detail {

/// Reads an unsigned-byte IDX file with `expected_dims` dimensions into a uint8
/// tensor of the declared shape. Everything is checked: magic, element type,
/// dimension count, zero or overflowing sizes, truncation and trailing bytes.
inline torch::Tensor read_idx_u8(const std::string& path, int expected_dims, const char* caller) {
  GzFile file(path, caller);
  unsigned char magic[4];
  file.read_exact(magic, 4, "IDX magic number");
  const uint32_t expected_magic = 0x0800u | static_cast<uint32_t>(expected_dims);
  const uint32_t got_magic = (uint32_t{magic[0]} << 24) | (uint32_t{magic[1]} << 16) |
                             (uint32_t{magic[2]} << 8) | uint32_t{magic[3]};
  if (got_magic != expected_magic) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "0x%08X, got 0x%08X", expected_magic, got_magic);
    const char* why = (magic[0] != 0 || magic[1] != 0) ? " (not an IDX file)"
                      : magic[2] != 0x08               ? " (element type is not unsigned byte)"
                                                       : " (wrong number of dimensions)";
    TORCH_CHECK(false, caller, ": '", path, "' has a bad IDX header: expected magic ", buf, why);
  }

  std::vector<int64_t> shape(static_cast<size_t>(expected_dims));
  uint64_t total = 1;
  for (int d = 0; d < expected_dims; ++d) {
    unsigned char b[4];
    file.read_exact(b, 4, "IDX dimension sizes");
    const uint32_t size =
        (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
    // An empty item (0 rows or columns) is never a real image; an empty file (0 items) may be.
    TORCH_CHECK(d == 0 || size > 0, caller, ": '", path,
                "' has a bad IDX header: expected size > 0 for dimension ", d, ", got 0");
    shape[static_cast<size_t>(d)] = static_cast<int64_t>(size);
    // Each factor is < 2^32, so the check below detects overflow before it happens.
    TORCH_CHECK(size == 0 || total <= (uint64_t{1} << 40) / size, caller, ": '", path,
                "' has a bad IDX header: declared sizes multiply to more than 2^40 bytes");
    total *= size;
  }
  std::vector<uint8_t> payload = file.read_payload(static_cast<size_t>(total), "IDX data");
  file.expect_end("the IDX data its header declares");
  torch::Tensor out = torch::empty(shape, torch::kUInt8);
  if (total > 0) std::memcpy(out.data_ptr<uint8_t>(), payload.data(), payload.size());
  return out;
}

}  // namespace detail

/// Reads an IDX image file (magic 0x00000803, plain or gzip) into uint8 [N, H, W].
/// Throws c10::Error naming the file for a missing, truncated, over-long or
/// corrupt file.
inline torch::Tensor read_idx_images(const std::string& path) {
  return detail::read_idx_u8(path, 3, "drolt::data::read_idx_images");
}

/// Reads an IDX label file (magic 0x00000801, plain or gzip) into int64 [N].
inline torch::Tensor read_idx_labels(const std::string& path) {
  return detail::read_idx_u8(path, 1, "drolt::data::read_idx_labels").to(torch::kInt64);
}

/// MNIST-family dataset from a directory holding the four standard files
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`), each optionally with a `.gz` suffix.
///
/// The images are kept as uint8 (a quarter of the memory of float); `get` and
/// `images()` convert to float in [0, 1] on the fly.
class IdxDataset : public torch::data::datasets::Dataset<IdxDataset> {
 public:
  IdxDataset(const std::string& root, Split split) : split_(split) {
    const std::string prefix = split == Split::train ? "train" : "t10k";
    const std::string images_path = find(root, prefix + "-images-idx3-ubyte");
    const std::string labels_path = find(root, prefix + "-labels-idx1-ubyte");
    images_ = read_idx_images(images_path);
    targets_ = read_idx_labels(labels_path);
    TORCH_CHECK(images_.size(0) == targets_.size(0),
                "drolt::data::IdxDataset: expected as many labels as images, got ", images_.size(0),
                " images in '", images_path, "' and ", targets_.size(0), " labels in '",
                labels_path, "'");
  }

  torch::data::Example<> get(size_t index) override {
    TORCH_CHECK(index < static_cast<size_t>(images_.size(0)),
                "drolt::data::IdxDataset::get: expected index < ", images_.size(0), ", got ",
                index);
    const auto i = static_cast<int64_t>(index);
    return {images_[i].unsqueeze(0).to(torch::kFloat32).div_(255.0), targets_[i]};
  }

  c10::optional<size_t> size() const override { return static_cast<size_t>(images_.size(0)); }

  /// All images as float [N, 1, H, W] in [0, 1] (allocated on each call).
  torch::Tensor images() const { return images_.unsqueeze(1).to(torch::kFloat32).div_(255.0); }
  /// The images as stored, uint8 [N, H, W].
  const torch::Tensor& raw_images() const { return images_; }
  /// Labels, int64 [N].
  const torch::Tensor& targets() const { return targets_; }
  Split split() const { return split_; }

 private:
  static std::string find(const std::string& root, const std::string& name) {
    const std::string base = detail::join_path(root, name);
    return detail::find_first_existing({base, base + ".gz"}, "drolt::data::IdxDataset",
                                       "'" + name + "' in '" + root + "'");
  }

  Split split_;
  torch::Tensor images_;
  torch::Tensor targets_;
};

}  // namespace data
}  // namespace drolt
