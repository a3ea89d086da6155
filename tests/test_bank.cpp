// Tests of the centroid bank (docs/math.md, "The centroid bank").
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "drolt/drolt.hpp"

using Catch::Matchers::Contains;

TEST_CASE("bank means equal index_select + mean per class across many small accumulates", "[bank]") {
  torch::manual_seed(0);
  const int64_t N = 1000, C = 7, D = 5;
  auto feats = torch::randn({N, D}) * 3 + 10;
  auto labels = torch::randint(0, C - 1, {N}, torch::kLong);  // class C-1 never appears
  drolt::CentroidBank bank(C, D);
  bank->reset();
  for (int64_t s = 0; s < N; s += 13) {
    const int64_t e = std::min(N, s + 13);
    bank->accumulate(feats.slice(0, s, e), labels.slice(0, s, e));
  }
  CHECK(bank->pending_counts().sum().item<int64_t>() == N);
  bank->finalize();
  for (int64_t c = 0; c < C - 1; ++c) {
    auto idx = (labels == c).nonzero().view(-1);
    auto expect = feats.to(torch::kDouble).index_select(0, idx).mean(0);
    CHECK((bank->centroids()[c].to(torch::kDouble) - expect).abs().max().item<double>() < 1e-5);
    CHECK(bank->counts()[c].item<int64_t>() == idx.numel());
    CHECK(bank->valid()[c].item<bool>());
  }
  CHECK_FALSE(bank->valid()[C - 1].item<bool>());
  CHECK(bank->centroids()[C - 1].abs().sum().item<double>() == 0.0);
  CHECK(bank->pending_counts().sum().item<int64_t>() == 0);
}

TEST_CASE("bank keeps the published centroids until the next finalize", "[bank]") {
  drolt::CentroidBank bank(2, 2);
  bank->accumulate(torch::tensor({{1.f, 1.f}, {3.f, 3.f}}), torch::tensor({0, 1}));
  bank->finalize();
  auto before = bank->centroids().clone();
  bank->reset();
  bank->accumulate(torch::tensor({{9.f, 9.f}}), torch::tensor({0}));
  CHECK(bank->centroids().equal(before));  // previous-epoch mode: still in use
  bank->finalize();
  CHECK(bank->centroids()[0].equal(torch::tensor({9.f, 9.f})));
  CHECK_FALSE(bank->valid()[1].item<bool>());
}

TEST_CASE("bank EMA follows mu <- m mu + (1 - m) batch mean", "[bank]") {
  drolt::CentroidBank bank(drolt::CentroidBankOptions(2, 1).momentum(0.75));
  bank->ema_update(torch::tensor({{2.f}, {4.f}}), torch::tensor({0, 0}));
  CHECK(bank->centroids()[0].item<float>() == Approx(3.0));
  CHECK(bank->valid()[0].item<bool>());
  CHECK_FALSE(bank->valid()[1].item<bool>());
  bank->ema_update(torch::tensor({{7.f}, {10.f}}), torch::tensor({0, 1}));
  CHECK(bank->centroids()[0].item<float>() == Approx(0.75 * 3 + 0.25 * 7));
  CHECK(bank->centroids()[1].item<float>() == Approx(10.0));
  CHECK(bank->counts()[0].item<int64_t>() == 3);
}

TEST_CASE("bank state round-trips through torch::save and clone", "[bank]") {
  torch::manual_seed(1);
  drolt::CentroidBank bank(4, 3);
  bank->accumulate(torch::randn({20, 3}), torch::randint(0, 3, {20}, torch::kLong));
  bank->finalize();
  bank->accumulate(torch::randn({5, 3}), torch::randint(0, 4, {5}, torch::kLong));  // pending state too
  const std::string path = std::string(DROLT_TEST_TMPDIR) + "/bank.pt";
  torch::save(bank, path);
  drolt::CentroidBank loaded(4, 3);
  torch::load(loaded, path);
  CHECK(loaded->centroids().equal(bank->centroids()));
  CHECK(loaded->valid().equal(bank->valid()));
  CHECK(loaded->counts().equal(bank->counts()));
  CHECK(loaded->pending_counts().equal(bank->pending_counts()));
  loaded->finalize();
  bank->finalize();
  CHECK(loaded->centroids().equal(bank->centroids()));
  auto copy = std::dynamic_pointer_cast<drolt::CentroidBankImpl>(bank->clone());
  REQUIRE(copy);
  CHECK(copy->centroids().equal(bank->centroids()));
  copy->accumulate(torch::ones({1, 3}), torch::tensor({0}));
  CHECK(bank->pending_counts().sum().item<int64_t>() == 0);  // deep copy
}

TEST_CASE("bank finalize_from and ema_update_from_sums equal the batch forms", "[bank]") {
  torch::manual_seed(11);
  const int64_t C = 6, D = 5;
  auto x = torch::randn({40, D});
  auto y = torch::randint(0, C - 1, {40}, torch::kLong);  // class C-1 never appears
  drolt::CentroidBank a(C, D), b(C, D);
  a->accumulate(x, y);
  // The sums and counts another process (or a file) would provide.
  auto sums = a->pending_sums().clone();
  auto counts = a->pending_counts().to(torch::kDouble);  // counts may travel as float64
  a->finalize();
  b->accumulate(torch::randn({3, D}), torch::zeros({3}, torch::kLong));  // replaced, not added
  b->finalize_from(sums, counts);
  CHECK(torch::equal(a->centroids(), b->centroids()));
  CHECK(torch::equal(a->valid(), b->valid()));
  CHECK(torch::equal(a->counts(), b->counts()));
  CHECK(b->pending_counts().sum().item<int64_t>() == 0);

  // Two EMA steps, the second with a class not seen before.
  for (int step = 0; step < 2; ++step) {
    auto xs = torch::randn({12, D});
    auto ys = torch::randint(0, C, {12}, torch::kLong);
    auto s = torch::zeros({C, D}, torch::kDouble).index_add_(0, ys, xs.to(torch::kDouble));
    auto n = torch::zeros({C}, torch::kLong).index_add_(0, ys, torch::ones({12}, torch::kLong));
    a->ema_update(xs, ys);
    b->ema_update_from_sums(s, n);
    CHECK(torch::equal(a->centroids(), b->centroids()));
    CHECK(torch::equal(a->valid(), b->valid()));
    CHECK(torch::equal(a->counts(), b->counts()));
  }

  CHECK_THROWS_WITH(b->finalize_from(torch::zeros({C, D + 1}, torch::kDouble), counts),
                    Contains("finalize_from: expected sums of shape [6, 5], got [6, 6]"));
  CHECK_THROWS_WITH(b->ema_update_from_sums(sums, -torch::ones({C})),
                    Contains("ema_update_from_sums: expected counts >= 0"));
  CHECK_THROWS_WITH(b->finalize_from(sums, torch::ones({C}, torch::kBool)),
                    Contains("expected integer or floating-point counts"));
}

TEST_CASE("bank rejects bad batches", "[bank]") {
  drolt::CentroidBank bank(3, 2);
  CHECK_THROWS_WITH(bank->accumulate(torch::zeros({4, 3}), torch::zeros({4}, torch::kLong)),
                    Contains("expected features of shape [N, 2], got [4, 3]"));
  CHECK_THROWS_WITH(bank->accumulate(torch::zeros({4, 2}), torch::zeros({3}, torch::kLong)),
                    Contains("expected labels of shape [4], got [3]"));
  CHECK_THROWS_WITH(bank->accumulate(torch::zeros({2, 2}), torch::tensor({0, 3})),
                    Contains("expected labels in [0, 3), got values in [0, 3]"));
  CHECK_THROWS_WITH(bank->accumulate(torch::zeros({2, 2}), torch::zeros({2})),
                    Contains("expected integer labels"));
  CHECK_THROWS_WITH(drolt::CentroidBank(0, 2), Contains("expected num_classes > 0, got 0"));
}
