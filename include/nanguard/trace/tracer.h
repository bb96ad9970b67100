// Op tracer for replays: while an OpTracer is alive, every ATen op (forward, backward and
// optimizer) is recorded with the health of the tensors it reads and writes, the module scope
// it ran in (NANGUARD_SCOPE) and the training phase. It is meant for re-running one step after
// an incident (a step of the MNIST MLP goes from ~0.4 ms to ~16 ms on CPU, and every op costs
// a host sync on a GPU); when no tracer is alive nothing is installed and ops run at full
// speed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/types.h>

#include "nanguard/numerics/health.h"

namespace nanguard::trace {

namespace detail {
struct TracerState;
}

enum class Phase { forward, backward, optimizer, unknown };

// "forward", "backward", "optimizer", "unknown".
const char* to_string(Phase phase);

// Identity of a tensor for following dataflow between records: the address of its first
// element. Views that start at the same element share it; it is 0 for undefined tensors and
// tensors without storage or elements.
uintptr_t tensor_id(const torch::Tensor& tensor);

struct OpRecord {
  // Position in start order (0, 1, ...).
  int64_t index = 0;
  // Index of the op this one ran inside (composite ops call other ops), -1 at top level.
  int64_t parent = -1;
  // Operator name, e.g. "aten::log".
  std::string name;
  Phase phase = Phase::unknown;
  // NANGUARD_SCOPE path active when the op ran. For backward ops: the scope of the forward op
  // that created the autograd node (matched by sequence number); "" when unknown.
  std::string module;
  // The autograd node this op ran inside, e.g. "LogBackward0"; "" outside backward.
  std::string backward_node;
  // Tensors the op reads, in argument order (tensor lists flattened). Write-only arguments
  // (out= tensors, the self of copy_/fill_/zero_ and random fills) are left out.
  std::vector<TensorHealth> inputs;
  // Outputs of ops that return uninitialised memory (aten::empty and the like) carry only
  // dtype and shape.
  std::vector<TensorHealth> outputs;
  std::vector<uintptr_t> input_ids, output_ids;  // tensor_id() of each input / output
  // A scalar argument was NaN or +-Inf: a fill value such as masked_fill's -inf. The op writes
  // those values on purpose, so it is no birth (its inputs were not all finite).
  bool nonfinite_scalar_input = false;
  // Batch rows (dim 0 of the first non-finite output, when it equals
  // TracerOptions::batch_size) that hold non-finite values; first_nonfinite_row is the first.
  int64_t first_nonfinite_row = -1;
  std::vector<int64_t> nonfinite_rows;
  // The rows among them that hold NaN (a log_softmax of a partly masked row is -inf there on
  // purpose; only the fully masked rows are NaN).
  std::vector<int64_t> nan_rows;
  // Copies of the inputs and outputs, only with TracerOptions::keep_values.
  std::vector<torch::Tensor> input_values, output_values;

  // Every tensor input is finite and no scalar argument is NaN or Inf.
  bool inputs_finite() const;
  bool outputs_finite() const;
  // One line: "#12 forward aten::log [loss] in: ... -> out: ...".
  std::string to_string() const;
};

struct TracerOptions {
  // Record at most this many ops; later ops are counted in OpTracer::dropped().
  TORCH_ARG(int64_t, max_records) = 1'000'000;
  // When > 0, outputs whose dim 0 equals it get OpRecord::nonfinite_rows.
  TORCH_ARG(int64_t, batch_size) = 0;
  // Also keep copies of every input and output tensor (memory grows with the step).
  TORCH_ARG(bool, keep_values) = false;
};

// Installs a global at::RecordFunction callback for its lifetime. One tracer at a time;
// it records ops from every thread (autograd may run backward on worker threads).
class OpTracer {
 public:
  explicit OpTracer(TracerOptions options = {});
  ~OpTracer();
  OpTracer(const OpTracer&) = delete;
  OpTracer& operator=(const OpTracer&) = delete;

  // Removes the callback now; records stay readable. The destructor calls it.
  void stop();
  bool running() const;

  // Phase given to ops that are not inside an autograd node (default forward). Mark the
  // optimizer step with set_phase(Phase::optimizer) or a PhaseScope.
  void set_phase(Phase phase);
  Phase phase() const;

  // A copy of the records so far, in start order.
  std::vector<OpRecord> records() const;
  size_t size() const;
  // Ops not recorded because max_records was reached.
  int64_t dropped() const;
  void clear();

  // The running tracer, or nullptr.
  static OpTracer* active();

 private:
  std::shared_ptr<detail::TracerState> state_;
  uint64_t handle_ = 0;
};

// Sets the phase of the running tracer (if any) for a block, and restores the previous phase
// when the block ends. Without a running tracer it does nothing, so training code can mark
// its optimizer step unconditionally.
class PhaseScope {
 public:
  explicit PhaseScope(Phase phase);
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  std::shared_ptr<detail::TracerState> state_;  // valid even if the tracer dies in the block
  Phase previous_ = Phase::forward;
};

}  // namespace nanguard::trace
