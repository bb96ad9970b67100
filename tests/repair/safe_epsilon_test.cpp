// The safe_epsilon action and the defaults of the causes it came with.
#include <algorithm>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "nanguard/repair/policy.h"

namespace nanguard {
namespace {

using A = RepairAction;

TEST(SafeEpsilon, NameRoundTripsAndABadNameIsRefused) {
  EXPECT_STREQ(to_string(A::safe_epsilon), "safe_epsilon");
  EXPECT_EQ(repair_action_from_string("safe_epsilon"), A::safe_epsilon);
  EXPECT_THROW(repair_action_from_string("safe_eps"), ValueError);
}

TEST(SafeEpsilon, DefaultsOfTheNewCauses) {
  const RepairPolicy p = RepairPolicy::automatic();
  EXPECT_NO_THROW(p.validate());
  EXPECT_EQ(p.actions_for(cause::optimizer_setting), (std::vector<A>{A::rollback, A::safe_epsilon}));
  EXPECT_EQ(p.actions_for(cause::fully_masked_row), (std::vector<A>{A::quarantine_samples, A::skip_step}));
}

TEST(SafeEpsilon, PlannedWithTheRollbackAndKeptWhenTheBudgetIsSpent) {
  const RepairPolicy p = RepairPolicy::automatic();
  CauseScore c;
  c.cause = cause::optimizer_setting;
  c.confidence = 0.95;
  Diagnosis d;
  d.ranked = {c};
  Evidence e;
  e.step = 10;
  e.learning_rate = 1e-3;
  RepairLedger ledger(p.budget);
  EXPECT_EQ(plan_repair(d, e, p, ledger), (std::vector<A>{A::rollback, A::safe_epsilon}));
  for (int i = 0; i < 5; ++i) ledger.record_rollback(10);
  const auto spent = plan_repair(d, e, p, ledger);
  EXPECT_NE(std::find(spent.begin(), spent.end(), A::safe_epsilon), spent.end());
  EXPECT_EQ(std::find(spent.begin(), spent.end(), A::rollback), spent.end());
}

TEST(SafeEpsilon, AConfigMayListItForACause) {
  RepairPolicy p = RepairPolicy::automatic();
  p.actions[cause::optimizer_state_overflow] = {A::rollback, A::safe_epsilon};
  EXPECT_NO_THROW(p.validate());
  p.actions["optimizer_settings"] = {A::safe_epsilon};  // misspelt cause
  EXPECT_THROW(p.validate(), ValueError);
}

}  // namespace
}  // namespace nanguard
