// Causes of a finite divergence: a learning rate too high, and inputs far from unit range.
#include <gtest/gtest.h>

#include "nanguard/diagnose/diagnosis.h"

namespace nanguard {
namespace {

Evidence diverged(double input_rms, bool integer) {
  Evidence e;
  e.step = 1;
  e.failed_check = "divergence";
  e.diverged = true;
  e.divergence_kind = "loss_excursion";
  e.divergence_finding = "the loss 28.3 at step 1 is 11.8x the highest healthy level of the run (2.4)";
  e.learning_rate = 3.0;
  e.loss_history = {2.4};
  e.input_rms = input_rms;
  e.input_absmax = integer ? 255 : 1;
  e.inputs_integer = integer;
  return e;
}

TEST(DivergenceDiagnosis, ScaledInputsBlameTheLearningRate) {
  const Diagnosis d = diagnose(diverged(0.31, false));
  EXPECT_EQ(d.top().cause, cause::lr_too_high);
  EXPECT_EQ(d.top().subkind, "divergence");
  EXPECT_EQ(d.find(cause::unscaled_inputs), nullptr);
  EXPECT_NE(d.top().explanation.find("28.3"), std::string::npos);
  EXPECT_NE(d.top().explanation.find("learning rate 3"), std::string::npos);
  EXPECT_NE(d.top().suggestion.find("0.3"), std::string::npos);  // 10x lower
  // Not advice about initialisation or the loss: the evidence is about the step size.
  EXPECT_EQ(d.top().suggestion.find("init"), std::string::npos);
}

TEST(DivergenceDiagnosis, RawPixelsAreTheDataCauseWithTheLearningRateSecond) {
  const Diagnosis d = diagnose(diverged(96.0, true));
  EXPECT_EQ(d.top().cause, cause::unscaled_inputs);
  EXPECT_NE(d.top().explanation.find("RMS 96"), std::string::npos);
  EXPECT_NE(d.top().suggestion.find("255"), std::string::npos);
  ASSERT_GE(d.ranked.size(), 2u);
  EXPECT_EQ(d.ranked[1].cause, cause::lr_too_high);
  EXPECT_LT(d.ranked[1].confidence, d.top().confidence);
}

TEST(DivergenceDiagnosis, LargeFloatFeaturesAreToBeStandardised) {
  const Diagnosis d = diagnose(diverged(40.0, false));
  EXPECT_EQ(d.top().cause, cause::unscaled_inputs);
  EXPECT_NE(d.top().suggestion.find("standardise"), std::string::npos);
}

TEST(DivergenceDiagnosis, ACollapseNamesTheDeadLayer) {
  Evidence e = diverged(0.3, false);
  e.divergence_kind = "collapse";
  e.divergence_layer = "layers.1.dense";
  e.divergence_finding = "every one of the 128 units of layers.1.dense output zero for the whole batch at step 200";
  const Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().cause, cause::lr_too_high);
  EXPECT_NE(d.top().explanation.find("layers.1.dense"), std::string::npos);
  EXPECT_NE(d.top().explanation.find("constant prediction"), std::string::npos);
}

}  // namespace
}  // namespace nanguard
