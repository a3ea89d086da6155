#pragma once
// check_close(got, want, tol, what): every entry of `got` within tol (relative
// to the largest |want| and to the entry itself) of `want`, and finite; shared by
// test_tile_math.cpp and test_cuda.cpp.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <string>

inline void check_close(const torch::Tensor& got, const torch::Tensor& want, double tol,
                 const std::string& what) {
  REQUIRE(got.sizes() == want.sizes());
  auto g = got.to(torch::kDouble).cpu();
  auto w = want.to(torch::kDouble).cpu();
  const double scale = w.numel() ? w.abs().max().item<double>() : 0.0;
  auto err = (g - w).abs();
  const double max_err = err.numel() ? err.max().item<double>() : 0.0;
  const bool finite = torch::isfinite(g).all().item<bool>();
  const bool ok = (err <= tol * scale + tol * w.abs() + 1e-300).all().item<bool>();
  INFO(what << ": max abs error " << max_err << ", max |want| " << scale << ", tol " << tol);
  CHECK(finite);
  CHECK(ok);
}
