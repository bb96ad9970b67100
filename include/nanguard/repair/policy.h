// Repair policy: maps a diagnosis to actions, within budgets that stop loops.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nanguard/diagnose/diagnosis.h"

namespace nanguard {

enum class RepairAction {
  skip_step,           // drop this step's update (the pre-step state is kept)
  quarantine_samples,  // exclude the blamed samples for the rest of the run
  rollback,            // restore the newest snapshot taken before the trend began
  lr_backoff,          // multiply the learning rate by a factor (never below the floor)
  enable_clipping,     // enable or tighten gradient-norm clipping
  stable_loss,         // swap a trainer-owned loss for its stable form
  recompute,           // re-run the step from the same state (transient faults)
  stop,                // stop training with the full report
};

// "skip_step", "quarantine_samples", ...
const char* to_string(RepairAction action);
// Parses a name; throws ValueError listing the valid names.
RepairAction repair_action_from_string(const std::string& name);

struct RepairBudget {
  int64_t max_rollbacks = 5;         // at most this many rollbacks ...
  int64_t rollback_window = 1000;    // ... within this many steps
  int64_t max_incidents = 50;        // incidents per run before stopping
  int64_t max_consecutive_skips = 20;
  double lr_factor = 0.1;            // lr_backoff multiplies the learning rate by this
  double lr_floor = 1e-7;            // the learning rate never goes below this
  double clip_norm = 1.0;            // enable_clipping's max gradient norm (halved when tightened)
};

// Actions per cause; "auto" fills the defaults below, and the caller may override any cause.
struct RepairPolicy {
  std::map<std::string, std::vector<RepairAction>> actions;
  RepairBudget budget;

  // The built-in defaults:
  //   bad_input_data -> quarantine_samples, skip_step
  //   data_outlier -> quarantine_samples, skip_step
  //   transient_fault -> recompute
  //   unsafe_loss -> stable_loss (when the trainer owns the loss), else skip_step
  //   lr_too_high -> rollback, lr_backoff, enable_clipping
  //   exploding_gradients -> rollback, enable_clipping
  //   optimizer_state_overflow -> rollback, lr_backoff
  //   environment -> recompute
  //   unknown -> skip_step
  static RepairPolicy automatic();
  // Actions for a cause (falls back to unknown's).
  const std::vector<RepairAction>& actions_for(const std::string& cause) const;
};

// Runtime record of what repairs have been spent, checked against the budget.
class RepairLedger {
 public:
  explicit RepairLedger(RepairBudget budget) : budget_(budget) {}
  // Whether a rollback at `step` stays within budget.
  bool can_rollback(int64_t step) const;
  void record_rollback(int64_t step);
  void record_incident() { ++incidents_; }
  bool incidents_exhausted() const { return incidents_ >= budget_.max_incidents; }
  void record_skip() { ++consecutive_skips_; }
  void record_applied_step() { consecutive_skips_ = 0; }
  bool skips_exhausted() const { return consecutive_skips_ >= budget_.max_consecutive_skips; }
  int64_t incidents() const { return incidents_; }
  const RepairBudget& budget() const { return budget_; }

 private:
  RepairBudget budget_;
  std::vector<int64_t> rollback_steps_;
  int64_t incidents_ = 0;
  int64_t consecutive_skips_ = 0;
};

}  // namespace nanguard
