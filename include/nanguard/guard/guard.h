// The Guard keeps a training loop finite. Use it in any LibTorch loop:
//
//   nanguard::Guard guard(*model, optimizer);
//   for (auto& batch : batches) {
//     auto verdict = guard.step(batch, [&](const nanguard::data::Batch& b) {
//       auto loss = torch::nll_loss(model->forward(b.x), b.y);
//       loss.backward();
//       return loss;
//     });
//     if (verdict.stopped()) break;
//   }
//
// The closure runs forward, loss and backward (no zero_grad, no optimizer step: the guard
// does both). Per step the cheap path costs one read of the gradients and one host sync; on a failed check the guard replays the step with the op tracer to find the op
// that created the first non-finite value, diagnoses the cause and repairs the run.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "nanguard/data/dataset.h"
#include "nanguard/guard/incident.h"
#include "nanguard/guard/options.h"

namespace nanguard {

class SnapshotRing;
namespace detail {
class CpuRngState;
}
namespace monitor {
class Monitor;
struct Warning;
}  // namespace monitor

// Computes the loss of a batch and runs backward; returns the loss.
using LossClosure = std::function<at::Tensor(const data::Batch&)>;

struct StepVerdict {
  enum class Outcome { applied, skipped, rolled_back, recomputed, stopped };
  Outcome outcome = Outcome::applied;
  double loss = 0;                              // the loss of the applied step (NaN if none)
  std::shared_ptr<const Incident> incident;     // set when a check failed
  bool applied() const { return outcome == Outcome::applied || outcome == Outcome::recomputed; }
  bool stopped() const { return outcome == Outcome::stopped; }
};
const char* to_string(StepVerdict::Outcome outcome);

// What a trainer lets the guard change besides parameters and optimizer state. All optional.
struct GuardHooks {
  // Swap the loss for its stable form; returns false when it cannot.
  std::function<bool()> use_stable_loss;
  // Whether the loss is owned by the trainer and already stable.
  std::function<bool()> loss_is_stable;
  // Samples to exclude from future epochs (the guard also drops them from every batch).
  std::function<void(const std::vector<int64_t>&)> quarantine;
  // Extra state saved in snapshots (schedule state, counters).
  std::function<std::vector<double>()> save_extra;
  std::function<void(const std::vector<double>&)> load_extra;
  // Rebuilds a batch from its sample ids. With it the guard remembers only the ids of the
  // batches since the last snapshot (for replaying an optimizer step), not their tensors.
  std::function<data::Batch(const at::Tensor& ids)> gather_batch;
  // Called after each step that a rollback re-ran was applied (GuardOptions::rerun_lost_steps),
  // so the caller's step counter and schedule advance as they did the first time (set the
  // learning rate of the next step here). Epoch-level schedule events are not replayed.
  std::function<void()> rerun_step_applied;
  // Called on each incident with the pre-step state still in place (parameters, the batch and
  // the CPU RNG state before the step), to dump it for an offline replay.
  std::function<void(int64_t step, const data::Batch& batch, const at::Tensor& rng_state)> dump_incident;
  // Called with every event as it happens (events.jsonl, console).
  std::function<void(const GuardEvent&)> on_event;
  // Replaces the repair actions planned for an incident (to compare repair policies); an empty
  // result means skip_step. Non-finite parameters still force a rollback or a stop.
  std::function<std::vector<RepairAction>(const Incident&, const std::vector<RepairAction>& planned)> override_plan;
  // Dataset ids the data audit flagged before training, ascending (for the evidence).
  std::function<std::vector<int64_t>()> audit_flagged_samples;
  // The model reports its activation outputs itself (monitor::report_activation), so sampled
  // steps need no op callbacks.
  bool model_reports_activations = false;
};

class Guard {
 public:
  Guard(torch::nn::Module& module, torch::optim::Optimizer& optimizer, GuardOptions options = {},
        GuardHooks hooks = {});
  Guard(std::vector<at::Tensor> parameters, std::vector<at::Tensor> buffers, torch::optim::Optimizer& optimizer,
        GuardOptions options = {}, GuardHooks hooks = {});
  ~Guard();
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

  // Runs one guarded training step on the batch.
  StepVerdict step(const data::Batch& batch, const LossClosure& closure);

  // Runs the closure once on the batch from the current state and, if the check fails,
  // replays and diagnoses it without repairing anything or counting a step (offline replay).
  // Returns null when the step is healthy. Meant for offline replay: to look at the optimizer
  // step it takes a snapshot into the ring, which replaces the oldest one when the ring is full.
  std::shared_ptr<const Incident> examine(const data::Batch& batch, const LossClosure& closure);

  // Multiplier the guard applied to the learning rate (1 until an lr backoff).
  double lr_scale() const { return lr_scale_; }
  // Gradient-norm clipping the guard enabled (0 = off), and whether it bounds each parameter's
  // gradient on its own (after exploding gradients) rather than their total norm.
  double clip_norm() const { return clip_norm_; }
  bool clip_per_tensor() const { return clip_per_tensor_; }
  // Steps seen, updates applied (as they happened: updates a rollback undid stay counted, steps
  // it re-ran count again) and steps skipped.
  int64_t steps() const { return step_; }
  int64_t applied_steps() const { return applied_; }
  int64_t skipped_steps() const { return skipped_; }
  // Steps re-run after rollbacks (counted in applied_steps too).
  int64_t rerun_steps() const { return rerun_; }
  bool stopped() const { return stopped_; }
  const std::vector<std::shared_ptr<const Incident>>& incidents() const { return incidents_; }
  const std::vector<GuardEvent>& events() const { return events_; }
  // Quarantined dataset ids, ascending.
  const std::vector<int64_t>& quarantined() const { return quarantined_; }
  const SnapshotRing& snapshots() const { return *ring_; }
  const GuardOptions& options() const { return options_; }
  // Plain-language summary of the run so far.
  std::string summary() const;
  // Logs a warning event (used by monitors).
  void warn(const GuardEvent& event);
  // The training monitor (null when GuardOptions::monitor is disabled).
  const monitor::Monitor* monitor() const { return monitor_.get(); }

 private:
  struct RecentBatch {
    int64_t step = 0;
    data::Batch batch;     // the tensors, or only the ids with a gather hook
    bool applied = false;  // its update is part of the current state
    // How it was applied, for a faithful replay: each parameter group's learning rate and the
    // global clip (the monitor's adaptive one, or the repair's when not per tensor; 0: none).
    std::vector<double> learning_rates;
    double global_clip = 0;
    double per_tensor_clip = 0;
  };

  void init();
  void zero_grad();
  std::shared_ptr<Incident> investigate(const data::Batch& batch, const LossClosure& closure, const at::Tensor& loss,
                                        bool state_failed);
  StepVerdict handle_incident(const data::Batch& batch, const LossClosure& closure, const at::Tensor& loss,
                              bool params_failed);
  StepVerdict repair_incident(const std::shared_ptr<Incident>& incident, const data::Batch& batch,
                              const LossClosure& closure, bool caught_before_update);
  std::optional<StepVerdict> screen_step(const data::Batch& batch, const LossClosure& closure);
  void collect_run_evidence(Evidence& ev) const;
  void collect_batch_evidence(const data::Batch& batch, Evidence& ev) const;
  void replay(const data::Batch& batch, const LossClosure& closure, Evidence& ev);
  void replay_optimizer_step(const LossClosure& closure, Evidence& ev);
  void trace_failed_update(const LossClosure& closure, Evidence& ev);
  void collect_tensor_evidence(const at::Tensor& loss, Evidence& ev) const;
  bool gradient_norm_overflows() const;
  double gradient_norm_in_double() const;
  data::Batch stored_batch(const RecentBatch& rb) const;
  void mark_applied(int64_t step, double global_clip, double per_tensor_clip);
  // The clips a repaired update applies (per tensor after exploding gradients, else global).
  double repair_global_clip() const { return clip_per_tensor_ ? 0.0 : clip_norm_; }
  double repair_per_tensor_clip() const { return clip_per_tensor_ ? clip_norm_ : 0.0; }
  int64_t rerun_lost_steps(const std::vector<RecentBatch>& lost, const LossClosure& closure);
  bool cpu_fast_path(const at::Tensor& loss) const;
  void clip_gradients_to(double max_norm, bool per_tensor, double grad_norm = -1);
  void apply_optimizer_step();
  void apply_update(double per_tensor_clip, double global_clip, double grad_norm = -1);
  std::vector<at::Tensor> training_state() const;
  void queue_state_check();
  bool loss_and_gradients_finite(const at::Tensor& loss) const;
  void drop_batches_before(int64_t step);
  void set_learning_rates(double factor);
  int64_t trend_start_step() const;
  double automatic_clip_norm(double factor) const;
  void emit(const GuardEvent& event);
  void emit_warning(const monitor::Warning& warning);
  void warn_about(int64_t step, const std::string& cause, const std::string& explanation, const std::string& suggestion);
  data::Batch drop_quarantined(const data::Batch& batch) const;

  std::vector<at::Tensor> params_;
  std::vector<std::string> param_names_;
  std::vector<at::Tensor> buffers_;
  torch::optim::Optimizer& optimizer_;
  GuardOptions options_;
  GuardHooks hooks_;
  std::unique_ptr<SnapshotRing> ring_;
  std::unique_ptr<RepairLedger> ledger_;
  std::unique_ptr<monitor::Monitor> monitor_;

  at::Tensor pending_state_check_;   // deferred parameter/optimizer-state check (no sync yet)
  std::unique_ptr<detail::CpuRngState> rng_before_step_;  // CPU generator state before the closure ran
  // Batches since the newest validated snapshot (since the oldest one when only ids are kept),
  // to replay an optimizer step from it or re-run the steps a rollback lost.
  std::vector<RecentBatch> recent_batches_;
  int64_t kept_batch_bytes_ = 0;   // bytes of batch tensors in recent_batches_
  bool keeping_batches_ = true;    // false once kept_batch_bytes was passed, until the next snapshot
  bool warned_batch_budget_ = false;
  void remember_batch(int64_t step, const data::Batch& batch);
  std::vector<double> loss_history_, grad_norm_history_;
  std::vector<int64_t> history_steps_;

  int64_t step_ = 0;
  int64_t applied_ = 0;
  int64_t skipped_ = 0;
  int64_t rerun_ = 0;
  bool norm_overflow_streak_ = false;  // the gradient norm is beyond float32's range (warned once)
  int64_t last_snapshot_step_ = -1;
  double lr_scale_ = 1.0;
  double clip_norm_ = 0.0;
  bool clip_per_tensor_ = false;  // clip_norm_ bounds each gradient on its own (exploding gradients)
  bool stopped_ = false;
  bool snapshot_due_ = false;
  std::string screen_trigger_;  // a spike warning of this step: screen its batch for extreme samples
  bool outlier_watch_ = false;  // extreme samples were found: screen every batch
  std::vector<std::shared_ptr<const Incident>> incidents_;
  std::vector<GuardEvent> events_;
  std::vector<int64_t> quarantined_;
};

}  // namespace nanguard
