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
  rescale_inputs,      // scale a trainer-owned input pipeline to unit range (unscaled inputs)
  safe_epsilon,        // raise an optimizer epsilon that is 0 (or underflows) to a safe value
  reinitialize,        // re-initialise the parameters measured out of scale (Evidence::init_findings)
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
  // enable_clipping's max gradient norm (halved when tightened); 0: automatic, twice the median
  // gradient norm of the healthy steps before the incident's trend (the smallest norm seen
  // instead of the median without healthy steps, 1.0 without history). After exploding_gradients
  // it bounds each parameter's gradient on its own, otherwise their total norm.
  double clip_norm = 0.0;

  // Throws ValueError naming the first field out of range (counts >= 0, rollback_window > 0,
  // lr_factor in (0, 1), lr_floor >= 0, clip_norm >= 0, all finite).
  void validate() const;
};

// Actions per cause; "auto" fills the defaults below, and the caller may override any cause.
struct RepairPolicy {
  std::map<std::string, std::vector<RepairAction>> actions;
  RepairBudget budget;

  // The built-in defaults:
  //   bad_input_data -> quarantine_samples, skip_step
  //   data_outlier -> quarantine_samples, rollback
  //   transient_fault -> recompute
  //   unsafe_loss -> stable_loss (when the trainer owns the loss), else skip_step
  //   lr_too_high -> rollback, lr_backoff, enable_clipping
//   lr_too_high/divergence -> rollback, lr_backoff (every value finite: nothing to clip)
//   unscaled_inputs -> rescale_inputs, rollback (a backoff first; see plan_repair)
  //   exploding_gradients -> rollback, enable_clipping
  //   exploding_gradients/recurrent_gain -> rollback, reinitialize
  //   bad_initialization/dead_start -> rollback, reinitialize
  //   bad_initialization/vanishing_start -> rollback, reinitialize
  //   optimizer_state_overflow -> rollback, lr_backoff
  //   environment -> recompute
  //   optimizer_setting -> rollback, safe_epsilon
  //   fully_masked_row -> quarantine_samples, skip_step
  //   unknown -> skip_step
  static RepairPolicy automatic();
  // Actions for a cause: its "cause/subkind" entry when there is one, else the cause's, else
  // unknown's. Throws ValueError when none of them has an entry.
  const std::vector<RepairAction>& actions_for(const std::string& cause, const std::string& subkind = "") const;
  // Throws ValueError for a key that is not a cause identifier (namespace cause) or one with a
  // "/subkind", an empty action list, a missing "unknown" entry, or an invalid budget.
  void validate() const;
};

// Runtime record of what repairs have been spent, checked against the budget.
class RepairLedger {
 public:
  // Throws ValueError when the budget is invalid (RepairBudget::validate).
  explicit RepairLedger(RepairBudget budget) : budget_(budget) { budget_.validate(); }
  // Whether a rollback at `step` stays within budget: fewer than max_rollbacks rollbacks were
  // recorded at steps after step - rollback_window (later-numbered steps count too, since a
  // rollback rewinds the step counter).
  bool can_rollback(int64_t step) const;
  // Rollbacks that count against the budget at `step` (see can_rollback).
  int64_t rollbacks_in_window(int64_t step) const;
  void record_rollback(int64_t step);
  void record_incident() { ++incidents_; }
  bool incidents_exhausted() const { return incidents_ >= budget_.max_incidents; }
  void record_skip() { ++consecutive_skips_; }
  void record_applied_step() { consecutive_skips_ = 0; }
  bool skips_exhausted() const { return consecutive_skips_ >= budget_.max_consecutive_skips; }
  int64_t incidents() const { return incidents_; }
  int64_t consecutive_skips() const { return consecutive_skips_; }
  const RepairBudget& budget() const { return budget_; }

 private:
  RepairBudget budget_;
  std::vector<int64_t> rollback_steps_;
  int64_t incidents_ = 0;
  int64_t consecutive_skips_ = 0;
};

// The actions to apply for an incident, in order: the top cause's actions from the policy,
// adapted to what is possible. Call it after record_incident() for this incident, so that the
// max_incidents-th incident of a run stops it.
//   - stop alone when incidents_exhausted() or skips_exhausted() (max_consecutive_skips steps
//     in a row were already skipped), or when the policy lists stop for the cause;
//   - stable_loss stays only when the trainer owns the loss and it is not stable yet, else it
//     becomes skip_step (the suggestion then tells the user how to fix the loss);
//   - quarantine_samples stays only when the top cause blames dataset ids (CauseScore::samples),
//     else it becomes skip_step;
//   - rollback becomes skip_step + lr_backoff when the rollback budget at evidence.step is spent;
//   - lr_backoff is dropped when the learning rate is known and already at the floor (the
//     caller clamps new rates to lr_floor);
//   - safe_epsilon stays;
//   - reinitialize stays only when the evidence measured parameters out of scale
//     (evidence.init_findings), else it is dropped;
//   - enable_clipping stays; when evidence.clipping_enabled it means "tighten": the caller
//     halves the current max norm;
//   - recompute becomes skip_step when the replay reproduced the fault (recomputing would give
//     the same non-finite result);
//   - rescale_inputs stays when the trainer can rescale the inputs (evidence.inputs_rescalable)
//     and one backoff by budget.lr_factor cannot hold (the loss grew (2 / lr_factor - 1)^2-fold
//     or more in the step that left the healthy range: 361x for 0.1) or a backoff made for the
//     unscaled inputs already did not (evidence.unscaled_input_backoffs > 0; the rescale then
//     withdraws it); otherwise it becomes lr_backoff, the smallest change (the suggestion says
//     how to scale the inputs);
//   - skip_step stays.
// Duplicates are dropped (first one kept); the result is never empty (skip_step at least).
// An empty diagnosis is treated as unknown.
std::vector<RepairAction> plan_repair(const Diagnosis& diagnosis, const Evidence& evidence,
                                      const RepairPolicy& policy, const RepairLedger& ledger);

// The plan as the guard carries it out: `planned` (plan_repair's, or a replacement of the
// caller's) adapted to the state the incident left:
//   - empty becomes skip_step;
//   - caught before the update (a screened batch): the pre-step state is intact, so rollback
//     becomes recompute (of the step without the quarantined samples);
//   - non-finite parameters or optimizer state (evidence) cannot be kept: without a rollback
//     or stop in the plan, one is put first (rollback within the budget at evidence.step,
//     else stop).
// Duplicates are dropped (first one kept).
std::vector<RepairAction> adapt_plan(std::vector<RepairAction> planned, const Evidence& evidence,
                                     bool caught_before_update, const RepairLedger& ledger);

}  // namespace nanguard
