#pragma once
// Checksummed files for LibTorch archives and modules.
//
//   drolt::save(bank, "bank.pt");   drolt::load(bank, "bank.pt");
//   drolt::write_archive(archive, path);   drolt::read_archive(archive, path);
//
// torch::save / torch::load trust the bytes they are given: a flipped byte in a
// tensor's data loads as a different value without a word, and a damaged zip
// record can surface as an exception that is not a c10::Error. These functions
// wrap the archive in a small container that is checked before LibTorch sees a
// byte:
//
//   offset 0   8 bytes  magic "DROLTCK1"
//   offset 8   8 bytes  payload length n (little-endian uint64)
//   offset 16  4 bytes  CRC-32 of the payload (zlib's crc32, little-endian)
//   offset 20  4 bytes  reserved, 0
//   offset 24  n bytes  the archive exactly as OutputArchive::save_to writes it
//
// Writes go to "<path>.tmp" and are renamed into place, so an interrupted write
// never leaves a half-written file under the final name. Every failure is a
// c10::Error that names the file.
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>

namespace drolt {
namespace detail {

constexpr char kArchiveMagic[8] = {'D', 'R', 'O', 'L', 'T', 'C', 'K', '1'};
constexpr size_t kArchiveHeader = 24;

inline uint32_t crc32_of(const char* data, size_t n) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes uInt lengths
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

inline void put_le(char* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline uint64_t get_le(const char* in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return v;
}

/// The container around an archive's bytes.
inline std::string wrap_archive(const std::string& payload) {
  std::string out(kArchiveHeader, '\0');
  std::copy(kArchiveMagic, kArchiveMagic + 8, out.begin());
  put_le(&out[8], payload.size(), 8);
  put_le(&out[16], crc32_of(payload.data(), payload.size()), 4);
  out += payload;
  return out;
}

/// Checks the container and returns where the payload starts (its length in *n).
/// `what` names the source in messages (a file path).
inline const char* unwrap_archive(const char* data, size_t size, const std::string& what,
                                  size_t* n) {
  const char* fn = "drolt::read_archive: ";
  TORCH_CHECK(size >= kArchiveHeader && std::equal(kArchiveMagic, kArchiveMagic + 8, data), fn,
              "'", what, "' is not a drolt checkpoint (expected a file written by drolt::save / ",
              "drolt::write_archive, starting with \"DROLTCK1\"; got ", size, " bytes",
              size >= 8 ? " with another header" : "", ")");
  const uint64_t len = get_le(data + 8, 8);
  TORCH_CHECK(len == size - kArchiveHeader, fn, "'", what, "' is truncated or has trailing bytes: ",
              "expected ", len, " bytes of data after the header, got ", size - kArchiveHeader);
  const uint32_t want = static_cast<uint32_t>(get_le(data + 16, 4));
  const uint32_t got = crc32_of(data + kArchiveHeader, static_cast<size_t>(len));
  TORCH_CHECK(want == got, fn, "'", what, "' is damaged: its checksum does not match (expected CRC-32 ",
              want, ", got ", got, ")");
  *n = static_cast<size_t>(len);
  return data + kArchiveHeader;
}

inline std::string read_file_bytes(const std::string& path, const char* fn) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), fn, "cannot open '", path, "' for reading");
  std::ostringstream buf;
  buf << in.rdbuf();
  TORCH_CHECK(!in.bad(), fn, "error while reading '", path, "'");
  return buf.str();
}

}  // namespace detail

/// Writes an archive to `path` inside the checksummed container (atomic: a
/// temporary file renamed into place).
inline void write_archive(torch::serialize::OutputArchive& archive, const std::string& path) {
  const char* fn = "drolt::write_archive: ";
  std::ostringstream payload;
  archive.save_to(payload);
  const std::string bytes = detail::wrap_archive(payload.str());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TORCH_CHECK(out.good(), fn, "cannot open '", tmp, "' for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    TORCH_CHECK(out.good(), fn, "error while writing '", tmp, "' (disk full?)");
  }
  TORCH_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, fn, "cannot rename '", tmp, "' to '",
              path, "'");
}

/// Reads an archive from container bytes in memory; `what` names them in errors.
inline void read_archive_bytes(torch::serialize::InputArchive& archive, const char* data,
                               size_t size, const std::string& what,
                               c10::optional<torch::Device> device = c10::nullopt) {
  size_t n = 0;
  const char* payload = detail::unwrap_archive(data, size, what, &n);
  try {
    archive.load_from(payload, n, device);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "drolt::read_archive: '", what, "' passed its checksum but LibTorch cannot ",
                "read it: ", e.what_without_backtrace());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::read_archive: '", what, "' passed its checksum but LibTorch cannot ",
                "read it: ", e.what());
  }
}

/// Reads an archive written by write_archive, checking its integrity first.
inline void read_archive(torch::serialize::InputArchive& archive, const std::string& path,
                         c10::optional<torch::Device> device = c10::nullopt) {
  const std::string bytes = detail::read_file_bytes(path, "drolt::read_archive: ");
  read_archive_bytes(archive, bytes.data(), bytes.size(), path, device);
}

/// Loads a module's parameters and buffers from an archive; every exception
/// becomes a c10::Error naming `what`, and the module's own checks (drolt's
/// modules verify shapes and dtypes) run inside Module::load.
template <typename M>
void load_module(M& module, torch::serialize::InputArchive& archive, const std::string& what) {
  try {
    module->load(archive);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "drolt::load: '", what, "': ", e.what_without_backtrace());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "drolt::load: '", what, "': ", e.what());
  }
}

/// torch::save for a module holder (drolt::CentroidBank, drolt::RobustCentroidLoss,
/// any torch::nn module), in the checksummed container.
template <typename M>
void save(const M& module, const std::string& path) {
  torch::serialize::OutputArchive archive;
  module->save(archive);
  write_archive(archive, path);
}

/// torch::load for a file written by drolt::save: a damaged, truncated or
/// foreign file, or one whose shapes do not fit the module, is a c10::Error
/// naming the file.
template <typename M>
void load(M& module, const std::string& path, c10::optional<torch::Device> device = c10::nullopt) {
  torch::serialize::InputArchive archive;
  read_archive(archive, path, device);
  load_module(module, archive, path);
}

}  // namespace drolt
