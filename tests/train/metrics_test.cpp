#include "nanguard/train/metrics.h"

#include <algorithm>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;

torch::Tensor f32(std::initializer_list<float> values, std::vector<int64_t> shape) {
  return torch::tensor(std::vector<float>(values), torch::kFloat).reshape(shape);
}

TEST(Metrics, AccuracyResolvesFromTheLoss) {
  Metric sparse("accuracy", LossType::sparse_categorical_crossentropy);
  EXPECT_EQ(sparse.name(), "accuracy");
  EXPECT_EQ(sparse.resolved_name(), "sparse_categorical_accuracy");
  EXPECT_EQ(Metric("acc", LossType::categorical_crossentropy).resolved_name(), "categorical_accuracy");
  EXPECT_EQ(Metric("accuracy", LossType::binary_crossentropy).resolved_name(), "binary_accuracy");
  EXPECT_EQ(Metric("mean_squared_error", LossType::sparse_categorical_crossentropy).resolved_name(),
            "mse");
  EXPECT_EQ(Metric("mean_squared_error", LossType::mse).name(), "mean_squared_error");
}

TEST(Metrics, SparseCategoricalAccuracyCountsAcrossBatches) {
  Metric m("accuracy", LossType::sparse_categorical_crossentropy);
  // Batch 1: arg max 2, 0, 1 against labels 2, 0, 0 -> 2 right.
  m.update(f32({0.1f, 0.2f, 0.7f, 0.9f, 0.05f, 0.05f, 0.3f, 0.6f, 0.1f}, {3, 3}),
           torch::tensor({2, 0, 0}, torch::kLong));
  EXPECT_NEAR(m.result(), 2.0 / 3.0, 1e-12);
  // Batch 2: arg max 1 against label 1 (as [N, 1]) -> 1 right; 3 of 4 overall.
  m.update(f32({0.2f, 0.8f, 0.0f}, {1, 3}), torch::tensor({1}, torch::kLong).reshape({1, 1}));
  EXPECT_NEAR(m.result(), 3.0 / 4.0, 1e-12);
  // Float labels compare after casting the arg max, as in Keras.
  m.update(f32({0.2f, 0.8f, 0.0f}, {1, 3}), f32({1.0f}, {1}));
  EXPECT_NEAR(m.result(), 4.0 / 5.0, 1e-12);
}

TEST(Metrics, CategoricalAccuracy) {
  Metric m("categorical_accuracy", LossType::mse);
  auto outputs = f32({0.6f, 0.4f, 0.3f, 0.7f, 0.9f, 0.1f, 0.2f, 0.8f}, {4, 2});
  auto target = f32({1, 0, 1, 0, 1, 0, 0, 1}, {4, 2});
  m.update(outputs, target);  // arg max 0, 1, 0, 1 vs 0, 0, 0, 1 -> 3 of 4
  EXPECT_NEAR(m.result(), 0.75, 1e-12);
}

TEST(Metrics, BinaryAccuracyUsesThreshold05) {
  Metric m("accuracy", LossType::binary_crossentropy);
  // Predictions 0.2, 0.5, 0.51, 0.9 -> 0, 0 (0.5 is not above), 1, 1; targets 0, 0, 1, 0.
  m.update(f32({0.2f, 0.5f, 0.51f, 0.9f}, {4, 1}), f32({0, 0, 1, 0}, {4}));
  EXPECT_NEAR(m.result(), 0.75, 1e-12);
  m.update(f32({0.7f, 0.1f}, {2, 1}), torch::tensor({1, 1}, torch::kLong).reshape({2, 1}));
  EXPECT_NEAR(m.result(), 4.0 / 6.0, 1e-12);
}

TEST(Metrics, MeanSquaredAndAbsoluteError) {
  Metric mse("mse", LossType::mse);
  Metric mae("mae", LossType::mse);
  auto outputs = f32({1, 2, 3, 4}, {2, 2});
  auto target = f32({0, 2, 3, 2}, {2, 2});
  mse.update(outputs, target);
  mae.update(outputs, target);
  EXPECT_NEAR(mse.result(), 5.0 / 4.0, 1e-12);
  EXPECT_NEAR(mae.result(), 3.0 / 4.0, 1e-12);
  mse.update(f32({3, 3}, {1, 2}), f32({0, 0}, {1, 2}));  // two errors of 3
  EXPECT_NEAR(mse.result(), (5.0 + 18.0) / 6.0, 1e-12);
}

TEST(Metrics, AccuracyWithARegressionLossIsChosenFromShapes) {
  Metric binary("accuracy", LossType::mse);
  EXPECT_EQ(binary.resolved_name(), "accuracy");
  binary.update(f32({0.9f, 0.1f}, {2, 1}), f32({1, 1}, {2, 1}));
  EXPECT_EQ(binary.resolved_name(), "binary_accuracy");
  EXPECT_NEAR(binary.result(), 0.5, 1e-12);

  Metric sparse("accuracy", LossType::mse);
  sparse.update(f32({0.1f, 0.9f, 0.8f, 0.2f}, {2, 2}), torch::tensor({1, 1}, torch::kLong));
  EXPECT_EQ(sparse.resolved_name(), "sparse_categorical_accuracy");
  EXPECT_NEAR(sparse.result(), 0.5, 1e-12);

  Metric categorical("accuracy", LossType::mae);
  categorical.update(f32({0.1f, 0.9f, 0.8f, 0.2f}, {2, 2}), f32({0, 1, 1, 0}, {2, 2}));
  EXPECT_EQ(categorical.resolved_name(), "categorical_accuracy");
  EXPECT_NEAR(categorical.result(), 1.0, 1e-12);
}

TEST(Metrics, ResetAndEmptyResult) {
  Metric m("accuracy", LossType::sparse_categorical_crossentropy);
  EXPECT_EQ(m.result(), 0.0);
  m.update(f32({0.1f, 0.9f}, {1, 2}), torch::tensor({1}, torch::kLong));
  EXPECT_EQ(m.result(), 1.0);
  m.reset();
  EXPECT_EQ(m.result(), 0.0);
  m.update(f32({0.1f, 0.9f}, {1, 2}), torch::tensor({0}, torch::kLong));
  EXPECT_EQ(m.result(), 0.0);
  m.update(f32({0.1f, 0.9f}, {1, 2}), torch::tensor({1}, torch::kLong));
  EXPECT_EQ(m.result(), 0.5);
}

TEST(Metrics, UpdateDoesNotTrackGradients) {
  Metric m("mse", LossType::mse);
  auto outputs = f32({1, 2}, {2, 1}).requires_grad_(true);
  m.update(outputs * 2, f32({2, 4}, {2, 1}));
  EXPECT_EQ(m.result(), 0.0);
  EXPECT_FALSE(outputs.grad().defined());
}

TEST(Metrics, UnknownNamesListTheValidOnes) {
  EXPECT_TRUE(throws_with<ValueError>(
      [] { Metric("acuracy", LossType::sparse_categorical_crossentropy); },
      {"unknown metric \"acuracy\"", "accuracy", "sparse_categorical_accuracy", "mae"}));
  auto names = metric_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "binary_accuracy"), names.end());
  for (const auto& name : names) {
    EXPECT_NO_THROW(Metric(name, LossType::categorical_crossentropy)) << name;
  }
}

TEST(Metrics, MismatchedShapesAreRefused) {
  Metric sparse("accuracy", LossType::sparse_categorical_crossentropy);
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { sparse.update(torch::zeros({4, 10}), torch::zeros({4, 10})); },
      {"accuracy", "class indices of shape [4]", "[4, 10]"}));
  Metric categorical("categorical_accuracy", LossType::categorical_crossentropy);
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { categorical.update(torch::zeros({4, 10}), torch::zeros({4}, torch::kLong)); },
      {"one-hot targets of shape [4, 10]"}));
  Metric mse("mse", LossType::mse);
  EXPECT_TRUE(throws_with<ValueError>([&] { mse.update(torch::zeros({3, 2}), torch::zeros({3})); },
                                      {"mse", "shape [3, 2]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { mse.update(torch::zeros({3}, torch::kLong), torch::zeros({3})); }, {"floating point"}));
  // A refused update leaves the accumulator untouched.
  EXPECT_EQ(sparse.result(), 0.0);
}

}  // namespace
}  // namespace nanguard
