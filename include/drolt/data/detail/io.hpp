#pragma once
// File reading shared by the dataset readers: every short read, missing file and
// zlib error becomes a c10::Error that names the file, never a crash or a
// silently shortened tensor.
#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <sys/stat.h>
#include <string>
#include <system_error>
#include <vector>

namespace drolt {
namespace data {
namespace detail {

/// Sequential reader over a plain or gzip-compressed file. zlib's gz* API reads
/// both transparently, so one code path serves `x` and `x.gz`.
class GzFile {
 public:
  GzFile(std::string path, const char* caller) : path_(std::move(path)), caller_(caller) {
    struct stat st;
    const bool exists = ::stat(path_.c_str(), &st) == 0;
    TORCH_CHECK(exists, caller_, ": cannot open '", path_, "': file not found");
    // gzopen() happily opens a directory and only fails on the first read.
    TORCH_CHECK(S_ISREG(st.st_mode), caller_, ": cannot open '", path_,
                "': expected a regular file, got a directory or special file");
    file_ = gzopen(path_.c_str(), "rb");
    TORCH_CHECK(file_ != nullptr, caller_, ": cannot open '", path_, "' for reading");
    gzbuffer(file_, 1 << 17);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  ~GzFile() {
    if (file_ != nullptr) gzclose(file_);
  }

  const std::string& path() const { return path_; }

  /// Reads up to n bytes; returns fewer only at the end of the data. A zlib error
  /// (corrupt or truncated gzip stream) throws.
  size_t read_some(void* buffer, size_t n) {
    auto* out = static_cast<unsigned char*>(buffer);
    size_t total = 0;
    while (total < n) {
      // gzread takes an unsigned count but returns int, so keep chunks below INT_MAX.
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - total, 1u << 30));
      const int got = gzread(file_, out + total, chunk);
      if (got < 0) throw_zlib_error();
      if (got == 0) break;
      total += static_cast<size_t>(got);
    }
    // A truncated gzip stream ends with a short read plus a pending error
    // ("unexpected end of file"); report it rather than the short count.
    int errnum = Z_OK;
    const char* msg = gzerror(file_, &errnum);
    if (errnum != Z_OK) {
      TORCH_CHECK(false, caller_, ": '", path_, "' is corrupt: zlib reports '",
                  msg != nullptr ? msg : "unknown error", "' after ", offset_ + total,
                  " decompressed bytes");
    }
    offset_ += total;
    return total;
  }

  /// Reads exactly n bytes or throws naming what was being read.
  void read_exact(void* buffer, size_t n, const char* what) {
    const size_t got = read_some(buffer, n);
    TORCH_CHECK(got == n, caller_, ": '", path_, "' is truncated: expected ", n, " bytes of ", what,
                ", got ", got);
  }

  /// Reads n bytes into a vector that grows as data arrives, so a corrupt header
  /// that declares gigabytes costs memory only for the bytes actually present.
  std::vector<uint8_t> read_payload(size_t n, const char* what) {
    std::vector<uint8_t> data;
    size_t step = size_t{1} << 16;
    while (data.size() < n) {
      const size_t want = std::min(step, n - data.size());
      step = std::min(step * 2, size_t{64} << 20);
      const size_t old = data.size();
      data.resize(old + want);
      const size_t got = read_some(data.data() + old, want);
      if (got < want) {
        TORCH_CHECK(false, caller_, ": '", path_, "' is truncated: expected ", n, " bytes of ",
                    what, ", got ", old + got);
      }
    }
    return data;
  }

  /// Reads everything that is left.
  std::vector<uint8_t> read_rest() {
    std::vector<uint8_t> data;
    // Geometric growth: small files stay cheap, large ones take few passes.
    size_t step = size_t{1} << 16;
    for (;;) {
      const size_t old = data.size();
      data.resize(old + step);
      const size_t got = read_some(data.data() + old, step);
      data.resize(old + got);
      if (got < step) break;
      step = std::min(step * 2, size_t{64} << 20);
    }
    return data;
  }

  /// Throws if anything follows the declared data: a longer file means the header
  /// and the payload disagree, and reading only a prefix would hide that.
  void expect_end(const char* what) {
    unsigned char probe[64];
    const size_t extra = read_some(probe, sizeof(probe));
    TORCH_CHECK(extra == 0, caller_, ": '", path_, "' is corrupt: expected the file to end after ",
                what, ", got ", extra == sizeof(probe) ? "at least " : "", extra,
                " trailing bytes");
  }

 private:
  [[noreturn]] void throw_zlib_error() {
    int errnum = Z_OK;
    const char* msg = gzerror(file_, &errnum);
    TORCH_CHECK(false, caller_, ": '", path_, "' is corrupt or unreadable: zlib reports '",
                msg != nullptr ? msg : "unknown error", "' after ", offset_, " decompressed bytes");
  }

  std::string path_;
  const char* caller_;
  gzFile file_ = nullptr;
  size_t offset_ = 0;
};

// POSIX stat() rather than std::filesystem: the LibTorch in PyPI's torch wheel
// exports its own copies of std::filesystem functions, which then interpose the
// C++ runtime's and crash (seen with torch 2.11: remove_all calls through null).
inline bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

/// Returns the first of the candidates that exists, or throws listing all of them.
inline std::string find_first_existing(const std::vector<std::string>& candidates,
                                       const char* caller, const std::string& what) {
  std::string tried;
  for (const auto& c : candidates) {
    if (is_regular_file(c)) return c;
    tried += (tried.empty() ? "'" : ", '") + c + "'";
  }
  TORCH_CHECK(false, caller, ": cannot find ", what, ": tried ", tried);
  return {};
}

/// The whole file, or a c10::Error naming it.
inline std::vector<uint8_t> read_file_bytes(const std::string& path, const char* caller) {
  struct stat st;
  TORCH_CHECK(::stat(path.c_str(), &st) == 0, caller, ": cannot open '", path,
              "': file not found");
  TORCH_CHECK(S_ISREG(st.st_mode), caller, ": cannot open '", path,
              "': expected a regular file, got a directory or special file");
  FILE* f = std::fopen(path.c_str(), "rb");
  TORCH_CHECK(f != nullptr, caller, ": cannot open '", path, "' for reading");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  const size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  TORCH_CHECK(!failed && got == bytes.size(), caller, ": '", path, "' could not be read: expected ",
              bytes.size(), " bytes, got ", got);
  return bytes;
}

inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

}  // namespace detail
}  // namespace data
}  // namespace drolt
