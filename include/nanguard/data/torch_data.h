// Batches with dataset ids from torch::data pipelines.
//
// The guard blames and quarantines samples by their dataset index (Batch::ids), but a
// torch::data pipeline drops it: the sampler's indices go into get_batch and only the examples
// come out. WithIds keeps them. It wraps a stateless torch::data dataset whose batches are
// vectors of torch::data::Example (a Dataset such as torch::data::datasets::MNIST, also after
// per-example transforms such as Normalize) and tags each example with the index it was read at.
// StackBatch, a batch transform like torch::data::transforms::Stack, stacks the examples of a
// batch into one Batch {x, y, ids}:
//
//   auto dataset = nanguard::data::with_ids(torch::data::datasets::MNIST("data/mnist"))
//                      .map(nanguard::data::StackBatch());
//   auto loader = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
//       std::move(dataset), torch::data::DataLoaderOptions().batch_size(64));
//   for (nanguard::data::Batch& batch : *loader) guard.step(batch, closure);
//
// Row i of batch.x is source.get(batch.ids[i]).data, whatever the sampler's order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

// The datasets umbrella rather than datasets/base.h and map.h: LibTorch 1.13's map.h uses
// torch::enable_if_t without including its header.
#include <torch/data/datasets.h>
#include <torch/data/example.h>
#include <torch/data/transforms/base.h>

#include "nanguard/data/dataset.h"

namespace nanguard::data {

// One example and the index it was read at in its dataset.
struct ExampleWithId {
  at::Tensor data;
  at::Tensor target;  // undefined when the source has no targets (torch::data::example::NoTarget)
  int64_t id = -1;
};

namespace detail {
// Throws ValueError: a source returned `got` examples when asked for `wanted` indices.
[[noreturn]] void throw_example_count(size_t got, size_t wanted);
}  // namespace detail

// A torch::data dataset whose examples carry their index. Stateless and copyable when the
// source is, so DataLoader workers each hold a copy.
template <typename Source>
class WithIds : public torch::data::datasets::BatchDataset<WithIds<Source>, std::vector<ExampleWithId>> {
 public:
  static_assert(!Source::is_stateful,
                "WithIds needs a stateless dataset: a stateful one picks its own examples, so they have no index");
  static_assert(std::is_same<typename Source::BatchRequestType, c10::ArrayRef<size_t>>::value,
                "WithIds needs a dataset that is asked for batches by index (BatchRequestType ArrayRef<size_t>)");
  using SourceExample = typename Source::BatchType::value_type;
  static_assert(std::is_same<typename SourceExample::DataType, at::Tensor>::value,
                "WithIds needs examples whose data is a tensor (torch::data::Example<at::Tensor, ...>)");

  explicit WithIds(Source source) : source_(std::move(source)) {}

  // The source's examples at `indices`, in that order, each tagged with its index.
  std::vector<ExampleWithId> get_batch(c10::ArrayRef<size_t> indices) override {
    auto examples = source_.get_batch(indices);
    if (examples.size() != indices.size()) detail::throw_example_count(examples.size(), indices.size());
    std::vector<ExampleWithId> out(examples.size());
    for (size_t i = 0; i < examples.size(); ++i) {
      out[i].data = std::move(examples[i].data);
      if constexpr (!std::is_void<typename SourceExample::TargetType>::value) {
        out[i].target = std::move(examples[i].target);
      }
      out[i].id = static_cast<int64_t>(indices[i]);
    }
    return out;
  }

  // The source's size (an optional: c10::optional in LibTorch 1.x, std::optional in 2.x).
  auto size() const -> decltype(std::declval<const Source&>().size()) override { return source_.size(); }

  // The wrapped dataset.
  const Source& source() const { return source_; }

 private:
  Source source_;
};

// with_ids(dataset): WithIds<Dataset>, deducing the type.
template <typename Source>
WithIds<Source> with_ids(Source source) {
  return WithIds<Source>(std::move(source));
}

// Stacks a batch of examples into one Batch: x = stack(data), y = stack(target) (undefined
// when no example has a target), ids = the examples' ids (int64 [batch], on the CPU).
// Throws ValueError naming the examples and their ids for an empty batch, for examples whose
// data or targets differ in shape, dtype or device from the batch's first, and for a target
// that is missing in some examples only.
class StackBatch : public torch::data::transforms::BatchTransform<std::vector<ExampleWithId>, Batch> {
 public:
  Batch apply_batch(std::vector<ExampleWithId> examples) override;
};

}  // namespace nanguard::data
