// What the guard trains: the parameters (named), buffers and the optimizers behind their
// adapters, with the operations every part of the guard needs on them (gradients, clipping,
// the update, learning rates). Several (model, optimizer) pairs share one TrainingState.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanguard/guard/consensus.h"
#include "nanguard/guard/guard.h"
#include "nanguard/guard/optimizer_adapter.h"
#include "nanguard/guard/snapshot.h"

namespace nanguard::detail {

// A tensor of integers (sample ids, row indices) read on the host.
std::vector<int64_t> to_vector(const at::Tensor& t);
// The context of a run of the step's closure the guard makes itself.
StepContext step_context(StepContext::Run run, int64_t step, bool traced = false);

class TrainingState {
 public:
  TrainingState(std::vector<std::string> names, std::vector<at::Tensor> params, std::vector<at::Tensor> buffers,
                std::vector<std::shared_ptr<OptimizerAdapter>> optimizers);

  const std::vector<at::Tensor>& params() const { return params_; }
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<at::Tensor>& buffers() const { return buffers_; }
  std::vector<OptimizerAdapter*> optimizers() const;
  // What a snapshot of this state covers (no extra state: the caller adds it).
  TrainingStateRefs snapshot_refs() const;

  // Drops the gradients: backward then hands its fresh buffers over without an extra add.
  void zero_grad();
  // Parameters and optimizer state: what a state check covers.
  std::vector<at::Tensor> state_tensors() const;
  std::vector<at::Tensor> optimizer_state_tensors() const;
  std::vector<at::Tensor> second_moments() const;
  // Learning rates of every group of every optimizer, in order.
  std::vector<double> learning_rates() const;
  void set_learning_rates(const std::vector<double>& rates);
  void scale_learning_rates(double factor);
  // The first group's learning rate (0 without groups): the one reports quote.
  double learning_rate() const;
  // The same, taken from `rates` as learning_rates() gave them.
  double first_learning_rate(const std::vector<double>& rates) const;

  // Whether a closure run left a finite loss and finite gradients.
  bool loss_and_gradients_finite(const at::Tensor& loss) const;
  // Loss and gradients are plain CPU float32 memory: the per-step check reads them directly.
  bool cpu_fast_path(const at::Tensor& loss) const;
  double gradient_norm_in_double() const;
  // Whether the squared gradient norm, in double, exceeds float32's range (the cheap check's
  // float sum is then infinite although every gradient is finite).
  bool gradient_norm_overflows() const;

  // Averages the gradients over the data-parallel group (when there is one and `averaged`),
  // clips (each gradient on its own to per_tensor_clip, then each optimizer's gradients to a
  // total norm of global_clip; 0 turns a clip off) and steps every optimizer. grad_norm is the
  // total norm when the caller has it (-1: computed here when needed). Replays pass averaged =
  // false: they run on one rank and must not enter a collective.
  void apply_update(double per_tensor_clip, double global_clip, double grad_norm = -1, bool averaged = true);
  // Data parallelism: sums the guard's vote over the ranks and averages the gradients, in one
  // collective (Consensus::average_gradients_and_sum).
  void vote_and_average(std::vector<double>& votes);
  // The data-parallel group whose gradient average every update takes (null: one process).
  void set_consensus(Consensus* consensus) { consensus_ = consensus; }
  Consensus* consensus() const { return consensus_; }
  bool distributed() const;
  // The caller's own clipping (GuardHooks::clip_gradients), run first in every update.
  void set_user_clip(std::function<void()> clip) { user_clip_ = std::move(clip); }

 private:
  void clip_per_tensor(double max_norm);
  void clip_global(double max_norm, double grad_norm);

  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> buffers_;
  std::vector<std::shared_ptr<OptimizerAdapter>> optimizers_;
  // For each optimizer, the indices into params_ of the parameters it updates (global clipping
  // bounds each optimizer's gradients on their own: a generator's spike must not shrink the
  // discriminator's update).
  std::vector<std::vector<size_t>> params_of_;
  std::function<void()> user_clip_;
  Consensus* consensus_ = nullptr;
};

}  // namespace nanguard::detail
