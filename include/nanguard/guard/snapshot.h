// A ring of training-state snapshots in buffers allocated once and reused, so rollback costs a
// copy and no allocation on the hot path. A snapshot holds parameters, buffers, optimizer state
// (Adam/AdamW/SGD/RMSprop/Adagrad moments and step counts), the RNG state of the default
// generators, and the caller's extra state (learning-rate schedule, step counters). Restoring
// one is bitwise exact.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace nanguard {

class OptimizerAdapter;

// What a snapshot covers. Tensors are referenced, not owned.
struct TrainingStateRefs {
  std::vector<at::Tensor> parameters;
  std::vector<at::Tensor> buffers;
  // The optimizers whose state (and learning rates) a snapshot holds.
  std::vector<OptimizerAdapter*> optimizers;
  // Extra state of the caller (schedule state, counters), saved and restored as numbers.
  std::function<std::vector<double>()> save_extra;
  std::function<void(const std::vector<double>&)> load_extra;
};

class SnapshotRing {
 public:
  // capacity: how many snapshots are kept (the oldest is overwritten). keep_first: the first
  // snapshot taken is kept besides them for the whole run (the initial state: a run that
  // diverges at its start rolls back to it).
  SnapshotRing(TrainingStateRefs state, int64_t capacity, bool keep_first = false);
  ~SnapshotRing();
  SnapshotRing(const SnapshotRing&) = delete;
  SnapshotRing& operator=(const SnapshotRing&) = delete;

  // Copies the current state into the next slot, labelled with `step`.
  void take(int64_t step);
  // Restores the newest snapshot whose step is <= max_step; returns its step, or nullopt if
  // none qualifies (nothing is changed then). include_first: the kept first snapshot counts.
  std::optional<int64_t> restore_at_or_before(int64_t max_step, bool include_first = true);
  // Restores the newest snapshot.
  std::optional<int64_t> restore_newest();
  // Steps of the snapshots held, oldest first.
  std::vector<int64_t> steps() const;
  // Steps of the ring's snapshots, without the kept first one, oldest first.
  std::vector<int64_t> ring_steps() const;
  // Bytes held by the ring's buffers.
  int64_t memory_bytes() const;
  // Wall time of the last take(), in seconds.
  double last_take_seconds() const { return last_take_seconds_; }
  int64_t capacity() const { return capacity_; }
  // How far the parameters have moved since the oldest snapshot held: the norm of their change
  // over the norm they had then (NaN when no snapshot is held or that norm is 0).
  double parameters_moved_since_oldest() const;
  // Drops every snapshot newer than `step` (after a rollback they describe an abandoned path).
  void discard_after(int64_t step);
  // Copies the current state into every snapshot labelled `step` (the kept first one too), after
  // a repair changed the state restored from it on purpose (a re-initialised layer), so that a
  // later rollback to it does not bring the old state back.
  void retake(int64_t step);

  struct Slot;

 private:
  void restore(const Slot& slot);
  void fill(Slot& slot, int64_t step);  // copies the current state into the slot

  TrainingStateRefs state_;
  std::vector<std::unique_ptr<Slot>> slots_;  // the ring, then the kept first snapshot if any
  int64_t capacity_ = 0;
  int64_t next_ = 0;
  bool first_pending_ = false;  // the next take() fills the kept first slot
  double last_take_seconds_ = 0.0;
};

}  // namespace nanguard
