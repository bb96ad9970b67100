// In-memory datasets whose batches remember where every sample came from.
//
// The guard blames samples by their dataset index, so every Batch carries `ids`: the index of
// each row in the original dataset, preserved through shuffling, splitting and subsetting.
// Batches are gathered with one index_select per tensor (no per-sample collation).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace nanguard::data {

// One mini-batch: inputs, targets and the dataset index of each row.
struct Batch {
  at::Tensor x;
  at::Tensor y;
  at::Tensor ids;  // int64 [batch]
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
};

// Features and targets held as two tensors with the sample as dimension 0.
class TensorDataset {
 public:
  TensorDataset() = default;
  // ids default to 0..N-1. Throws ValueError when the first dimensions disagree.
  TensorDataset(at::Tensor x, at::Tensor y, at::Tensor ids = {});

  int64_t size() const { return x_.defined() ? x_.size(0) : 0; }
  const at::Tensor& x() const { return x_; }
  const at::Tensor& y() const { return y_; }
  const at::Tensor& ids() const { return ids_; }

  // The rows at the given positions (not ids), as one batch.
  Batch gather(const at::Tensor& positions) const;
  // The rows with the given dataset ids, in that order (ValueError for an unknown id).
  Batch gather_ids(const at::Tensor& ids) const;
  // The rows at the given positions, as a dataset that keeps their original ids.
  TensorDataset subset(const at::Tensor& positions) const;
  // The first n rows (all if n >= size).
  TensorDataset head(int64_t n) const;
  // Random split: the second part holds round(fraction * size) rows. Seeded and deterministic.
  std::pair<TensorDataset, TensorDataset> split(double fraction, uint64_t seed) const;
  // The rows whose id is not in `ids` (used to quarantine samples).
  TensorDataset without_ids(const std::vector<int64_t>& ids) const;

 private:
  at::Tensor x_, y_, ids_;
};

// Iterates over a dataset in mini-batches; with shuffle, epoch e uses a permutation drawn from
// (seed, e) only, so a run is reproducible and a replayed step sees the same batch.
class BatchLoader {
 public:
  BatchLoader(const TensorDataset& dataset, int64_t batch_size, bool shuffle = true, uint64_t seed = 0);

  // Prepares the order of epoch `epoch` (0-based).
  void start_epoch(int64_t epoch);
  int64_t num_batches() const;
  // Batch i of the current epoch (the last one may be smaller).
  Batch batch(int64_t index) const;
  // Excludes samples by dataset id from the next epoch on (quarantine).
  void exclude_ids(const std::vector<int64_t>& ids);
  const std::vector<int64_t>& excluded_ids() const { return excluded_; }
  // Data parallelism: from the next start_epoch on, this loader yields shard `rank` of `world`.
  // Global batch i of the epoch's order (world * batch_size samples) is split into `world`
  // equal parts and the rank takes part `rank`: the ranks' batches of a step together are the
  // one-process batch at batch_size * world. The epoch's last samples that do not divide
  // evenly over the ranks are left out, so every rank runs the same number of equal steps.
  void set_shard(int rank, int world);
  int64_t batch_size() const { return batch_size_; }

 private:
  const TensorDataset* dataset_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  at::Tensor order_;  // positions in epoch order (this shard's)
  std::vector<int64_t> excluded_;
  int rank_ = 0, world_ = 1;
};

// The four IDX files of MNIST-layout data sets (MNIST, Fashion-MNIST) in one folder:
// {train,t10k}-{images-idx3,labels-idx1}-ubyte, optionally gzip-compressed (.gz).
struct MnistSplits {
  TensorDataset train;
  TensorDataset test;
};
// Images become float32 [N, 28, 28] divided by `scale` (255 gives [0, 1]); labels int64.
MnistSplits load_mnist(const std::filesystem::path& dir, double scale = 255.0);

}  // namespace nanguard::data
