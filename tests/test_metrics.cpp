// Evaluation metrics (include/drolt/metrics.hpp).
// torch before Catch: LibTorch 2.x defines a glog-style CHECK that must not
// replace Catch's.
#include <torch/torch.h>
// (a separate include block, so sorting cannot move Catch first)
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <locale>
#include <string>
#include <vector>

#include "drolt/metrics.hpp"

using Catch::Matchers::Contains;

namespace {

torch::Tensor longs(const std::vector<int64_t>& v) {
  return torch::tensor(v, torch::kInt64);
}

// Six classes whose training counts sit on both sides of each threshold:
// 101 and 500 are Many, exactly 100 and exactly 20 are Medium, 19 and 5 are Few.
const std::vector<int64_t> kTrainCounts = {101, 100, 20, 19, 500, 5};
// Per class: 0 -> 3/4, 1 -> 1/2, 2 -> 0/4, 3 -> 2/5, 4 -> 1/1, 5 -> no test samples.
const std::vector<int64_t> kTargets = {0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4};
const std::vector<int64_t> kPreds = {0, 0, 0, 1, 1, 0, 3, 3, 5, 0, 3, 3, 0, 0, 0, 4};

}  // namespace

TEST_CASE("confusion matrix, per-class and overall accuracy on a hand-made case", "[metrics]") {
  const auto cm = drolt::metrics::confusion_matrix(longs(kPreds), longs(kTargets), 6);
  REQUIRE(cm.sizes() == torch::IntArrayRef({6, 6}));
  REQUIRE(cm.scalar_type() == torch::kInt64);
  CHECK(cm[0][0].item<int64_t>() == 3);
  CHECK(cm[0][1].item<int64_t>() == 1);  // row = true class, column = prediction
  CHECK(cm[1][0].item<int64_t>() == 1);
  CHECK(cm[2][3].item<int64_t>() == 2);
  CHECK(cm[2][5].item<int64_t>() == 1);
  CHECK(cm[3][0].item<int64_t>() == 3);
  CHECK(cm.sum().item<int64_t>() == 16);
  CHECK(cm[5].sum().item<int64_t>() == 0);

  const auto acc = drolt::metrics::per_class_accuracy(longs(kPreds), longs(kTargets), 6);
  REQUIRE(acc.scalar_type() == torch::kFloat64);
  CHECK(acc[0].item<double>() == 0.75);
  CHECK(acc[1].item<double>() == 0.5);
  CHECK(acc[2].item<double>() == 0.0);
  CHECK(acc[3].item<double>() == Approx(0.4));
  CHECK(acc[4].item<double>() == 1.0);
  CHECK(std::isnan(acc[5].item<double>()));

  CHECK(drolt::metrics::accuracy(longs(kPreds), longs(kTargets)) == Approx(7.0 / 16.0));
  CHECK(std::isnan(drolt::metrics::accuracy(longs({}), longs({}))));
}

TEST_CASE("scores are reduced with argmax wherever predictions are accepted", "[metrics]") {
  // One-hot scores of kPreds, plus noise that never changes the argmax.
  torch::Tensor scores = torch::one_hot(longs(kPreds), 6).to(torch::kFloat32) +
                         0.1 * torch::rand({16, 6}, torch::TensorOptions().dtype(torch::kFloat32));
  const auto from_scores = drolt::metrics::split_accuracy(scores, longs(kTargets), kTrainCounts);
  const auto from_labels =
      drolt::metrics::split_accuracy(longs(kPreds), longs(kTargets), kTrainCounts);
  CHECK(from_scores.many == from_labels.many);
  CHECK(from_scores.few == from_labels.few);
  CHECK(from_scores.overall == from_labels.overall);
  CHECK_THROWS_WITH(drolt::metrics::confusion_matrix(scores.narrow(1, 0, 5), longs(kTargets), 6),
                    Contains("6 columns, got 5"));
}

TEST_CASE("top-k accuracy counts a hit anywhere in the k best scores", "[metrics]") {
  const auto scores = torch::tensor({{0.1, 0.5, 0.3, 0.05},    // target 2 is 2nd
                                     {0.9, 0.05, 0.03, 0.02},  // target 0 is 1st
                                     {0.2, 0.3, 0.4, 0.1}});   // target 3 is 4th
  const auto t = longs({2, 0, 3});
  CHECK(drolt::metrics::topk_accuracy(scores, t, 1) == Approx(1.0 / 3));
  CHECK(drolt::metrics::topk_accuracy(scores, t, 2) == Approx(2.0 / 3));
  CHECK(drolt::metrics::topk_accuracy(scores, t, 3) == Approx(2.0 / 3));
  CHECK(drolt::metrics::topk_accuracy(scores, t, 4) == 1.0);
  CHECK_THROWS_WITH(drolt::metrics::topk_accuracy(scores, t, 5), Contains("k <= 4, got 5"));
  CHECK_THROWS_WITH(drolt::metrics::topk_accuracy(scores, longs({2, 0, 4}), 1), Contains("[0, 4)"));
}

TEST_CASE("split accuracy: exactly 20 and exactly 100 training samples are Medium",
          "[metrics][split]") {
  const auto s = drolt::metrics::split_accuracy(longs(kPreds), longs(kTargets), kTrainCounts);
  // Many: classes 0 (101) and 4 (500): (3/4 + 1) / 2.
  CHECK(s.many == Approx(0.875));
  CHECK(s.many_classes == 2);
  // Medium: classes 1 (exactly 100) and 2 (exactly 20): (1/2 + 0) / 2.
  CHECK(s.medium == Approx(0.25));
  CHECK(s.medium_classes == 2);
  // Few: class 3 (19) only; class 5 (5) has no test samples and is left out.
  CHECK(s.few == Approx(0.4));
  CHECK(s.few_classes == 1);
  CHECK(s.classes_without_test_samples == std::vector<int64_t>{5});
  // Overall: 7 of 16 test samples; class mean over the 5 classes with samples.
  CHECK(s.overall == Approx(7.0 / 16.0));
  CHECK(s.class_mean == Approx((0.75 + 0.5 + 0.0 + 0.4 + 1.0) / 5));
}

TEST_CASE("split accuracy with other thresholds and with empty splits", "[metrics][split]") {
  SECTION("custom thresholds move classes between splits") {
    const auto s = drolt::metrics::split_accuracy(longs(kPreds), longs(kTargets), kTrainCounts,
                                                  drolt::metrics::SplitThresholds{200, 10});
    CHECK(s.many == 1.0);                                     // class 4 only
    CHECK(s.medium == Approx((0.75 + 0.5 + 0.0 + 0.4) / 4));  // classes 0-3
    CHECK(std::isnan(s.few));                                 // class 5 has no test samples
    CHECK(s.few_classes == 0);
  }
  SECTION("thresholds at the boundary: n == many_above is Medium, n == few_below is Medium") {
    const auto s = drolt::metrics::split_accuracy(longs({0, 1, 2}), longs({0, 1, 2}), {51, 50, 49},
                                                  drolt::metrics::SplitThresholds{50, 50});
    CHECK(s.many_classes == 1);
    CHECK(s.medium_classes == 1);
    CHECK(s.few_classes == 1);
  }
  SECTION("a split without classes is NaN, not 0 and not a division by zero") {
    const auto s = drolt::metrics::split_accuracy(longs({0, 1, 1}), longs({0, 1, 0}), {500, 300});
    CHECK(s.many == Approx(0.5 * (0.5 + 1.0)));
    CHECK(std::isnan(s.medium));
    CHECK(std::isnan(s.few));
    CHECK(s.overall == Approx(2.0 / 3.0));
  }
  SECTION("no test samples at all") {
    const auto s = drolt::metrics::split_accuracy(longs({}), longs({}), {5, 50});
    CHECK(std::isnan(s.overall));
    CHECK(std::isnan(s.few));
    CHECK(s.classes_without_test_samples == std::vector<int64_t>{0, 1});
  }
  SECTION("invalid input") {
    CHECK_THROWS_WITH(drolt::metrics::split_accuracy(longs({0, 1}), longs({0}), {5, 50}),
                      Contains("as many predictions as targets (1), got 2"));
    CHECK_THROWS_WITH(drolt::metrics::split_accuracy(longs({0, 2}), longs({0, 1}), {5, 50}),
                      Contains("predicted labels in [0, 2)"));
    CHECK_THROWS_WITH(drolt::metrics::split_accuracy(longs({0}), longs({0}), {}),
                      Contains("at least one class"));
    CHECK_THROWS_WITH(drolt::metrics::split_accuracy(longs({0}), longs({0}), {5, 50},
                                                     drolt::metrics::SplitThresholds{100, 150}),
                      Contains("few_below <= many_above + 1"));
    CHECK_THROWS_WITH(drolt::metrics::split_accuracy(longs({0}), longs({0}), {-1, 50}),
                      Contains("train_counts >= 0"));
  }
}

TEST_CASE("nearest-centroid accuracy: Euclidean and cosine disagree where they should",
          "[metrics]") {
  const auto centroids = torch::tensor({{1.0, 0.0}, {10.0, 10.0}, {-5.0, 0.0}});
  // (5, 5): nearest in distance is (1, 0) (6.40 vs 7.07), nearest in angle is (10, 10).
  // (-1, 0.1): nearest in distance is (1, 0) (2.0 vs 4.0), nearest in angle is (-5, 0).
  const auto features = torch::tensor({{5.0, 5.0}, {-1.0, 0.1}});
  const auto targets = longs({1, 2});
  using drolt::metrics::Similarity;
  CHECK(torch::equal(
      drolt::metrics::nearest_centroid_predict(features, centroids, {}, Similarity::euclidean),
      longs({0, 0})));
  CHECK(torch::equal(
      drolt::metrics::nearest_centroid_predict(features, centroids, {}, Similarity::cosine),
      longs({1, 2})));
  CHECK(drolt::metrics::nearest_centroid_accuracy(features, targets, centroids, {},
                                                  Similarity::euclidean) == 0.0);
  CHECK(drolt::metrics::nearest_centroid_accuracy(features, targets, centroids, {},
                                                  Similarity::cosine) == 1.0);

  // Without a valid centroid for class 1, (5, 5) goes to class 0 under cosine too.
  const auto valid = torch::tensor({true, false, true});
  CHECK(drolt::metrics::nearest_centroid_accuracy(features, targets, centroids, valid,
                                                  Similarity::cosine) == 0.5);
  // Without class 0, Euclidean picks class 1 for (5, 5) and class 2 for (-1, 0.1).
  const auto no0 = torch::tensor({false, true, true});
  CHECK(drolt::metrics::nearest_centroid_accuracy(features, targets, centroids, no0,
                                                  Similarity::euclidean) == 1.0);

  // More features than one chunk: the chunked path agrees with a direct argmin.
  const auto many = torch::randn({9000, 2}, torch::kFloat64);
  const auto direct = torch::cdist(many, centroids.to(torch::kFloat64)).argmin(1);
  CHECK(torch::equal(drolt::metrics::nearest_centroid_predict(many, centroids, {}), direct));

  CHECK_THROWS_WITH(drolt::metrics::nearest_centroid_predict(features, centroids,
                                                             torch::zeros({3}, torch::kBool)),
                    Contains("at least one valid centroid"));
  CHECK_THROWS_WITH(
      drolt::metrics::nearest_centroid_predict(features, centroids.narrow(1, 0, 1), {}),
      Contains("feature dimension 2, got 1"));
}

TEST_CASE("summary prints text and exact JSON, NaN as null", "[metrics]") {
  const auto s = drolt::metrics::summarize(longs({0, 1, 1}), longs({0, 0, 1}), {150, 10});
  CHECK(
      s.to_json() ==
      "{\"num_samples\":3,\"num_classes\":2,\"top1\":0.6666666667,\"top5\":null,\"many\":0.5,"
      "\"medium\":null,\"few\":1,\"overall\":0.6666666667,\"class_mean\":0.75,\"many_classes\":1,"
      "\"medium_classes\":0,\"few_classes\":1,\"thresholds\":{\"many_above\":100,\"few_below\":20},"
      "\"classes_without_test_samples\":[],\"per_class_accuracy\":[0.5,1],\"train_counts\":[150,10]"
      ","
      "\"test_counts\":[2,1]}");
  const std::string text = s.to_text();
  CHECK_THAT(text, Contains("top-1   66.67%"));
  CHECK_THAT(text, Contains("many    50.00%   1 classes, n > 100"));
  CHECK_THAT(text, Contains("medium    n/a"));
  CHECK_THAT(text, Contains("few    100.00%"));

  SECTION("scores add top-5; classes without test samples are listed") {
    auto scores = torch::zeros({2, 6});
    scores[0][3] = 1.0;  // target 0 is not top-1 but within the top 5 (zeros tie)
    scores[1][1] = 1.0;
    const auto t = drolt::metrics::summarize(scores, longs({0, 1}), {500, 50, 5, 5, 5, 5});
    CHECK(t.top1 == 0.5);
    CHECK(t.top5 == 1.0);
    CHECK(t.split.classes_without_test_samples == std::vector<int64_t>{2, 3, 4, 5});
    CHECK_THAT(t.to_json(), Contains("\"classes_without_test_samples\":[2,3,4,5]"));
    CHECK_THAT(t.to_json(), Contains("\"per_class_accuracy\":[0,1,null,null,null,null]"));
    CHECK_THAT(t.to_text(), Contains("classes without test samples (excluded): 4 [2, 3, 4, 5]"));
  }
}

namespace {
// A C++ locale that groups thousands, as a program's global locale may.
struct Grouping : std::numpunct<char> {
  char do_thousands_sep() const override { return ','; }
  std::string do_grouping() const override { return "\3"; }
};
}  // namespace

TEST_CASE("JSON summary does not follow a global locale that groups digits", "[metrics]") {
  const std::locale previous =
      std::locale::global(std::locale(std::locale::classic(), new Grouping));
  const auto t = torch::zeros({1500}, torch::kInt64);
  const std::string json = drolt::metrics::summarize(t, t, {2000, 5}).to_json();
  std::locale::global(previous);
  CHECK_THAT(json, Contains("\"num_samples\":1500,"));
  CHECK_THAT(json, Contains("\"train_counts\":[2000,5]"));
}

TEST_CASE("expected calibration error weights each bin's |accuracy - confidence| by its size",
          "[metrics]") {
  // Confidences 0.9 (right), 0.9 (wrong), 0.7 (right), 0.52 (wrong); 15 bins of
  // width 1/15: 0.9 -> bin 13, 0.7 -> bin 10, 0.52 -> bin 7.
  const auto p = torch::tensor({{0.9, 0.1}, {0.1, 0.9}, {0.3, 0.7}, {0.52, 0.48}}, torch::kDouble);
  const auto y = torch::tensor({0, 0, 1, 1}, torch::kLong);
  // bin 13: 2/4 * |0.5 - 0.9|; bin 10: 1/4 * |1 - 0.7|; bin 7: 1/4 * |0 - 0.52|.
  CHECK(drolt::metrics::expected_calibration_error(p, y) ==
        Approx(0.2 + 0.075 + 0.13).epsilon(1e-12));
  // One bin: |overall accuracy - mean confidence|.
  CHECK(drolt::metrics::expected_calibration_error(p, y, 1) ==
        Approx(std::abs(0.5 - 0.755)).epsilon(1e-12));
  // Calibrated in every bin: 0.
  const auto half =
      torch::tensor({{0.75, 0.25}, {0.75, 0.25}, {0.75, 0.25}, {0.75, 0.25}}, torch::kDouble);
  CHECK(drolt::metrics::expected_calibration_error(
            half, torch::tensor({0, 0, 0, 1}, torch::kLong)) == Approx(0.0).margin(1e-12));
  CHECK(std::isnan(drolt::metrics::expected_calibration_error(torch::empty({0, 3}),
                                                              torch::empty({0}, torch::kLong))));
  CHECK_THROWS_WITH(
      drolt::metrics::expected_calibration_error(p * 2, y),
      Contains(
          "expected probabilities in [0, 1] (softmax of the logits), got values in [0.2, 1.8]"));
  // Entries in [0, 1] but rows that are not distributions (row 2 sums to 1.8).
  const auto not_rows = torch::tensor({{0.9, 0.1}, {0.1, 0.9}, {0.9, 0.9}, {0.5, 0.5}}, torch::kDouble);
  CHECK_THROWS_WITH(drolt::metrics::expected_calibration_error(not_rows, y),
                    Contains("expected every row of probabilities to sum to 1 (within 0.001), got 1.8 in row 2"));
  CHECK_THROWS_WITH(drolt::metrics::expected_calibration_error(torch::full({2, 2}, std::nan(""), torch::kDouble),
                                                               y.narrow(0, 0, 2)),
                    Contains("expected probabilities in [0, 1]"));
  // float32 softmax over many classes is accepted.
  const auto wide = torch::softmax(torch::randn({8, 5000}) * 3, 1);
  CHECK(std::isfinite(drolt::metrics::expected_calibration_error(wide, torch::zeros({8}, torch::kLong))));
  CHECK_THROWS_WITH(drolt::metrics::expected_calibration_error(p, y, 0),
                    Contains("expected 1 <= bins"));
  CHECK_THROWS_WITH(drolt::metrics::expected_calibration_error(p, y.narrow(0, 0, 3)),
                    Contains("expected as many probability rows as targets (3), got 4"));
}
