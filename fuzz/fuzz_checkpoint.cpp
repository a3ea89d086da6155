// libFuzzer target for checkpoint loading (drolt::read_archive + the modules'
// load checks): any byte string must load or raise a c10::Error, never crash,
// trip a sanitizer or load a module whose shapes disagree with its options.
//
// The container's checksum stands in front of LibTorch's archive reader, so
// mutated inputs stop at drolt's own header, length and CRC checks (and the
// seeds, valid files, reach the module checks). Behind a valid checksum the
// bytes are trusted as torch::load trusts them: a deliberately crafted archive
// can make LibTorch's reader allocate what its records claim (found by fuzzing
// with the checksum bypassed), which is why the checksum is checked first.
#include <cstddef>
#include <cstdint>
#include <string>

#include "drolt/centroid_bank.hpp"
#include "drolt/loss.hpp"
#include "drolt/serialize.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    torch::serialize::InputArchive archive;
    drolt::read_archive_bytes(archive, bytes.data(), bytes.size(), "fuzz input");
    drolt::CentroidBank bank(3, 4);
    try {
      drolt::load_module(bank, archive, "fuzz input");
      // A bank that loaded holds exactly the shapes its options promise.
      if (bank->centroids().sizes() != torch::IntArrayRef({3, 4}) || bank->valid().size(0) != 3) __builtin_trap();
      bank->accumulate(torch::ones({2, 4}), torch::tensor({0, 2}));
      bank->finalize();
    } catch (const c10::Error&) {
    }
    drolt::RobustCentroidLoss loss(drolt::RobustCentroidLossOptions(3));
    try {
      drolt::load_module(loss, archive, "fuzz input");
      if (loss->radii().size(0) != 3) __builtin_trap();
    } catch (const c10::Error&) {
    }
  } catch (const c10::Error&) {
  }
  return 0;
}
