#include "nanguard/repair/policy.h"

#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;
using A = RepairAction;
using Actions = std::vector<RepairAction>;

const std::vector<RepairAction> kAll = {
    A::skip_step,       A::quarantine_samples, A::rollback,  A::lr_backoff,
    A::enable_clipping, A::stable_loss,        A::recompute, A::stop,
    A::rescale_inputs,  A::safe_epsilon,       A::reinitialize};

Diagnosis diagnosis_of(const std::string& cause, std::vector<int64_t> samples = {}) {
  CauseScore c;
  c.cause = cause;
  c.confidence = 0.9;
  c.explanation = "test";
  c.suggestion = "test";
  c.samples = std::move(samples);
  Diagnosis d;
  d.ranked.push_back(c);
  return d;
}

Evidence incident_at(int64_t step) {
  Evidence e;
  e.step = step;
  e.failed_check = "loss";
  e.learning_rate = 0.01;
  return e;
}

// ---- action names ----

TEST(RepairAction, NamesRoundTrip) {
  std::vector<std::string> names;
  for (A a : kAll) {
    std::string name = to_string(a);
    EXPECT_EQ(repair_action_from_string(name), a) << name;
    names.push_back(name);
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{"skip_step", "quarantine_samples", "rollback", "lr_backoff",
                                      "enable_clipping", "stable_loss", "recompute", "stop", "rescale_inputs",
                                      "safe_epsilon", "reinitialize"}));
}

TEST(RepairAction, BadNameListsTheValidOnes) {
  EXPECT_TRUE(throws_with<ValueError>(
      [] { repair_action_from_string("jump"); },
      {"\"jump\"", "skip_step", "quarantine_samples", "rollback", "lr_backoff", "enable_clipping",
       "stable_loss", "recompute", "stop", "rescale_inputs", "safe_epsilon", "reinitialize"}));
  EXPECT_THROW(repair_action_from_string(""), ValueError);
  EXPECT_THROW(repair_action_from_string("Skip_Step"), ValueError);  // names are exact
  EXPECT_THROW(repair_action_from_string("skip_step "), ValueError);
}

// ---- policy ----

TEST(RepairPolicy, AutomaticHasTheDocumentedDefaults) {
  RepairPolicy p = RepairPolicy::automatic();
  EXPECT_EQ(p.actions.size(), 16u);
  EXPECT_EQ(p.actions_for(cause::bad_input_data), (Actions{A::quarantine_samples, A::skip_step}));
  EXPECT_EQ(p.actions_for(cause::data_outlier), (Actions{A::quarantine_samples, A::rollback}));
  EXPECT_EQ(p.actions_for(cause::transient_fault), (Actions{A::recompute}));
  EXPECT_EQ(p.actions_for(cause::unsafe_loss), (Actions{A::stable_loss}));
  EXPECT_EQ(p.actions_for(cause::lr_too_high),
            (Actions{A::rollback, A::lr_backoff, A::enable_clipping}));
  EXPECT_EQ(p.actions_for(cause::lr_too_high, "divergence"), (Actions{A::rollback, A::lr_backoff}));
  EXPECT_EQ(p.actions_for(cause::lr_too_high, "other"), (Actions{A::rollback, A::lr_backoff, A::enable_clipping}));
  EXPECT_EQ(p.actions_for(cause::unscaled_inputs), (Actions{A::rescale_inputs, A::rollback}));
  EXPECT_EQ(p.actions_for(cause::exploding_gradients), (Actions{A::rollback, A::enable_clipping}));
  EXPECT_EQ(p.actions_for(cause::exploding_gradients, "recurrent_gain"), (Actions{A::rollback, A::reinitialize}));
  EXPECT_EQ(p.actions_for(cause::bad_initialization, "dead_start"), (Actions{A::rollback, A::reinitialize}));
  EXPECT_EQ(p.actions_for(cause::bad_initialization, "vanishing_start"), (Actions{A::rollback, A::reinitialize}));
  EXPECT_EQ(p.actions_for(cause::optimizer_state_overflow), (Actions{A::rollback, A::lr_backoff}));
  EXPECT_EQ(p.actions_for(cause::environment), (Actions{A::recompute}));
  EXPECT_EQ(p.actions_for(cause::optimizer_setting), (Actions{A::rollback, A::safe_epsilon}));
  EXPECT_EQ(p.actions_for(cause::fully_masked_row), (Actions{A::quarantine_samples, A::skip_step}));
  EXPECT_EQ(p.actions_for(cause::unknown), (Actions{A::skip_step}));
  EXPECT_NO_THROW(p.validate());
  RepairBudget b = p.budget;
  EXPECT_EQ(b.max_rollbacks, 5);
  EXPECT_EQ(b.rollback_window, 1000);
  EXPECT_EQ(b.max_incidents, 50);
  EXPECT_EQ(b.max_consecutive_skips, 20);
  EXPECT_DOUBLE_EQ(b.lr_factor, 0.1);
  EXPECT_DOUBLE_EQ(b.lr_floor, 1e-7);
  EXPECT_DOUBLE_EQ(b.clip_norm, 0.0);  // automatic
}

TEST(RepairPolicy, UnlistedCausesFallBackToUnknown) {
  RepairPolicy p = RepairPolicy::automatic();
  EXPECT_EQ(p.actions_for(cause::vanishing_gradients), (Actions{A::skip_step}));
  EXPECT_EQ(p.actions_for(cause::bad_initialization), (Actions{A::skip_step}));
  EXPECT_EQ(p.actions_for("no_such_cause"), (Actions{A::skip_step}));
  p.actions[cause::unknown] = {A::stop};
  EXPECT_EQ(p.actions_for(cause::vanishing_gradients), (Actions{A::stop}));
}

TEST(RepairPolicy, MissingFallbackIsAnError) {
  RepairPolicy p = RepairPolicy::automatic();
  p.actions.erase(cause::unknown);
  EXPECT_EQ(p.actions_for(cause::lr_too_high).size(), 3u);  // listed causes still work
  EXPECT_TRUE(throws_with<ValueError>([&] { p.actions_for(cause::vanishing_gradients); },
                                      {"vanishing_gradients", "\"unknown\""}));
  EXPECT_TRUE(throws_with<ValueError>([&] { p.validate(); }, {"\"unknown\"", "needs an entry"}));
}

TEST(RepairPolicy, ValidateRejectsBadKeysAndEmptyLists) {
  RepairPolicy p = RepairPolicy::automatic();
  p.actions["lr_to_high"] = {A::rollback};
  EXPECT_TRUE(throws_with<ValueError>([&] { p.validate(); },
                                      {"\"lr_to_high\"", "lr_too_high", "unsafe_loss"}));
  p = RepairPolicy::automatic();
  p.actions[cause::lr_too_high] = {};
  EXPECT_TRUE(throws_with<ValueError>([&] { p.validate(); }, {"lr_too_high", "no actions"}));
  p = RepairPolicy::automatic();
  p.budget.lr_factor = 2;
  EXPECT_TRUE(throws_with<ValueError>([&] { p.validate(); }, {"lr_factor", "2"}));
  p = RepairPolicy::automatic();
  p.actions[cause::vanishing_gradients] = {A::stop};  // every taxonomy cause may be overridden
  EXPECT_NO_THROW(p.validate());
  p.actions["unsafe_loss/log_of_zero"] = {A::skip_step};  // and any cause/subkind
  EXPECT_NO_THROW(p.validate());
  for (const char* bad : {"unsafe_loss/", "nope/log_of_zero", "unsafe_loss/a/b", "/x"}) {
    p = RepairPolicy::automatic();
    p.actions[bad] = {A::skip_step};
    EXPECT_TRUE(throws_with<ValueError>([&] { p.validate(); }, {bad, "cause/subkind"})) << bad;
  }
}

TEST(PlanRepairDivergence, UnscaledInputsAreRescaledOnlyWhereTheTrainerCanAndABackoffDidNotHold) {
  const RepairPolicy p = RepairPolicy::automatic();
  const RepairLedger ledger(p.budget);
  Evidence e = incident_at(5);
  e.diverged = true;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::lr_backoff, A::rollback}));
  e.unscaled_input_backoffs = 1;  // a backoff that did not hold, but nothing to rescale with
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::lr_backoff, A::rollback}));
  e.inputs_rescalable = true;
  e.unscaled_input_backoffs = 0;  // the smallest change first: the inputs stay as the loop gives them
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::lr_backoff, A::rollback}));
  e.unscaled_input_backoffs = 1;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::rescale_inputs, A::rollback}));
  // A loss that grew (2 / 0.1 - 1)^2 = 361-fold or more in one step: no single 10x backoff holds.
  e.unscaled_input_backoffs = 0;
  e.divergence_kind = "loss_excursion";
  e.divergence_reference = 2.0;
  e.divergence_value = 2.0 * 350;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::lr_backoff, A::rollback}));
  e.divergence_value = 2.0 * 370;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::rescale_inputs, A::rollback}));
  e.inputs_rescalable = false;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::lr_backoff, A::rollback}));
  e.inputs_rescalable = true;
  e.divergence_kind = "overflow_forecast";  // its value is a number of steps, not a loss
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unscaled_inputs), e, p, ledger), (Actions{A::lr_backoff, A::rollback}));
  Diagnosis d = diagnosis_of(cause::lr_too_high);
  d.ranked[0].subkind = "divergence";
  EXPECT_EQ(plan_repair(d, e, p, ledger), (Actions{A::rollback, A::lr_backoff}));
}

TEST(RepairBudget, ValidateNamesTheField) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  struct Case {
    const char* field;
    void (*mutate)(RepairBudget&);
  };
  const Case cases[] = {
      {"max_rollbacks", [](RepairBudget& b) { b.max_rollbacks = -1; }},
      {"rollback_window", [](RepairBudget& b) { b.rollback_window = 0; }},
      {"max_incidents", [](RepairBudget& b) { b.max_incidents = -3; }},
      {"max_consecutive_skips", [](RepairBudget& b) { b.max_consecutive_skips = -1; }},
      {"lr_factor", [](RepairBudget& b) { b.lr_factor = 0; }},
      {"lr_factor", [](RepairBudget& b) { b.lr_factor = 1; }},
      {"lr_floor", [](RepairBudget& b) { b.lr_floor = -1e-9; }},
      {"clip_norm", [](RepairBudget& b) { b.clip_norm = -1; }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.field);
    RepairBudget b;
    c.mutate(b);
    EXPECT_TRUE(throws_with<ValueError>([&] { b.validate(); }, {c.field}));
    EXPECT_TRUE(throws_with<ValueError>([&] { RepairLedger ledger(b); }, {c.field}));
  }
  RepairBudget b;
  b.lr_factor = nan;
  EXPECT_THROW(b.validate(), ValueError);
  b = RepairBudget{};
  b.clip_norm = std::numeric_limits<double>::infinity();
  EXPECT_THROW(b.validate(), ValueError);
  b = RepairBudget{};
  b.lr_floor = nan;
  EXPECT_THROW(b.validate(), ValueError);
  EXPECT_NO_THROW(RepairBudget{}.validate());
  b = RepairBudget{};
  b.max_rollbacks = 0;  // "never roll back" is a valid choice
  b.lr_floor = 0;
  EXPECT_NO_THROW(b.validate());
}

// ---- ledger ----

TEST(RepairLedger, RollbacksCountWithinTheSlidingWindow) {
  RepairBudget b;
  b.max_rollbacks = 2;
  b.rollback_window = 100;
  RepairLedger ledger(b);
  EXPECT_TRUE(ledger.can_rollback(10));
  ledger.record_rollback(10);
  EXPECT_TRUE(ledger.can_rollback(50));
  ledger.record_rollback(50);
  EXPECT_EQ(ledger.rollbacks_in_window(60), 2);
  EXPECT_FALSE(ledger.can_rollback(60));
  EXPECT_FALSE(ledger.can_rollback(109));  // window (9, 109] still holds step 10
  EXPECT_EQ(ledger.rollbacks_in_window(110), 1);
  EXPECT_TRUE(ledger.can_rollback(110));  // step 10 left the window
  EXPECT_EQ(ledger.rollbacks_in_window(150), 0);
  EXPECT_TRUE(ledger.can_rollback(150));
}

TEST(RepairLedger, RollbacksAtLaterStepsCountAfterTheCounterRewinds) {
  RepairBudget b;
  b.max_rollbacks = 1;
  b.rollback_window = 1000;
  RepairLedger ledger(b);
  ledger.record_rollback(500);
  // The rollback restored a snapshot from step 450; the same incident recurs there.
  EXPECT_FALSE(ledger.can_rollback(450));
  EXPECT_TRUE(ledger.can_rollback(1500));
}

TEST(RepairLedger, ZeroRollbacksMeansNever) {
  RepairBudget b;
  b.max_rollbacks = 0;
  RepairLedger ledger(b);
  EXPECT_FALSE(ledger.can_rollback(0));
  EXPECT_FALSE(ledger.can_rollback(1000000));
}

TEST(RepairLedger, IncidentBudget) {
  RepairBudget b;
  b.max_incidents = 3;
  RepairLedger ledger(b);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(ledger.incidents_exhausted()) << i;
    ledger.record_incident();
  }
  EXPECT_EQ(ledger.incidents(), 3);
  EXPECT_TRUE(ledger.incidents_exhausted());
  ledger.record_applied_step();  // healthy steps do not refund incidents
  EXPECT_TRUE(ledger.incidents_exhausted());
}

TEST(RepairLedger, ConsecutiveSkipsResetOnAnAppliedStep) {
  RepairBudget b;
  b.max_consecutive_skips = 2;
  RepairLedger ledger(b);
  ledger.record_skip();
  EXPECT_FALSE(ledger.skips_exhausted());
  ledger.record_skip();
  EXPECT_EQ(ledger.consecutive_skips(), 2);
  EXPECT_TRUE(ledger.skips_exhausted());
  ledger.record_applied_step();
  EXPECT_EQ(ledger.consecutive_skips(), 0);
  EXPECT_FALSE(ledger.skips_exhausted());
}

// ---- plan_repair ----

class PlanRepair : public ::testing::Test {
 protected:
  RepairPolicy policy = RepairPolicy::automatic();
  RepairLedger ledger{RepairBudget{}};
};

TEST_F(PlanRepair, BadDataQuarantinesBlamedSamples) {
  EXPECT_EQ(
      plan_repair(diagnosis_of(cause::bad_input_data, {5, 17}), incident_at(10), policy, ledger),
      (Actions{A::quarantine_samples, A::skip_step}));
  EXPECT_EQ(plan_repair(diagnosis_of(cause::data_outlier, {123}), incident_at(10), policy, ledger),
            (Actions{A::quarantine_samples, A::rollback}));
}

TEST_F(PlanRepair, NothingToQuarantineSkips) {
  // e.g. labels out of range, or rows without dataset ids.
  EXPECT_EQ(plan_repair(diagnosis_of(cause::bad_input_data), incident_at(10), policy, ledger),
            (Actions{A::skip_step}));
}

TEST_F(PlanRepair, StableLossOnlyWhenTheTrainerOwnsAnUnstableLoss) {
  Diagnosis d = diagnosis_of(cause::unsafe_loss);
  Evidence e = incident_at(10);
  e.loss_owned_by_trainer = true;
  e.loss_is_stable = false;
  EXPECT_EQ(plan_repair(d, e, policy, ledger), (Actions{A::stable_loss}));
  e.loss_is_stable = true;  // already stable: the unsafe op is elsewhere
  EXPECT_EQ(plan_repair(d, e, policy, ledger), (Actions{A::skip_step}));
  e.loss_owned_by_trainer = false;  // a user's own loop
  e.loss_is_stable = false;
  EXPECT_EQ(plan_repair(d, e, policy, ledger), (Actions{A::skip_step}));
}

TEST_F(PlanRepair, RollbackWithinBudget) {
  EXPECT_EQ(plan_repair(diagnosis_of(cause::lr_too_high), incident_at(10), policy, ledger),
            (Actions{A::rollback, A::lr_backoff, A::enable_clipping}));
  EXPECT_EQ(plan_repair(diagnosis_of(cause::exploding_gradients), incident_at(10), policy, ledger),
            (Actions{A::rollback, A::enable_clipping}));
  EXPECT_EQ(
      plan_repair(diagnosis_of(cause::optimizer_state_overflow), incident_at(10), policy, ledger),
      (Actions{A::rollback, A::lr_backoff}));
}

TEST_F(PlanRepair, SpentRollbackBudgetSkipsAndBacksOff) {
  RepairBudget b;
  b.max_rollbacks = 1;
  b.rollback_window = 100;
  RepairLedger spent(b);
  spent.record_rollback(40);
  EXPECT_EQ(plan_repair(diagnosis_of(cause::lr_too_high), incident_at(50), policy, spent),
            (Actions{A::skip_step, A::lr_backoff, A::enable_clipping}));
  EXPECT_EQ(plan_repair(diagnosis_of(cause::exploding_gradients), incident_at(50), policy, spent),
            (Actions{A::skip_step, A::lr_backoff, A::enable_clipping}));
  EXPECT_EQ(
      plan_repair(diagnosis_of(cause::optimizer_state_overflow), incident_at(50), policy, spent),
      (Actions{A::skip_step, A::lr_backoff}));
  // Once the window has moved on, rollback is possible again.
  EXPECT_EQ(plan_repair(diagnosis_of(cause::exploding_gradients), incident_at(140), policy, spent),
            (Actions{A::rollback, A::enable_clipping}));
}

TEST_F(PlanRepair, ClippingAlreadyOnIsTightened) {
  Evidence e = incident_at(10);
  e.clipping_enabled = true;
  Actions plan = plan_repair(diagnosis_of(cause::exploding_gradients), e, policy, ledger);
  EXPECT_EQ(plan, (Actions{A::rollback, A::enable_clipping}));
}

TEST_F(PlanRepair, NoBackoffBelowTheFloor) {
  Evidence e = incident_at(10);
  e.learning_rate = 1e-7;  // the default floor
  EXPECT_EQ(plan_repair(diagnosis_of(cause::lr_too_high), e, policy, ledger),
            (Actions{A::rollback, A::enable_clipping}));
  e.learning_rate = 2e-7;  // above the floor: the caller clamps the new rate
  EXPECT_EQ(plan_repair(diagnosis_of(cause::lr_too_high), e, policy, ledger),
            (Actions{A::rollback, A::lr_backoff, A::enable_clipping}));
  e.learning_rate = 0;  // unknown rate: back off anyway
  EXPECT_EQ(plan_repair(diagnosis_of(cause::optimizer_state_overflow), e, policy, ledger),
            (Actions{A::rollback, A::lr_backoff}));
}

TEST_F(PlanRepair, AtTheFloorWithoutRollbacksOnlySkips) {
  RepairBudget b;
  b.max_rollbacks = 0;
  RepairLedger none(b);
  Evidence e = incident_at(10);
  e.learning_rate = 1e-8;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::optimizer_state_overflow), e, policy, none),
            (Actions{A::skip_step}));
}

TEST_F(PlanRepair, TransientAndEnvironmentRecompute) {
  EXPECT_EQ(plan_repair(diagnosis_of(cause::transient_fault), incident_at(10), policy, ledger),
            (Actions{A::recompute}));
  EXPECT_EQ(plan_repair(diagnosis_of(cause::environment), incident_at(10), policy, ledger),
            (Actions{A::recompute}));
}

TEST_F(PlanRepair, RecomputingAReproducedFaultSkipsInstead) {
  Evidence e = incident_at(10);
  e.replayed = true;
  e.reproduced = true;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::environment), e, policy, ledger),
            (Actions{A::skip_step}));
  e.reproduced = false;
  EXPECT_EQ(plan_repair(diagnosis_of(cause::environment), e, policy, ledger),
            (Actions{A::recompute}));
}

TEST_F(PlanRepair, UnknownAndUnlistedCausesSkip) {
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unknown), incident_at(10), policy, ledger),
            (Actions{A::skip_step}));
  EXPECT_EQ(plan_repair(diagnosis_of(cause::vanishing_gradients), incident_at(10), policy, ledger),
            (Actions{A::skip_step}));
  EXPECT_EQ(plan_repair(Diagnosis{}, incident_at(10), policy, ledger), (Actions{A::skip_step}));
}

TEST_F(PlanRepair, SpentBudgetsStop) {
  RepairBudget b;
  b.max_incidents = 2;
  b.max_consecutive_skips = 3;
  RepairLedger l(b);  // incidents are recorded before planning, as the guard does
  l.record_incident();
  EXPECT_EQ(plan_repair(diagnosis_of(cause::lr_too_high), incident_at(10), policy, l).front(),
            A::rollback);
  l.record_incident();
  EXPECT_EQ(plan_repair(diagnosis_of(cause::lr_too_high), incident_at(10), policy, l),
            (Actions{A::stop}));

  RepairLedger skips(b);
  for (int i = 0; i < 3; ++i) skips.record_skip();
  EXPECT_EQ(plan_repair(diagnosis_of(cause::transient_fault), incident_at(10), policy, skips),
            (Actions{A::stop}));
  skips.record_applied_step();
  EXPECT_EQ(plan_repair(diagnosis_of(cause::transient_fault), incident_at(10), policy, skips),
            (Actions{A::recompute}));
}

TEST_F(PlanRepair, OverriddenPoliciesAreFollowed) {
  policy.actions[cause::lr_too_high] = {A::lr_backoff, A::lr_backoff, A::skip_step};
  EXPECT_EQ(plan_repair(diagnosis_of(cause::lr_too_high), incident_at(10), policy, ledger),
            (Actions{A::lr_backoff, A::skip_step}));  // duplicates dropped
  policy.actions[cause::unsafe_loss] = {A::skip_step, A::stop};
  EXPECT_EQ(plan_repair(diagnosis_of(cause::unsafe_loss), incident_at(10), policy, ledger),
            (Actions{A::stop}));
  policy.actions[cause::data_outlier] = {};  // an unvalidated empty list still yields an action
  EXPECT_EQ(plan_repair(diagnosis_of(cause::data_outlier, {1}), incident_at(10), policy, ledger),
            (Actions{A::skip_step}));
  policy.actions.erase(cause::unknown);
  EXPECT_THROW(
      plan_repair(diagnosis_of(cause::vanishing_gradients), incident_at(10), policy, ledger),
      ValueError);
}

TEST_F(PlanRepair, FollowsTheTopCauseOfARealDiagnosis) {
  Evidence e = incident_at(412);
  e.replayed = e.reproduced = true;
  e.birth_found = true;
  e.birth_op = "aten::log";
  e.birth_phase = "forward";
  e.birth_module = "head";
  e.birth_input_zeros = 12;
  e.weight_absmax = 1.5;
  e.loss_owned_by_trainer = true;
  e.loss_is_stable = false;
  Diagnosis d = diagnose(e);
  ASSERT_EQ(d.top().cause, cause::unsafe_loss);
  EXPECT_EQ(plan_repair(d, e, policy, ledger), (Actions{A::stable_loss}));

  SampleEvidence bad;
  bad.id = 77;
  bad.row = 2;
  bad.nonfinite = 1;
  e.nonfinite_samples = {bad};
  d = diagnose(e);
  ASSERT_EQ(d.top().cause, cause::bad_input_data);
  EXPECT_EQ(d.top().samples, (std::vector<int64_t>{77}));
  EXPECT_EQ(plan_repair(d, e, policy, ledger), (Actions{A::quarantine_samples, A::skip_step}));
}

}  // namespace
}  // namespace nanguard
