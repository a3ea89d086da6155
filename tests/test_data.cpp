// Readers, long-tail subsets and samplers (include/drolt/data/).
// GCC 12 reports -Wmaybe-uninitialized inside LibTorch's DataLoader (a moved
// c10::optional in its Job) when the loader is instantiated with -O1 and
// sanitizers; the warning concerns torch's code, and GCC attributes it to the
// header's position, so the pragma must come before the includes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// torch before Catch: LibTorch 2.x defines a glog-style CHECK that must not
// replace Catch's.
#include <torch/torch.h>
// (a separate include block, so sorting cannot move Catch first)
#include <catch2/catch.hpp>

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <sys/stat.h>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <locale>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "drolt/data/cifar.hpp"
#include "drolt/data/idx.hpp"
#include "drolt/data/longtail.hpp"
#include "drolt/data/samplers.hpp"

using Bytes = std::vector<uint8_t>;
using Catch::Matchers::Contains;

namespace {

/// A fresh directory per test case so test cases never see each other's files.
std::string fresh_dir(const std::string& name) {
  // Shell tools rather than std::filesystem: pip's libtorch.so exports broken
  // copies of std::filesystem functions that interpose libstdc++'s.
  const std::string dir = std::string(DROLT_TEST_TMPDIR) + "/data/" + name;
  const std::string cmd = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return dir;
}

std::string write_plain(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
  return path;
}

std::string write_gzip(const std::string& path, const Bytes& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) {
    REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) ==
            static_cast<int>(bytes.size()));
  }
  REQUIRE(gzclose(f) == Z_OK);
  return path;
}

Bytes read_plain(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void put_u32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

/// IDX image file with pixel (i, r, c) = (7 i + 3 r + c) mod 256.
Bytes idx_images(uint32_t n, uint32_t h, uint32_t w) {
  Bytes b;
  put_u32(b, 0x00000803);
  put_u32(b, n);
  put_u32(b, h);
  put_u32(b, w);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t r = 0; r < h; ++r)
      for (uint32_t c = 0; c < w; ++c) b.push_back(static_cast<uint8_t>(7 * i + 3 * r + c));
  return b;
}

Bytes idx_labels(const std::vector<uint8_t>& labels) {
  Bytes b;
  put_u32(b, 0x00000801);
  put_u32(b, static_cast<uint32_t>(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

/// CIFAR records: label byte(s), then 3072 pixels whose value encodes the record
/// (first byte = seed) and the channel (byte 1024 k = 100 + k).
Bytes cifar_records(const std::vector<std::vector<uint8_t>>& labels, uint8_t seed) {
  Bytes b;
  for (size_t r = 0; r < labels.size(); ++r) {
    b.insert(b.end(), labels[r].begin(), labels[r].end());
    Bytes px(3072);
    for (size_t k = 0; k < 3072; ++k) px[k] = static_cast<uint8_t>((k * 13 + r) % 251);
    px[0] = static_cast<uint8_t>(seed + r);
    for (size_t ch = 0; ch < 3; ++ch) px[1024 * ch + 1] = static_cast<uint8_t>(100 + ch);
    b.insert(b.end(), px.begin(), px.end());
  }
  return b;
}

torch::Tensor class_targets(const std::vector<int64_t>& per_class) {
  std::vector<int64_t> y;
  for (size_t c = 0; c < per_class.size(); ++c)
    y.insert(y.end(), static_cast<size_t>(per_class[c]), static_cast<int64_t>(c));
  return torch::tensor(y, torch::kInt64);
}

int64_t sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

}  // namespace

// ------------------------------------------------------------------ IDX reader

TEST_CASE("IDX images and labels read back exactly, plain and gzip", "[data][idx]") {
  const std::string dir = fresh_dir("idx_roundtrip");
  const bool gz = GENERATE(false, true);
  const auto write = gz ? write_gzip : write_plain;
  const std::string suffix = gz ? ".gz" : "";
  const auto img_path = write(dir + "/img" + suffix, idx_images(5, 4, 3));
  const auto lab_path = write(dir + "/lab" + suffix, idx_labels({9, 0, 3, 255, 1}));

  const torch::Tensor img = drolt::data::read_idx_images(img_path);
  REQUIRE(img.scalar_type() == torch::kUInt8);
  REQUIRE(img.sizes() == torch::IntArrayRef({5, 4, 3}));
  CHECK(img[0][0][0].item<int>() == 0);
  CHECK(img[4][3][2].item<int>() == (7 * 4 + 3 * 3 + 2));
  CHECK(img[2][1][0].item<int>() == 17);

  const torch::Tensor lab = drolt::data::read_idx_labels(lab_path);
  REQUIRE(lab.scalar_type() == torch::kInt64);
  CHECK(lab.sizes() == torch::IntArrayRef({5}));
  CHECK(lab[0].item<int64_t>() == 9);
  CHECK(lab[3].item<int64_t>() == 255);
}

TEST_CASE("IDX reader rejects bad files with the file name and the reason", "[data][idx]") {
  const std::string dir = fresh_dir("idx_bad");
  const Bytes good = idx_images(3, 4, 4);

  SECTION("missing file") {
    const std::string p = dir + "/nope";
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("not found"));
  }
  SECTION("directory") {
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(dir),
                        Contains(dir) && Contains("regular file"));
  }
  SECTION("empty file") {
    const auto p = write_plain(dir + "/empty", {});
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("truncated"));
  }
  SECTION("header cut inside the dimension sizes") {
    const auto p = write_plain(dir + "/short_header", Bytes(good.begin(), good.begin() + 10));
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p),
                        Contains(p) && Contains("truncated") && Contains("dimension"));
  }
  SECTION("payload one byte short, plain and gzip") {
    const Bytes cut(good.begin(), good.end() - 1);
    const auto p = write_plain(dir + "/short", cut);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("truncated") &&
                                                             Contains("expected 48") &&
                                                             Contains("got 47"));
    const auto q = write_gzip(dir + "/short.gz", cut);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(q), Contains(q) && Contains("truncated"));
  }
  SECTION("trailing bytes after the declared data") {
    Bytes longer = good;
    longer.push_back(0);
    longer.push_back(0);
    const auto p = write_plain(dir + "/long", longer);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p),
                        Contains(p) && Contains("2 trailing bytes"));
  }
  SECTION("label file given as an image file") {
    const auto p = write_plain(dir + "/labels", idx_labels({1, 2, 3}));
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("0x00000803") &&
                                                             Contains("0x00000801") &&
                                                             Contains("number of dimensions"));
  }
  SECTION("not an IDX file") {
    Bytes png = {0x89, 'P', 'N', 'G', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    const auto p = write_plain(dir + "/png", png);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p),
                        Contains(p) && Contains("not an IDX file"));
  }
  SECTION("element type other than unsigned byte") {
    Bytes f = good;
    f[2] = 0x0D;  // float
    const auto p = write_plain(dir + "/float", f);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("unsigned byte"));
  }
  SECTION("zero-sized image dimension") {
    Bytes f;
    put_u32(f, 0x00000803);
    put_u32(f, 2);
    put_u32(f, 0);
    put_u32(f, 28);
    const auto p = write_plain(dir + "/zero", f);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("size > 0"));
  }
  SECTION("declared size absurdly large") {
    Bytes f;
    put_u32(f, 0x00000803);
    for (int i = 0; i < 3; ++i) put_u32(f, 0xFFFFFFFFu);
    const auto p = write_plain(dir + "/huge", f);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("2^40"));
  }
  SECTION("large declared size with little data fails as truncated, not out of memory") {
    Bytes f;
    put_u32(f, 0x00000803);
    put_u32(f, 60000);
    put_u32(f, 128);
    put_u32(f, 128);  // ~983 MB declared
    f.resize(f.size() + 100);
    const auto p = write_plain(dir + "/big", f);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p),
                        Contains(p) && Contains("truncated") && Contains("got 100"));
  }
  SECTION("gzip stream cut in the middle") {
    const auto full = write_gzip(dir + "/full.gz", idx_images(50, 28, 28));
    const Bytes gzbytes = read_plain(full);
    REQUIRE(gzbytes.size() > 40);
    const auto p =
        write_plain(dir + "/cut.gz", Bytes(gzbytes.begin(), gzbytes.begin() + gzbytes.size() / 2));
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p));
  }
  SECTION("gzip stream with corrupted deflate data") {
    const auto full = write_gzip(dir + "/full2.gz", idx_images(20, 28, 28));
    Bytes gzbytes = read_plain(full);
    for (size_t i = 12; i < gzbytes.size() - 8; i += 7) gzbytes[i] ^= 0x5A;
    const auto p = write_plain(dir + "/corrupt.gz", gzbytes);
    REQUIRE_THROWS_WITH(drolt::data::read_idx_images(p), Contains(p) && Contains("corrupt"));
  }
}

TEST_CASE("IdxDataset pairs images and labels of a split and scales to [0, 1]", "[data][idx]") {
  const std::string dir = fresh_dir("idx_dataset");
  // Train gzip, test plain: the dataset must find either form.
  write_gzip(dir + "/train-images-idx3-ubyte.gz", idx_images(6, 5, 5));
  write_gzip(dir + "/train-labels-idx1-ubyte.gz", idx_labels({0, 1, 2, 3, 4, 5}));
  write_plain(dir + "/t10k-images-idx3-ubyte", idx_images(2, 5, 5));
  write_plain(dir + "/t10k-labels-idx1-ubyte", idx_labels({7, 8}));

  drolt::data::IdxDataset train(dir, drolt::data::Split::train);
  drolt::data::IdxDataset test(dir, drolt::data::Split::test);
  REQUIRE(train.size().value() == 6);
  REQUIRE(test.size().value() == 2);
  CHECK(test.targets()[1].item<int64_t>() == 8);

  const torch::Tensor images = train.images();
  REQUIRE(images.sizes() == torch::IntArrayRef({6, 1, 5, 5}));
  REQUIRE(images.scalar_type() == torch::kFloat32);
  // pixel (3, 2, 4) = 7*3 + 3*2 + 4 = 31
  CHECK(images[3][0][2][4].item<float>() == Approx(31.0 / 255.0));
  auto ex = train.get(3);
  CHECK(ex.data.sizes() == torch::IntArrayRef({1, 5, 5}));
  CHECK(ex.data[0][2][4].item<float>() == Approx(31.0 / 255.0));
  CHECK(ex.target.item<int64_t>() == 3);
  CHECK_THROWS_WITH(train.get(6), Contains("expected index < 6"));

  SECTION("works with a data loader") {
    auto loader =
        torch::data::make_data_loader(std::move(train).map(torch::data::transforms::Stack<>()),
                                      torch::data::DataLoaderOptions().batch_size(4));
    int64_t seen = 0, label_sum = 0;
    for (auto& batch : *loader) {
      seen += batch.data.size(0);
      label_sum += batch.target.sum().item<int64_t>();
    }
    CHECK(seen == 6);
    CHECK(label_sum == 15);
  }
  SECTION("a subset through a class-balanced sampler and a loader") {
    drolt::data::SubsetDataset<drolt::data::IdxDataset> sub(train, {0, 1, 5});
    const torch::Tensor y = train.targets().index_select(0, torch::tensor({0, 1, 5}));
    drolt::data::ClassBalancedSampler sampler(y,
                                              drolt::data::ClassSamplerOptions().num_samples(300));
    auto loader = torch::data::make_data_loader(sub.map(torch::data::transforms::Stack<>()),
                                                std::move(sampler), 100);
    std::map<int64_t, int64_t> seen;
    for (auto& batch : *loader) {
      REQUIRE(batch.data.sizes() == torch::IntArrayRef({100, 1, 5, 5}));
      for (int64_t i = 0; i < batch.target.size(0); ++i) {
        const int64_t label = batch.target[i].item<int64_t>();
        ++seen[label];
        // The image is the one of that label: pixel (label, 0, 0) = 7 * label.
        CHECK(batch.data[i][0][0][0].item<float>() == Approx(7.0 * label / 255.0));
      }
    }
    CHECK(seen.size() == 3);
    CHECK(seen[0] + seen[1] + seen[5] == 300);
  }
  SECTION("image and label counts must agree") {
    write_plain(dir + "/t10k-labels-idx1-ubyte", idx_labels({7, 8, 9}));
    REQUIRE_THROWS_WITH(
        drolt::data::IdxDataset(dir, drolt::data::Split::test),
        Contains("2 images") && Contains("3 labels") && Contains("t10k-labels-idx1-ubyte"));
  }
  SECTION("missing files are named with every path tried") {
    const std::string empty = fresh_dir("idx_dataset_empty");
    REQUIRE_THROWS_WITH(drolt::data::IdxDataset(empty, drolt::data::Split::train),
                        Contains("train-images-idx3-ubyte.gz") && Contains(empty));
  }
}

TEST_CASE("Fashion-MNIST loads from Debian's dataset-fashion-mnist", "[data][idx][fashion]") {
  const std::string root = "/usr/share/datasets/fashion-mnist";
  if (!drolt::data::detail::is_regular_file(root + "/train-images-idx3-ubyte.gz")) {
    WARN("skipped: " << root << " not found (apt install dataset-fashion-mnist)");
    return;
  }
  drolt::data::IdxDataset train(root, drolt::data::Split::train);
  drolt::data::IdxDataset test(root, drolt::data::Split::test);
  REQUIRE(train.raw_images().sizes() == torch::IntArrayRef({60000, 28, 28}));
  REQUIRE(test.raw_images().sizes() == torch::IntArrayRef({10000, 28, 28}));
  // Fashion-MNIST is balanced: 6000 / 1000 images per class.
  const auto train_counts = torch::bincount(train.targets());
  const auto test_counts = torch::bincount(test.targets());
  CHECK(train_counts.size(0) == 10);
  CHECK(torch::all(train_counts == 6000).item<bool>());
  CHECK(torch::all(test_counts == 1000).item<bool>());
  // The first training image is an ankle boot (class 9), the first test image too.
  CHECK(train.targets()[0].item<int64_t>() == 9);
  CHECK(test.targets()[0].item<int64_t>() == 9);
  // The mean pixel of the training set is 0.2860 (the usual normalisation constant).
  CHECK(train.raw_images().to(torch::kFloat64).mean().item<double>() / 255.0 ==
        Approx(0.2860).margin(5e-4));

  // The CIFAR-LT protocol applied to Fashion-MNIST (n_max = 6000 is every image).
  const auto lt =
      drolt::data::make_longtail(train.targets(), 10, 6000, 100.0, drolt::data::Profile::exp, 0);
  CHECK(lt.counts.front() == 6000);
  CHECK(lt.counts.back() == 60);
}

// ---------------------------------------------------------------- CIFAR reader

TEST_CASE("CIFAR-10 batches are read in order with channel-planar pixels", "[data][cifar]") {
  const std::string dir = fresh_dir("cifar10");
  const std::string sub = dir + "/cifar-10-batches-bin";
  REQUIRE(std::system(("mkdir -p '" + sub + "'").c_str()) == 0);
  for (int b = 1; b <= 5; ++b) {
    write_plain(sub + "/data_batch_" + std::to_string(b) + ".bin",
                cifar_records({{static_cast<uint8_t>(b)}, {static_cast<uint8_t>(b + 4)}},
                              static_cast<uint8_t>(10 * b)));
  }
  write_gzip(sub + "/test_batch.bin.gz", cifar_records({{9}}, 200));

  // root may be the parent of cifar-10-batches-bin or the folder itself.
  const std::string root = GENERATE_COPY(dir, sub);
  drolt::data::CifarDataset train(root, drolt::data::Split::train);
  REQUIRE(train.size().value() == 10);
  CHECK(train.num_classes() == 10);
  std::vector<int64_t> labels(train.targets().data_ptr<int64_t>(),
                              train.targets().data_ptr<int64_t>() + 10);
  CHECK(labels == std::vector<int64_t>{1, 5, 2, 6, 3, 7, 4, 8, 5, 9});
  const auto raw = train.raw_images();
  REQUIRE(raw.sizes() == torch::IntArrayRef({10, 3, 32, 32}));
  CHECK(raw[0][0][0][0].item<int>() == 10);   // batch 1, record 0
  CHECK(raw[3][0][0][0].item<int>() == 21);   // batch 2, record 1
  CHECK(raw[4][2][0][1].item<int>() == 102);  // blue plane starts at byte 2048
  CHECK(raw[4][1][0][1].item<int>() == 101);
  auto ex = train.get(4);
  CHECK(ex.data[2][0][1].item<float>() == Approx(102.0 / 255.0));
  CHECK(ex.target.item<int64_t>() == 3);

  drolt::data::CifarDataset test(root, drolt::data::Split::test);
  REQUIRE(test.size().value() == 1);
  CHECK(test.targets()[0].item<int64_t>() == 9);
  CHECK(test.images()[0][0][0][0].item<float>() == Approx(200.0 / 255.0));
}

TEST_CASE("CIFAR-100 reads fine or coarse labels", "[data][cifar]") {
  const std::string dir = fresh_dir("cifar100");
  write_plain(dir + "/train.bin", cifar_records({{3, 42}, {19, 99}, {0, 0}}, 1));
  write_plain(dir + "/test.bin", cifar_records({{5, 7}}, 2));
  drolt::data::CifarDataset fine(dir, drolt::data::Split::train,
                                 drolt::data::CifarVariant::cifar100_fine);
  drolt::data::CifarDataset coarse(dir, drolt::data::Split::train,
                                   drolt::data::CifarVariant::cifar100_coarse);
  CHECK(fine.num_classes() == 100);
  CHECK(coarse.num_classes() == 20);
  CHECK(torch::equal(fine.targets(), torch::tensor({42, 99, 0}, torch::kInt64)));
  CHECK(torch::equal(coarse.targets(), torch::tensor({3, 19, 0}, torch::kInt64)));
  // Two label bytes: the pixels start at offset 2.
  CHECK(fine.raw_images()[1][0][0][0].item<int>() == 2);
  CHECK(fine.raw_images()[1][1][0][1].item<int>() == 101);
}

TEST_CASE("CIFAR reader rejects bad files with the file name and the reason", "[data][cifar]") {
  const std::string dir = fresh_dir("cifar_bad");
  using drolt::data::CifarVariant;
  SECTION("size not a multiple of the record size") {
    Bytes b = cifar_records({{1}, {2}}, 0);
    b.pop_back();
    const auto p = write_plain(dir + "/short.bin", b);
    REQUIRE_THROWS_WITH(drolt::data::read_cifar_file(p, CifarVariant::cifar10),
                        Contains(p) && Contains("multiple of 3073") && Contains("6145"));
    // CIFAR-10 records read as CIFAR-100 do not divide either.
    const auto q = write_plain(dir + "/ten.bin", cifar_records({{1}, {2}}, 0));
    REQUIRE_THROWS_WITH(drolt::data::read_cifar_file(q, CifarVariant::cifar100_fine),
                        Contains(q) && Contains("multiple of 3074"));
  }
  SECTION("empty file") {
    const auto p = write_plain(dir + "/empty.bin", {});
    REQUIRE_THROWS_WITH(drolt::data::read_cifar_file(p, CifarVariant::cifar10),
                        Contains(p) && Contains("empty"));
  }
  SECTION("CIFAR-10 label out of range") {
    const auto p = write_plain(dir + "/label.bin", cifar_records({{1}, {10}}, 0));
    REQUIRE_THROWS_WITH(drolt::data::read_cifar_file(p, CifarVariant::cifar10),
                        Contains(p) && Contains("record 1") && Contains("label < 10, got 10"));
  }
  SECTION("CIFAR-100 fine label out of range is caught even when reading coarse labels") {
    const auto p = write_plain(dir + "/fine.bin", cifar_records({{1, 100}}, 0));
    REQUIRE_THROWS_WITH(drolt::data::read_cifar_file(p, CifarVariant::cifar100_coarse),
                        Contains(p) && Contains("fine 100"));
  }
  SECTION("CIFAR-100 coarse label out of range") {
    const auto p = write_plain(dir + "/coarse.bin", cifar_records({{20, 1}}, 0));
    REQUIRE_THROWS_WITH(drolt::data::read_cifar_file(p, CifarVariant::cifar100_fine),
                        Contains(p) && Contains("coarse 20"));
  }
  SECTION("missing batch of a split") {
    for (int b = 1; b <= 4; ++b)
      write_plain(dir + "/data_batch_" + std::to_string(b) + ".bin", cifar_records({{1}}, 0));
    REQUIRE_THROWS_WITH(drolt::data::CifarDataset(dir, drolt::data::Split::train),
                        Contains("data_batch_5.bin") && Contains(dir));
  }
  SECTION("truncated gzip") {
    const auto full = write_gzip(dir + "/full.bin.gz", cifar_records({{1}, {2}, {3}}, 0));
    const Bytes gz = read_plain(full);
    const auto p = write_plain(dir + "/cut.bin.gz", Bytes(gz.begin(), gz.begin() + gz.size() / 2));
    REQUIRE_THROWS_WITH(drolt::data::read_cifar_file(p, CifarVariant::cifar10), Contains(p));
  }
}

// ------------------------------------------------------------ long-tail subsets

TEST_CASE("longtail_counts reproduces the documented check values exactly", "[data][longtail]") {
  using drolt::data::longtail_counts;
  using drolt::data::Profile;
  CHECK(sum(longtail_counts(500, 100, 100.0, Profile::exp)) == 10847);
  CHECK(sum(longtail_counts(500, 100, 50.0, Profile::exp)) == 12608);
  CHECK(sum(longtail_counts(500, 100, 10.0, Profile::exp)) == 19573);
  CHECK(sum(longtail_counts(5000, 10, 100.0, Profile::exp)) == 12406);

  const auto c100 = longtail_counts(500, 100, 100.0, Profile::exp);
  CHECK(c100[0] == 500);
  CHECK(c100[1] == 477);
  CHECK(c100[4] == 415);
  // 500 / 100 is exactly 5: a naive floor of exp(-log(100)) * 500 gives 4.
  CHECK(c100[99] == 5);
  const auto c10 = longtail_counts(5000, 10, 100.0, Profile::exp);
  CHECK(c10 == std::vector<int64_t>{5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50});
  for (size_t c = 1; c < c100.size(); ++c) CHECK(c100[c] <= c100[c - 1]);
}

TEST_CASE("longtail_counts step profile and edge cases", "[data][longtail]") {
  using drolt::data::longtail_counts;
  using drolt::data::Profile;
  CHECK(longtail_counts(5000, 10, 10.0, Profile::step) ==
        std::vector<int64_t>{5000, 5000, 5000, 5000, 5000, 500, 500, 500, 500, 500});
  // floor(C / 2) head classes: 2 of 5; floor(100 / 3) = 33.
  CHECK(longtail_counts(100, 5, 3.0, Profile::step) == std::vector<int64_t>{100, 100, 33, 33, 33});
  CHECK(longtail_counts(7, 1, 5.0, Profile::exp) == std::vector<int64_t>{7});
  CHECK(longtail_counts(40, 3, 1.0, Profile::exp) == std::vector<int64_t>{40, 40, 40});
  // rho = n_max: the tail class keeps exactly one sample.
  CHECK(longtail_counts(64, 7, 64.0, Profile::exp) == std::vector<int64_t>{64, 32, 16, 8, 4, 2, 1});

  CHECK_THROWS_WITH(longtail_counts(500, 100, 0.5, Profile::exp),
                    Contains("imbalance_ratio >= 1, got 0.5"));
  CHECK_THROWS_WITH(longtail_counts(500, 100, std::nan(""), Profile::exp),
                    Contains("imbalance_ratio"));
  CHECK_THROWS_WITH(longtail_counts(0, 100, 10.0, Profile::exp), Contains("n_max > 0, got 0"));
  CHECK_THROWS_WITH(longtail_counts(500, 0, 10.0, Profile::exp), Contains("num_classes > 0"));
  CHECK_THROWS_WITH(longtail_counts(50, 10, 100.0, Profile::exp), Contains("at least one sample"));
}

TEST_CASE("make_longtail keeps the documented counts per class, deterministically",
          "[data][longtail]") {
  // A balanced CIFAR-10-sized label vector, interleaved like the real files.
  const torch::Tensor targets = torch::arange(50000, torch::kInt64).remainder(10);
  const auto lt =
      drolt::data::make_longtail(targets, 10, 5000, 100.0, drolt::data::Profile::exp, 123);
  REQUIRE(lt.indices.size() == 12406);
  REQUIRE(lt.counts == drolt::data::longtail_counts(5000, 10, 100.0, drolt::data::Profile::exp));
  // The kept samples really have those counts, class 0 the head, no duplicates.
  const torch::Tensor kept = targets.index_select(0, torch::tensor(lt.indices, torch::kInt64));
  const torch::Tensor per_class = torch::bincount(kept, {}, 10);
  for (int64_t c = 0; c < 10; ++c)
    CHECK(per_class[c].item<int64_t>() == lt.counts[static_cast<size_t>(c)]);
  CHECK(std::set<int64_t>(lt.indices.begin(), lt.indices.end()).size() == lt.indices.size());
  // Grouped by class, ascending inside a class.
  CHECK(kept[0].item<int64_t>() == 0);
  CHECK(kept[12405].item<int64_t>() == 9);
  CHECK(std::is_sorted(lt.indices.begin(), lt.indices.begin() + 5000));

  const auto same =
      drolt::data::make_longtail(targets, 10, 5000, 100.0, drolt::data::Profile::exp, 123);
  const auto other =
      drolt::data::make_longtail(targets, 10, 5000, 100.0, drolt::data::Profile::exp, 124);
  CHECK(same.indices == lt.indices);
  CHECK(other.indices != lt.indices);
  CHECK(other.counts == lt.counts);
  // The tail is a random choice, not the first 50 samples of class 9.
  const std::vector<int64_t> tail(lt.indices.end() - 50, lt.indices.end());
  CHECK(tail.back() > 9 + 10 * 49);

  SECTION("a class with too few samples is an error naming the class") {
    torch::Tensor short_targets = targets.clone();
    short_targets.index_put_({torch::arange(3, 50000, 10)}, 0);  // class 3 vanishes
    CHECK_THROWS_WITH(
        drolt::data::make_longtail(short_targets, 10, 5000, 100.0, drolt::data::Profile::exp, 0),
        Contains("class 3 must keep 1077") && Contains("got 0"));
  }
  SECTION("labels out of range are rejected") {
    CHECK_THROWS_WITH(drolt::data::make_longtail(targets, 5, 10, 2.0, drolt::data::Profile::exp, 0),
                      Contains("labels in [0, 5)") && Contains("got 5"));
    CHECK_THROWS_WITH(drolt::data::make_longtail(targets.to(torch::kFloat32), 10, 10, 2.0,
                                                 drolt::data::Profile::exp, 0),
                      Contains("integer targets"));
  }
}

TEST_CASE("balanced_validation_split draws only what the subset left out", "[data][longtail]") {
  const torch::Tensor targets = class_targets({60, 60, 60, 60});
  const auto lt = drolt::data::make_longtail(targets, 4, 50, 10.0, drolt::data::Profile::exp, 5);
  CHECK(lt.counts == std::vector<int64_t>{50, 23, 10, 5});
  const auto val = drolt::data::balanced_validation_split(targets, lt, 10, 9);
  REQUIRE(val.size() == 40);
  std::set<int64_t> in_subset(lt.indices.begin(), lt.indices.end());
  std::vector<int64_t> per_class(4, 0);
  for (const int64_t i : val) {
    CHECK(in_subset.count(i) == 0);
    ++per_class[static_cast<size_t>(targets[i].item<int64_t>())];
  }
  CHECK(per_class == std::vector<int64_t>{10, 10, 10, 10});
  // Class 0 had exactly 10 left over: all of them are taken.
  std::vector<int64_t> left0;
  for (int64_t i = 0; i < 60; ++i)
    if (!in_subset.count(i)) left0.push_back(i);
  CHECK(std::vector<int64_t>(val.begin(), val.begin() + 10) == left0);
  CHECK(drolt::data::balanced_validation_split(targets, lt, 10, 9) == val);

  CHECK_THROWS_WITH(drolt::data::balanced_validation_split(targets, lt, 11, 9),
                    Contains("class 0") && Contains("at least 11") && Contains("got 10"));
  CHECK_THROWS_WITH(drolt::data::balanced_validation_split(targets, lt, 0, 9),
                    Contains("per_class > 0"));
  // A per-class count near INT64_MAX is refused by name, not by an overflowed reserve.
  CHECK_THROWS_WITH(drolt::data::balanced_validation_split(targets, lt, INT64_MAX / 2, 9),
                    Contains("class 0") && Contains("at least 4611686018427387903"));
}

TEST_CASE("samplers: a batch size near SIZE_MAX takes the rest of the epoch", "[data][sampler]") {
  const torch::Tensor targets = class_targets({50, 20, 7});  // N = 77
  drolt::data::ClassBalancedSampler a(targets, drolt::data::ClassSamplerOptions().seed(11));
  drolt::data::ClassAwareSampler b(targets, 2, drolt::data::ClassSamplerOptions().seed(11));
  const size_t huge = std::numeric_limits<size_t>::max();
  REQUIRE(a.next(5)->size() == 5);
  REQUIRE(b.next(5)->size() == 5);
  CHECK(a.next(huge)->size() == 72);
  CHECK(b.next(huge)->size() == b.epoch_length() - 5);
  CHECK_FALSE(a.next(huge).has_value());
  CHECK_FALSE(b.next(huge).has_value());
}

TEST_CASE("SubsetDataset maps positions to the kept indices", "[data][longtail]") {
  auto base = torch::data::datasets::TensorDataset(torch::arange(10, torch::kInt64) * 3);
  drolt::data::SubsetDataset<torch::data::datasets::TensorDataset> sub(base, {7, 2, 9});
  REQUIRE(sub.size().value() == 3);
  CHECK(sub.get(0).data.item<int64_t>() == 21);
  CHECK(sub.get(2).data.item<int64_t>() == 27);
  CHECK_THROWS_WITH(sub.get(3), Contains("index < 3"));
  CHECK_THROWS_WITH((drolt::data::SubsetDataset<torch::data::datasets::TensorDataset>(base, {10})),
                    Contains("got 10"));
}

// -------------------------------------------------------------------- samplers

namespace {

/// Draws `epochs` full epochs and returns how often each class and each index came up.
template <typename Sampler>
std::pair<std::vector<double>, std::vector<int64_t>> draw(Sampler& s, const torch::Tensor& targets,
                                                          int64_t num_classes, int epochs) {
  std::vector<double> freq(static_cast<size_t>(num_classes), 0.0);
  std::vector<int64_t> hits(static_cast<size_t>(targets.size(0)), 0);
  const int64_t* y = targets.data_ptr<int64_t>();
  int64_t total = 0;
  for (int e = 0; e < epochs; ++e) {
    s.reset();
    while (auto batch = s.next(1000)) {
      for (const size_t i : *batch) {
        freq[static_cast<size_t>(y[i])] += 1;
        ++hits[i];
        ++total;
      }
    }
  }
  for (auto& f : freq) f /= static_cast<double>(total);
  return {freq, hits};
}

/// |observed - p| within 5 binomial standard deviations.
void check_frequencies(const std::vector<double>& observed, const std::vector<double>& expected,
                       int64_t n) {
  REQUIRE(observed.size() == expected.size());
  for (size_t c = 0; c < expected.size(); ++c) {
    const double sd = std::sqrt(expected[c] * (1 - expected[c]) / static_cast<double>(n));
    INFO("class " << c << ": observed " << observed[c] << ", expected " << expected[c]);
    CHECK(std::abs(observed[c] - expected[c]) <= 5 * sd + 1e-12);
  }
}

}  // namespace

TEST_CASE("ClassBalancedSampler draws classes uniformly and samples uniformly within a class",
          "[data][sampler]") {
  const torch::Tensor targets = class_targets({800, 150, 40, 10});  // N = 1000
  drolt::data::ClassBalancedSampler s(
      targets, drolt::data::ClassSamplerOptions().seed(1).num_samples(50000));
  CHECK(s.epoch_length() == 50000);
  auto [freq, hits] = draw(s, targets, 4, 4);
  check_frequencies(freq, {0.25, 0.25, 0.25, 0.25}, 200000);
  // Class 3's 10 samples (indices 990..999) each get 1/40 of the draws.
  for (int64_t i = 990; i < 1000; ++i) {
    const double p = 1.0 / 40.0, n = 200000;
    CHECK(std::abs(hits[static_cast<size_t>(i)] - p * n) <= 5 * std::sqrt(n * p * (1 - p)));
  }
  CHECK(s.class_probabilities() == std::vector<double>{0.25, 0.25, 0.25, 0.25});
}

TEST_CASE("class-balanced sampling skips classes without samples", "[data][sampler]") {
  // Labels 0 and 3 only: classes 1 and 2 exist as ids but have no samples.
  const torch::Tensor targets = torch::tensor({0, 0, 0, 0, 0, 0, 0, 3}, torch::kInt64);
  drolt::data::ClassBalancedSampler s(
      targets, drolt::data::ClassSamplerOptions().seed(2).num_samples(40000));
  auto [freq, hits] = draw(s, targets, 4, 1);
  check_frequencies(freq, {0.5, 0.0, 0.0, 0.5}, 40000);
  CHECK(s.class_probabilities()[1] == 0.0);
}

TEST_CASE("SqrtSampler draws classes in proportion to sqrt(n_c)", "[data][sampler]") {
  const torch::Tensor targets = class_targets({800, 150, 40, 10});
  drolt::data::SqrtSampler s(targets,
                             drolt::data::ClassSamplerOptions().seed(3).num_samples(50000));
  const double z = std::sqrt(800.0) + std::sqrt(150.0) + std::sqrt(40.0) + std::sqrt(10.0);
  const std::vector<double> p = {std::sqrt(800.0) / z, std::sqrt(150.0) / z, std::sqrt(40.0) / z,
                                 std::sqrt(10.0) / z};
  auto [freq, hits] = draw(s, targets, 4, 4);
  check_frequencies(freq, p, 200000);
}

TEST_CASE("ProgressiveSampler moves from instance- to class-balanced", "[data][sampler]") {
  const torch::Tensor targets = class_targets({800, 150, 40, 10});
  drolt::data::ProgressiveSampler s(targets, 10,
                                    drolt::data::ClassSamplerOptions().seed(4).num_samples(100000));
  const std::vector<double> ib = {0.8, 0.15, 0.04, 0.01};
  SECTION("epoch 0 is instance-balanced") {
    auto [freq, hits] = draw(s, targets, 4, 1);
    CHECK(s.epoch() == 0);
    check_frequencies(freq, ib, 100000);
  }
  SECTION("halfway is the average of the two") {
    s.set_epoch(5);
    CHECK(s.progress() == 0.5);
    auto [freq, hits] = draw(s, targets, 4, 1);
    CHECK(s.epoch() == 5);
    check_frequencies(
        freq, {(0.8 + 0.25) / 2, (0.15 + 0.25) / 2, (0.04 + 0.25) / 2, (0.01 + 0.25) / 2}, 100000);
  }
  SECTION("class-balanced at total_epochs and after") {
    for (const int64_t e : {10, 25}) {
      s.set_epoch(e);
      CHECK(s.progress() == 1.0);
      auto [freq, hits] = draw(s, targets, 4, 1);
      check_frequencies(freq, {0.25, 0.25, 0.25, 0.25}, 100000);
    }
  }
  SECTION("each reset moves one epoch on") {
    s.reset();
    s.reset();
    s.reset();
    CHECK(s.epoch() == 2);
    CHECK(s.progress() == Approx(0.2));
    CHECK(s.class_probabilities()[3] == Approx(0.8 * 0.01 + 0.2 * 0.25));
  }
  CHECK_THROWS_WITH(s.set_epoch(-1), Contains("epoch >= 0, got -1"));
  CHECK_THROWS_WITH(drolt::data::ProgressiveSampler(targets, 0),
                    Contains("total_epochs > 0, got 0"));
}

TEST_CASE("ProgressiveSampler advances one epoch per data-loader loop", "[data][sampler]") {
  const torch::Tensor targets = class_targets({900, 90, 10});
  drolt::data::ProgressiveSampler sampler(
      targets, 2, drolt::data::ClassSamplerOptions().seed(8).num_samples(40000));
  auto loader = torch::data::make_data_loader(torch::data::datasets::TensorDataset(targets),
                                              std::move(sampler),
                                              torch::data::DataLoaderOptions().batch_size(500));
  const std::vector<std::vector<double>> expected = {
      {0.9, 0.09, 0.01},
      {(0.9 + 1.0 / 3) / 2, (0.09 + 1.0 / 3) / 2, (0.01 + 1.0 / 3) / 2},
      {1.0 / 3, 1.0 / 3, 1.0 / 3}};
  for (const auto& p : expected) {
    std::vector<double> freq(3, 0.0);
    int64_t total = 0;
    for (auto& batch : *loader) {
      for (auto& ex : batch) {
        freq[static_cast<size_t>(ex.data.item<int64_t>())] += 1;
        ++total;
      }
    }
    REQUIRE(total == 40000);
    for (auto& f : freq) f /= static_cast<double>(total);
    check_frequencies(freq, p, total);
  }
}

TEST_CASE("samplers: epoch length, batches, reset and determinism", "[data][sampler]") {
  const torch::Tensor targets = class_targets({50, 20, 7});  // N = 77
  drolt::data::ClassBalancedSampler a(targets, drolt::data::ClassSamplerOptions().seed(11));
  drolt::data::ClassBalancedSampler b(targets, drolt::data::ClassSamplerOptions().seed(11));
  drolt::data::ClassBalancedSampler c(targets, drolt::data::ClassSamplerOptions().seed(12));
  CHECK(a.epoch_length() == 77);

  const auto epoch = [](auto& s, size_t batch) {
    std::vector<size_t> all;
    std::vector<size_t> sizes;
    while (auto next = s.next(batch)) {
      sizes.push_back(next->size());
      all.insert(all.end(), next->begin(), next->end());
    }
    return std::make_pair(all, sizes);
  };
  auto [ea, sizes] = epoch(a, 32);
  CHECK(ea.size() == 77);
  CHECK(sizes == std::vector<size_t>{32, 32, 13});
  CHECK_FALSE(a.next(32).has_value());  // exhausted until reset
  auto eb = epoch(b, 10).first;
  CHECK(ea == eb);
  CHECK(epoch(c, 10).first != ea);

  a.reset();
  auto ea2 = epoch(a, 77).first;
  CHECK(ea2.size() == 77);
  CHECK(ea2 != ea);  // a new epoch is a new draw
  b.reset();
  CHECK(epoch(b, 5).first == ea2);  // ... from the same stream as its twin

  a.reset(200);
  CHECK(a.epoch_length() == 200);
  CHECK(epoch(a, 64).first.size() == 200);

  // Regression anchor: the draws must not change between releases or platforms
  // (they use only std::mt19937_64's specified output).
  drolt::data::ClassBalancedSampler golden(targets, drolt::data::ClassSamplerOptions().seed(42));
  const auto first = golden.next(8).value();
  std::ostringstream shown;
  for (const size_t i : first) shown << i << ", ";
  INFO("first draws: " << shown.str());
  CHECK(first == std::vector<size_t>{73, 74, 76, 54, 7, 12, 73, 73});
}

TEST_CASE("samplers: save and load resume the same draws", "[data][sampler]") {
  const torch::Tensor targets = class_targets({30, 5});
  drolt::data::SqrtSampler s(targets, drolt::data::ClassSamplerOptions().seed(7));
  s.next(10);
  torch::serialize::OutputArchive out;
  s.save(out);
  std::stringstream buf;
  out.save_to(buf);
  const auto rest = s.next(100).value();
  s.reset();
  const auto after_reset = s.next(100).value();

  drolt::data::SqrtSampler t(targets, drolt::data::ClassSamplerOptions().seed(99));
  torch::serialize::InputArchive in;
  in.load_from(buf);
  t.load(in);
  CHECK(t.epoch() == 0);
  CHECK(t.next(100).value() == rest);
  t.reset();
  CHECK(t.epoch() == 1);
  CHECK(t.next(100).value() == after_reset);

  // A progressive sampler resumes at the saved epoch, with that epoch's probabilities.
  drolt::data::ProgressiveSampler p(targets, 4, drolt::data::ClassSamplerOptions().seed(3));
  p.set_epoch(2);
  p.reset();
  torch::serialize::OutputArchive pout;
  p.save(pout);
  std::stringstream pbuf;
  pout.save_to(pbuf);
  drolt::data::ProgressiveSampler q(targets, 4);
  torch::serialize::InputArchive pin;
  pin.load_from(pbuf);
  q.load(pin);
  CHECK(q.epoch() == 2);
  CHECK(q.progress() == 0.5);
  CHECK(q.class_probabilities() == p.class_probabilities());
  p.reset();
  q.reset();
  CHECK(q.epoch() == 3);
  CHECK(q.next(50).value() == p.next(50).value());

  // The generator state is a long list of integers: a global locale that
  // groups digits must not change how it is written or read.
  {
    struct Grouping : std::numpunct<char> {
      char do_thousands_sep() const override { return ','; }
      std::string do_grouping() const override { return "\3"; }
    };
    const std::locale previous =
        std::locale::global(std::locale(std::locale::classic(), new Grouping));
    drolt::data::SqrtSampler g(targets, drolt::data::ClassSamplerOptions().seed(5));
    g.next(3);
    torch::serialize::OutputArchive gout;
    g.save(gout);  // saved under the grouping locale ...
    std::stringstream gbuf;
    gout.save_to(gbuf);
    std::locale::global(previous);
    g.reset();
    const auto expected = g.next(20).value();
    drolt::data::SqrtSampler h(targets);
    torch::serialize::InputArchive gin;
    gin.load_from(gbuf);
    h.load(gin);  // ... loaded under the classic one
    h.reset();
    CHECK(h.next(20).value() == expected);
  }

  // An archive from a sampler over more samples does not fit these targets.
  drolt::data::SqrtSampler big(class_targets({300, 50}),
                               drolt::data::ClassSamplerOptions().seed(1));
  torch::serialize::OutputArchive out2;
  big.save(out2);
  std::stringstream buf2;
  out2.save_to(buf2);
  torch::serialize::InputArchive in2;
  in2.load_from(buf2);
  drolt::data::SqrtSampler small(targets, drolt::data::ClassSamplerOptions().seed(1));
  CHECK_THROWS_WITH(small.load(in2), Contains("sampler over 35 targets, got one over 350"));
}

TEST_CASE("ClassBalancedSampler drives torch::data::make_data_loader", "[data][sampler]") {
  const torch::Tensor targets = class_targets({900, 90, 10});
  auto dataset = torch::data::datasets::TensorDataset(targets);
  drolt::data::ClassBalancedSampler sampler(
      targets, drolt::data::ClassSamplerOptions().seed(5).num_samples(30000));
  auto loader = torch::data::make_data_loader(std::move(dataset), std::move(sampler),
                                              torch::data::DataLoaderOptions().batch_size(256));
  std::vector<double> freq(3, 0.0);
  int64_t total = 0;
  for (int epoch = 0; epoch < 2; ++epoch) {
    int64_t this_epoch = 0;
    for (auto& batch : *loader) {
      for (auto& ex : batch) {
        freq[static_cast<size_t>(ex.data.item<int64_t>())] += 1;
        ++this_epoch;
      }
    }
    CHECK(this_epoch == 30000);
    total += this_epoch;
  }
  for (auto& f : freq) f /= static_cast<double>(total);
  check_frequencies(freq, {1.0 / 3, 1.0 / 3, 1.0 / 3}, total);
}

TEST_CASE("samplers reject unusable targets", "[data][sampler]") {
  using drolt::data::ClassBalancedSampler;
  CHECK_THROWS_WITH(ClassBalancedSampler(torch::tensor({0.0, 1.0})), Contains("integer targets"));
  CHECK_THROWS_WITH(ClassBalancedSampler(torch::tensor({0, -1}, torch::kInt64)),
                    Contains("got -1"));
  CHECK_THROWS_WITH(ClassBalancedSampler(torch::empty({0}, torch::kInt64)), Contains("non-empty"));
  CHECK_THROWS_WITH(ClassBalancedSampler(torch::tensor({0, 1}, torch::kInt64),
                                         drolt::data::ClassSamplerOptions().num_samples(-1)),
                    Contains("num_samples >= 0"));
}

TEST_CASE("ClassAwareSampler draws k images per class in turn, n_max * C per epoch",
          "[data][sampler]") {
  // Counts 5, 3, 0, 1 (class 2 has no image): C' = 3 classes, n_max = 5.
  const auto y = torch::tensor({0, 1, 0, 3, 0, 1, 0, 1, 0}, torch::kLong);
  const int64_t k = 2;
  drolt::data::ClassAwareSampler s(y, k, drolt::data::ClassSamplerOptions().seed(11));
  REQUIRE(s.epoch_length() == 15);
  std::vector<int64_t> labels;
  std::map<int64_t, std::vector<size_t>> drawn;  // class -> images in draw order
  for (int epoch = 0; epoch < 3; ++epoch) {
    s.reset();
    size_t n = 0;
    while (auto b = s.next(4)) {
      for (size_t i : *b) {
        labels.push_back(y[static_cast<int64_t>(i)].item<int64_t>());
        drawn[labels.back()].push_back(i);
      }
      n += b->size();
    }
    CHECK(n == 15);
  }
  // Blocks of k of one class; every k * 3 draws hold each class once (a cycle).
  for (size_t b = 0; b + k <= labels.size(); b += k) {
    for (size_t j = 1; j < static_cast<size_t>(k); ++j) CHECK(labels[b + j] == labels[b]);
  }
  for (size_t c = 0; c + 3 * k <= labels.size(); c += 3 * k) {
    std::set<int64_t> cls;
    for (size_t b = c; b < c + 3 * k; b += k) cls.insert(labels[b]);
    CHECK(cls == std::set<int64_t>({0, 1, 3}));
  }
  // Within a class, every image once before any again.
  for (const auto& kv : drawn) {
    const auto per = static_cast<size_t>(y.eq(kv.first).sum().item<int64_t>());
    for (size_t c = 0; c + per <= kv.second.size(); c += per) {
      std::set<size_t> once(kv.second.begin() + static_cast<std::ptrdiff_t>(c),
                            kv.second.begin() + static_cast<std::ptrdiff_t>(c + per));
      CHECK(once.size() == per);
    }
  }
  // Save mid-epoch, load into a fresh sampler: the same draws follow.
  drolt::data::ClassAwareSampler a(y, k, drolt::data::ClassSamplerOptions().seed(5));
  a.reset();
  a.next(7);
  torch::serialize::OutputArchive out;
  a.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  drolt::data::ClassAwareSampler b(y, k, drolt::data::ClassSamplerOptions().seed(999));
  torch::serialize::InputArchive in;
  std::istringstream is(bytes.str());
  in.load_from(is);
  b.load(in);
  for (int i = 0; i < 5; ++i) {
    auto x = a.next(4), z = b.next(4);
    REQUIRE(x.has_value() == z.has_value());
    if (!x) {
      a.reset();
      b.reset();
      continue;
    }
    CHECK(*x == *z);
  }
  // A sampler over other targets or another k refuses the archive.
  drolt::data::ClassAwareSampler other(y, 3);
  torch::serialize::InputArchive in2;
  std::istringstream is2(bytes.str());
  in2.load_from(is2);
  CHECK_THROWS_WITH(other.load(in2), Contains("with k 3, got one over 9 targets with k 2"));
  CHECK_THROWS_WITH(drolt::data::ClassAwareSampler(y, 0), Contains("expected k >= 1"));
}
