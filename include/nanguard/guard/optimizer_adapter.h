// The guard's only way to an optimizer: step, learning rates and epsilon per group, state
// tensors per parameter, second moments. The snapshot ring and the monitor go through it too,
// so any optimizer whose state is tensors can be guarded: LibTorch's (make_optimizer_adapter)
// or one written in another front end.
//
// Calls are per step or per check, never per tensor: the per-step cost is one virtual call for
// step() and one for a learning rate.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace torch::optim {
class Optimizer;
}

namespace nanguard {

// The state one parameter's optimizer keeps (moments, momentum buffers, a step count).
struct OptimizerParamStateView {
  int64_t param = -1;               // index of the parameter, in the adapter's parameters() order
  std::vector<at::Tensor> tensors;  // aliases of the live tensors (undefined where unused)
  int64_t step = 0;                 // the per-parameter step count (0 where the optimizer has none)
};

class OptimizerAdapter {
 public:
  virtual ~OptimizerAdapter() = default;

  // "adam", "sgd", ... (for messages).
  virtual std::string name() const = 0;
  // Applies one update from the gradients in place (the guard clips before).
  virtual void step() = 0;
  // The parameters it updates, in group order.
  virtual std::vector<at::Tensor> parameters() const = 0;

  virtual size_t num_groups() const = 0;
  virtual double learning_rate(size_t group) const = 0;
  virtual void set_learning_rate(size_t group, double lr) = 0;
  // The epsilon of a group's update denominator; NaN for optimizers without one (SGD).
  virtual double epsilon(size_t group) const = 0;
  // Ignored by optimizers without one.
  virtual void set_epsilon(size_t group, double eps) = 0;

  // The state of every parameter that has one (none before the first step).
  virtual std::vector<OptimizerParamStateView> state() = 0;
  // Makes the state equal to `saved` (as returned by state() and copied): entries missing
  // from it are erased, the others are copied in place (or created).
  virtual void load_state(const std::vector<OptimizerParamStateView>& saved) = 0;
  // The second-moment tensors (Adam's exp_avg_sq, RMSprop's square_avg, Adagrad's sum);
  // empty for optimizers without one.
  virtual std::vector<at::Tensor> second_moments() = 0;

  // Every defined state tensor (what a state check covers).
  std::vector<at::Tensor> state_tensors();
  // Every group's learning rate, in order (an adapter may read them all at once).
  virtual std::vector<double> learning_rates() const;
  void set_learning_rates(const std::vector<double>& rates);
  // Multiplies every group's learning rate.
  void scale_learning_rates(double factor);
};

// The adapter of a LibTorch optimizer (SGD, Adam, AdamW, RMSprop, Adagrad); it refers to the
// optimizer, which must outlive it. Throws ValueError for other optimizer types.
std::unique_ptr<OptimizerAdapter> make_optimizer_adapter(torch::optim::Optimizer& optimizer);

}  // namespace nanguard
