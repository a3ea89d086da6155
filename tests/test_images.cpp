// Image data sets (include/drolt/data/image_*.hpp, images.hpp, inaturalist.hpp):
// decoding, list files, class folders, iNaturalist JSON, and agreement with
// the IDX path. Compiled only with drolt::images (TurboJPEG, libpng).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <torch/torch.h>
// (a separate include block, so sorting cannot move Catch first)
#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "../examples/common/resnet_imagenet.hpp"

namespace {

int64_t parameter_count(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST_CASE("ImageNet ResNets: torchvision's parameter counts, names and output shapes", "[resnet]") {
  using drolt_examples::ImageNetResNet;
  using drolt_examples::ImageNetResNetOptions;
  // torchvision.models.resnet{18,34,50}(num_classes=1000); ResNet-10 by the same formula
  // (ResNet-18 less one basic block per stage).
  const std::map<int64_t, int64_t> expected = {
      {10, 5418792}, {18, 11689512}, {34, 21797672}, {50, 25557032}};
  for (const auto& kv : expected) {
    ImageNetResNet net(ImageNetResNetOptions(kv.first, 1000));
    CHECK(parameter_count(*net) == kv.second);
    CHECK(net->feature_dim() == (kv.first == 50 ? 2048 : 512));
  }
  ImageNetResNet r50(ImageNetResNetOptions(50, 37).zero_init_residual(true));
  const auto params = r50->named_parameters();
  REQUIRE(params.contains("layer3.5.conv3.weight"));
  CHECK(params["layer3.5.conv3.weight"].sizes() == torch::IntArrayRef({1024, 256, 1, 1}));
  CHECK(params["layer2.0.conv2.weight"].sizes() == torch::IntArrayRef({128, 128, 3, 3}));
  CHECK(params["layer2.0.downsample.0.weight"].sizes() == torch::IntArrayRef({512, 256, 1, 1}));
  CHECK(params["fc.weight"].sizes() == torch::IntArrayRef({37, 2048}));
  CHECK(params["layer4.2.bn3.weight"].abs().sum().item<double>() == 0.0);
  CHECK(params["layer4.2.bn2.weight"].eq(1).all().item<bool>());
  CHECK(r50->named_buffers().contains("layer1.0.bn1.running_mean"));

  torch::manual_seed(0);
  r50->eval();
  torch::NoGradGuard no_grad;
  const auto out = r50->forward(torch::randn({2, 3, 64, 64}));
  CHECK(out.features.sizes() == torch::IntArrayRef({2, 2048}));
  CHECK(out.logits.sizes() == torch::IntArrayRef({2, 37}));
  ImageNetResNet r10(ImageNetResNetOptions(10, 5).in_channels(1));
  const auto small = r10->forward(torch::randn({3, 1, 224, 224}));
  CHECK(small.features.sizes() == torch::IntArrayRef({3, 512}));
  CHECK(small.logits.sizes() == torch::IntArrayRef({3, 5}));
  CHECK_THROWS_WITH(ImageNetResNet(ImageNetResNetOptions(20, 5)),
                    Catch::Matchers::Contains(
                        "drolt_examples::ImageNetResNet: expected depth 10, 18, 34 or 50, got 20"));
}

#ifdef DROLT_HAS_IMAGES

#include <dirent.h>
#include <sys/resource.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "drolt/data/idx.hpp"
#include "drolt/data/image_codec.hpp"
#include "drolt/data/image_list.hpp"
#include "drolt/data/image_loader.hpp"
#include "drolt/data/images.hpp"
#include "drolt/data/inaturalist.hpp"
#include "drolt/data/longtail.hpp"
#include "drolt/metrics.hpp"

using Catch::Matchers::Contains;
using Bytes = std::vector<uint8_t>;
namespace dd = drolt::data;

namespace {

std::string fresh_dir(const std::string& name) {
  // Shell tools rather than std::filesystem (broken in PyPI's libtorch.so).
  const std::string dir = std::string(DROLT_TEST_TMPDIR) + "/images/" + name;
  const std::string cmd = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return dir;
}

void make_dir(const std::string& dir) {
  REQUIRE(std::system(("mkdir -p '" + dir + "'").c_str()) == 0);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  REQUIRE(f.good());
}

/// A smooth colour image (JPEG-friendly): gradients plus a soft blob.
torch::Tensor smooth_image(int64_t h, int64_t w, int64_t c, int seed) {
  auto y = torch::arange(h, torch::kFloat32).view({h, 1, 1}) / static_cast<float>(h);
  auto x = torch::arange(w, torch::kFloat32).view({1, w, 1}) / static_cast<float>(w);
  auto ch = torch::arange(c, torch::kFloat32).view({1, 1, c});
  auto v = 0.5 + 0.3 * torch::sin(6.0 * x + 3.0 * y + ch + seed) +
           0.15 * torch::exp(-((x - 0.5) * (x - 0.5) + (y - 0.4) * (y - 0.4)) * 10.0);
  return (v.clamp(0, 1) * 255).round().to(torch::kUInt8).contiguous();
}

void put_u32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

void write_gzip(const std::string& path, const Bytes& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) ==
          static_cast<int>(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

/// Writes images (uint8 [N, H, W]) and labels as the four IDX files of `dir`.
void write_idx_set(const std::string& dir, const torch::Tensor& images,
                   const torch::Tensor& labels) {
  for (const std::string prefix : {"train", "t10k"}) {
    Bytes im, lab;
    put_u32(im, 0x00000803);
    put_u32(im, static_cast<uint32_t>(images.size(0)));
    put_u32(im, static_cast<uint32_t>(images.size(1)));
    put_u32(im, static_cast<uint32_t>(images.size(2)));
    const auto* p = images.data_ptr<uint8_t>();
    im.insert(im.end(), p, p + images.numel());
    put_u32(lab, 0x00000801);
    put_u32(lab, static_cast<uint32_t>(labels.size(0)));
    const auto l = labels.to(torch::kUInt8).contiguous();
    lab.insert(lab.end(), l.data_ptr<uint8_t>(), l.data_ptr<uint8_t>() + l.numel());
    write_gzip(dir + "/" + prefix + "-images-idx3-ubyte.gz", im);
    write_gzip(dir + "/" + prefix + "-labels-idx1-ubyte.gz", lab);
  }
}

struct ExportedSet {
  std::string list_file;
  std::string folder_root;
  std::vector<std::string> class_names;
};

/// Writes each IDX image as a PNG, once under a list file and once as a class
/// folder tree whose folder names sort in label order and whose file names
/// sort in dataset order.
ExportedSet export_as_png(const dd::IdxDataset& idx, const std::string& dir) {
  ExportedSet out;
  out.list_file = dir + "/train.txt";
  out.folder_root = dir + "/tree";
  const int64_t n = idx.raw_images().size(0);
  const int64_t classes = idx.targets().max().item<int64_t>() + 1;
  for (int64_t c = 0; c < classes; ++c) {
    char name[32];
    std::snprintf(name, sizeof(name), "class_%02lld", static_cast<long long>(c));
    out.class_names.push_back(name);
    make_dir(out.folder_root + "/" + name);
  }
  make_dir(dir + "/list/images");
  std::string list;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = idx.targets()[i].item<int64_t>();
    const Bytes png = dd::encode_png(idx.raw_images()[i]);
    char file[64];
    std::snprintf(file, sizeof(file), "img_%06lld.png", static_cast<long long>(i));
    dd::write_file_bytes(dir + "/list/images/" + file, png);
    dd::write_file_bytes(
        out.folder_root + "/" + out.class_names[static_cast<size_t>(y)] + "/" + file, png);
    list += std::string("images/") + file + " " + std::to_string(y) + "\n";
  }
  write_text(out.list_file, list);
  return out;
}

/// Checks that list and folder data sets hold exactly the IDX tensors and give
/// the same long-tailed subset as the IDX labels.
void check_same_as_idx(const dd::IdxDataset& idx_in, const std::string& dir, int64_t n_max,
                       double rho) {
  dd::IdxDataset idx = idx_in;
  const ExportedSet set = export_as_png(idx, dir);
  dd::ImageDataset listed(dd::read_image_list(set.list_file, dir + "/list"),
                          dd::ImageDatasetOptions().decode(dd::ImageDecodeOptions().channels(1)));
  dd::ImageDataset tree(dd::list_image_folder(set.folder_root),
                        dd::ImageDatasetOptions().decode(dd::ImageDecodeOptions().channels(1)));
  const int64_t n = idx.raw_images().size(0);
  const int64_t classes = idx.targets().max().item<int64_t>() + 1;
  REQUIRE(listed.size().value() == static_cast<size_t>(n));
  REQUIRE(tree.size().value() == static_cast<size_t>(n));
  CHECK(tree.class_names() == set.class_names);
  CHECK(torch::equal(listed.targets(), idx.targets()));

  // Folder order: by class, then by file name (= dataset index).
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  const auto* y = idx.targets().data_ptr<int64_t>();
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return y[a] < y[b]; });

  for (int64_t i = 0; i < n; ++i) {
    const auto a = idx.get(static_cast<size_t>(i));
    const auto b = listed.get(static_cast<size_t>(i));
    const auto c = tree.get(static_cast<size_t>(i));
    const auto j = order[static_cast<size_t>(i)];
    const auto d = idx.get(static_cast<size_t>(j));
    REQUIRE(b.data.sizes() == a.data.sizes());
    REQUIRE(torch::equal(b.data, a.data));
    REQUIRE(torch::equal(c.data, d.data));
    REQUIRE(c.target.item<int64_t>() == d.target.item<int64_t>());
  }
  CHECK(listed.class_counts() == tree.class_counts());
  const auto counts = torch::bincount(idx.targets(), {}, classes);
  CHECK(torch::equal(torch::tensor(listed.class_counts(), torch::kInt64), counts));

  const auto lt_idx = dd::make_longtail(idx.targets(), classes, n_max, rho, dd::Profile::exp, 3);
  const auto lt_list =
      dd::make_longtail(listed.targets(), classes, n_max, rho, dd::Profile::exp, 3);
  const auto lt_tree = dd::make_longtail(tree.targets(), classes, n_max, rho, dd::Profile::exp, 3);
  CHECK(lt_list.indices == lt_idx.indices);
  CHECK(lt_tree.counts == lt_idx.counts);
  std::vector<int64_t> tree_as_idx;
  for (const int64_t i : lt_tree.indices) tree_as_idx.push_back(order[static_cast<size_t>(i)]);
  CHECK(tree_as_idx == lt_idx.indices);

  // The subset as a dataset: the same images in the same order.
  dd::SubsetDataset<dd::IdxDataset> sub_idx(idx, lt_idx.indices);
  dd::SubsetDataset<dd::ImageDataset> sub_list(listed, lt_list.indices);
  for (size_t i = 0; i < lt_idx.indices.size(); ++i) {
    REQUIRE(torch::equal(sub_idx.get(i).data, sub_list.get(i).data));
  }
  // Many / Medium / Few from the subset's counts: identical splits.
  const auto pred = idx.targets();
  const auto s1 = drolt::metrics::split_accuracy(pred, idx.targets(), lt_idx.counts);
  const auto s2 = drolt::metrics::split_accuracy(pred, listed.targets(), lt_list.counts);
  CHECK(s1.many_classes == s2.many_classes);
  CHECK(s1.medium_classes == s2.medium_classes);
  CHECK(s1.few_classes == s2.few_classes);
}

}  // namespace

TEST_CASE("PNG encoding and decoding is lossless for gray and RGB", "[images]") {
  const int64_t c = GENERATE(1, 3);
  const int64_t h = GENERATE(1, 7, 33);
  const auto img = torch::randint(0, 256, {h, 13, c}, torch::kUInt8);
  const Bytes png = dd::encode_png(img);
  CHECK(dd::sniff_image_format(png.data(), png.size()) == dd::ImageFormat::png);
  const auto back = dd::decode_image(png.data(), png.size(), dd::ImageDecodeOptions().channels(0));
  REQUIRE(back.sizes() == img.sizes());
  CHECK(torch::equal(back, img));
}

TEST_CASE("channel conversion: gray is replicated, RGB becomes ITU-R 601 luma", "[images]") {
  const auto gray = torch::randint(0, 256, {5, 6, 1}, torch::kUInt8);
  const Bytes g = dd::encode_png(gray);
  const auto as_rgb = dd::decode_image(g.data(), g.size(), dd::ImageDecodeOptions().channels(3));
  REQUIRE(as_rgb.sizes() == torch::IntArrayRef({5, 6, 3}));
  CHECK(torch::equal(as_rgb, gray.expand({5, 6, 3})));

  const auto rgb = torch::randint(0, 256, {4, 9, 3}, torch::kUInt8);
  const Bytes p = dd::encode_png(rgb);
  const auto as_gray = dd::decode_image(p.data(), p.size(), dd::ImageDecodeOptions().channels(1));
  const auto f = rgb.to(torch::kFloat64);
  const auto luma = (f.select(2, 0) * 0.299 + f.select(2, 1) * 0.587 + f.select(2, 2) * 0.114);
  REQUIRE(as_gray.sizes() == torch::IntArrayRef({4, 9, 1}));
  // Fixed-point luma: within half a level (plus rounding) of the exact value.
  CHECK((as_gray.squeeze(2).to(torch::kFloat64) - luma).abs().max().item<double>() <= 0.51);
}

TEST_CASE("JPEG round-trips within the codec's error and downscales in the DCT domain",
          "[images]") {
  const int64_t c = GENERATE(1, 3);
  const auto img = smooth_image(240, 320, c, 1);
  const Bytes jpg = dd::encode_jpeg(img, 95);
  CHECK(dd::sniff_image_format(jpg.data(), jpg.size()) == dd::ImageFormat::jpeg);
  const auto back = dd::decode_image(jpg.data(), jpg.size(), dd::ImageDecodeOptions().channels(0));
  REQUIRE(back.sizes() == img.sizes());
  const auto err = (back.to(torch::kFloat32) - img.to(torch::kFloat32)).abs();
  CHECK(err.mean().item<float>() < 1.0f);
  CHECK(err.max().item<float>() <= 12.0f);

  // Shorter side 240: 1/4 gives 60 (>= 60), 1/8 gives 30 (< 60): 1/4 is chosen.
  const auto small =
      dd::decode_image(jpg.data(), jpg.size(), dd::ImageDecodeOptions().channels(0).min_size(60));
  REQUIRE(small.sizes() == torch::IntArrayRef({60, 80, c}));
  const auto pooled = torch::avg_pool2d(img.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32), 4)
                          .squeeze(0)
                          .permute({1, 2, 0});
  CHECK((small.to(torch::kFloat32) - pooled).abs().mean().item<float>() < 2.0f);
  // 61 needs 3/8 (90 x 120); a min_size above the image keeps the full size.
  CHECK(dd::decode_image(jpg.data(), jpg.size(), dd::ImageDecodeOptions().min_size(61)).sizes() ==
        torch::IntArrayRef({90, 120, 3}));
  CHECK(dd::decode_image(jpg.data(), jpg.size(), dd::ImageDecodeOptions().min_size(1000)).sizes() ==
        torch::IntArrayRef({240, 320, 3}));
}

TEST_CASE("a generated JPEG set read through a list file matches its sources", "[images]") {
  const std::string dir = fresh_dir("jpeg_set");
  std::string list;
  std::vector<torch::Tensor> sources;
  for (int i = 0; i < 6; ++i) {
    sources.push_back(smooth_image(32 + 8 * i, 40, 3, i));
    const std::string name = "photo " + std::to_string(i) + ".jpg";  // a space in the path
    dd::write_file_bytes(dir + "/" + name, dd::encode_jpeg(sources.back(), 92));
    list += name + "\t" + std::to_string(i % 3) + "\r\n";
  }
  write_text(dir + "/list.txt", list + "\n\n");
  dd::ImageDataset ds(dd::read_image_list(dir + "/list.txt", dir));
  REQUIRE(ds.size().value() == 6);
  CHECK(ds.num_classes() == 3);
  CHECK(ds.class_counts() == std::vector<int64_t>{2, 2, 2});
  for (size_t i = 0; i < 6; ++i) {
    const auto ex = ds.get(i);
    CHECK(ex.target.item<int64_t>() == static_cast<int64_t>(i % 3));
    const auto src = sources[i].permute({2, 0, 1}).to(torch::kFloat32).div(255.0);
    REQUIRE(ex.data.sizes() == src.sizes());
    CHECK((ex.data - src).abs().mean().item<float>() < 1.5f / 255.0f);
  }
}

TEST_CASE("PNG list file and class folders give the IDX tensors and long-tailed subset bit for bit",
          "[images]") {
  SECTION("a generated Fashion-MNIST-like set") {
    const int64_t n = 400, classes = 10;
    torch::manual_seed(5);
    const auto images = torch::randint(0, 256, {n, 28, 28}, torch::kUInt8);
    // Labels shuffled, 40 per class, so class folders reorder the samples.
    const auto labels = torch::arange(n, torch::kInt64)
                            .remainder(classes)
                            .index_select(0, torch::randperm(n, torch::kInt64));
    const std::string dir = fresh_dir("fmnist_generated");
    make_dir(dir + "/idx");
    write_idx_set(dir + "/idx", images, labels);
    dd::IdxDataset idx(dir + "/idx", dd::Split::train);
    check_same_as_idx(idx, dir, 40, 10.0);
  }
  SECTION("the first 300 images of the real Fashion-MNIST, when installed") {
    const std::string real = "/usr/share/datasets/fashion-mnist";
    if (!dd::detail::is_regular_file(real + "/train-images-idx3-ubyte.gz")) {
      WARN("Fashion-MNIST not installed (apt install dataset-fashion-mnist): section skipped");
      return;
    }
    dd::IdxDataset full(real, dd::Split::train);
    const std::string dir = fresh_dir("fmnist_real");
    make_dir(dir + "/idx");
    write_idx_set(dir + "/idx", full.raw_images().slice(0, 0, 300).contiguous(),
                  full.targets().slice(0, 0, 300).contiguous());
    dd::IdxDataset idx(dir + "/idx", dd::Split::train);
    // Every class has at least 20 of these 300 (checked by make_longtail).
    check_same_as_idx(idx, dir, 20, 5.0);
  }
}

TEST_CASE("class folders: sorted classes, images found recursively, other files ignored",
          "[images]") {
  const std::string dir = fresh_dir("folders");
  const auto img = dd::encode_png(torch::zeros({2, 2, 3}, torch::kUInt8));
  for (const char* sub : {"zebra", "Apple", "mango/nested", ".hidden"}) make_dir(dir + "/" + sub);
  dd::write_file_bytes(dir + "/zebra/b.PNG", img);
  dd::write_file_bytes(dir + "/zebra/a.jpeg",
                       dd::encode_jpeg(torch::zeros({8, 8, 3}, torch::kUInt8)));
  dd::write_file_bytes(dir + "/Apple/x.png", img);
  dd::write_file_bytes(dir + "/mango/nested/m.jpg",
                       dd::encode_jpeg(torch::zeros({8, 8, 1}, torch::kUInt8)));
  dd::write_file_bytes(dir + "/mango/notes.txt", {1, 2, 3});
  dd::write_file_bytes(dir + "/mango/.x.png", img);
  dd::write_file_bytes(dir + "/.hidden/h.png", img);
  dd::write_file_bytes(dir + "/loose.png", img);
  const auto list = dd::list_image_folder(dir);
  CHECK(list.class_names == std::vector<std::string>{"Apple", "mango", "zebra"});
  CHECK(list.paths == std::vector<std::string>{dir + "/Apple/x.png", dir + "/mango/nested/m.jpg",
                                               dir + "/zebra/a.jpeg", dir + "/zebra/b.PNG"});
  CHECK(list.labels == std::vector<int64_t>{0, 1, 2, 2});
  dd::ImageDataset ds(list);
  CHECK(ds.get(1).data.sizes() == torch::IntArrayRef({3, 8, 8}));

  make_dir(dir + "/empty_class");
  CHECK_THROWS_WITH(dd::list_image_folder(dir),
                    Contains("drolt::data::list_image_folder: expected at least one .jpg, .jpeg or "
                             ".png file in each class folder, got none in '" +
                             dir + "/empty_class'"));
  CHECK_THROWS_WITH(dd::list_image_folder(dir + "/nope"),
                    Contains("drolt::data::list_image_folder: expected '" + dir +
                             "/nope' to be a folder of class folders, got nothing (not found)"));
}

TEST_CASE("list files: malformed lines and labels are errors naming file and line", "[images]") {
  const std::string dir = fresh_dir("bad_lists");
  write_text(dir + "/a.txt", "x.png 0\nno_label_here\n");
  CHECK_THROWS_WITH(dd::read_image_list(dir + "/a.txt", dir),
                    Contains("drolt::data::read_image_list: '" + dir +
                             "/a.txt' line 2: expected '<relative path> <label>' with a label in "
                             "[0, 10^9), got 'no_label_here'"));
  write_text(dir + "/b.txt", "x.png -1\n");
  CHECK_THROWS_WITH(dd::read_image_list(dir + "/b.txt", dir), Contains("line 1: expected"));
  write_text(dir + "/c.txt", "x.png 0\ny.png 5\n");
  CHECK_THROWS_WITH(dd::read_image_list(dir + "/c.txt", dir, 5),
                    Contains("'" + dir + "/c.txt' line 2: expected a label in [0, 5), got 5"));
  CHECK(dd::read_image_list(dir + "/c.txt", dir).num_classes == 6);
  // An inferred class count is bounded: one huge label must not size per-class buffers.
  write_text(dir + "/huge.txt", "x.png 999999999\n");
  CHECK_THROWS_WITH(dd::read_image_list(dir + "/huge.txt", dir),
                    Contains("huge.txt': expected labels in [0, 2^24) when num_classes is inferred (0), got 999999999"));
  CHECK(dd::read_image_list(dir + "/huge.txt", dir, 1000000000).num_classes == 1000000000);
  write_text(dir + "/d.txt", "\n  \n");
  CHECK_THROWS_WITH(
      dd::read_image_list(dir + "/d.txt", dir),
      Contains("lists no images: expected lines '<relative path> <label>', got none"));
  CHECK_THROWS_WITH(
      dd::read_image_list(dir + "/none.txt", dir),
      Contains("drolt::data::read_image_list: cannot open '" + dir + "/none.txt': file not found"));
  const auto abs = dd::read_image_list(dir + "/c.txt", "/root");
  CHECK(abs.paths == std::vector<std::string>{"/root/x.png", "/root/y.png"});
}

TEST_CASE("missing, empty, truncated and undecodable images give errors naming the file",
          "[images]") {
  const std::string dir = fresh_dir("bad_images");
  const auto rgb = smooth_image(40, 40, 3, 2);
  const Bytes png = dd::encode_png(rgb);
  const Bytes jpg = dd::encode_jpeg(rgb, 90);
  dd::write_file_bytes(dir + "/good.png", png);
  dd::write_file_bytes(dir + "/good.jpg", jpg);
  dd::write_file_bytes(dir + "/cut.png", Bytes(png.begin(), png.begin() + png.size() / 2));
  dd::write_file_bytes(dir + "/cut_end.png", Bytes(png.begin(), png.end() - 12));  // no IEND
  dd::write_file_bytes(dir + "/cut_header.jpg", Bytes(jpg.begin(), jpg.begin() + 300));
  const Bytes big_jpg = dd::encode_jpeg(smooth_image(160, 160, 3, 4), 90);
  dd::write_file_bytes(dir + "/cut.jpg",
                       Bytes(big_jpg.begin(), big_jpg.begin() + big_jpg.size() * 4 / 5));
  dd::write_file_bytes(dir + "/empty.jpg", {});
  dd::write_file_bytes(dir + "/gif.jpg", {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0});
  Bytes flipped = png;
  flipped[png.size() / 2] ^= 0xFF;  // inside the compressed data: CRC or zlib error
  dd::write_file_bytes(dir + "/flipped.png", flipped);
  dd::write_file_bytes(dir + "/soi.jpg", Bytes{0xFF, 0xD8, 0xFF, 0xE0});

  const auto read = [&](const std::string& name) { return dd::read_image(dir + "/" + name); };
  CHECK(torch::equal(read("good.png"), rgb));
  CHECK(read("good.jpg").sizes() == rgb.sizes());
  CHECK_THROWS_WITH(read("missing.png"), Contains("drolt::data::read_image: cannot open '" + dir +
                                                  "/missing.png': file not found"));
  CHECK_THROWS_WITH(read("cut.png"), Contains("drolt::data::decode_image: '" + dir +
                                              "/cut.png' is truncated: libpng reports"));
  CHECK_THROWS_WITH(read("cut_end.png"), Contains("'" + dir + "/cut_end.png' is truncated"));
  CHECK_THROWS_WITH(read("cut.jpg"),
                    Contains("drolt::data::decode_image: '" + dir +
                             "/cut.jpg' is truncated or corrupt: libjpeg-turbo reports"));
  CHECK_THROWS_WITH(read("empty.jpg"),
                    Contains("drolt::data::decode_image: '" + dir +
                             "/empty.jpg' is empty: expected a JPEG or PNG image"));
  CHECK_THROWS_WITH(read("gif.jpg"),
                    Contains("'" + dir +
                             "/gif.jpg' is not an image: expected JPEG (FF D8 FF) or PNG "
                             "(89 50 4E 47 0D 0A 1A 0A) magic bytes, got 47 49 46 38 39 61 01 00"));
  CHECK_THROWS_WITH(read("flipped.png"),
                    Contains("'" + dir + "/flipped.png' is corrupt: libpng reports"));
  CHECK_THROWS_WITH(
      read("cut_header.jpg"),
      Contains("'" + dir + "/cut_header.jpg' is not a readable JPEG: libjpeg-turbo reports"));
  CHECK_THROWS_WITH(read("soi.jpg"), Contains("'" + dir +
                                              "/soi.jpg' is corrupt: expected a positive "
                                              "JPEG size, got 0 x 0"));
  CHECK_THROWS_WITH(dd::read_image(dir + "/good.png", dd::ImageDecodeOptions().max_pixels(100)),
                    Contains("image is too large: 40 x 40 pixels, more than the 100 allowed"));
  CHECK_THROWS_WITH(dd::read_image(dir + "/good.jpg", dd::ImageDecodeOptions().max_pixels(100)),
                    Contains("is too large: expected at most 100 pixels, got 40 x 40"));
  CHECK_THROWS_WITH(dd::read_image(dir + "/good.jpg", dd::ImageDecodeOptions().channels(2)),
                    Contains("drolt::data::decode_image: expected channels 0, 1 or 3, got 2"));

  std::string list;
  const std::vector<std::string> names = {"good.png", "cut.png",     "good.jpg",    "cut.jpg",
                                          "gif.jpg",  "missing.png", "flipped.png", "good.png"};
  for (size_t i = 0; i < names.size(); ++i) list += names[i] + " " + std::to_string(i % 2) + "\n";
  write_text(dir + "/list.txt", list);

  SECTION("by default a missing file stops the constructor, a bad one the read") {
    CHECK_THROWS_WITH(dd::ImageDataset(dd::read_image_list(dir + "/list.txt", dir)),
                      Contains("drolt::data::ImageDataset: cannot open '" + dir +
                               "/missing.png': file not found"));
    dd::ImageDataset lazy(dd::read_image_list(dir + "/list.txt", dir),
                          dd::ImageDatasetOptions().check_files(false));
    CHECK(lazy.get(0).data.sizes() == torch::IntArrayRef({3, 40, 40}));
    CHECK_THROWS_WITH(lazy.get(1), Contains("'" + dir + "/cut.png' is truncated"));
    CHECK_THROWS_WITH(lazy.get(5),
                      Contains("cannot open '" + dir + "/missing.png': file not found"));
  }
  SECTION("skip_bad_images counts and reports each bad file and keeps the rest") {
    dd::ImageDataset ds(dd::read_image_list(dir + "/list.txt", dir),
                        dd::ImageDatasetOptions().skip_bad_images(true).check_threads(2));
    REQUIRE(ds.size().value() == 3);
    CHECK(ds.paths() ==
          std::vector<std::string>{dir + "/good.png", dir + "/good.jpg", dir + "/good.png"});
    CHECK(ds.labels() == std::vector<int64_t>{0, 0, 1});
    CHECK(ds.class_counts() == std::vector<int64_t>{2, 1});
    REQUIRE(ds.skipped().size() == 5);
    const std::vector<size_t> bad = {1, 3, 4, 5, 6};
    for (size_t k = 0; k < bad.size(); ++k) {
      CHECK(ds.skipped()[k].path == dir + "/" + names[bad[k]]);
      CHECK(ds.skipped()[k].label == static_cast<int64_t>(bad[k] % 2));
      CHECK_THAT(ds.skipped()[k].reason, Contains("'" + dir + "/" + names[bad[k]] + "'"));
    }
    CHECK_THAT(ds.skipped()[3].reason, Contains("file not found"));
  }
}

TEST_CASE("iNaturalist JSON: labels ranked by category id, images in file order", "[images]") {
  const std::string dir = fresh_dir("inat");
  make_dir(dir + "/train_val2018/Aves/7");
  const auto img = dd::encode_png(torch::full({3, 3, 3}, 7, torch::kUInt8));
  for (const char* f : {"a.png", "b.png", "c.png", "d.png"}) {
    dd::write_file_bytes(dir + "/train_val2018/Aves/7/" + f, img);
  }
  write_text(dir + "/train.json", R"({
    "info": {"year": 2018},
    "images": [
      {"id": 11, "file_name": "train_val2018/Aves/7/a.png", "width": 3, "height": 3},
      {"id": 5, "file_name": "train_val2018/Aves/7/b.png", "width": 3, "height": 3},
      {"id": 8, "file_name": "train_val2018/Aves/7/c.png", "width": 3, "height": 3},
      {"id": 2, "file_name": "train_val2018/Aves/7/d.png", "width": 3, "height": 3}],
    "annotations": [
      {"id": 1, "image_id": 5, "category_id": 10},
      {"id": 2, "image_id": 11, "category_id": 3},
      {"id": 3, "image_id": 2, "category_id": 3},
      {"id": 4, "image_id": 8, "category_id": 7}],
    "categories": [{"id": 10, "name": "Pica pica"}, {"id": 3, "name": "Corvus corax"},
                   {"id": 7, "name": "Garrulus glandarius"}, {"id": 12, "name": "unused"}]
  })");
  const auto list = dd::read_inaturalist(dir + "/train.json", dir);
  CHECK(list.num_classes == 4);
  CHECK(list.class_names ==
        std::vector<std::string>{"Corvus corax", "Garrulus glandarius", "Pica pica", "unused"});
  CHECK(list.labels == std::vector<int64_t>{0, 2, 1, 0});
  CHECK(list.paths[1] == dir + "/train_val2018/Aves/7/b.png");
  dd::ImageDataset ds(list);
  CHECK(ds.class_counts() == std::vector<int64_t>{2, 1, 1, 0});
  CHECK(ds.get(3).target.item<int64_t>() == 0);

  write_text(dir + "/bad.json",
             R"({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [)");
  CHECK_THROWS_WITH(
      dd::read_inaturalist(dir + "/bad.json", dir),
      Contains("drolt::data::read_inaturalist: '" + dir + "/bad.json' is not valid JSON"));
  write_text(dir + "/unlabelled.json",
             R"({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [],
                 "categories": [{"id": 0, "name": "a"}]})");
  CHECK_THROWS_WITH(dd::read_inaturalist(dir + "/unlabelled.json", dir),
                    Contains("'" + dir +
                             "/unlabelled.json': image 1 ('x.jpg') expected an "
                             "annotation, got none"));
  write_text(dir + "/unknown.json",
             R"({"images": [{"id": 1, "file_name": "x.jpg"}],
                 "annotations": [{"image_id": 1, "category_id": 4}],
                 "categories": [{"id": 0, "name": "a"}]})");
  CHECK_THROWS_WITH(dd::read_inaturalist(dir + "/unknown.json", dir),
                    Contains("annotation of image 1 expected a category id listed in 'categories', "
                             "got 4"));
  write_text(dir + "/fields.json",
             R"({"images": [{"id": 1}], "annotations": [{"image_id": 1, "category_id": 0}]})");
  CHECK_THROWS_WITH(dd::read_inaturalist(dir + "/fields.json", dir),
                    Contains("expected iNaturalist fields"));
  // Ids are integers in [0, 2^63): nothing is rounded, truncated or wrapped.
  const std::vector<std::pair<std::string, std::string>> coerced = {
      {R"("image_id": 1, "category_id": 2.5)", "annotations[0].category_id: expected a non-negative integer id (at most 2^63 - 1), got 2.5"},
      {R"("image_id": 1.5, "category_id": 0)", "annotations[0].image_id: expected a non-negative integer id (at most 2^63 - 1), got 1.5"},
      {R"("image_id": 1, "category_id": -1)", "annotations[0].category_id: expected a non-negative integer id (at most 2^63 - 1), got -1"},
      {R"("image_id": 1, "category_id": 18446744073709551615)", "got 18446744073709551615"},
      {R"("image_id": 1, "category_id": 2.0)", "got 2.0"},
      {R"("image_id": 1, "category_id": "0")", R"(got "0")"}};
  for (const auto& c : coerced) {
    INFO(c.first);
    write_text(dir + "/coerced.json", R"({"images": [{"id": 1, "file_name": "x.jpg"}],
                 "annotations": [{)" + c.first + R"(}], "categories": [{"id": 0}, {"id": 2}]})");
    CHECK_THROWS_WITH(dd::read_inaturalist(dir + "/coerced.json", dir),
                      Contains("drolt::data::read_inaturalist: '" + dir + "/coerced.json' annotations[0].") &&
                          Contains(c.second));
  }
  write_text(dir + "/coerced.json", R"({"images": [{"id": 1.5, "file_name": "x.jpg"}],
               "annotations": [{"image_id": 1, "category_id": 0}], "categories": [{"id": 0}]})");
  CHECK_THROWS_WITH(dd::read_inaturalist(dir + "/coerced.json", dir),
                    Contains("images[0].id: expected a non-negative integer id"));
  write_text(dir + "/coerced.json", R"({"images": [{"id": 1, "file_name": "x.jpg"}],
               "annotations": [{"image_id": 1, "category_id": 0}], "categories": [{"id": 0}, {"id": -3}]})");
  CHECK_THROWS_WITH(dd::read_inaturalist(dir + "/coerced.json", dir),
                    Contains("categories[1].id: expected a non-negative integer id"));
}

namespace {

/// A list-file data set of n generated RGB images of varying sizes, written once per directory.
dd::ImageDataset generated_set(const std::string& dir, int64_t n, bool with_bad = false) {
  std::string list;
  for (int64_t i = 0; i < n; ++i) {
    const std::string name = "g" + std::to_string(i) + (i % 2 ? ".jpg" : ".png");
    const auto img = smooth_image(40 + 7 * (i % 5), 56 + 5 * (i % 3), 3, static_cast<int>(i));
    dd::write_file_bytes(dir + "/" + name, i % 2 ? dd::encode_jpeg(img, 90) : dd::encode_png(img));
    list += name + " " + std::to_string(i % 4) + "\n";
  }
  if (with_bad) {
    dd::write_file_bytes(dir + "/bad.png", {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0});
    list += "bad.png 1\n";
  }
  write_text(dir + "/list.txt", list);
  return dd::ImageDataset(dd::read_image_list(dir + "/list.txt", dir),
                          dd::ImageDatasetOptions().check_files(!with_bad));
}

std::vector<torch::data::Example<>> one_epoch(dd::ImageLoader& loader, std::vector<int64_t> order,
                                              int64_t epoch) {
  loader.start_epoch(std::move(order), epoch);
  std::vector<torch::data::Example<>> out;
  while (auto b = loader.next()) out.push_back(*b);
  return out;
}

}  // namespace

TEST_CASE("the loader's batches depend on seed and epoch, never on the worker count",
          "[images][loader]") {
  const std::string dir = fresh_dir("loader_det");
  const dd::ImageDataset ds = generated_set(dir, 23);
  const auto train = dd::ImageTransformOptions().train(true).size(32);
  auto run = [&](int64_t workers, uint64_t seed, int64_t epoch, int64_t prefetch) {
    dd::ImageLoader loader(
        ds, train,
        dd::ImageLoaderOptions().batch_size(5).workers(workers).seed(seed).prefetch(prefetch));
    return one_epoch(loader, dd::shuffled_indices(23, 9, epoch), epoch);
  };
  const auto a = run(1, 4, 0, 1);
  REQUIRE(a.size() == 5);
  CHECK(a.back().data.sizes() == torch::IntArrayRef({3, 3, 32, 32}));
  for (const int64_t workers : {2, 5}) {
    const auto b = run(workers, 4, 0, 3);
    REQUIRE(b.size() == a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(torch::equal(a[i].data, b[i].data));
      CHECK(torch::equal(a[i].target, b[i].target));
    }
  }
  const auto other_seed = run(3, 5, 0, 2);
  CHECK_FALSE(torch::equal(a[0].data, other_seed[0].data));
  CHECK(torch::equal(a[0].target, other_seed[0].target));  // the order is the caller's
  const auto next_epoch = run(3, 4, 1, 2);
  CHECK_FALSE(torch::equal(a[0].target, next_epoch[0].target));

  // Targets follow the order given.
  const auto order = dd::shuffled_indices(23, 9, 0);
  for (size_t i = 0; i < 23; ++i) {
    CHECK(a[i / 5].target[static_cast<int64_t>(i % 5)].item<int64_t>() ==
          ds.labels()[static_cast<size_t>(order[i])]);
  }
  // A restarted epoch mid-way gives the same batches again; drop_last drops the rest.
  dd::ImageLoader loader(ds, train,
                         dd::ImageLoaderOptions().batch_size(5).workers(3).seed(4).drop_last(true));
  loader.start_epoch(order, 0);
  (void)loader.next();
  const auto again = one_epoch(loader, order, 0);
  REQUIRE(again.size() == 4);
  for (size_t i = 0; i < again.size(); ++i) CHECK(torch::equal(again[i].data, a[i].data));
}

TEST_CASE("the loader decodes at most `prefetch` batches ahead of the consumer",
          "[images][loader]") {
  const std::string dir = fresh_dir("loader_prefetch");
  const dd::ImageDataset ds = generated_set(dir, 20);
  dd::ImageLoader loader(ds, dd::ImageTransformOptions().train(false).size(16).resize(20),
                         dd::ImageLoaderOptions().batch_size(3).workers(3).prefetch(2));
  loader.start_epoch(dd::shuffled_indices(20, 0, 0), 0);
  CHECK(loader.batches_per_epoch() == 7);
  auto wait_ready = [&](int64_t n) {
    for (int i = 0; i < 2000 && loader.progress().ready_batches < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  wait_ready(2);
  auto p = loader.progress();
  CHECK(p.ready_batches == 2);
  CHECK(p.queued_batches == 2);
  CHECK(p.samples_started == 6);  // nothing of a third batch
  REQUIRE(loader.next().has_value());
  wait_ready(2);
  p = loader.progress();
  CHECK(p.queued_batches == 2);
  CHECK(p.samples_started == 9);
  int64_t rest = 0;
  while (auto b = loader.next()) rest += b->data.size(0);
  CHECK(rest == 17);
  CHECK(loader.progress().samples_started == 20);
}

TEST_CASE("evaluation transform: resize + center crop + normalisation", "[images][loader]") {
  std::mt19937_64 rng(0);
  SECTION("an image already at the output size passes through, normalised") {
    const auto img = torch::randint(0, 256, {16, 16, 3}, torch::kUInt8);
    const auto t = dd::ImageTransformOptions().train(false).size(16).resize(16);
    const auto out = dd::transform_image(img, t, rng);
    const auto mean = torch::tensor({0.485, 0.456, 0.406}, torch::kFloat32).view({3, 1, 1});
    const auto std = torch::tensor({0.229, 0.224, 0.225}, torch::kFloat32).view({3, 1, 1});
    const auto expect = (img.permute({2, 0, 1}).to(torch::kFloat32) / 255.0 - mean) / std;
    CHECK(torch::allclose(out, expect, 1e-5, 1e-5));
  }
  SECTION("a 2x downscale is the stretched triangle filter (weights 1, 3, 3, 1)") {
    const auto img = torch::randint(0, 256, {12, 20, 1}, torch::kUInt8);
    const auto t =
        dd::ImageTransformOptions().train(false).size(6).resize(6).mean({0.0}).std({1.0});
    const auto out = dd::transform_image(img, t, rng);
    REQUIRE(out.sizes() == torch::IntArrayRef({1, 6, 6}));
    // Resize(6) of 12 x 20 gives 6 x 10; the center crop keeps columns 2..7.
    const auto f = img.squeeze(2).to(torch::kFloat64);
    for (int64_t y = 0; y < 6; ++y) {
      for (int64_t x = 0; x < 6; ++x) {
        double acc = 0, wsum = 0;
        for (int64_t dy = -1; dy <= 2; ++dy) {
          for (int64_t dx = -1; dx <= 2; ++dx) {
            const int64_t sy = 2 * y + dy, sx = 2 * (x + 2) + dx;
            if (sy < 0 || sy >= 12 || sx < 0 || sx >= 20) continue;
            const double w = (dy == -1 || dy == 2 ? 1.0 : 3.0) * (dx == -1 || dx == 2 ? 1.0 : 3.0);
            acc += w * f[sy][sx].item<double>();
            wsum += w;
          }
        }
        CHECK(std::abs(out[0][y][x].item<double>() * 255.0 - std::nearbyint(acc / wsum)) < 1.01);
      }
    }
  }
}

TEST_CASE("random-resized crops stay inside the image with the requested area and ratio",
          "[images][loader]") {
  const auto t = dd::ImageTransformOptions().train(true).size(8);
  std::mt19937_64 rng(3);
  int flips = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const auto box = dd::choose_crop(120, 200, t, rng);
    REQUIRE(box.x0 >= 0);
    REQUIRE(box.y0 >= 0);
    REQUIRE(box.x0 + box.width <= 200);
    REQUIRE(box.y0 + box.height <= 120);
    const double area = box.width * box.height / (120.0 * 200.0);
    // Rounding the sides to pixels moves area and ratio a little.
    CHECK(area >= 0.08 * 0.9);
    CHECK(area <= 1.0);
    CHECK(box.width / box.height >= 0.75 * 0.9);
    CHECK(box.width / box.height <= 4.0 / 3.0 * 1.1);
    flips += box.flip ? 1 : 0;
  }
  CHECK(std::abs(flips - n / 2) < 150);
  // No crop fits a 1 x 50 strip at these ratios: the central fallback.
  const auto strip = dd::choose_crop(1, 50, t, rng);
  CHECK(strip.height == 1);
  CHECK(strip.width == 1);
  CHECK(strip.x0 == 24);
}

TEST_CASE("a bad image surfaces from the loader's next() naming the file", "[images][loader]") {
  const std::string dir = fresh_dir("loader_bad");
  const dd::ImageDataset ds = generated_set(dir, 6, /*with_bad=*/true);
  dd::ImageLoader loader(ds, dd::ImageTransformOptions().train(false).size(16).resize(20),
                         dd::ImageLoaderOptions().batch_size(4).workers(2));
  loader.start_epoch({0, 1, 2, 3, 6, 4}, 0);
  CHECK(loader.next()->data.sizes() == torch::IntArrayRef({4, 3, 16, 16}));
  CHECK_THROWS_WITH(loader.next(), Contains("'" + dir + "/bad.png' is truncated"));
  CHECK_FALSE(loader.next().has_value());
  CHECK_THROWS_WITH(
      loader.start_epoch({7}, 0),
      Contains("drolt::data::ImageLoader::start_epoch: expected indices in [0, 7), got 7"));
}

namespace {

/// Peak resident set of this process so far, in KiB.
long peak_rss_kib() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

/// A PNG whose IHDR now declares width x height (CRC fixed), data unchanged.
Bytes png_declaring(Bytes png, uint32_t width, uint32_t height) {
  // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
  for (int k = 0; k < 4; ++k) {
    png[16 + k] = static_cast<uint8_t>(width >> (24 - 8 * k));
    png[20 + k] = static_cast<uint8_t>(height >> (24 - 8 * k));
  }
  const uLong crc = crc32(0, png.data() + 12, 17);  // "IHDR" and its 13 bytes
  for (int k = 0; k < 4; ++k) png[29 + k] = static_cast<uint8_t>(crc >> (24 - 8 * k));
  return png;
}

/// A JPEG whose frame header (SOF0 or SOF2) now declares width x height.
Bytes jpeg_declaring(Bytes jpg, uint16_t width, uint16_t height) {
  for (size_t i = 2; i + 9 < jpg.size(); ++i) {
    if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) {
      jpg[i + 5] = static_cast<uint8_t>(height >> 8);
      jpg[i + 6] = static_cast<uint8_t>(height);
      jpg[i + 7] = static_cast<uint8_t>(width >> 8);
      jpg[i + 8] = static_cast<uint8_t>(width);
      return jpg;
    }
  }
  FAIL("no SOF0/SOF2 marker");
  return jpg;
}

}  // namespace

TEST_CASE("tiny files declaring huge images are refused before memory is committed",
          "[images][memory]") {
  const std::string dir = fresh_dir("huge_headers");
  const auto rgb = smooth_image(8, 8, 3, 1);
  std::vector<std::pair<std::string, Bytes>> files;
  files.emplace_back("huge.png", png_declaring(dd::encode_png(rgb), 16384, 16384));
  // A CMYK JPEG (decoded through a scratch buffer) and a progressive one
  // (libjpeg's whole-image coefficient buffer), each cut after its header.
  // (A handle of its own: these settings must not stay with the library's.)
  const tjhandle tj = tjInitCompress();
  REQUIRE(tj != nullptr);
  unsigned char* buf = nullptr;
  unsigned long len = 0;
  const Bytes cmyk(8 * 8 * 4, 100);
  REQUIRE(tjCompress2(tj, cmyk.data(), 8, 0, 8, TJPF_CMYK, &buf, &len, TJSAMP_444, 90, 0) == 0);
  Bytes cmyk_jpg(buf, buf + len);
  tjFree(buf);
  files.emplace_back("huge_cmyk.jpg", jpeg_declaring(cmyk_jpg, 16384, 16384));
  buf = nullptr;
  REQUIRE(tjCompress2(tj, rgb.data_ptr<uint8_t>(), 8, 0, 8, TJPF_RGB, &buf, &len, TJSAMP_444, 90,
                      TJFLAG_PROGRESSIVE) == 0);
  Bytes prog(buf, buf + len);
  tjFree(buf);
  tjDestroy(tj);
  files.emplace_back("huge_progressive.jpg", jpeg_declaring(prog, 16384, 16384));
  // Interlaced PNGs are read whole: the same up-front bound guards them.
  for (const auto& f : files) {
    INFO(f.first << " (" << f.second.size() << " bytes)");
    REQUIRE(f.second.size() < 4096);
    dd::write_file_bytes(dir + "/" + f.first, f.second);
    const long before = peak_rss_kib();
    CHECK_THROWS_WITH(dd::read_image(dir + "/" + f.first),
                      Contains("'" + dir + "/" + f.first + "' is truncated"));
    CHECK(peak_rss_kib() - before < 64 * 1024);
  }
  // The bound does not refuse a real, highly compressible image.
  const auto flat = torch::zeros({512, 512, 3}, torch::kUInt8);
  CHECK(torch::equal(dd::decode_image(dd::encode_png(flat).data(), dd::encode_png(flat).size()),
                     flat));
  const Bytes flat_jpg = dd::encode_jpeg(flat, 50, true);
  CHECK(dd::decode_image(flat_jpg.data(), flat_jpg.size()).sizes() == flat.sizes());
}

namespace {

/// Threads of this process (entries of /proc/self/task).
size_t thread_count() {
  DIR* d = opendir("/proc/self/task");
  REQUIRE(d != nullptr);
  size_t n = 0;
  while (const dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/// Installs a loader allocation hook for one scope.
struct AllocationHook {
  explicit AllocationHook(std::function<void(int64_t)> f) { dd::detail::loader_allocation_hook() = std::move(f); }
  ~AllocationHook() { dd::detail::loader_allocation_hook() = nullptr; }
};

}  // namespace

TEST_CASE("an exception on a loader worker reaches next() as a c10::Error with its message",
          "[images][loader]") {
  const std::string dir = fresh_dir("loader_throw");
  const dd::ImageDataset ds = generated_set(dir, 6);
  const auto transform = dd::ImageTransformOptions().train(false).size(16).resize(20);
  const auto options = dd::ImageLoaderOptions().batch_size(2).workers(3).prefetch(2);
  { dd::ImageLoader warm(ds, transform, options); }  // LibTorch's own threads, started once
  const size_t threads = thread_count();
  {
    // Batch 1's allocation fails (as a std::bad_alloc would, on a worker thread).
    AllocationHook hook([](int64_t b) {
      if (b == 1) throw std::bad_alloc();
    });
    dd::ImageLoader loader(ds, transform, options);
    loader.start_epoch({0, 1, 2, 3, 4, 5}, 0);
    CHECK(loader.next()->data.sizes() == torch::IntArrayRef({2, 3, 16, 16}));
    try {
      loader.next();
      FAIL("expected the allocation failure");
    } catch (const c10::Error& e) {
      CHECK_THAT(e.what(), Contains("drolt::data::ImageLoader: allocating a batch failed") &&
                               Contains("std::bad_alloc"));
    }
    CHECK(loader.next()->data.sizes() == torch::IntArrayRef({2, 3, 16, 16}));
    CHECK_FALSE(loader.next().has_value());
    // Another epoch runs normally; the loader is destroyed mid-epoch.
    loader.start_epoch({5, 4, 3, 2, 1, 0}, 1);
    CHECK(loader.next().has_value());
  }
  CHECK(thread_count() == threads);
}

TEST_CASE("loader sizes near INT64_MAX give one batch and not an overflowed count", "[images][loader]") {
  const std::string dir = fresh_dir("loader_huge");
  const dd::ImageDataset ds = generated_set(dir, 5);
  const int64_t huge = std::numeric_limits<int64_t>::max();
  const auto transform = dd::ImageTransformOptions().train(false).size(8).resize(10);
  dd::ImageLoader loader(ds, transform, dd::ImageLoaderOptions().batch_size(huge).workers(2).prefetch(huge));
  loader.start_epoch({0, 1, 2, 3, 4}, 0);
  CHECK(loader.batches_per_epoch() == 1);
  auto batch = loader.next();
  REQUIRE(batch.has_value());
  CHECK(batch->data.sizes() == torch::IntArrayRef({5, 3, 8, 8}));
  CHECK_FALSE(loader.next().has_value());
  dd::ImageLoader dropping(ds, transform, dd::ImageLoaderOptions().batch_size(huge).workers(1).drop_last(true));
  dropping.start_epoch({0, 1, 2, 3, 4}, 0);
  CHECK(dropping.batches_per_epoch() == 0);
  CHECK_FALSE(dropping.next().has_value());
}

TEST_CASE("loader options outside their domain are refused naming option and value", "[images][loader]") {
  const std::string dir = fresh_dir("loader_options");
  const dd::ImageDataset ds = generated_set(dir, 2);
  const auto t = dd::ImageTransformOptions().train(false).size(8).resize(10);
  const auto refused = [&](const dd::ImageTransformOptions& o, const std::string& message) {
    CHECK_THROWS_WITH(dd::ImageLoader(ds, o, dd::ImageLoaderOptions().workers(1)),
                      Contains("drolt::data::ImageLoader: " + message));
  };
  refused(dd::ImageTransformOptions(t).mean({0.5, std::nan(""), 0.5}), "expected a finite mean, got nan");
  refused(dd::ImageTransformOptions(t).mean({INFINITY}).std({1.0}), "expected a finite mean, got inf");
  refused(dd::ImageTransformOptions(t).std({0.2, INFINITY, 0.2}), "expected a finite std > 0, got inf");
  refused(dd::ImageTransformOptions(t).ratio_max(INFINITY), "expected 0 < ratio_min <= ratio_max < inf");
}

#endif  // DROLT_HAS_IMAGES
