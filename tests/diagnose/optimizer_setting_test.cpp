// Diagnoses added for optimizer settings, fully masked rows, samples of the kind the data
// audit flagged, and suggestions that fit the model, from evidence alone.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "nanguard/diagnose/diagnosis.h"

namespace nanguard {
namespace {

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

Evidence flat_history(Evidence e) {
  for (int i = 0; i < 20; ++i) {
    e.loss_history.push_back(0.5 + 0.02 * std::sin(i));
    e.grad_norm_history.push_back(1.2 + 0.05 * std::cos(i));
  }
  e.learning_rate = 0.001;
  e.weight_absmax = 2.5;
  e.replayed = e.reproduced = true;
  e.replays = 1;
  e.batch_size = 32;
  return e;
}

// Adam's update of layers.0.dense.weight divided 0 by 0 where its gradient was 0.
Evidence zero_denominator(double eps, const std::string& dtype = "float32") {
  Evidence e;
  e.step = 1;
  e.failed_check = "parameters";
  e.nonfinite_tensors = {"layers.0.dense.weight"};
  e.params_nonfinite_before_step = true;
  e.birth_found = true;
  e.birth_op = "aten::addcdiv_";
  e.birth_phase = "optimizer";
  e.birth_is_division = true;
  e.birth_denominator_zeros = 12;
  e.birth_denominator_numel = 2560;
  e.birth_denominator_ops = {"aten::sqrt", "aten::div", "aten::add_"};
  e.birth_denominator_sqrt_add = true;
  e.birth_parameter = "layers.0.dense.weight";
  e.optimizer_name = "adam";
  e.optimizer_epsilon = eps;
  e.parameter_dtype = dtype;
  return flat_history(e);
}

TEST(OptimizerSettingDiagnosis, ZeroEpsilonNamesTheParameterAndTheZeros) {
  const Diagnosis d = diagnose(zero_denominator(0.0));
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::optimizer_setting);
  EXPECT_EQ(top.subkind, optimizer_setting_kind::zero_epsilon);
  EXPECT_GE(top.confidence, 0.9);
  EXPECT_TRUE(has(top.explanation, "layers.0.dense.weight")) << top.explanation;
  EXPECT_TRUE(has(top.explanation, "12 exact zeros of 2560")) << top.explanation;
  EXPECT_TRUE(has(top.explanation, "epsilon of the adam optimizer is 0")) << top.explanation;
  EXPECT_TRUE(has(top.explanation, "aten::sqrt, aten::div, aten::add_")) << top.explanation;
  EXPECT_TRUE(has(top.suggestion, "1e-7") && has(top.suggestion, "1e-8")) << top.suggestion;
  EXPECT_TRUE(top.samples.empty());
}

TEST(OptimizerSettingDiagnosis, AnEpsilonThatRoundsToZeroInFloat16) {
  const Diagnosis d = diagnose(zero_denominator(1e-8, "float16"));
  EXPECT_EQ(d.top().cause, cause::optimizer_setting);
  EXPECT_EQ(d.top().subkind, optimizer_setting_kind::epsilon_underflow);
  EXPECT_TRUE(has(d.top().suggestion, "1e-4")) << d.top().suggestion;
}

TEST(OptimizerSettingDiagnosis, ARealEpsilonOrNoZerosIsNotTheSetting) {
  EXPECT_EQ(diagnose(zero_denominator(1e-8)).find(cause::optimizer_setting), nullptr);
  Evidence no_zeros = zero_denominator(0.0);
  no_zeros.birth_denominator_zeros = 0;
  EXPECT_EQ(diagnose(no_zeros).find(cause::optimizer_setting), nullptr);
  Evidence forward = zero_denominator(0.0);
  forward.birth_phase = "forward";
  EXPECT_EQ(diagnose(forward).find(cause::optimizer_setting), nullptr);
  Evidence not_division = zero_denominator(0.0);
  not_division.birth_is_division = false;
  EXPECT_EQ(diagnose(not_division).find(cause::optimizer_setting), nullptr);
}

TEST(OptimizerSettingDiagnosis, AnUnknownEpsilonIsLessCertain) {
  const Diagnosis d = diagnose(zero_denominator(std::numeric_limits<double>::quiet_NaN()));
  const CauseScore* c = d.find(cause::optimizer_setting);
  ASSERT_NE(c, nullptr);
  EXPECT_LT(c->confidence, 0.8);
  EXPECT_TRUE(has(c->explanation, "not known"));
}

Evidence masked_softmax() {
  Evidence e;
  e.step = 7;
  e.failed_check = "loss";
  e.nonfinite_tensors = {"loss"};
  e.birth_found = true;
  e.birth_op = "aten::_softmax";
  e.birth_phase = "forward";
  e.birth_module = "encoder.attn";
  e.birth_input_neginf = 8;
  e.birth_inf_source = "aten::masked_fill_";
  e.blamed_rows = {2, 9};
  e.blamed_samples = {402, 1177};
  return flat_history(e);
}

TEST(FullyMaskedRowDiagnosis, SoftmaxOverAllMinusInfBlamesThoseSamples) {
  const Diagnosis d = diagnose(masked_softmax());
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::fully_masked_row);
  EXPECT_EQ(top.samples, (std::vector<int64_t>{402, 1177}));
  EXPECT_TRUE(has(top.explanation, "aten::masked_fill_")) << top.explanation;
  EXPECT_TRUE(has(top.explanation, "dataset ids 402, 1177")) << top.explanation;
  EXPECT_TRUE(has(top.explanation, "encoder.attn")) << top.explanation;
  EXPECT_FALSE(has(top.suggestion, "log_softmax"));
  EXPECT_EQ(d.find(cause::unsafe_loss), nullptr);
}

TEST(FullyMaskedRowDiagnosis, NaNOrPlusInfInTheInputIsNotAMask) {
  Evidence nan = masked_softmax();
  nan.birth_input_nan = 1;
  EXPECT_EQ(diagnose(nan).find(cause::fully_masked_row), nullptr);
  Evidence pinf = masked_softmax();
  pinf.birth_input_posinf = 1;
  EXPECT_EQ(diagnose(pinf).find(cause::fully_masked_row), nullptr);
  Evidence other = masked_softmax();
  other.birth_op = "aten::exp";
  EXPECT_EQ(diagnose(other).find(cause::fully_masked_row), nullptr);
}

Evidence nan_sample(int64_t id) {
  Evidence e;
  e.step = 3;
  e.failed_check = "loss";
  e.nonfinite_tensors = {"loss"};
  SampleEvidence s;
  s.id = id;
  s.row = 0;
  s.nonfinite = 1;
  e.nonfinite_samples = {s};
  return flat_history(e);
}

TEST(AuditedKindDiagnosis, BadInputBlamesEverySampleFlaggedNonFinite) {
  Evidence e = nan_sample(250);
  e.audit_flagged_samples.add("non_finite", {589, 17, 250, 101, 333, 470});
  e.audit_flagged_samples.add("blank", {5, 6});
  const Diagnosis d = diagnose(e);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::bad_input_data);
  EXPECT_EQ(top.samples, (std::vector<int64_t>{17, 101, 250, 333, 470, 589}));
  EXPECT_TRUE(has(top.explanation, "5 more training samples as non_finite")) << top.explanation;
}

TEST(AuditedKindDiagnosis, WithoutPropertiesOnlyTheBatchsSamplesAreBlamed) {
  Evidence e = nan_sample(250);
  e.audit_flagged_samples = {17, 250, 101};  // the old id list: no property known
  const Diagnosis d = diagnose(e);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.samples, std::vector<int64_t>{250});
  EXPECT_TRUE(has(top.explanation, "had flagged id 250"));
}

TEST(AuditedKindDiagnosis, ZeroDivisionOnBlankSamplesBlamesEveryBlankSample) {
  Evidence e;
  e.step = 5;
  e.failed_check = "loss";
  e.nonfinite_tensors = {"loss"};
  e.birth_found = true;
  e.birth_op = "aten::div";
  e.birth_phase = "forward";
  e.birth_input_zeros = 784 * 2;
  e.blamed_rows = {4, 11};
  e.blamed_samples = {40, 77};
  e = flat_history(e);
  e.audit_flagged_samples.add("blank", {77, 40, 1234, 9000});
  e.audit_flagged_samples.add("extreme", {3});
  const Diagnosis d = diagnose(e);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.cause, cause::bad_input_data);
  EXPECT_EQ(top.samples, (std::vector<int64_t>{40, 77, 1234, 9000}));
  EXPECT_TRUE(has(top.explanation, "dataset ids 40, 77")) << top.explanation;
  EXPECT_TRUE(has(top.explanation, "2 more training samples as blank")) << top.explanation;
  const CauseScore* unsafe = d.find(cause::unsafe_loss);
  ASSERT_NE(unsafe, nullptr);
  EXPECT_EQ(unsafe->subkind, unsafe_loss_kind::zero_division);
  EXPECT_LT(unsafe->confidence, top.confidence);
  // One blamed sample not flagged: the division is the finding, and nothing is blamed.
  e.blamed_samples = {40, 78};
  const Diagnosis mixed = diagnose(e);
  EXPECT_EQ(mixed.top().cause, cause::unsafe_loss);
  EXPECT_TRUE(mixed.top().samples.empty());
  // Not flagged at all: the same.
  e.audit_flagged_samples = AuditFlags();
  EXPECT_EQ(diagnose(e).top().cause, cause::unsafe_loss);
  // Seen blank in the failing batch (no audit): the samples' fault, said as what was seen.
  e.blamed_samples = {40, 77};
  e.batch_flagged_samples.add("blank", {40, 77});
  const Diagnosis seen_diagnosis = diagnose(e);
  const CauseScore& seen = seen_diagnosis.top();
  EXPECT_EQ(seen.cause, cause::bad_input_data);
  EXPECT_EQ(seen.samples, (std::vector<int64_t>{40, 77}));
  EXPECT_TRUE(has(seen.explanation, "which are blank (every value 0) in the input batch")) << seen.explanation;
}

TEST(AuditFlags, AddSortsMergesAndAnswersByProperty) {
  AuditFlags f(std::vector<int64_t>{9, 2, 9});
  EXPECT_EQ(f.ids, (std::vector<int64_t>{2, 9}));
  f.add("blank", {7, 3, 7});
  f.add("blank", {1});
  f.add("extreme", {});
  EXPECT_EQ(f.with_property("blank"), (std::vector<int64_t>{1, 3, 7}));
  EXPECT_TRUE(f.with_property("extreme").empty());
  EXPECT_TRUE(f.with_property("no such property").empty());
  EXPECT_EQ(f.ids, (std::vector<int64_t>{1, 2, 3, 7, 9}));
  EXPECT_TRUE(f.contains(2));
  EXPECT_FALSE(f.contains(4));
  EXPECT_EQ(f.properties_of(3), std::vector<std::string>{"blank"});
  EXPECT_TRUE(f.properties_of(-1).empty());
}

// log(sigmoid(z)) at 0: the advice is about logits for a binary loss, never softmax.
TEST(Suggestions, ASigmoidModelGetsNoSoftmaxAdvice) {
  Evidence e;
  e.step = 9;
  e.failed_check = "loss";
  e.nonfinite_tensors = {"loss"};
  e.birth_found = true;
  e.birth_op = "aten::log";
  e.birth_phase = "forward";
  e.birth_input_zeros = 3;
  e.replay_ops = {"aten::addmm", "aten::log", "aten::mul", "aten::sigmoid", "aten::sum"};
  e = flat_history(e);
  const Diagnosis d = diagnose(e);
  const CauseScore& top = d.top();
  EXPECT_EQ(top.subkind, unsafe_loss_kind::log_of_zero);
  EXPECT_FALSE(has(top.suggestion, "softmax")) << top.suggestion;
  EXPECT_TRUE(has(top.suggestion, "binary_cross_entropy_with_logits")) << top.suggestion;
  e.birth_op = "aten::exp";
  e.birth_input_zeros = 0;
  e.birth_input_max = 120;
  const Diagnosis exp_d = diagnose(e);
  const CauseScore& exp_top = exp_d.top();
  EXPECT_EQ(exp_top.subkind, unsafe_loss_kind::exp_overflow);
  EXPECT_FALSE(has(exp_top.suggestion, "softmax")) << exp_top.suggestion;
  // With a softmax among the ops the softmax advice stays.
  e.replay_ops.push_back("aten::_softmax");
  EXPECT_TRUE(has(diagnose(e).top().suggestion, "softmax"));
}

// Units that died after the loss grew: the advice is the learning rate, not initialisation.
TEST(Suggestions, FadingGradientsAfterGrowthGetNoInitialisationAdvice) {
  Evidence e;
  e.step = 150;
  e.prior_warnings = {"vanishing_gradients"};
  for (int i = 0; i < 12; ++i) e.loss_history.push_back(0.5 * std::pow(2.0, i));
  e.layer_grad_norms = {{"layers.0.weight", 1e-9}, {"layers.1.weight", 0.04}};
  const Diagnosis d = diagnose(e);
  const CauseScore* v = d.find(cause::vanishing_gradients);
  ASSERT_NE(v, nullptr);
  EXPECT_FALSE(has(v->suggestion, "initialis")) << v->suggestion;
  EXPECT_TRUE(has(v->suggestion, "learning rate")) << v->suggestion;
  // The same fading without growth keeps the initialisation advice.
  e.loss_history.assign(12, 0.5);
  const Diagnosis flat_d = diagnose(e);
  const CauseScore* flat = flat_d.find(cause::vanishing_gradients);
  ASSERT_NE(flat, nullptr);
  EXPECT_TRUE(has(flat->suggestion, "He initialisation"));
}

}  // namespace
}  // namespace nanguard
