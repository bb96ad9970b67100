#include "nanguard/data/torch_data.h"

#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"

namespace nanguard::data {
namespace detail {

void throw_example_count(size_t got, size_t wanted) {
  throw ValueError(fmt::format("WithIds: the source dataset returned {} examples for {} indices (expected one example "
                               "per index, in order, so that each can be given its index)",
                               got, wanted));
}

}  // namespace detail

namespace {

std::string describe(const at::Tensor& t) {
  return fmt::format("shape [{}], {} on {}", fmt::join(t.sizes(), ", "), c10::toString(t.scalar_type()),
                     t.device().str());
}

// Checks that `what` (data or target) of example i matches the first example's.
void check_like_first(const std::vector<ExampleWithId>& examples, size_t i, const char* what,
                      const at::Tensor& first, const at::Tensor& other) {
  if (!first.defined() && !other.defined()) return;
  const ExampleWithId& a = examples.front();
  const ExampleWithId& b = examples[i];
  if (first.defined() != other.defined()) {
    throw ValueError(fmt::format("StackBatch: example {} of the batch (dataset id {}) {} a {} but example 0 (id {}) "
                                 "{}; expected every example of a batch to have one, or none to",
                                 i, b.id, other.defined() ? "has" : "lacks", what, a.id,
                                 first.defined() ? "has one" : "does not"));
  }
  if (first.sizes() != other.sizes() || first.scalar_type() != other.scalar_type() ||
      first.device() != other.device()) {
    throw ValueError(fmt::format("StackBatch: example {} of the batch (dataset id {}) has {} of {}, but example 0 "
                                 "(id {}) has {}; expected every example of a batch to have the same shape, dtype "
                                 "and device (resize or pad them in the dataset, or use batch size 1)",
                                 i, b.id, what, describe(other), a.id, describe(first)));
  }
}

}  // namespace

Batch StackBatch::apply_batch(std::vector<ExampleWithId> examples) {
  if (examples.empty()) throw ValueError("StackBatch: empty batch (expected at least one example)");
  const ExampleWithId& first = examples.front();
  std::vector<at::Tensor> xs, ys;
  std::vector<int64_t> ids;
  xs.reserve(examples.size());
  ids.reserve(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    const ExampleWithId& e = examples[i];
    if (!e.data.defined()) {
      throw ValueError(fmt::format("StackBatch: example {} of the batch (dataset id {}) has no data (an undefined "
                                   "tensor); expected a tensor",
                                   i, e.id));
    }
    check_like_first(examples, i, "data", first.data, e.data);
    check_like_first(examples, i, "target", first.target, e.target);
    xs.push_back(e.data);
    if (e.target.defined()) ys.push_back(e.target);
    ids.push_back(e.id);
  }
  Batch batch;
  batch.x = at::stack(xs);
  if (!ys.empty()) batch.y = at::stack(ys);
  batch.ids = torch::tensor(ids, torch::kLong);
  return batch;
}

}  // namespace nanguard::data
