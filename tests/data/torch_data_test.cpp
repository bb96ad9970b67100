#include "nanguard/data/torch_data.h"

#include <map>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

using torch::data::DataLoaderOptions;
using torch::data::make_data_loader;
using torch::data::samplers::RandomSampler;
using torch::data::samplers::SequentialSampler;

// Row i is random (so a row says which sample it is only by its values) and its target is 10 + i.
class Rows : public torch::data::datasets::Dataset<Rows> {
 public:
  explicit Rows(int64_t n, int64_t odd_row = -1) : x_(torch::randn({n, 3})), odd_row_(odd_row) {}
  torch::data::Example<> get(size_t index) override {
    const auto i = static_cast<int64_t>(index);
    if (i == odd_row_) return {torch::zeros({4}), torch::tensor(10 + i)};
    return {x_[i], torch::tensor(10 + i)};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(x_.size(0)); }

 private:
  at::Tensor x_;
  int64_t odd_row_;
};

// A broken source: returns one example whatever it is asked for.
class OneExample : public torch::data::datasets::BatchDataset<OneExample> {
 public:
  std::vector<torch::data::Example<>> get_batch(c10::ArrayRef<size_t>) override {
    return {{torch::zeros({3}), torch::tensor(0)}};
  }
  c10::optional<size_t> size() const override { return 8; }
};

std::vector<int64_t> to_vector(const at::Tensor& t) {
  auto c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

class TorchData : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(7); }
};

// Each batch's ids are the dataset indices of its rows, and each epoch sees every id once.
template <typename Loader>
void expect_ids_match_rows(Loader& loader, Rows& source, int64_t n, int64_t batch_size, int epochs) {
  for (int epoch = 0; epoch < epochs; ++epoch) {
    std::vector<int64_t> order;
    for (Batch& batch : loader) {
      ASSERT_TRUE(batch.ids.defined());
      EXPECT_EQ(batch.ids.scalar_type(), torch::kLong);
      ASSERT_EQ(batch.ids.dim(), 1);
      EXPECT_EQ(batch.ids.size(0), batch.size());
      EXPECT_LE(batch.size(), batch_size);
      const auto ids = to_vector(batch.ids);
      for (size_t i = 0; i < ids.size(); ++i) {
        const auto row = static_cast<int64_t>(i);
        auto expected = source.get(static_cast<size_t>(ids[i]));
        EXPECT_TRUE(torch::equal(batch.x[row], expected.data)) << "row " << i << ", id " << ids[i];
        EXPECT_TRUE(torch::equal(batch.y[row], expected.target)) << "row " << i << ", id " << ids[i];
      }
      order.insert(order.end(), ids.begin(), ids.end());
    }
    ASSERT_EQ(static_cast<int64_t>(order.size()), n) << "epoch " << epoch;
    std::set<int64_t> unique(order.begin(), order.end());
    EXPECT_EQ(static_cast<int64_t>(unique.size()), n) << "epoch " << epoch << ": an id appeared twice";
    EXPECT_EQ(*unique.begin(), 0);
    EXPECT_EQ(*unique.rbegin(), n - 1);
    std::vector<int64_t> sorted(order);
    std::sort(sorted.begin(), sorted.end());
    EXPECT_NE(order, sorted) << "epoch " << epoch << ": a random sampler gave the identity order";
  }
}

TEST_F(TorchData, RandomSamplerBatchesCarryTheIdsOfTheirRows) {
  const int64_t n = 50, batch_size = 7;
  Rows source(n);
  auto loader = make_data_loader<RandomSampler>(with_ids(source).map(StackBatch()),
                                                DataLoaderOptions().batch_size(batch_size));
  expect_ids_match_rows(*loader, source, n, batch_size, /*epochs=*/2);
}

TEST_F(TorchData, WorkerThreadsKeepTheIds) {
  const int64_t n = 40, batch_size = 6;
  Rows source(n);
  auto loader = make_data_loader<RandomSampler>(with_ids(source).map(StackBatch()),
                                                DataLoaderOptions().batch_size(batch_size).workers(2));
  expect_ids_match_rows(*loader, source, n, batch_size, /*epochs=*/2);
}

TEST_F(TorchData, IdsSurvivePerExampleTransforms) {
  Rows source(12);
  auto normalized =
      source.map(torch::data::transforms::TensorLambda<>([](at::Tensor x) { return (x - 0.5) / 2.0; }));
  auto loader = make_data_loader<RandomSampler>(with_ids(normalized).map(StackBatch()),
                                                DataLoaderOptions().batch_size(5));
  int64_t rows = 0;
  for (Batch& batch : *loader) {
    const auto ids = to_vector(batch.ids);
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_TRUE(testing::tensors_match(batch.x[static_cast<int64_t>(i)],
                                         (source.get(static_cast<size_t>(ids[i])).data - 0.5) / 2.0));
    }
    rows += batch.size();
  }
  EXPECT_EQ(rows, 12);
}

TEST_F(TorchData, SourcesWithoutTargetsGiveNoY) {
  auto x = torch::randn({9, 2});
  auto loader = make_data_loader<SequentialSampler>(with_ids(torch::data::datasets::TensorDataset(x)).map(StackBatch()),
                                                    DataLoaderOptions().batch_size(4));
  std::vector<int64_t> seen;
  for (Batch& batch : *loader) {
    EXPECT_FALSE(batch.y.defined());
    EXPECT_TRUE(torch::equal(batch.x, x.index_select(0, batch.ids)));
    for (auto id : to_vector(batch.ids)) seen.push_back(id);
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST_F(TorchData, MismatchedShapesNameTheExamplesAndTheirIds) {
  Rows source(8, /*odd_row=*/5);
  auto dataset = with_ids(source);
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { StackBatch().apply_batch(dataset.get_batch({2, 5, 3})); },
                                               {"example 1", "dataset id 5", "[4]", "example 0 (id 2)", "[3]",
                                                "same shape"}));
  // Through a loader (no workers: the error reaches the caller as it is).
  auto loader =
      make_data_loader<SequentialSampler>(with_ids(source).map(StackBatch()), DataLoaderOptions().batch_size(8));
  EXPECT_TRUE(testing::throws_with<ValueError>(
      [&] {
        for (Batch& batch : *loader) (void)batch;
      },
      {"dataset id 5", "[4]", "[3]"}));
}

TEST_F(TorchData, BadBatchesAreRefusedClearly) {
  StackBatch stack;
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { stack.apply_batch({}); }, {"empty batch"}));

  std::vector<ExampleWithId> dtypes{{torch::zeros({3}), torch::tensor(1), 4},
                                    {torch::zeros({3}, torch::kDouble), torch::tensor(2), 9}};
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { stack.apply_batch(dtypes); },
                                               {"dataset id 9", "Double", "Float"}));

  std::vector<ExampleWithId> targets{{torch::zeros({3}), torch::tensor(1), 4}, {torch::zeros({3}), {}, 6}};
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { stack.apply_batch(targets); },
                                               {"dataset id 6", "lacks a target", "id 4"}));

  std::vector<ExampleWithId> no_data{{torch::zeros({3}), {}, 0}, {{}, {}, 1}};
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { stack.apply_batch(no_data); }, {"dataset id 1", "no data"}));

  EXPECT_TRUE(testing::throws_with<ValueError>([&] { with_ids(OneExample()).get_batch({0, 1}); },
                                               {"1 examples for 2 indices"}));
}

TEST_F(TorchData, StackBatchStacksInOrder) {
  std::vector<ExampleWithId> examples{{torch::full({2}, 1.0), torch::tensor(7), 3},
                                      {torch::full({2}, 2.0), torch::tensor(8), 0}};
  Batch batch = StackBatch().apply_batch(examples);
  EXPECT_TRUE(torch::equal(batch.x, torch::tensor({{1.0f, 1.0f}, {2.0f, 2.0f}})));
  EXPECT_TRUE(torch::equal(batch.y, torch::tensor({7, 8})));
  EXPECT_EQ(to_vector(batch.ids), (std::vector<int64_t>{3, 0}));
}

}  // namespace
}  // namespace nanguard::data
