// Image-pipeline benchmarks (Google Benchmark), needs drolt::images.
//
//   loader/<transform>/<decode>/workers:<n>   images/s of drolt::data::ImageLoader
//        (read + decode + augment + normalise into [B, 3, 224, 224] batches) over
//        JPEGs of ImageNet's typical size (500 x 375, quality 90, 4:2:0),
//        written to a temporary folder at start-up
//        transform: train (random-resized crop + flip) or eval (resize 256 + center crop)
//        decode:    full (full-size decode) or dct (DCT-domain downscale, min_size 256 / 224)
//   resnet50_step/<loss>/<device>   one SGD step (momentum 0.9) of the torchvision-layout
//        ResNet-50 at 224 x 224, 1000 classes; batch 8 on the CPU, 64 on CUDA;
//        loss: ce, or ce+drolt (0.5 CE + 0.5 DRO-LT on the 2048-d features)
//
// The loader's CPU column is the process's CPU time (all threads): images per
// CPU-second = images / CPU time, a per-core rate that holds on a busy machine.
// Threads: torch::set_num_threads(N) for the ResNet step, N from --threads=N or
// DROLT_BENCH_THREADS (default 2); the loader's own workers are the argument.
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/resnet_imagenet.hpp"
#include "drolt/centroid_bank.hpp"
#include "drolt/data/image_codec.hpp"
#include "drolt/data/image_loader.hpp"
#include "drolt/data/images.hpp"
#include "drolt/loss.hpp"

namespace {

namespace dd = drolt::data;

constexpr int64_t kImages = 96;
constexpr int64_t kBatch = 32;

/// kImages JPEGs of 500 x 375 with some structure (so that they compress like photos).
const std::string& image_folder() {
  static const std::string dir = [] {
    const std::string d = "/tmp/drolt_bench_images_" + std::to_string(::getpid());
    const std::string cmd = "rm -rf '" + d + "' && mkdir -p '" + d + "'";
    if (std::system(cmd.c_str()) != 0) std::abort();
    torch::manual_seed(0);
    std::string list;
    for (int64_t i = 0; i < kImages; ++i) {
      auto y = torch::linspace(0, 1, 375).view({375, 1, 1});
      auto x = torch::linspace(0, 1, 500).view({1, 500, 1});
      auto c = torch::arange(3).view({1, 1, 3}).to(torch::kFloat32);
      auto v = 0.5 + 0.25 * torch::sin(9.0 * x + 5.0 * y * (1 + c) + static_cast<double>(i)) +
               0.1 * torch::randn({375, 500, 3});
      auto img = (v.clamp(0, 1) * 255).to(torch::kUInt8).contiguous();
      const std::string name = "img" + std::to_string(i) + ".jpg";
      dd::write_file_bytes(d + "/" + name, dd::encode_jpeg(img, 90, /*chroma_420=*/true));
      list += name + " " + std::to_string(i % 10) + "\n";
    }
    dd::write_file_bytes(d + "/list.txt", std::vector<uint8_t>(list.begin(), list.end()));
    return d;
  }();
  return dir;
}

void bench_loader(benchmark::State& state, bool train, bool dct) {
  const int64_t workers = state.range(0);
  const std::string& dir = image_folder();
  auto decode = dd::ImageDecodeOptions().channels(3);
  if (dct) decode.min_size(train ? 224 : 256);
  dd::ImageDataset ds(dd::read_image_list(dir + "/list.txt", dir),
                      dd::ImageDatasetOptions().decode(decode));
  dd::ImageLoader loader(
      ds, dd::ImageTransformOptions().train(train).size(224).resize(256),
      dd::ImageLoaderOptions().batch_size(kBatch).workers(workers).prefetch(2 * workers));
  int64_t epoch = 0, images = 0;
  for (auto _ : state) {
    loader.start_epoch(dd::shuffled_indices(kImages, 1, epoch), epoch);
    ++epoch;
    while (auto b = loader.next()) {
      images += b->data.size(0);
      benchmark::DoNotOptimize(b->data.data_ptr<float>());
    }
  }
  state.SetItemsProcessed(images);
  state.counters["images_per_s"] =
      benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
}

void sync(torch::Device dev) {
  if (dev.is_cuda()) torch::cuda::synchronize();
}

void bench_resnet50_step(benchmark::State& state, bool with_drolt, torch::Device dev) {
  if (dev.is_cuda() && !torch::cuda::is_available()) {
    state.SkipWithError("CUDA not available");
    return;
  }
  torch::manual_seed(0);
  const int64_t B = dev.is_cuda() ? 64 : 8, C = 1000, D = 2048;
  drolt_examples::ImageNetResNet net(drolt_examples::ImageNetResNetOptions(50, C));
  net->to(dev);
  drolt::RobustCentroidLoss dro(
      drolt::RobustCentroidLossOptions(C).temperature(1.0).validate_values(false));
  dro->to(dev);
  auto params = net->parameters();
  if (with_drolt) {
    auto r = dro->parameters();
    params.insert(params.end(), r.begin(), r.end());
  }
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(5e-4));
  const auto on = torch::TensorOptions().device(dev);
  auto x = torch::randn({B, 3, 224, 224}, on);
  auto y = torch::randint(0, C, {B}, on.dtype(torch::kLong));
  drolt::CentroidBank bank(drolt::CentroidBankOptions(C, D));
  bank->to(dev);
  bank->set(torch::randn({C, D}, on), torch::ones({C}, on.dtype(torch::kBool)));
  net->train();
  auto step = [&] {
    opt.zero_grad();
    auto out = net->forward(x);
    auto loss = torch::nn::functional::cross_entropy(out.logits, y);
    if (with_drolt) loss = 0.5 * loss + 0.5 * dro(out.features, y, bank);
    loss.backward();
    opt.step();
    dro->project_();
  };
  step();
  sync(dev);
  for (auto _ : state) {
    step();
    sync(dev);
  }
  state.SetItemsProcessed(B * state.iterations());
  state.counters["images_per_s"] =
      benchmark::Counter(static_cast<double>(B * state.iterations()), benchmark::Counter::kIsRate);
}

int threads_from(int* argc, char** argv) {
  int n = 2;
  if (const char* e = std::getenv("DROLT_BENCH_THREADS")) n = std::atoi(e);
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      n = std::atoi(argv[i] + 10);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return n > 0 ? n : 2;
}

void register_all() {
  for (const bool train : {true, false}) {
    for (const bool dct : {false, true}) {
      const std::string name =
          std::string("loader/") + (train ? "train" : "eval") + "/" + (dct ? "dct" : "full");
      benchmark::RegisterBenchmark(name.c_str(), bench_loader, train, dct)
          ->ArgName("workers")
          ->Arg(1)
          ->Arg(2)
          ->Arg(4)
          ->Arg(8)
          ->Arg(16)
          // CPU time of all threads, so images per CPU-second is measurable on a
          // busy machine: items / CPU time.
          ->MeasureProcessCPUTime()
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  const std::pair<const char*, torch::Device> devices[] = {
      {"cpu", torch::Device(torch::kCPU)}, {"cuda", torch::Device(torch::kCUDA, 0)}};
  for (const auto& d : devices) {
    for (const bool with : {false, true}) {
      benchmark::RegisterBenchmark(
          (std::string("resnet50_step/") + (with ? "ce+drolt/" : "ce/") + d.first).c_str(),
          bench_resnet50_step, with, d.second)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = threads_from(&argc, argv);
  torch::set_num_threads(threads);
  benchmark::AddCustomContext("torch_threads", std::to_string(threads));
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::AddCustomContext("cuda_available", torch::cuda::is_available() ? "yes" : "no");
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  const std::string cmd = "rm -rf '/tmp/drolt_bench_images_" + std::to_string(::getpid()) + "'";
  if (std::system(cmd.c_str()) != 0) return 1;
  return 0;
}
