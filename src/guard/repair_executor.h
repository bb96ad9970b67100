// Carries out a repair plan: one function per action, the re-run of the steps a rollback lost,
// and the budgets. What the repairs changed (learning-rate scale, clipping, stopped) is its
// state; the plan itself comes from the policy (repair/policy.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "guard/batch_memory.h"
#include "nanguard/guard/guard.h"

namespace nanguard {
namespace monitor {
class Monitor;
struct Warning;
}  // namespace monitor

namespace detail {

class CpuRngState;
class DivergenceWatch;
class EventLog;
class HealthyHistory;
class Sentinel;
class TrainingState;

// What repairs have changed, and the step counters they move.
struct RepairState {
  double lr_scale = 1.0;
  double clip_norm = 0.0;
  bool clip_per_tensor = false;  // clip_norm bounds each gradient on its own (exploding gradients)
  bool stopped = false;
  bool outlier_watch = false;    // extreme samples were found: screen every batch
  int64_t applied = 0, skipped = 0, rerun = 0;
  int64_t last_snapshot_step = -1;
  // Backoffs made for unscaled inputs: withdrawn when the inputs are rescaled instead (the
  // rescale corrects the same overshoot at its source).
  int64_t unscaled_input_backoffs = 0;
  double unscaled_backoff_factor = 1.0;
  double rate_before_unscaled_backoffs = 0;
  // The clips a repaired update applies (per tensor after exploding gradients, else global).
  double global_clip() const { return clip_per_tensor ? 0.0 : clip_norm; }
  double per_tensor_clip() const { return clip_per_tensor ? clip_norm : 0.0; }
};

// The parts an executor acts on.
struct RepairParts {
  TrainingState& state;
  SnapshotRing& ring;
  BatchMemory& memory;
  HealthyHistory& history;
  EventLog& log;
  RepairLedger& ledger;
  Sentinel& sentinel;
  CpuRngState& rng_before_step;
  monitor::Monitor* monitor;  // may be null
  DivergenceWatch* divergence;  // may be null
};

class RepairExecutor {
 public:
  RepairExecutor(RepairParts parts, const GuardOptions& options, const GuardHooks& hooks)
      : p_(parts), options_(options), hooks_(hooks) {}

  RepairState& state() { return s_; }
  const RepairState& state() const { return s_; }

  // Records the update of `step` as applied (batch memory, ledger, counters) with the learning
  // rates it ran with.
  void record_update(int64_t step, std::vector<double> learning_rates, double global_clip, double per_tensor_clip);
  // Carries out `plan` for the incident of `step` (its batch, and the closure when the loop gave
  // one: recompute and re-run need it).
  StepVerdict execute(const std::shared_ptr<Incident>& incident, const std::vector<RepairAction>& plan,
                      const data::Batch& batch, const StepClosure* closure, int64_t step);
  // Prevention before any incident (the monitor's lr_cut option): a growth that forecasts an
  // overflow soon cuts the learning rate; an action event says so.
  void prevent_overflow(const monitor::Warning& warning);

 private:
  // One execution of a plan.
  struct Run {
    const std::shared_ptr<Incident>& incident;
    const data::Batch& batch;
    const StepClosure* closure;
    int64_t step;
    std::string cause;
    StepVerdict verdict;
    std::optional<int64_t> rolled_back_to;
    std::vector<RecentBatch> lost_steps;
    double automatic_clip = 0;
    bool rerun_planned(bool rerun_lost_steps) const {
      return rolled_back_to && rerun_lost_steps && !lost_steps.empty() && closure != nullptr;
    }
  };

  void event(Run& r, RepairAction action, const std::string& detail);
  void stop(Run& r, const std::string& why);
  void skip_step(Run& r);
  void quarantine(Run& r);
  void rollback(Run& r);
  void lr_backoff(Run& r);
  void enable_clipping(Run& r);
  void stable_loss(Run& r);
  void rescale_inputs(Run& r);
  void safe_epsilon(Run& r);
  void reinitialize(Run& r);
  void recompute_action(Run& r);
  // Recomputes the step from the pre-step state (without quarantined samples); applies it if
  // finite.
  bool recompute(Run& r);
  void rerun_lost(Run& r);
  // The worst of every rank's closure-run code (this rank's alone in one process).
  int agreed(int code) const;
  // Re-applies the lost steps in order from the restored snapshot; how many ran, or -1 when
  // one went non-finite again (the snapshot is then restored once more).
  int64_t rerun_lost_steps(Run& r);
  void finish(Run& r);

  RepairParts p_;
  const GuardOptions& options_;
  const GuardHooks& hooks_;
  RepairState s_;
};

}  // namespace detail
}  // namespace nanguard
