// The batches since the last validated snapshot, to replay an optimizer step from it or re-run
// the steps a rollback lost: only their ids with a gather hook, else their tensors within a
// byte budget (big batches on a device must not pile up). Also the quarantine: the dataset ids
// every later batch is filtered of.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "nanguard/data/dataset.h"

namespace nanguard::detail {

class EventLog;

// One remembered step and how its update was applied, for a faithful replay.
struct RecentBatch {
  int64_t step = 0;
  data::Batch batch;     // the tensors, or only the ids with a gather hook
  bool applied = false;  // its update is part of the current state
  std::vector<double> learning_rates;  // every group's, as the update ran
  double global_clip = 0;              // 0: none
  double per_tensor_clip = 0;
};

struct BatchMemoryOptions {
  bool periodic_snapshots = true;  // false: only the last two batches are kept, no budget
  int64_t byte_budget = 0;
  std::function<data::Batch(const at::Tensor& ids)> gather;  // optional
  std::function<bool()> can_gather;  // optional: whether gather serves the batch remembered now
};

class BatchMemory {
 public:
  BatchMemory(BatchMemoryOptions options, EventLog& log) : options_(std::move(options)), log_(log) {}

  // Remembers the batch of step t; snapshot_step is the newest snapshot's step.
  void remember(int64_t t, const data::Batch& batch, int64_t snapshot_step);
  void drop_before(int64_t step);
  // Records how step's update was applied.
  void mark_applied(int64_t step, std::vector<double> learning_rates, double global_clip, double per_tensor_clip);
  // The steps applied in [from, until), in order, and whether the memory reaches back to `from`.
  std::vector<RecentBatch> applied_between(int64_t from, int64_t until) const;
  bool covers(int64_t step) const;
  // The oldest remembered step (-1 when none is).
  int64_t oldest_step() const { return batches_.empty() ? -1 : batches_.front().step; }
  // After a rollback no remembered update is part of the state any more.
  void unmark_all();
  bool has_gather() const { return static_cast<bool>(options_.gather); }

  // A remembered batch as its step saw it, rebuilt from its ids when only those were kept,
  // without the samples quarantined since.
  data::Batch stored(const RecentBatch& rb) const;
  // The batch without quarantined samples (no device sync: ids are scanned on the host).
  data::Batch filter(const data::Batch& batch) const;
  // Adds ids to the quarantine; returns how many were new.
  size_t quarantine(const std::vector<int64_t>& ids);
  // Quarantined dataset ids, ascending.
  const std::vector<int64_t>& quarantined() const { return quarantined_; }

 private:
  BatchMemoryOptions options_;
  EventLog& log_;
  std::vector<RecentBatch> batches_;
  int64_t bytes_ = 0;       // bytes of batch tensors held
  bool keeping_ = true;     // false once the budget was passed, until the next snapshot
  bool warned_ = false;
  std::vector<int64_t> quarantined_;
};

}  // namespace nanguard::detail
