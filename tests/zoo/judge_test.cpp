// Judging a zoo result against its scenario's truth, on hand-made results (no training).
#include "zoo/judge.h"

#include <gtest/gtest.h>

namespace nanguard::zoo::detail {
namespace {

Scenario truth(std::string cause, std::string subkind = "") {
  Scenario s;
  s.id = "T";
  s.true_cause = std::move(cause);
  s.true_subkind = std::move(subkind);
  return s;
}

ScenarioResult diagnosed(const std::string& top_cause) {
  ScenarioResult r;
  r.baseline = "nanguard";
  r.top_cause = top_cause;
  r.detected = !top_cause.empty();
  r.incidents = top_cause.empty() ? 0 : 1;
  return r;
}

bool cause_correct(const Scenario& s, const std::string& top) {
  ScenarioResult r = diagnosed(top);
  judge(s, r);
  return r.cause_correct;
}

TEST(ZooJudge, CauseMatchesWithOrWithoutSubkind) {
  EXPECT_TRUE(cause_matches("lr_too_high/divergence", "lr_too_high/divergence"));
  EXPECT_TRUE(cause_matches("lr_too_high/divergence", "lr_too_high"));  // bare: any sub-kind
  EXPECT_TRUE(cause_matches("lr_too_high", "lr_too_high"));
  EXPECT_FALSE(cause_matches("lr_too_high", "lr_too_high/divergence"));
  EXPECT_FALSE(cause_matches("lr_too_high/other", "lr_too_high/divergence"));
  EXPECT_FALSE(cause_matches("lr_too_high_x", "lr_too_high"));
  EXPECT_FALSE(cause_matches("", "lr_too_high"));
  EXPECT_FALSE(cause_matches("lr_too_high", ""));
}

TEST(ZooJudge, TrueCauseWithItsSubkind) {
  const Scenario s = truth("unsafe_loss", "log_of_zero");
  EXPECT_TRUE(cause_correct(s, "unsafe_loss/log_of_zero"));
  EXPECT_FALSE(cause_correct(s, "unsafe_loss/exp_overflow"));
  EXPECT_FALSE(cause_correct(s, "unsafe_loss"));
  const Scenario bare = truth("lr_too_high");
  EXPECT_TRUE(cause_correct(bare, "lr_too_high"));
  EXPECT_TRUE(cause_correct(bare, "lr_too_high/divergence"));
  EXPECT_FALSE(cause_correct(bare, "exploding_gradients"));
}

TEST(ZooJudge, AlsoCorrectAcceptsCausesWithSubkinds) {
  Scenario s = truth("unscaled_inputs");
  s.also_correct = {"lr_too_high/divergence", "vanishing_gradients"};
  EXPECT_TRUE(cause_correct(s, "unscaled_inputs"));
  EXPECT_TRUE(cause_correct(s, "lr_too_high/divergence"));
  EXPECT_FALSE(cause_correct(s, "lr_too_high"));  // the sub-kind was asked for
  EXPECT_FALSE(cause_correct(s, "lr_too_high/overflow"));
  EXPECT_TRUE(cause_correct(s, "vanishing_gradients"));
  EXPECT_TRUE(cause_correct(s, "vanishing_gradients/anything"));
  s.also_correct = {"lr_too_high"};
  EXPECT_TRUE(cause_correct(s, "lr_too_high/divergence"));
  EXPECT_TRUE(cause_correct(s, "lr_too_high"));
}

TEST(ZooJudge, HealthyScenarioIsCorrectWhenNothingWasReported) {
  const Scenario s = truth("none");
  ScenarioResult quiet = diagnosed("");
  judge(s, quiet);
  EXPECT_TRUE(quiet.cause_correct);
  ScenarioResult warned = diagnosed("");
  warned.detected = true;  // a warning without a cause is still a false alarm
  judge(s, warned);
  EXPECT_FALSE(warned.cause_correct);
  ScenarioResult plain = diagnosed("");
  plain.baseline = "none";  // a baseline that does not diagnose is never "correct"
  judge(s, plain);
  EXPECT_FALSE(plain.cause_correct);
  EXPECT_FALSE(cause_correct(s, "lr_too_high"));
}

ScenarioResult localized(const std::string& op, const std::string& phase, std::vector<int64_t> samples) {
  ScenarioResult r = diagnosed("x");
  r.birth_op = op;
  r.phase = phase;
  r.samples = std::move(samples);
  return r;
}

bool localization_correct(const Scenario& s, ScenarioResult r) {
  judge(s, r);
  return r.localization_correct;
}

TEST(ZooJudge, BirthOpAndSamplesMustBothHoldWhereBothAreExpected) {
  Scenario s = truth("fully_masked_row");
  s.expected_birth_op = "aten::_softmax";
  s.expected_phase = "forward";
  s.expected_samples = {7, 123};
  EXPECT_TRUE(localization_correct(s, localized("aten::_softmax", "forward", {123, 7})));
  EXPECT_FALSE(localization_correct(s, localized("aten::_softmax", "forward", {})));       // no samples
  EXPECT_FALSE(localization_correct(s, localized("aten::_softmax", "forward", {7})));      // too few
  EXPECT_FALSE(localization_correct(s, localized("aten::_softmax", "forward", {7, 123, 9})));  // too many
  EXPECT_FALSE(localization_correct(s, localized("aten::masked_fill", "forward", {7, 123})));
  EXPECT_FALSE(localization_correct(s, localized("aten::_softmax", "backward", {7, 123})));
}

TEST(ZooJudge, EachKindOfExpectationAlone) {
  Scenario op = truth("unsafe_loss", "log_of_zero");
  op.expected_birth_op = "aten::log";
  op.expected_phase = "forward";
  EXPECT_TRUE(localization_correct(op, localized("aten::log", "forward", {5961})));  // samples not asked for
  EXPECT_FALSE(localization_correct(op, localized("aten::log", "backward", {})));
  EXPECT_FALSE(localization_correct(op, localized("aten::exp", "forward", {})));

  Scenario phase = truth("optimizer_setting", "zero_epsilon");
  phase.expected_phase = "optimizer";
  EXPECT_TRUE(localization_correct(phase, localized("aten::div", "optimizer", {})));
  EXPECT_FALSE(localization_correct(phase, localized("aten::div", "forward", {})));

  Scenario data = truth("bad_input_data");
  data.expected_samples = {7, 123};
  EXPECT_TRUE(localization_correct(data, localized("", "", {7, 123})));
  EXPECT_FALSE(localization_correct(data, localized("", "", {7})));

  Scenario transient = truth("transient_fault");
  EXPECT_TRUE(localization_correct(transient, localized("", "", {})));
  EXPECT_FALSE(localization_correct(transient, localized("aten::mm", "backward", {})));
  EXPECT_FALSE(localization_correct(transient, localized("", "", {3})));
}

TEST(ZooJudge, NoLocalizationWithoutAnIncidentOrWhereNothingGoesNonFinite) {
  Scenario s = truth("bad_input_data");
  s.expected_samples = {7};
  ScenarioResult none = localized("", "", {7});
  none.incidents = 0;
  EXPECT_FALSE(localization_correct(s, none));
  s.produces_nonfinite = false;
  EXPECT_FALSE(localization_correct(s, localized("", "", {7})));
}

TEST(ZooJudge, RepairedWithinOnePointOfTheCleanTwinOrAbove) {
  const Scenario s = truth("lr_too_high");
  auto repaired = [&](double final_acc, double clean) {
    ScenarioResult r = diagnosed("lr_too_high");
    r.final_accuracy = final_acc;
    r.clean_accuracy = clean;
    judge(s, r);
    return r.repaired;
  };
  EXPECT_TRUE(repaired(0.80, 0.80));
  EXPECT_TRUE(repaired(0.79, 0.80));
  EXPECT_FALSE(repaired(0.785, 0.80));
  EXPECT_TRUE(repaired(0.95, 0.80));
  EXPECT_FALSE(repaired(0.80, -1));  // clean twin not measured
}

}  // namespace
}  // namespace nanguard::zoo::detail
