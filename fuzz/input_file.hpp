#pragma once
// The file readers take a path: each fuzz target writes its input to a
// per-process file and reads that.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

/// Writes the input to /tmp/drolt_fuzz_<name>_<pid>; false if it cannot.
inline bool write_fuzz_input(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && written;
}

/// The per-process input file of target `name`.
inline std::string fuzz_input_path(const char* name) {
  return "/tmp/drolt_fuzz_" + std::string(name) + "_" + std::to_string(::getpid());
}
