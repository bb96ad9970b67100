#include "nanguard/data/dataset.h"

#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/data/idx.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

TensorDataset make_dataset(int64_t n) {
  auto x = torch::arange(n * 3, torch::kFloat).reshape({n, 3});
  auto y = torch::arange(n, torch::kLong);
  return TensorDataset(x, y);
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  auto c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(TensorDataset, RejectsMismatchedRows) {
  EXPECT_TRUE(testing::throws_with<ValueError>(
      [] { TensorDataset(torch::zeros({4, 2}), torch::zeros({5}, torch::kLong)); }, {"4", "5"}));
}

TEST(BatchLoader, CoversEverySampleOncePerEpochWithTheirIds) {
  auto ds = make_dataset(10);
  BatchLoader loader(ds, 3, /*shuffle=*/true, /*seed=*/7);
  EXPECT_EQ(loader.num_batches(), 4);
  std::multiset<int64_t> seen;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    Batch batch = loader.batch(b);
    // Row content and id agree: x[:, 0] == 3 * id and y == id.
    EXPECT_TRUE(torch::equal(batch.x.select(1, 0).to(torch::kLong), batch.ids * 3));
    EXPECT_TRUE(torch::equal(batch.y, batch.ids));
    for (auto id : to_vector(batch.ids)) seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 10u);
  EXPECT_EQ(loader.batch(3).size(), 1);
}

// Data parallelism: at step i the ranks' batches together are the one-process batch i at
// batch_size * world; samples that do not divide evenly over the ranks are left out.
TEST(BatchLoader, ShardsSplitEachGlobalBatchIntoEqualParts) {
  auto ds = make_dataset(23);
  BatchLoader whole(ds, 8, /*shuffle=*/true, /*seed=*/3);
  std::vector<BatchLoader> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back(ds, 4, true, 3);
    ranks.back().set_shard(r, 2);
  }
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    whole.start_epoch(epoch);
    for (auto& l : ranks) l.start_epoch(epoch);
    EXPECT_EQ(ranks[0].num_batches(), 3);  // 22 of 23 samples: 8 + 8 + 6
    EXPECT_EQ(ranks[1].num_batches(), 3);
    for (int64_t b = 0; b < 3; ++b) {
      const auto a = to_vector(ranks[0].batch(b).ids), c = to_vector(ranks[1].batch(b).ids);
      EXPECT_EQ(a.size(), c.size());
      std::vector<int64_t> joined = a;
      joined.insert(joined.end(), c.begin(), c.end());
      const auto expected = to_vector(whole.batch(b).ids);
      EXPECT_EQ(std::vector<int64_t>(expected.begin(), expected.begin() + static_cast<std::ptrdiff_t>(joined.size())),
                joined)
          << "epoch " << epoch << " batch " << b;
    }
  }
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { ranks[0].set_shard(2, 2); }, {"shard 2 of 2"}));
}

TEST(BatchLoader, ShuffleDependsOnSeedAndEpochOnly) {
  auto ds = make_dataset(50);
  BatchLoader a(ds, 50, true, 1), b(ds, 50, true, 1), c(ds, 50, true, 2);
  torch::rand({100});  // consuming the global RNG must not change the order
  EXPECT_TRUE(torch::equal(a.batch(0).ids, b.batch(0).ids));
  EXPECT_FALSE(torch::equal(a.batch(0).ids, c.batch(0).ids));
  a.start_epoch(1);
  EXPECT_FALSE(torch::equal(a.batch(0).ids, b.batch(0).ids));
  b.start_epoch(1);
  EXPECT_TRUE(torch::equal(a.batch(0).ids, b.batch(0).ids));
}

TEST(BatchLoader, ExcludedIdsNeverAppearAgain) {
  auto ds = make_dataset(20);
  BatchLoader loader(ds, 4, true, 3);
  loader.exclude_ids({2, 5, 19});
  loader.start_epoch(1);
  int64_t total = 0;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    for (auto id : to_vector(loader.batch(b).ids)) {
      EXPECT_TRUE(id != 2 && id != 5 && id != 19);
      ++total;
    }
  }
  EXPECT_EQ(total, 17);
}

TEST(BatchLoader, RejectsBadBatchSize) {
  auto ds = make_dataset(5);
  EXPECT_THROW(BatchLoader(ds, 0), ValueError);
}

TEST(TensorDataset, SplitKeepsIdsAndPartitions) {
  auto ds = make_dataset(100);
  auto [train, val] = ds.split(0.2, 11);
  EXPECT_EQ(train.size(), 80);
  EXPECT_EQ(val.size(), 20);
  auto all = std::get<0>(torch::cat({train.ids(), val.ids()}).sort());
  EXPECT_TRUE(torch::equal(all, torch::arange(100, torch::kLong)));
  EXPECT_TRUE(torch::equal(val.y(), val.ids()));
  auto [train2, val2] = ds.split(0.2, 11);
  EXPECT_TRUE(torch::equal(val.ids(), val2.ids()));
  EXPECT_THROW(ds.split(1.5, 0), ValueError);
}

TEST(TensorDataset, WithoutIdsDropsThoseSamples) {
  auto ds = make_dataset(6).without_ids({0, 4});
  EXPECT_EQ(to_vector(ds.ids()), (std::vector<int64_t>{1, 2, 3, 5}));
}

TEST(LoadMnist, ReadsTheFourIdxFilesAndScales) {
  testing::TempDir dir;
  auto images = torch::randint(0, 256, {7, 28, 28}).to(torch::kByte);
  auto labels = torch::randint(0, 10, {7}).to(torch::kByte);
  write_idx(dir / "train-images-idx3-ubyte", images);
  write_idx(dir / "train-labels-idx1-ubyte", labels);
  write_idx(dir / "t10k-images-idx3-ubyte", images.slice(0, 0, 3));
  write_idx(dir / "t10k-labels-idx1-ubyte", labels.slice(0, 0, 3));
  auto splits = load_mnist(dir.path());
  EXPECT_EQ(splits.train.size(), 7);
  EXPECT_EQ(splits.test.size(), 3);
  EXPECT_TRUE(testing::tensors_match(splits.train.x(), images.to(torch::kFloat) / 255.0));
  EXPECT_TRUE(torch::equal(splits.train.y(), labels.to(torch::kLong)));
}

TEST(LoadMnist, MissingOrMismatchedFilesAreNamed) {
  testing::TempDir dir;
  EXPECT_TRUE(testing::throws_with<IoError>([&] { load_mnist(dir.path()); }, {"train-images-idx3-ubyte"}));
  write_idx(dir / "train-images-idx3-ubyte", torch::zeros({4, 28, 28}, torch::kByte));
  write_idx(dir / "train-labels-idx1-ubyte", torch::zeros({5}, torch::kByte));
  write_idx(dir / "t10k-images-idx3-ubyte", torch::zeros({1, 28, 28}, torch::kByte));
  write_idx(dir / "t10k-labels-idx1-ubyte", torch::zeros({1}, torch::kByte));
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { load_mnist(dir.path()); }, {"4 images", "5 labels"}));
}

}  // namespace
}  // namespace nanguard::data

namespace nanguard::data {
namespace {

TEST(TensorDataset, GatherIdsFindsRowsByIdInAnySubset) {
  auto ds = make_dataset(10).subset(torch::tensor({7, 2, 9, 4}, torch::kLong));
  Batch b = ds.gather_ids(torch::tensor({9, 7}, torch::kLong));
  EXPECT_EQ(to_vector(b.ids), (std::vector<int64_t>{9, 7}));
  EXPECT_TRUE(torch::equal(b.y, b.ids));
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { ds.gather_ids(torch::tensor({3}, torch::kLong)); },
                                               {"not in this dataset"}));
}

}  // namespace
}  // namespace nanguard::data
