#include "guard/batch_memory.h"

#include <algorithm>

#include <fmt/format.h>
#include <torch/torch.h>

#include "guard/event_log.h"
#include "guard/training_state.h"

namespace nanguard::detail {
namespace {

int64_t batch_bytes(const data::Batch& b) {
  int64_t n = 0;
  for (const auto* t : {&b.x, &b.y, &b.ids}) {
    if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
  }
  return n;
}

}  // namespace

void BatchMemory::remember(int64_t t, const data::Batch& batch, int64_t snapshot_step) {
  const bool snapshot_now = snapshot_step == t;
  if (snapshot_now && !keeping_) {
    keeping_ = true;  // a new snapshot: a fresh start
    batches_.clear();
    bytes_ = 0;
  }
  // Only the ids when the gather hook can rebuild the batch from them, else the tensors.
  const bool by_id = options_.gather && batch.ids.defined() && (!options_.can_gather || options_.can_gather());
  const data::Batch kept = by_id ? data::Batch{at::Tensor(), at::Tensor(), batch.ids} : batch;
  const int64_t bytes = batch_bytes(kept);
  const bool budgeted = options_.periodic_snapshots;
  if (keeping_ && budgeted && bytes_ + bytes > options_.byte_budget && snapshot_now && !by_id) {
    // At a snapshot step the batches before it go once the snapshot passes its check: drop them
    // now rather than stop keeping for a whole interval.
    drop_before(t);
  }
  if (keeping_ && budgeted && bytes_ + bytes > options_.byte_budget) {
    keeping_ = false;
    batches_.clear();
    bytes_ = 0;
    if (!warned_) {
      warned_ = true;
      log_.warn_about(t, "kept_batches_budget",
                      fmt::format("the batches since the snapshot of step {} pass kept_batch_bytes ({:.3g} MB): until "
                                  "the next snapshot none are kept, so a replay or a rollback's re-run from it is not "
                                  "possible",
                                  snapshot_step, static_cast<double>(options_.byte_budget) / 1e6),
                      options_.gather ? "snapshot more often or raise kept_batch_bytes"
                                      : "pass GuardHooks::gather_batch (the guard then keeps only sample ids), "
                                        "snapshot more often, or raise kept_batch_bytes");
    }
  }
  if (!keeping_) return;
  batches_.push_back(RecentBatch{t, kept, false, {}, 0, 0});
  bytes_ += bytes;
  if (!budgeted && batches_.size() > 2) {
    bytes_ -= batch_bytes(batches_.front().batch);
    batches_.erase(batches_.begin());
  }
}

void BatchMemory::drop_before(int64_t step) {
  batches_.erase(std::remove_if(batches_.begin(), batches_.end(), [step](const RecentBatch& rb) { return rb.step < step; }),
                 batches_.end());
  bytes_ = 0;
  for (const auto& rb : batches_) bytes_ += batch_bytes(rb.batch);
}

void BatchMemory::mark_applied(int64_t step, std::vector<double> learning_rates, double global_clip,
                               double per_tensor_clip) {
  for (auto it = batches_.rbegin(); it != batches_.rend(); ++it) {
    if (it->step == step) {
      it->applied = true;
      it->learning_rates = std::move(learning_rates);
      it->global_clip = global_clip;
      it->per_tensor_clip = per_tensor_clip;
      return;
    }
  }
}

std::vector<RecentBatch> BatchMemory::applied_between(int64_t from, int64_t until) const {
  std::vector<RecentBatch> out;
  for (const auto& rb : batches_) {
    if (rb.step >= from && rb.step < until && rb.applied) out.push_back(rb);
  }
  return out;
}

bool BatchMemory::covers(int64_t step) const {
  return !batches_.empty() && batches_.front().step <= step &&
         std::any_of(batches_.begin(), batches_.end(), [&](const RecentBatch& rb) { return rb.step == step; });
}

void BatchMemory::unmark_all() {
  for (auto& rb : batches_) rb.applied = false;
}

data::Batch BatchMemory::stored(const RecentBatch& rb) const {
  return filter(rb.batch.x.defined() ? rb.batch : options_.gather(rb.batch.ids));
}

data::Batch BatchMemory::filter(const data::Batch& batch) const {
  if (quarantined_.empty() || !batch.ids.defined()) return batch;
  const auto ids = to_vector(batch.ids);
  std::vector<int64_t> rows;
  rows.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!std::binary_search(quarantined_.begin(), quarantined_.end(), ids[i])) rows.push_back(static_cast<int64_t>(i));
  }
  if (rows.size() == ids.size()) return batch;
  auto index = torch::tensor(rows, torch::kLong);
  data::Batch out;
  out.x = batch.x.index_select(0, index.to(batch.x.device()));
  if (batch.y.defined()) out.y = batch.y.index_select(0, index.to(batch.y.device()));
  out.ids = batch.ids.index_select(0, index.to(batch.ids.device()));
  return out;
}

size_t BatchMemory::quarantine(const std::vector<int64_t>& ids) {
  size_t added = 0;
  for (int64_t id : ids) {
    auto at = std::lower_bound(quarantined_.begin(), quarantined_.end(), id);
    if (at == quarantined_.end() || *at != id) {
      quarantined_.insert(at, id);
      ++added;
    }
  }
  return added;
}

}  // namespace nanguard::detail
