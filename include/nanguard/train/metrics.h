// Keras metrics as running accumulators. update() stays on the device (no host sync);
// result() syncs once. "accuracy" resolves from the loss as Keras does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "nanguard/train/loss.h"

namespace nanguard {

// The metric names Metric accepts, as written in a config.
std::vector<std::string> metric_names();

class Metric {
 public:
  // name: "accuracy" (or "acc"), "sparse_categorical_accuracy", "categorical_accuracy",
  // "binary_accuracy", "mse" ("mean_squared_error"), "mae" ("mean_absolute_error").
  // "accuracy" follows the loss: sparse CE -> sparse_categorical_accuracy, categorical CE ->
  // categorical_accuracy, binary CE -> binary_accuracy; with mse/mae it is chosen from the
  // shapes of the first update, as Keras does. Throws ValueError listing the valid names.
  Metric(std::string name, const LossSpec& loss);

  // Accumulates one batch. outputs: the model's activated outputs (probabilities for the
  // classification losses); target: as for compute_loss. Throws ValueError on a shape or dtype
  // that does not fit the metric. Runs under NoGradGuard, without a host sync.
  void update(const torch::Tensor& outputs, const torch::Tensor& target);
  // The mean over everything accumulated since the last reset (0 when empty, as Keras).
  double result() const;
  void reset();
  // The sum and element count behind result(), and their replacement by totals over several
  // processes (data parallelism).
  double total() const;
  int64_t count() const { return count_; }
  void set_totals(double total, int64_t count);

  // The name as the user gave it ("accuracy"): the history column.
  const std::string& name() const { return name_; }
  // The metric it resolved to ("sparse_categorical_accuracy"); for "accuracy" with a
  // regression loss, "accuracy" until the first update.
  const std::string& resolved_name() const { return resolved_; }

 private:
  enum class Kind { unresolved_accuracy, sparse_categorical, categorical, binary, mse, mae };
  void resolve(Kind kind);

  Kind kind_ = Kind::unresolved_accuracy;
  std::string name_;
  std::string resolved_;
  torch::Tensor sum_;  // float64 on the outputs' device; undefined until the first update
  int64_t count_ = 0;  // elements behind sum_, known on the host from shapes alone
};

}  // namespace nanguard
