// The cheap check of every step: the loss, the sum of squares of every gradient (finite iff
// every gradient is; together the squared gradient norm) and the deferred check of the
// parameters and optimizer state queued after an earlier update, read with one host sync.
#pragma once

#include <ATen/core/Tensor.h>

namespace nanguard::detail {

class TrainingState;

struct CheckResult {
  double loss = 0;
  double grad_norm = 0;
  bool loss_finite = true;
  bool grads_finite = true;  // or only the float32 norm overflowed (norm_overflow)
  bool state_failed = false;  // the queued state check found non-finite parameters or state
  // Every gradient is finite but the squared norm passes float32's range (norm above ~1.8e19):
  // the norm is then in double and the state is checked right after the update.
  bool norm_overflow = false;
  bool healthy() const { return loss_finite && grads_finite && !state_failed; }
};

class Sentinel {
 public:
  explicit Sentinel(const TrainingState& state) : state_(state) {}

  CheckResult check(const at::Tensor& loss);
  // Queues a check of the current parameters and optimizer state, read with the next check's
  // sync. A sum is finite iff its elements are (barring an overflow of the sum itself, which
  // the exact check tells apart).
  void queue_state_check();
  // Forgets a queued check (its state was rolled back).
  void drop_state_check() { pending_ = at::Tensor(); }

 private:
  const TrainingState& state_;
  at::Tensor pending_;
};

}  // namespace nanguard::detail
