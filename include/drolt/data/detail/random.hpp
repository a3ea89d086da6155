#pragma once
// Portable random draws. std::uniform_int_distribution and std::shuffle are
// implementation-defined (libstdc++ and libc++ give different sequences), while
// std::mt19937_64 is fully specified; building the draws on top of its raw
// output makes subsets and samplers reproducible across compilers.
#include <c10/util/Exception.h>

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace drolt {
namespace data {
namespace detail {

/// Uniform integer in [0, n), unbiased (rejection of the short last block).
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  TORCH_CHECK(n > 0, "uniform_below: expected n > 0, got 0");
  // 2^64 mod n: values below it would make small results slightly more likely.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

/// Uniform double in [0, 1) from the top 53 bits.
inline double uniform_unit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

/// Moves a uniformly chosen k-subset to the front of v (partial Fisher-Yates).
template <typename T>
void partial_shuffle(std::vector<T>& v, size_t k, std::mt19937_64& rng) {
  const size_t n = v.size();
  for (size_t i = 0; i < k && i + 1 < n; ++i) {
    const size_t j = i + static_cast<size_t>(uniform_below(rng, n - i));
    std::swap(v[i], v[j]);
  }
}

}  // namespace detail
}  // namespace data
}  // namespace drolt
