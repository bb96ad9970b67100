#include "nanguard/data/dataset.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/error.h"
#include "nanguard/data/idx.h"

namespace nanguard::data {
namespace fs = std::filesystem;

TensorDataset::TensorDataset(at::Tensor x, at::Tensor y, at::Tensor ids)
    : x_(std::move(x)), y_(std::move(y)), ids_(std::move(ids)) {
  NANGUARD_CHECK(x_.defined() && x_.dim() >= 1, "dataset features must have a sample dimension");
  NANGUARD_CHECK(!y_.defined() || y_.size(0) == x_.size(0),
                 "dataset has {} feature rows but {} targets", x_.size(0), y_.size(0));
  if (!ids_.defined()) ids_ = torch::arange(x_.size(0), torch::kLong);
  NANGUARD_CHECK(ids_.dim() == 1 && ids_.size(0) == x_.size(0) && ids_.scalar_type() == torch::kLong,
                 "dataset ids must be int64 [{}]", x_.size(0));
}

Batch TensorDataset::gather(const at::Tensor& positions) const {
  Batch b;
  b.x = x_.index_select(0, positions);
  if (y_.defined()) b.y = y_.index_select(0, positions);
  b.ids = ids_.index_select(0, positions);
  return b;
}

Batch TensorDataset::gather_ids(const at::Tensor& ids) const {
  auto [sorted, order] = ids_.sort();
  auto wanted = ids.to(torch::kCPU).to(torch::kLong);
  auto at = torch::searchsorted(sorted, wanted).clamp_max(std::max<int64_t>(size() - 1, 0));
  NANGUARD_CHECK(size() > 0 && torch::equal(sorted.index_select(0, at), wanted),
                 "some of the requested sample ids are not in this dataset");
  return gather(order.index_select(0, at));
}

TensorDataset TensorDataset::subset(const at::Tensor& positions) const {
  Batch b = gather(positions);
  return TensorDataset(b.x, b.y, b.ids);
}

TensorDataset TensorDataset::head(int64_t n) const {
  return subset(torch::arange(std::min(std::max<int64_t>(n, 0), size()), torch::kLong));
}

std::pair<TensorDataset, TensorDataset> TensorDataset::split(double fraction, uint64_t seed) const {
  NANGUARD_CHECK(fraction > 0.0 && fraction < 1.0, "split fraction must be in (0, 1), got {}", fraction);
  auto gen = at::detail::createCPUGenerator(seed);
  auto order = torch::randperm(size(), gen, torch::kLong);
  const auto second = static_cast<int64_t>(std::llround(fraction * static_cast<double>(size())));
  NANGUARD_CHECK(second > 0 && second < size(), "split of {} samples with fraction {} leaves a part empty",
                 size(), fraction);
  auto first_pos = std::get<0>(order.slice(0, 0, size() - second).sort());
  auto second_pos = std::get<0>(order.slice(0, size() - second).sort());
  return {subset(first_pos), subset(second_pos)};
}

TensorDataset TensorDataset::without_ids(const std::vector<int64_t>& ids) const {
  if (ids.empty()) return *this;
  auto drop = torch::tensor(ids, torch::kLong);
  auto keep = torch::isin(ids_, drop).logical_not().nonzero().flatten();
  return subset(keep);
}

BatchLoader::BatchLoader(const TensorDataset& dataset, int64_t batch_size, bool shuffle, uint64_t seed)
    : dataset_(&dataset), batch_size_(batch_size), shuffle_(shuffle), seed_(seed) {
  NANGUARD_CHECK(batch_size > 0, "batch_size must be positive, got {}", batch_size);
  NANGUARD_CHECK(dataset.size() > 0, "cannot iterate over an empty dataset");
  start_epoch(0);
}

void BatchLoader::start_epoch(int64_t epoch) {
  const int64_t n = dataset_->size();
  if (shuffle_) {
    // A generator per epoch: the order depends on (seed, epoch) only, never on how many
    // random numbers training consumed, so replays and resumed runs see the same batches.
    auto gen = at::detail::createCPUGenerator(seed_ * 1000003ULL + static_cast<uint64_t>(epoch));
    order_ = torch::randperm(n, gen, torch::kLong);
  } else {
    order_ = torch::arange(n, torch::kLong);
  }
  if (!excluded_.empty()) {
    auto ids = dataset_->ids().index_select(0, order_);
    auto keep = torch::isin(ids, torch::tensor(excluded_, torch::kLong)).logical_not();
    order_ = order_.masked_select(keep);
  }
  if (world_ > 1) {
    const int64_t used = order_.size(0) / world_ * world_;
    const int64_t global = batch_size_ * world_;
    const int64_t full = used / global;
    const int64_t tail = (used - full * global) / world_;
    std::vector<at::Tensor> mine;
    if (full > 0) mine.push_back(order_.slice(0, 0, full * global).view({full, world_, batch_size_}).select(1, rank_).reshape({-1}));
    if (tail > 0) mine.push_back(order_.slice(0, full * global, used).view({world_, tail}).select(0, rank_));
    order_ = mine.empty() ? torch::empty({0}, torch::kLong) : torch::cat(mine);
  }
}

void BatchLoader::set_shard(int rank, int world) {
  NANGUARD_CHECK(world >= 1 && rank >= 0 && rank < world, "shard {} of {} does not exist", rank, world);
  NANGUARD_CHECK(dataset_->size() >= world, "{} samples cannot be shared by {} processes", dataset_->size(), world);
  rank_ = rank;
  world_ = world;
}

int64_t BatchLoader::num_batches() const { return (order_.size(0) + batch_size_ - 1) / batch_size_; }

Batch BatchLoader::batch(int64_t index) const {
  NANGUARD_INTERNAL_ASSERT(index >= 0 && index < num_batches(), "batch {} of {}", index, num_batches());
  const int64_t begin = index * batch_size_;
  const int64_t end = std::min<int64_t>(begin + batch_size_, order_.size(0));
  return dataset_->gather(order_.slice(0, begin, end));
}

void BatchLoader::exclude_ids(const std::vector<int64_t>& ids) {
  for (auto id : ids) {
    if (std::find(excluded_.begin(), excluded_.end(), id) == excluded_.end()) excluded_.push_back(id);
  }
}

namespace {

fs::path find_idx(const fs::path& dir, const std::string& stem) {
  for (const auto& candidate : {dir / stem, dir / (stem + ".gz")}) {
    if (fs::exists(candidate)) return candidate;
  }
  throw IoError("MNIST folder " + dir.string() + " lacks " + stem + " (or " + stem +
                ".gz); run scripts/setup.sh to download the data");
}

TensorDataset load_idx_pair(const fs::path& dir, const std::string& prefix, double scale) {
  const auto images_path = find_idx(dir, prefix + "-images-idx3-ubyte");
  const auto labels_path = find_idx(dir, prefix + "-labels-idx1-ubyte");
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  NANGUARD_CHECK(images.dim() == 3, "{}: expected rank-3 images [N, rows, cols], got {}",
                 images_path.string(), c10::str(images.sizes()));
  NANGUARD_CHECK(labels.dim() == 1, "{}: expected rank-1 labels, got {}", labels_path.string(), c10::str(labels.sizes()));
  NANGUARD_CHECK(images.size(0) == labels.size(0), "{} holds {} images but {} holds {} labels",
                 images_path.string(), images.size(0), labels_path.string(), labels.size(0));
  NANGUARD_CHECK(scale > 0, "image scale must be positive, got {}", scale);
  auto x = images.to(torch::kFloat).div_(scale);
  return TensorDataset(x, labels.to(torch::kLong));
}

}  // namespace

MnistSplits load_mnist(const fs::path& dir, double scale) {
  return {load_idx_pair(dir, "train", scale), load_idx_pair(dir, "t10k", scale)};
}

}  // namespace nanguard::data
