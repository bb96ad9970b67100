#include "nanguard/repair/policy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "core/check.h"

namespace nanguard {
namespace {

constexpr std::array<std::pair<RepairAction, const char*>, 11> kActionNames = {{
    {RepairAction::skip_step, "skip_step"},
    {RepairAction::quarantine_samples, "quarantine_samples"},
    {RepairAction::rollback, "rollback"},
    {RepairAction::lr_backoff, "lr_backoff"},
    {RepairAction::enable_clipping, "enable_clipping"},
    {RepairAction::stable_loss, "stable_loss"},
    {RepairAction::recompute, "recompute"},
    {RepairAction::stop, "stop"},
    {RepairAction::rescale_inputs, "rescale_inputs"},
    {RepairAction::safe_epsilon, "safe_epsilon"},
    {RepairAction::reinitialize, "reinitialize"},
}};

constexpr std::array<const char*, 14> kCauses = {
    cause::bad_input_data,
    cause::data_outlier,
    cause::exploding_gradients,
    cause::vanishing_gradients,
    cause::bad_initialization,
    cause::lr_too_high,
    cause::unscaled_inputs,
    cause::unsafe_loss,
    cause::optimizer_state_overflow,
    cause::transient_fault,
    cause::environment,
    cause::optimizer_setting,
    cause::fully_masked_row,
    cause::unknown,
};

std::string valid_action_names() {
  std::string s;
  for (const auto& [action, name] : kActionNames) s += std::string(s.empty() ? "" : ", ") + name;
  return s;
}

std::string valid_cause_names() {
  std::string s;
  for (const char* name : kCauses) s += std::string(s.empty() ? "" : ", ") + name;
  return s;
}

bool is_cause(const std::string& name) {
  return std::any_of(kCauses.begin(), kCauses.end(), [&](const char* c) { return name == c; });
}

// A policy key: a cause, or "cause/subkind" with a non-empty sub-kind.
bool is_cause_key(const std::string& key) {
  const auto slash = key.find('/');
  if (slash == std::string::npos) return is_cause(key);
  return is_cause(key.substr(0, slash)) && slash + 1 < key.size() && key.find('/', slash + 1) == std::string::npos;
}

void push_unique(std::vector<RepairAction>& out, RepairAction a) {
  if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
}

}  // namespace

const char* to_string(RepairAction action) {
  for (const auto& [a, name] : kActionNames)
    if (a == action) return name;
  return "unknown_action";
}

RepairAction repair_action_from_string(const std::string& name) {
  for (const auto& [a, n] : kActionNames)
    if (name == n) return a;
  throw ValueError(
      fmt::format("unknown repair action \"{}\"; expected one of: {}", name, valid_action_names()));
}

void RepairBudget::validate() const {
  NANGUARD_CHECK(max_rollbacks >= 0, "repair budget: max_rollbacks must be >= 0, got {}",
                 max_rollbacks);
  NANGUARD_CHECK(rollback_window > 0, "repair budget: rollback_window must be > 0 steps, got {}",
                 rollback_window);
  NANGUARD_CHECK(max_incidents >= 0, "repair budget: max_incidents must be >= 0, got {}",
                 max_incidents);
  NANGUARD_CHECK(max_consecutive_skips >= 0,
                 "repair budget: max_consecutive_skips must be >= 0, got {}",
                 max_consecutive_skips);
  NANGUARD_CHECK(std::isfinite(lr_factor) && lr_factor > 0 && lr_factor < 1,
                 "repair budget: lr_factor must be in (0, 1), got {}", lr_factor);
  NANGUARD_CHECK(std::isfinite(lr_floor) && lr_floor >= 0,
                 "repair budget: lr_floor must be finite and >= 0, got {}", lr_floor);
  NANGUARD_CHECK(std::isfinite(clip_norm) && clip_norm >= 0,
                 "repair budget: clip_norm must be finite and >= 0 (0: automatic), got {}", clip_norm);
}

RepairPolicy RepairPolicy::automatic() {
  using A = RepairAction;
  RepairPolicy p;
  p.actions = {
      {cause::bad_input_data, {A::quarantine_samples, A::skip_step}},
      // Extreme but finite samples moved the weights before anything went non-finite: undo
      // those updates too.
      {cause::data_outlier, {A::quarantine_samples, A::rollback}},
      {cause::transient_fault, {A::recompute}},
      // plan_repair turns stable_loss into skip_step when the trainer cannot swap the loss.
      {cause::unsafe_loss, {A::stable_loss}},
      {cause::lr_too_high, {A::rollback, A::lr_backoff, A::enable_clipping}},
      // A finite divergence: the updates overshoot, but no gradient is extreme, and a clip at
      // twice the few healthy norms of a run's first steps would slow every later update.
      {std::string(cause::lr_too_high) + "/divergence", {A::rollback, A::lr_backoff}},
      // plan_repair makes rescale_inputs a backoff first (or always, when the trainer cannot
      // rescale); a second divergence after it rescales.
      {cause::unscaled_inputs, {A::rescale_inputs, A::rollback}},
      {cause::exploding_gradients, {A::rollback, A::enable_clipping}},
      // The recurrent gain is the origin: undo the explosion's updates, then replace the gain
      // (a clip would leave it there and keep trimming its symptoms).
      {std::string(cause::exploding_gradients) + "/recurrent_gain", {A::rollback, A::reinitialize}},
      // A layer that no update can move: restart from the initial state with that layer
      // re-initialised (the rollback goes first so the re-initialised weights are what stays).
      {std::string(cause::bad_initialization) + "/dead_start", {A::rollback, A::reinitialize}},
      // A gradient that fades over the depth from out-of-scale weights: the same restart, with
      // each weight re-initialised to fit its activation.
      {std::string(cause::bad_initialization) + "/vanishing_start", {A::rollback, A::reinitialize}},
      {cause::optimizer_state_overflow, {A::rollback, A::lr_backoff}},
      {cause::environment, {A::recompute}},
      // The update itself made the NaN: undo it, and fix the setting before the lost steps
      // are re-run (the snapshot does not hold the epsilon, so the rollback keeps it).
      {cause::optimizer_setting, {A::rollback, A::safe_epsilon}},
      // The samples whose rows the mask empties fail every time they are drawn.
      {cause::fully_masked_row, {A::quarantine_samples, A::skip_step}},
      {cause::unknown, {A::skip_step}},
  };
  return p;
}

const std::vector<RepairAction>& RepairPolicy::actions_for(const std::string& cause,
                                                           const std::string& subkind) const {
  auto it = subkind.empty() ? actions.end() : actions.find(cause + "/" + subkind);
  if (it != actions.end()) return it->second;
  it = actions.find(cause);
  if (it != actions.end()) return it->second;
  it = actions.find(cause::unknown);
  NANGUARD_CHECK(it != actions.end(),
                 "repair policy has no actions for cause \"{}\" and no \"{}\" entry to fall "
                 "back to",
                 cause, cause::unknown);
  return it->second;
}

void RepairPolicy::validate() const {
  for (const auto& [name, list] : actions) {
    NANGUARD_CHECK(is_cause_key(name),
                   "repair policy: unknown cause \"{}\"; expected one of: {} (or cause/subkind)", name,
                   valid_cause_names());
    NANGUARD_CHECK(!list.empty(),
                   "repair policy: cause \"{}\" has no actions (use skip_step or "
                   "stop)",
                   name);
  }
  NANGUARD_CHECK(actions.count(cause::unknown) == 1,
                 "repair policy: the \"{}\" cause needs an entry (the fallback of every other "
                 "cause)",
                 cause::unknown);
  budget.validate();
}

int64_t RepairLedger::rollbacks_in_window(int64_t step) const {
  const int64_t since = step - budget_.rollback_window;
  return std::count_if(rollback_steps_.begin(), rollback_steps_.end(),
                       [&](int64_t s) { return s > since; });
}

bool RepairLedger::can_rollback(int64_t step) const {
  return rollbacks_in_window(step) < budget_.max_rollbacks;
}

void RepairLedger::record_rollback(int64_t step) {
  rollback_steps_.push_back(step);
}

namespace {

// Whether a divergence of unscaled inputs is beyond what one backoff by `lr_factor` corrects.
// An SGD step that overshoots a curvature lambda (lr * lambda = 1 + rho) multiplies the
// distance to the minimum by rho, and a quadratic loss by rho^2; a backoff by f holds only when
// lr * lambda * f < 2, that is rho < 2 / f - 1 (19 for f = 0.1). The quadratic reading is the
// lenient one: it under-predicts the backoffs that real runs needed (SGD lr 30 on 0-1 pixels,
// a one-step growth of 72-246x, needed two), so when even it says one backoff cannot hold, the
// inputs are rescaled at once; otherwise the backoff is tried first.
bool one_backoff_cannot_hold(const Evidence& e, double lr_factor) {
  if (e.divergence_kind != "loss_excursion" || !(e.divergence_reference > 0) || !(lr_factor > 0)) return false;
  const double growth = e.divergence_value / e.divergence_reference;  // over one step: the step before was in range
  const double rho_max = 2.0 / lr_factor - 1.0;
  return std::isfinite(growth) ? growth >= rho_max * rho_max : true;
}

}  // namespace

std::vector<RepairAction> plan_repair(const Diagnosis& diagnosis, const Evidence& evidence,
                                      const RepairPolicy& policy, const RepairLedger& ledger) {
  using A = RepairAction;
  if (ledger.incidents_exhausted() || ledger.skips_exhausted()) return {A::stop};

  static const CauseScore kUnknown{cause::unknown, "", 1.0, "", "", {}};
  const CauseScore& top = diagnosis.ranked.empty() ? kUnknown : diagnosis.top();
  const std::vector<A>& wanted = policy.actions_for(top.cause, top.subkind);

  std::vector<A> plan;
  for (A action : wanted) {
    switch (action) {
      case A::stop:
        return {A::stop};
      case A::stable_loss:
        push_unique(plan, evidence.loss_owned_by_trainer && !evidence.loss_is_stable
                              ? A::stable_loss
                              : A::skip_step);
        break;
      case A::quarantine_samples:
        push_unique(plan, top.samples.empty() ? A::skip_step : A::quarantine_samples);
        break;
      case A::rollback:
        if (ledger.can_rollback(evidence.step)) {
          push_unique(plan, A::rollback);
        } else {
          push_unique(plan, A::skip_step);
          push_unique(plan, A::lr_backoff);
        }
        break;
      case A::lr_backoff:
        push_unique(plan, A::lr_backoff);
        break;
      case A::recompute:
        // Recomputing gives the same non-finite result when the replay reproduced it.
        push_unique(plan, evidence.replayed && evidence.reproduced ? A::skip_step : A::recompute);
        break;
      case A::rescale_inputs:
        // The smallest change first: a backoff keeps the loop's inputs as they are. The rescale
        // comes when one backoff cannot hold, or once a backoff made for these inputs did not.
        push_unique(plan, evidence.inputs_rescalable &&
                                  (evidence.unscaled_input_backoffs > 0 ||
                                   one_backoff_cannot_hold(evidence, ledger.budget().lr_factor))
                              ? A::rescale_inputs
                              : A::lr_backoff);
        break;
      case A::reinitialize:
        // Only what the guard measured out of scale is re-initialised; nothing else.
        if (!evidence.init_findings.empty()) push_unique(plan, A::reinitialize);
        break;
      case A::enable_clipping:
      case A::safe_epsilon:
      case A::skip_step:
        push_unique(plan, action);
        break;
    }
  }
  // A learning rate already at the floor cannot back off further.
  const bool at_floor =
      evidence.learning_rate > 0 && evidence.learning_rate <= ledger.budget().lr_floor;
  if (at_floor) plan.erase(std::remove(plan.begin(), plan.end(), A::lr_backoff), plan.end());
  if (plan.empty()) plan.push_back(A::skip_step);
  return plan;
}

std::vector<RepairAction> adapt_plan(std::vector<RepairAction> planned, const Evidence& evidence,
                                     bool caught_before_update, const RepairLedger& ledger) {
  if (planned.empty()) planned.push_back(RepairAction::skip_step);
  std::vector<RepairAction> out;
  for (RepairAction a : planned) {
    const RepairAction b = caught_before_update && a == RepairAction::rollback ? RepairAction::recompute : a;
    if (std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
  }
  const bool state_bad = evidence.params_nonfinite_before_step || evidence.optimizer_state_nonfinite;
  const auto has = [&](RepairAction a) { return std::find(out.begin(), out.end(), a) != out.end(); };
  if (state_bad && !has(RepairAction::rollback) && !has(RepairAction::stop)) {
    out.insert(out.begin(), ledger.can_rollback(evidence.step) ? RepairAction::rollback : RepairAction::stop);
  }
  return out;
}

}  // namespace nanguard
