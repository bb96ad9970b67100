#include "nanguard/diagnose/diagnosis.h"

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace nanguard {
namespace {

// A step that failed with nothing else known: flat, healthy history, a clean batch.
Evidence base_incident() {
  Evidence e;
  e.step = 412;
  e.epoch = 2;
  e.failed_check = "gradients";
  e.nonfinite_tensors = {"layers.0.dense.weight.grad"};
  e.replayed = true;
  e.reproduced = true;
  e.replays = 1;
  e.batch_size = 64;
  for (int i = 0; i < 20; ++i) {
    e.loss_history.push_back(0.5 + 0.02 * std::sin(i));
    e.grad_norm_history.push_back(1.2 + 0.05 * std::cos(i));
  }
  e.learning_rate = 0.001;
  e.weight_absmax = 2.5;
  e.layer_grad_norms = {{"layers.0.dense.weight", 0.8},
                        {"layers.0.dense.bias", 0.1},
                        {"layers.1.dense.weight", 0.6},
                        {"layers.1.dense.bias", 0.05}};
  return e;
}

// The article's hand-written cross-entropy: log(softmax(z)) with large logits.
Evidence log_birth() {
  Evidence e = base_incident();
  e.failed_check = "loss";
  e.nonfinite_tensors = {"loss"};
  e.birth_found = true;
  e.birth_op = "aten::log";
  e.birth_phase = "forward";
  e.birth_module = "layers.1.dense";
  e.birth_input_zeros = 37;
  e.birth_input_absmax = 1.0;
  e.birth_input_max = 1.0;
  e.preceding_ops = {{"aten::addmm", "forward", "layers.1.dense", 410.0},
                     {"aten::softmax", "forward", "layers.1.dense", 1.0}};
  e.blamed_rows = {3, 7};
  e.blamed_samples = {103, 107};
  return e;
}

Evidence birth(const std::string& op, const std::string& phase, int64_t zeros, int64_t negatives,
               double max = 1.0) {
  Evidence e = base_incident();
  e.failed_check = "loss";
  e.nonfinite_tensors = {"loss"};
  e.birth_found = true;
  e.birth_op = op;
  e.birth_phase = phase;
  e.birth_module = "head";
  e.birth_input_zeros = zeros;
  e.birth_input_negatives = negatives;
  e.birth_input_max = max;
  e.birth_input_absmax = std::fabs(max);
  return e;
}

SampleEvidence nonfinite_sample(int64_t id, int64_t row, std::vector<int64_t> features) {
  SampleEvidence s;
  s.id = id;
  s.row = row;
  s.nonfinite = static_cast<int64_t>(features.size());
  s.features = std::move(features);
  return s;
}

SampleEvidence outlier(int64_t id, int64_t row, double absmax, double z) {
  SampleEvidence s;
  s.id = id;
  s.row = row;
  s.absmax = absmax;
  s.zscore = z;
  return s;
}

// Healthy values, then `steps` rises by `factor` each.
std::vector<double> growing(double start, double factor, int steps, int flat = 14) {
  std::vector<double> v(flat, start);
  double x = start;
  for (int i = 0; i < steps; ++i) v.push_back(x *= factor);
  return v;
}

// Z1: SGD with a too-high learning rate on raw pixels.
Evidence diverging() {
  Evidence e = base_incident();
  e.failed_check = "parameters";
  e.nonfinite_tensors = {"layers.0.dense.weight"};
  e.params_nonfinite_before_step = true;
  e.birth_found = true;
  e.birth_op = "aten::add_";
  e.birth_phase = "optimizer";
  e.birth_module = "";
  e.loss_history = growing(0.5, 2.5, 6);
  e.grad_norm_history = growing(1.0, 3.0, 6);
  e.learning_rate = 5;
  e.weight_absmax = 3.2e5;
  return e;
}

// Z2: an LSTM whose recurrent weights blow the gradient up in backward.
Evidence exploding_lstm() {
  Evidence e = base_incident();
  e.failed_check = "gradients";
  e.nonfinite_tensors = {"lstm.weight_hh_l0.grad"};
  e.birth_found = true;
  e.birth_op = "aten::mm";
  e.birth_phase = "backward";
  e.birth_module = "lstm";
  e.birth_backward_node = "MmBackward0";
  e.layer_grad_norms = {{"lstm.weight_ih_l0", 50.0},
                        {"lstm.weight_hh_l0", 3.4e12},
                        {"fc.weight", 2.1},
                        {"fc.bias", 0.5}};
  return e;
}

bool has(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

::testing::AssertionResult contains_all(const std::string& text,
                                        std::initializer_list<std::string> needles) {
  for (const auto& n : needles)
    if (!has(text, n))
      return ::testing::AssertionFailure() << "\"" << text << "\" lacks \"" << n << "\"";
  return ::testing::AssertionSuccess();
}

// Invariants that hold for every diagnosis.
void expect_well_formed(const Diagnosis& d) {
  ASSERT_FALSE(d.ranked.empty());
  std::set<std::string> seen;
  for (size_t i = 0; i < d.ranked.size(); ++i) {
    const auto& c = d.ranked[i];
    EXPECT_GE(c.confidence, 0.0) << c.cause;
    EXPECT_LE(c.confidence, 1.0) << c.cause;
    EXPECT_FALSE(c.explanation.empty()) << c.cause;
    EXPECT_NE(c.explanation.back(), ' ') << c.cause;
    EXPECT_FALSE(c.suggestion.empty()) << c.cause;
    EXPECT_TRUE(seen.insert(c.cause).second) << "duplicate " << c.cause;
    if (i > 0) {
      EXPECT_GE(d.ranked[i - 1].confidence, c.confidence);
    }
  }
}

// ---- bad_input_data ----

TEST(Diagnosis, NonFiniteInputsAreBadDataNamingSamplesAndFeatures) {
  Evidence e = base_incident();
  e.failed_check = "loss";
  e.nonfinite_samples = {nonfinite_sample(5, 0, {12, 40}), nonfinite_sample(17, 9, {100})};
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::bad_input_data);
  EXPECT_GE(d.top().confidence, 0.95);
  EXPECT_EQ(d.top().samples, (std::vector<int64_t>{5, 17}));
  EXPECT_TRUE(contains_all(
      d.top().explanation,
      {"step 412", "before any op", "2 samples of 64", "dataset ids 5, 17",
       "id 5: 2 NaN/Inf values at features 12, 40", "id 17: 1 NaN/Inf value at feature 100"}));
  EXPECT_TRUE(has(d.top().suggestion, "quarantine"));
}

TEST(Diagnosis, CleanBatchIsNotBadData) {
  for (const Evidence& e : {base_incident(), log_birth(), diverging()}) {
    EXPECT_EQ(diagnose(e).find(cause::bad_input_data), nullptr);
  }
}

TEST(Diagnosis, LabelsOutOfRangeAreBadData) {
  Evidence e = base_incident();
  e.failed_check = "loss";
  e.labels_out_of_range = true;
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::bad_input_data);
  EXPECT_TRUE(has(d.top().explanation, "labels outside"));
  EXPECT_TRUE(d.top().samples.empty());  // no sample ids to quarantine
}

TEST(Diagnosis, BadDataWithoutIdsNamesBatchRows) {
  Evidence e = base_incident();
  e.nonfinite_samples = {nonfinite_sample(-1, 3, {7})};
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().cause, cause::bad_input_data);
  EXPECT_TRUE(d.top().samples.empty());
  EXPECT_TRUE(contains_all(d.top().explanation,
                           {"batch rows 3", "dataset ids unknown", "row 3 (dataset id unknown)"}));
}

TEST(Diagnosis, ManyBadSamplesAreSummarised) {
  Evidence e = base_incident();
  for (int i = 0; i < 12; ++i) e.nonfinite_samples.push_back(nonfinite_sample(1000 + i, i, {i}));
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().samples.size(), 12u);
  EXPECT_TRUE(contains_all(d.top().explanation, {"12 samples", "(12 in all)", "(and 7 more)"}));
}

TEST(Diagnosis, BadDataBeatsUnsafeLossWhenTheInputHasNaN) {
  Evidence e = log_birth();
  e.nonfinite_samples = {nonfinite_sample(103, 3, {0})};
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::bad_input_data);
  const CauseScore* loss = d.find(cause::unsafe_loss);
  ASSERT_NE(loss, nullptr);
  EXPECT_LT(loss->confidence, d.top().confidence);
  EXPECT_TRUE(has(loss->explanation, "non-finite inputs"));
}

// ---- transient_fault / environment ----

Evidence not_reproduced(int replays) {
  Evidence e = base_incident();
  e.reproduced = false;
  e.replays = replays;
  return e;
}

TEST(Diagnosis, FiniteReplaysAreATransientFault) {
  Diagnosis d = diagnose(not_reproduced(2));
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::transient_fault);
  EXPECT_GE(d.top().confidence, 0.8);
  EXPECT_TRUE(d.top().samples.empty());
  EXPECT_TRUE(contains_all(d.top().explanation,
                           {"step 412", "2 replays", "did not reproduce", "No op and no sample",
                            "layers.0.dense.weight.grad", "hardware"}));
  EXPECT_FALSE(has(d.top().explanation, "second replay"));
  EXPECT_EQ(d.find(cause::environment), nullptr);
  EXPECT_TRUE(has(d.top().suggestion, "recompute"));
}

TEST(Diagnosis, OneFiniteReplayIsLessCertain) {
  Diagnosis one = diagnose(not_reproduced(1));
  Diagnosis two = diagnose(not_reproduced(2));
  EXPECT_EQ(one.top().cause, cause::transient_fault);
  EXPECT_LT(one.top().confidence, two.top().confidence);
  EXPECT_TRUE(has(one.top().explanation, "second replay would confirm"));
}

TEST(Diagnosis, EnvironmentSuspectRaisesTransientAndAddsEnvironment) {
  Evidence e = not_reproduced(2);
  e.environment_suspect = true;
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::transient_fault);
  EXPECT_GT(d.top().confidence, diagnose(not_reproduced(2)).top().confidence);
  EXPECT_TRUE(has(d.top().explanation, "self-test failed"));
  const CauseScore* env = d.find(cause::environment);
  ASSERT_NE(env, nullptr);
  EXPECT_EQ(d.ranked[1].cause, cause::environment);
  EXPECT_TRUE(has(env->explanation, "did not reproduce"));
}

TEST(Diagnosis, FailingSelfTestCheckIsNamedInTheExplanation) {
  Evidence e = not_reproduced(1);
  e.environment_suspect = true;
  e.environment_finding = "matmul (random, 64x64 @ 64x64): max abs error 0.031, max rel error 0.0021 (bound 1.5e-05)";
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().cause, cause::transient_fault);
  EXPECT_GT(d.top().confidence, diagnose(not_reproduced(1)).top().confidence);
  EXPECT_TRUE(contains_all(d.top().explanation, {"self-test failed", "matmul (random, 64x64 @ 64x64)", "hardware"}));
  const CauseScore* env = d.find(cause::environment);
  ASSERT_NE(env, nullptr);
  EXPECT_TRUE(has(env->explanation, "Failing check: matmul"));
}

TEST(Diagnosis, ReproducedOrNotReplayedIsNotTransient) {
  EXPECT_EQ(diagnose(base_incident()).find(cause::transient_fault), nullptr);
  Evidence e = base_incident();
  e.replayed = false;
  e.reproduced = false;
  e.replays = 0;
  EXPECT_EQ(diagnose(e).find(cause::transient_fault), nullptr);
}

TEST(Diagnosis, EnvironmentSuspectWithReproducedIncidentIsLowMedium) {
  Evidence e = log_birth();
  e.environment_suspect = true;
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::unsafe_loss);
  const CauseScore* env = d.find(cause::environment);
  ASSERT_NE(env, nullptr);
  EXPECT_GE(env->confidence, 0.2);
  EXPECT_LE(env->confidence, 0.5);
  EXPECT_TRUE(has(env->explanation, "reproduced"));
  EXPECT_EQ(diagnose(log_birth()).find(cause::environment), nullptr);
}

// ---- unsafe_loss ----

TEST(Diagnosis, LogOfZeroNamesOpModuleStepRowsAndNumbers) {
  Diagnosis d = diagnose(log_birth());
  expect_well_formed(d);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::unsafe_loss);
  EXPECT_EQ(top.subkind, unsafe_loss_kind::log_of_zero);
  EXPECT_GE(top.confidence, 0.9);
  EXPECT_TRUE(contains_all(top.explanation,
                           {"step 412 (epoch 2)", "aten::log in layers.1.dense (forward)",
                            "37 exact zeros", "log(0) = -inf", "0 * -inf = NaN", "aten::softmax",
                            "log(softmax(z))", "Rows 3, 7 of the batch (dataset ids 103, 107)",
                            "the loss check failed", "the largest |w| was 2.5"}));
  EXPECT_TRUE(top.samples.empty());  // the loss is at fault, not the samples
  EXPECT_TRUE(contains_all(top.suggestion, {"log_softmax", "from_logits"}));
  EXPECT_EQ(d.find(cause::lr_too_high), nullptr);
  EXPECT_EQ(d.find(cause::exploding_gradients), nullptr);
}

TEST(Diagnosis, LogWithoutZerosIsNotLogOfZero) {
  Evidence e = log_birth();
  e.birth_input_zeros = 0;
  e.birth_input_negatives = 0;
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.find(cause::unsafe_loss), nullptr);
  EXPECT_EQ(d.top().cause, cause::unknown);
  EXPECT_TRUE(has(d.top().explanation, "aten::log in layers.1.dense (forward)"));
}

TEST(Diagnosis, LogOfNegativesIsNaN) {
  Diagnosis d = diagnose(birth("aten::log_", "forward", 0, 4));
  EXPECT_EQ(d.top().cause, cause::unsafe_loss);
  EXPECT_EQ(d.top().subkind, unsafe_loss_kind::log_of_zero);
  EXPECT_TRUE(contains_all(d.top().explanation, {"4 negative values", "negative number is NaN"}));
}

TEST(Diagnosis, ExpOverflow) {
  Evidence e = birth("aten::exp", "forward", 0, 0, 95.3);
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::unsafe_loss);
  EXPECT_EQ(d.top().subkind, unsafe_loss_kind::exp_overflow);
  EXPECT_TRUE(contains_all(d.top().explanation,
                           {"aten::exp in head (forward)", "95.3", "88.72", "inf / inf"}));
  EXPECT_TRUE(has(d.top().suggestion, "subtract the maximum"));
}

TEST(Diagnosis, ExpBelowTheThresholdIsNotOverflow) {
  Diagnosis d = diagnose(birth("aten::exp", "forward", 0, 0, 50.0));
  EXPECT_EQ(d.find(cause::unsafe_loss), nullptr);
  EXPECT_EQ(d.top().cause, cause::unknown);
}

TEST(Diagnosis, ExpOverflowUsesTheEvidenceThreshold) {
  Evidence e = birth("aten::exp", "forward", 0, 0, 12.0);  // float16 overflows past ~11.09
  EXPECT_EQ(diagnose(e).find(cause::unsafe_loss), nullptr);
  e.exp_overflow_threshold = 11.09;
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().subkind, unsafe_loss_kind::exp_overflow);
  EXPECT_TRUE(has(d.top().explanation, "11.09"));
}

TEST(Diagnosis, ZeroDivision) {
  for (const char* op : {"aten::div", "aten::div_", "aten::reciprocal"}) {
    SCOPED_TRACE(op);
    Diagnosis d = diagnose(birth(op, "forward", 4, 0));
    EXPECT_EQ(d.top().cause, cause::unsafe_loss);
    EXPECT_EQ(d.top().subkind, unsafe_loss_kind::zero_division);
    EXPECT_TRUE(contains_all(d.top().explanation, {op, "4 exact zeros", "x / 0 = inf"}));
    EXPECT_TRUE(has(d.top().suggestion, "epsilon"));
  }
}

TEST(Diagnosis, DivisionWithoutZerosIsNotZeroDivision) {
  EXPECT_EQ(diagnose(birth("aten::div", "forward", 0, 3)).find(cause::unsafe_loss), nullptr);
}

TEST(Diagnosis, SqrtOfNegative) {
  for (const char* op : {"aten::sqrt", "aten::rsqrt", "aten::pow"}) {
    SCOPED_TRACE(op);
    Diagnosis d = diagnose(birth(op, "forward", 0, 3));
    EXPECT_EQ(d.top().cause, cause::unsafe_loss);
    EXPECT_EQ(d.top().subkind, unsafe_loss_kind::sqrt_of_negative);
    EXPECT_TRUE(has(d.top().explanation, "3 negative values"));
    EXPECT_TRUE(has(d.top().suggestion, "clamp"));
  }
}

TEST(Diagnosis, SqrtOfZeroIsFiniteButRsqrtOfZeroIsADivision) {
  EXPECT_EQ(diagnose(birth("aten::sqrt", "forward", 5, 0)).find(cause::unsafe_loss), nullptr);
  Diagnosis d = diagnose(birth("aten::rsqrt", "forward", 5, 0));
  EXPECT_EQ(d.top().subkind, unsafe_loss_kind::zero_division);
  EXPECT_TRUE(has(d.top().explanation, "rsqrt(0)"));
}

TEST(Diagnosis, BackwardThroughLogAtZeroIsLogOfZero) {
  Evidence e = birth("aten::div", "backward", 5, 0);
  e.birth_backward_node = "LogBackward0";
  e.failed_check = "gradients";
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::unsafe_loss);
  EXPECT_EQ(d.top().subkind, unsafe_loss_kind::log_of_zero);
  EXPECT_TRUE(contains_all(d.top().explanation,
                           {"aten::div inside LogBackward0 in head (backward)", "1/0 = inf"}));
  EXPECT_LT(d.top().confidence, diagnose(log_birth()).top().confidence);
  EXPECT_EQ(d.find(cause::exploding_gradients), nullptr);  // not an overflow of magnitudes
}

TEST(Diagnosis, BackwardThroughSqrtAtZeroIsADivision) {
  Evidence e = birth("aten::div", "backward", 2, 0);
  e.birth_backward_node = "autograd::engine::evaluate_function: SqrtBackward0";
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().subkind, unsafe_loss_kind::zero_division);
  EXPECT_TRUE(has(d.top().explanation, "sqrt at 0"));
}

TEST(Diagnosis, UnsafeOpInTheOptimizerIsNotUnsafeLoss) {
  EXPECT_EQ(diagnose(birth("aten::sqrt", "optimizer", 0, 3)).find(cause::unsafe_loss), nullptr);
}

TEST(Diagnosis, TrainerOwnedUnstableLossWillUseTheStableForm) {
  Evidence e = log_birth();
  e.loss_owned_by_trainer = true;
  e.loss_is_stable = false;
  Diagnosis d = diagnose(e);
  EXPECT_TRUE(has(d.top().explanation, "will switch it to the stable form"));
  EXPECT_TRUE(has(d.top().suggestion, "stable form"));
  e.loss_is_stable = true;
  d = diagnose(e);
  EXPECT_TRUE(has(d.top().explanation, "already the stable form"));
  EXPECT_FALSE(has(diagnose(log_birth()).top().explanation, "stable form"));
}

TEST(Diagnosis, UnsafeLossIsSurerWithModerateWeightsAndCleanInput) {
  Evidence moderate = birth("aten::exp", "forward", 0, 0, 95.3);
  Evidence huge = moderate;
  huge.weight_absmax = 1e5;
  double a = diagnose(moderate).find(cause::unsafe_loss)->confidence;
  const CauseScore* b = diagnose(huge).find(cause::unsafe_loss);
  ASSERT_NE(b, nullptr);
  EXPECT_LT(b->confidence, a);
  EXPECT_TRUE(has(b->explanation, "1e+05"));
}

// ---- lr_too_high ----

TEST(Diagnosis, GeometricGrowthBeforeAnOptimizerBirthIsLrTooHigh) {
  Diagnosis d = diagnose(diverging());
  expect_well_formed(d);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::lr_too_high);
  EXPECT_GE(top.confidence, 0.9);
  EXPECT_TRUE(
      contains_all(top.explanation,
                   {"step 412", "the loss grew geometrically over the last 6 steps",
                    "x2.5 per step", "from 0.5 to 122.1", "the gradient norm", "x3 per step",
                    "optimizer step", "3.2e+05", "input batch was finite", "learning rate of 5"}));
  EXPECT_TRUE(has(top.suggestion, "to 0.5"));
  EXPECT_EQ(d.find(cause::exploding_gradients), nullptr);
  EXPECT_EQ(d.find(cause::bad_input_data), nullptr);
}

TEST(Diagnosis, NoGrowthMeansNoLrTooHigh) {
  for (const Evidence& e : {base_incident(), log_birth(), exploding_lstm()}) {
    EXPECT_EQ(diagnose(e).find(cause::lr_too_high), nullptr);
  }
}

TEST(Diagnosis, SlowGrowthIsNotGeometric) {
  Evidence e = base_incident();
  e.loss_history = growing(0.5, 1.1, 10);
  e.grad_norm_history = growing(1.0, 1.2, 10);
  EXPECT_EQ(diagnose(e).find(cause::lr_too_high), nullptr);
}

TEST(Diagnosis, NoisyGrowthIsFoundByTheFit) {
  Evidence e = base_incident();
  // x2 per step with one dip: the run of rises is short, the fit is not.
  e.loss_history = {0.5, 0.5, 0.5, 1, 2, 4, 8, 6, 12, 24, 48};
  Diagnosis d = diagnose(e);
  const CauseScore* lr = d.find(cause::lr_too_high);
  ASSERT_NE(lr, nullptr);
  EXPECT_TRUE(has(lr->explanation, "grew geometrically over the last 9 steps"));
  EXPECT_GE(lr->confidence, 0.5);
}

TEST(Diagnosis, ASpikeOverTheMedianCountsAsGrowth) {
  Evidence e = base_incident();
  e.grad_norm_history.push_back(5000);
  Diagnosis d = diagnose(e);
  const CauseScore* lr = d.find(cause::lr_too_high);
  ASSERT_NE(lr, nullptr);
  EXPECT_TRUE(contains_all(lr->explanation,
                           {"the gradient norm reached 5000", "x the median of the 20 steps"}));
  EXPECT_LT(lr->confidence, diagnose(diverging()).top().confidence);
}

TEST(Diagnosis, OneJumpAfterSmallRisesIsASpikeNotGeometricGrowth) {
  Evidence e = base_incident();
  e.grad_norm_history = {1.0, 1.0, 1.0, 1.0, 1.0, 1.01, 1.02, 1.03, 1.04, 4000};
  Diagnosis d = diagnose(e);
  const CauseScore* lr = d.find(cause::lr_too_high);
  ASSERT_NE(lr, nullptr);
  EXPECT_FALSE(has(lr->explanation, "geometrically"));
  EXPECT_TRUE(has(lr->explanation, "the gradient norm reached 4000"));
}

TEST(Diagnosis, OptimizerBirthWithoutHistoryIsAWeakerLrTooHigh) {
  Evidence e = diverging();
  e.loss_history.clear();
  e.grad_norm_history.clear();
  e.weight_absmax = 2.0;
  Diagnosis d = diagnose(e);
  const CauseScore* lr = d.find(cause::lr_too_high);
  ASSERT_NE(lr, nullptr);
  EXPECT_LT(lr->confidence, 0.5);
  EXPECT_TRUE(has(lr->explanation, "no geometric growth"));
  EXPECT_EQ(d.top().cause, cause::unknown);  // honest: the evidence is thin
}

TEST(Diagnosis, DirtyBatchOutranksGrowth) {
  Evidence e = diverging();
  e.nonfinite_samples = {nonfinite_sample(9, 1, {3})};
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().cause, cause::bad_input_data);
  ASSERT_NE(d.find(cause::lr_too_high), nullptr);
  EXPECT_LT(d.find(cause::lr_too_high)->confidence, 0.5);
}

TEST(Diagnosis, GrowthDrivingAnOverflowRanksLrFirst) {
  Evidence e = birth("aten::exp", "forward", 0, 0, 120.0);
  e.loss_history = growing(0.5, 2.0, 8);
  e.grad_norm_history = growing(1.0, 2.0, 8);
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::lr_too_high);
  ASSERT_NE(d.find(cause::unsafe_loss), nullptr);
  EXPECT_TRUE(has(d.find(cause::unsafe_loss)->explanation, "growing geometrically"));
}

// ---- exploding_gradients ----

TEST(Diagnosis, RecurrentGradientOverflowInBackwardIsExploding) {
  Diagnosis d = diagnose(exploding_lstm());
  expect_well_formed(d);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::exploding_gradients);
  EXPECT_GE(top.confidence, 0.8);
  EXPECT_TRUE(
      contains_all(top.explanation,
                   {"step 412", "backward pass at aten::mm inside MmBackward0 in lstm (backward)",
                    "lstm.weight_hh_l0", "3.4e+12", "forward pass stayed finite", "recurrent",
                    "not growing geometrically"}));
  EXPECT_TRUE(has(top.suggestion, "clip"));
  EXPECT_EQ(d.find(cause::lr_too_high), nullptr);
}

// The guard caught a gradient norm past float32's range while every gradient was finite: no
// birth op (nothing went non-finite), but the recurrent layer holds the spike.
TEST(Diagnosis, GradientNormOverflowConcentratedInRecurrentWeightsIsExploding) {
  Evidence e = base_incident();
  e.failed_check = "gradient_norm";
  e.gradient_norm_overflow = true;
  e.nonfinite_tensors.clear();
  e.layer_grad_norms = {{"rnn.weight_ih", 3e17}, {"rnn.weight_hh", 4e19}, {"out.weight", 2.0}, {"out.bias", 0.4}};
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::exploding_gradients);
  EXPECT_GE(d.top().confidence, 0.8);
  EXPECT_TRUE(contains_all(d.top().explanation, {"float32's range", "rnn.weight_hh", "recurrent"}));
  // The failed check alone (no per-layer norms) still names it, with less confidence.
  Evidence calm = base_incident();
  calm.failed_check = "gradient_norm";
  calm.nonfinite_tensors.clear();
  calm.replayed = false;
  calm.layer_grad_norms.clear();
  const Diagnosis dc = diagnose(calm);
  EXPECT_EQ(dc.top().cause, cause::exploding_gradients);
  EXPECT_LT(dc.top().confidence, d.top().confidence);
}

TEST(Diagnosis, ForwardBirthIsNotExploding) {
  Evidence e = exploding_lstm();
  e.birth_phase = "forward";
  e.birth_backward_node = "";
  e.birth_op = "aten::addmm";
  EXPECT_EQ(diagnose(e).find(cause::exploding_gradients), nullptr);
}

TEST(Diagnosis, GradientsFailingWithoutMagnitudeOrBirthIsNotExploding) {
  Evidence e = base_incident();
  e.replayed = false;
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.find(cause::exploding_gradients), nullptr);
  EXPECT_EQ(d.top().cause, cause::unknown);
}

TEST(Diagnosis, ConcentratedGradientsWithoutReplayAreExploding) {
  Evidence e = exploding_lstm();
  e.replayed = false;
  e.reproduced = false;
  e.birth_found = false;
  Diagnosis d = diagnose(e);
  const CauseScore* x = d.find(cause::exploding_gradients);
  ASSERT_NE(x, nullptr);
  EXPECT_LT(x->confidence, diagnose(exploding_lstm()).top().confidence);
  EXPECT_TRUE(has(x->explanation, "while the loss was finite"));
}

TEST(Diagnosis, GeometricLossGrowthPrefersLrOverExploding) {
  Evidence e = exploding_lstm();
  e.loss_history = growing(0.5, 2.0, 8);
  e.grad_norm_history = growing(1.0, 2.0, 8);
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::lr_too_high);
  const CauseScore* x = d.find(cause::exploding_gradients);
  ASSERT_NE(x, nullptr);
  EXPECT_TRUE(has(x->explanation, "points more at the learning rate"));
}

// ---- data_outlier ----

Evidence outlier_batch() {
  Evidence e = base_incident();
  e.failed_check = "loss";
  e.nonfinite_tensors = {"loss"};
  e.outlier_samples = {outlier(123, 4, 2.6e8, 1400), outlier(456, 11, 3.1e3, 8.5),
                       outlier(789, 12, 9.0, 3.0)};
  e.blamed_rows = {4};
  e.blamed_samples = {123};
  return e;
}

TEST(Diagnosis, ExtremeSamplesAreOutliersNamedWithZScores) {
  Diagnosis d = diagnose(outlier_batch());
  expect_well_formed(d);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::data_outlier);
  EXPECT_GE(top.confidence, 0.85);
  EXPECT_EQ(top.samples, (std::vector<int64_t>{123, 456}));  // z = 3 is not extreme
  EXPECT_TRUE(contains_all(
      top.explanation, {"step 412", "2 finite but extreme samples",
                        "id 123 (|x| up to 2.6e+08, z-score 1400)", "id 456", "z-score 8.5",
                        "traced the first non-finite rows to them", "loss spiked", "around 0.5"}));
  EXPECT_FALSE(has(top.explanation, "789"));
  EXPECT_TRUE(has(top.suggestion, "quarantine"));
}

TEST(Diagnosis, ModerateZScoresAreNotOutliers) {
  Evidence e = outlier_batch();
  e.outlier_samples = {outlier(789, 12, 9.0, 3.0), outlier(790, 13, 12.0, 5.9)};
  EXPECT_EQ(diagnose(e).find(cause::data_outlier), nullptr);
}

TEST(Diagnosis, OutliersAmongTheBlamedRowsAreSurer) {
  Evidence blamed = outlier_batch();
  Evidence unblamed = outlier_batch();
  unblamed.blamed_rows = {30};
  unblamed.blamed_samples = {999};
  double a = diagnose(blamed).find(cause::data_outlier)->confidence;
  double b = diagnose(unblamed).find(cause::data_outlier)->confidence;
  EXPECT_GT(a, b);
  // Matching by batch row works without dataset ids.
  Evidence by_row = outlier_batch();
  by_row.blamed_samples.clear();
  EXPECT_DOUBLE_EQ(diagnose(by_row).find(cause::data_outlier)->confidence, a);
}

// ---- optimizer_state_overflow ----

TEST(Diagnosis, OptimizerStateOverflowWithFiniteGradients) {
  Evidence e = base_incident();
  e.failed_check = "optimizer_state";
  e.optimizer_state_nonfinite = true;
  e.nonfinite_tensors = {"layers.0.dense.weight.exp_avg_sq"};
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::optimizer_state_overflow);
  EXPECT_GE(d.top().confidence, 0.8);
  EXPECT_TRUE(contains_all(d.top().explanation, {"step 412", "layers.0.dense.weight.exp_avg_sq",
                                                 "loss and gradients were finite", "0.001"}));
  EXPECT_TRUE(has(d.top().suggestion, "epsilon"));
}

TEST(Diagnosis, OptimizerStateAfterNonFiniteGradientsIsAConsequence) {
  Evidence e = base_incident();
  e.optimizer_state_nonfinite = true;
  e.nonfinite_tensors = {"layers.0.dense.weight.grad", "layers.0.dense.weight.exp_avg"};
  Diagnosis d = diagnose(e);
  const CauseScore* s = d.find(cause::optimizer_state_overflow);
  ASSERT_NE(s, nullptr);
  EXPECT_LT(s->confidence, 0.5);
  EXPECT_TRUE(has(s->explanation, "consequence"));
  EXPECT_EQ(diagnose(base_incident()).find(cause::optimizer_state_overflow), nullptr);
}

// ---- vanishing_gradients / bad_initialization ----

Evidence deep_sigmoid() {
  Evidence e;  // a warning, no incident
  e.step = 150;
  e.prior_warnings = {"vanishing_gradients", "saturation"};
  e.layer_grad_norms = {
      {"layers.0.weight", 3.1e-9}, {"layers.10.weight", 2e-5}, {"layers.19.weight", 0.042}};
  return e;
}

TEST(Diagnosis, VanishingGradientsFromWarningsAndLayerNorms) {
  Diagnosis d = diagnose(deep_sigmoid());
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::vanishing_gradients);
  EXPECT_GE(d.top().confidence, 0.6);
  EXPECT_TRUE(contains_all(d.top().explanation,
                           {"step 150", "layers.0.weight (3.1e-09)", "layers.19.weight (0.042)",
                            "7.38e-08x", "vanishing_gradients"}));
  EXPECT_TRUE(has(d.top().suggestion, "He initialisation"));
  const CauseScore* init = d.find(cause::bad_initialization);
  ASSERT_NE(init, nullptr);
  EXPECT_TRUE(has(init->explanation, "saturat"));
  EXPECT_TRUE(has(init->suggestion, "Xavier"));
}

TEST(Diagnosis, VanishingIsSecondaryBesideAnIncident) {
  Evidence e = log_birth();
  e.prior_warnings = {"vanishing_gradients"};
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::unsafe_loss);
  const CauseScore* v = d.find(cause::vanishing_gradients);
  ASSERT_NE(v, nullptr);
  EXPECT_LE(v->confidence, 0.4);
  EXPECT_TRUE(has(v->explanation, "secondary"));
}

TEST(Diagnosis, NoWarningsAndEvenLayersMeanNoStructuralCause) {
  Diagnosis d = diagnose(log_birth());
  EXPECT_EQ(d.find(cause::vanishing_gradients), nullptr);
  EXPECT_EQ(d.find(cause::bad_initialization), nullptr);
  Evidence e = deep_sigmoid();
  e.prior_warnings = {"loss_spike"};
  e.layer_grad_norms = {{"layers.0.weight", 0.01}, {"layers.19.weight", 0.042}};
  EXPECT_EQ(diagnose(e).find(cause::vanishing_gradients), nullptr);
  EXPECT_EQ(diagnose(e).find(cause::bad_initialization), nullptr);
}

// ---- unknown ----

TEST(Diagnosis, NothingFitsGivesAnHonestUnknown) {
  Diagnosis d = diagnose(base_incident());
  expect_well_formed(d);
  ASSERT_EQ(d.ranked.size(), 1u);
  EXPECT_EQ(d.top().cause, cause::unknown);
  EXPECT_DOUBLE_EQ(d.top().confidence, 1.0);
  EXPECT_TRUE(contains_all(d.top().explanation,
                           {"step 412", "the gradients check failed", "no rule matched",
                            "input batch was finite", "did not locate"}));
}

TEST(Diagnosis, UnknownNamesAnUnrecognisedBirthOp) {
  Evidence e = birth("aten::acos", "forward", 0, 0, 1.5);
  e.birth_reason = "input 0 of aten::acos holds 3 values outside [-1, 1]";
  Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().cause, cause::unknown);
  EXPECT_TRUE(
      contains_all(d.top().explanation, {"aten::acos in head (forward)", "outside [-1, 1]"}));
  EXPECT_TRUE(has(d.top().suggestion, "aten::acos"));
}

TEST(Diagnosis, UnknownListsWeakerCandidates) {
  Evidence e = base_incident();
  e.prior_warnings = {"saturation"};
  Diagnosis d = diagnose(e);
  expect_well_formed(d);
  EXPECT_EQ(d.top().cause, cause::unknown);
  EXPECT_NEAR(d.top().confidence, 0.7, 1e-9);
  EXPECT_EQ(d.ranked[1].cause, cause::bad_initialization);
  EXPECT_TRUE(has(d.top().explanation, "Weaker candidates: bad_initialization (0.3)"));
}

TEST(Diagnosis, EmptyEvidenceShowsNoIncident) {
  Diagnosis d = diagnose(Evidence{});
  expect_well_formed(d);
  ASSERT_EQ(d.ranked.size(), 1u);
  EXPECT_EQ(d.top().cause, cause::unknown);
  EXPECT_TRUE(has(d.top().explanation, "no incident"));
}

// ---- robustness ----

TEST(Diagnosis, NonFiniteAndNegativeNumbersInTheEvidenceAreHarmless) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Evidence> cases = {base_incident(),  log_birth(),     diverging(),
                                 exploding_lstm(), outlier_batch(), deep_sigmoid()};
  for (auto& e : cases) {
    e.loss_history.insert(e.loss_history.end(), {nan, -3.0, inf, 0.0});
    e.grad_norm_history = {nan, inf, -1.0};
    e.weight_absmax = nan;
    e.learning_rate = -inf;
    e.layer_grad_norms.push_back({"weird", nan});
    e.exp_overflow_threshold = nan;
    e.birth_input_max = inf;
    e.outlier_samples.push_back(outlier(1, 1, inf, nan));
    Diagnosis d = diagnose(e);
    expect_well_formed(d);
  }
}

TEST(Diagnosis, GrowthOnlyUsesTheTrailingPositiveRun) {
  Evidence e = base_incident();
  // A huge value before a reset (e.g. a NaN step) must not make the tail look like a spike.
  e.grad_norm_history = {1e9, std::numeric_limits<double>::quiet_NaN(), 1.0, 1.1, 0.9, 1.0, 1.05};
  EXPECT_EQ(diagnose(e).find(cause::lr_too_high), nullptr);
}

TEST(Diagnosis, SameEvidenceSameDiagnosis) {
  Diagnosis a = diagnose(diverging());
  Diagnosis b = diagnose(diverging());
  ASSERT_EQ(a.ranked.size(), b.ranked.size());
  for (size_t i = 0; i < a.ranked.size(); ++i) {
    EXPECT_EQ(a.ranked[i].cause, b.ranked[i].cause);
    EXPECT_EQ(a.ranked[i].explanation, b.ranked[i].explanation);
  }
}

}  // namespace
}  // namespace nanguard
