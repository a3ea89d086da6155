#pragma once
/// \file
/// CIFAR-10 / CIFAR-100 binary-format reader ("CIFAR-10 binary version" from
/// https://www.cs.toronto.edu/~kriz/cifar.html) as a `torch::data` dataset.
///
/// Record layout: CIFAR-10 `<label><3072 pixels>`, CIFAR-100
/// `<coarse label><fine label><3072 pixels>`; pixels are 1024 red, 1024 green,
/// 1024 blue bytes, row-major 32 x 32.
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "drolt/data/detail/io.hpp"
#include "drolt/data/split.hpp"

namespace drolt {
namespace data {

enum class CifarVariant {
  cifar10,          ///< 10 classes, files data_batch_{1..5}.bin / test_batch.bin
  cifar100_fine,    ///< 100 fine classes, files train.bin / test.bin
  cifar100_coarse,  ///< 20 superclasses, same files as cifar100_fine
};

inline int64_t cifar_num_classes(CifarVariant variant) {
  switch (variant) {
    case CifarVariant::cifar10:
      return 10;
    case CifarVariant::cifar100_fine:
      return 100;
    case CifarVariant::cifar100_coarse:
      return 20;
  }
  TORCH_CHECK(false, "drolt::data::cifar_num_classes: unknown CifarVariant");
  return 0;
}

/// One file's worth of records.
struct CifarBatch {
  torch::Tensor images;  ///< uint8 [N, 3, 32, 32]
  torch::Tensor labels;  ///< int64 [N]
};

/// Reads one CIFAR binary file (plain or gzip). Throws c10::Error naming the
/// file when it is missing, empty, not a whole number of records, or holds a
/// label out of range (for CIFAR-100 both label bytes are checked, whichever
/// one is returned, since either being out of range means the file is corrupt).
inline CifarBatch read_cifar_file(const std::string& path, CifarVariant variant) {
  constexpr const char* caller = "drolt::data::read_cifar_file";
  constexpr size_t kPixels = 3 * 32 * 32;
  const bool is100 = variant != CifarVariant::cifar10;
  const size_t label_bytes = is100 ? 2 : 1;
  const size_t record = label_bytes + kPixels;

  detail::GzFile file(path, caller);
  const std::vector<uint8_t> bytes = file.read_rest();
  TORCH_CHECK(!bytes.empty(), caller, ": '", path, "' is empty: expected at least one ", record,
              "-byte record");
  TORCH_CHECK(bytes.size() % record == 0, caller, ": '", path,
              "' is truncated or corrupt: expected a multiple of ", record, " bytes (",
              is100 ? "CIFAR-100" : "CIFAR-10", " records), got ", bytes.size(), " bytes (",
              bytes.size() / record, " whole records and ", bytes.size() % record,
              " bytes left over)");
  const int64_t n = static_cast<int64_t>(bytes.size() / record);

  CifarBatch out;
  out.images = torch::empty({n, 3, 32, 32}, torch::kUInt8);
  out.labels = torch::empty({n}, torch::kInt64);
  auto* img = out.images.data_ptr<uint8_t>();
  auto* lab = out.labels.data_ptr<int64_t>();
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* rec = bytes.data() + static_cast<size_t>(r) * record;
    if (is100) {
      TORCH_CHECK(rec[0] < 20 && rec[1] < 100, caller, ": '", path, "' is corrupt: record ", r,
                  " expected coarse label < 20 and fine label < 100, got coarse ", int{rec[0]},
                  " and fine ", int{rec[1]});
      lab[r] = variant == CifarVariant::cifar100_coarse ? rec[0] : rec[1];
    } else {
      TORCH_CHECK(rec[0] < 10, caller, ": '", path, "' is corrupt: record ", r,
                  " expected label < 10, got ", int{rec[0]});
      lab[r] = rec[0];
    }
    std::memcpy(img + static_cast<size_t>(r) * kPixels, rec + label_bytes, kPixels);
  }
  return out;
}

/// CIFAR dataset from the extracted binary archive. `root` may be the extracted
/// folder itself or its parent (`cifar-10-batches-bin` / `cifar-100-binary` is
/// looked for inside it). Images are kept as uint8; `get` and `images()` return
/// float in [0, 1].
class CifarDataset : public torch::data::datasets::Dataset<CifarDataset> {
 public:
  CifarDataset(const std::string& root, Split split, CifarVariant variant = CifarVariant::cifar10)
      : split_(split), variant_(variant) {
    std::vector<std::string> names;
    if (variant == CifarVariant::cifar10) {
      if (split == Split::train) {
        for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
      } else {
        names.push_back("test_batch.bin");
      }
    } else {
      names.push_back(split == Split::train ? "train.bin" : "test.bin");
    }
    const std::string sub =
        variant == CifarVariant::cifar10 ? "cifar-10-batches-bin" : "cifar-100-binary";
    std::vector<torch::Tensor> images, labels;
    for (const auto& name : names) {
      const std::string a = detail::join_path(root, name);
      const std::string b = detail::join_path(detail::join_path(root, sub), name);
      const std::string path =
          detail::find_first_existing({a, a + ".gz", b, b + ".gz"}, "drolt::data::CifarDataset",
                                      "'" + name + "' under '" + root + "'");
      CifarBatch batch = read_cifar_file(path, variant);
      images.push_back(std::move(batch.images));
      labels.push_back(std::move(batch.labels));
    }
    images_ = images.size() == 1 ? images[0] : torch::cat(images);
    targets_ = labels.size() == 1 ? labels[0] : torch::cat(labels);
  }

  torch::data::Example<> get(size_t index) override {
    TORCH_CHECK(index < static_cast<size_t>(images_.size(0)),
                "drolt::data::CifarDataset::get: expected index < ", images_.size(0), ", got ",
                index);
    const auto i = static_cast<int64_t>(index);
    return {images_[i].to(torch::kFloat32).div_(255.0), targets_[i]};
  }

  c10::optional<size_t> size() const override { return static_cast<size_t>(images_.size(0)); }

  /// All images as float [N, 3, 32, 32] in [0, 1] (allocated on each call).
  torch::Tensor images() const { return images_.to(torch::kFloat32).div_(255.0); }
  /// The images as stored, uint8 [N, 3, 32, 32].
  const torch::Tensor& raw_images() const { return images_; }
  /// Labels, int64 [N], in [0, num_classes()).
  const torch::Tensor& targets() const { return targets_; }
  int64_t num_classes() const { return cifar_num_classes(variant_); }
  Split split() const { return split_; }
  CifarVariant variant() const { return variant_; }

 private:
  Split split_;
  CifarVariant variant_;
  torch::Tensor images_;
  torch::Tensor targets_;
};

}  // namespace data
}  // namespace drolt
