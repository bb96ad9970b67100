// The initialisation as a cause: a dead start with out-of-scale parameters, and a recurrent gain
// behind an exploding gradient; and the plans the policy makes of them.
#include <gtest/gtest.h>

#include "nanguard/diagnose/diagnosis.h"
#include "nanguard/repair/policy.h"

namespace nanguard {
namespace {

InitFinding finding(const std::string& parameter, const std::string& problem, double value, double reference,
                    const std::string& scheme) {
  InitFinding f;
  f.parameter = parameter;
  f.problem = problem;
  f.value = value;
  f.reference = reference;
  f.scheme = scheme;
  return f;
}

// Z12: an LSTM whose gate biases saturate every gate from step 0.
Evidence dead_start(bool with_findings) {
  Evidence e;
  e.step = 1;
  e.failed_check = "divergence";
  e.diverged = true;
  e.divergence_kind = "dead_start";
  e.divergence_layer = "lstm";
  e.divergence_finding = "a dead start: vanishing gradients at step 0: the first layer lstm receives no gradient at all";
  e.excursion_start = 0;
  if (with_findings) {
    e.init_findings = {finding("lstm.bias_ih_l0", "saturating_bias", 15, 4, "uniform"),
                       finding("lstm.bias_hh_l0", "saturating_bias", 15, 4, "uniform")};
  }
  return e;
}

// Z2: the backward product of a sine RNN's steps overflows; its recurrent matrix has gain 1.5.
Evidence exploding_rnn(bool with_gain) {
  Evidence e;
  e.step = 30;
  e.failed_check = "gradients";
  e.nonfinite_tensors = {"rnn.weight_hh.grad"};
  e.birth_found = true;
  e.birth_op = "aten::mm";
  e.birth_phase = "backward";
  e.birth_module = "";
  e.layer_grad_norms = {{"rnn.weight_ih", 40.0}, {"rnn.weight_hh", 2.0e12}, {"out.weight", 2.0}};
  e.loss_history = std::vector<double>(20, 1.2);
  e.grad_norm_history = std::vector<double>(20, 8.0);
  if (with_gain) e.init_findings = {finding("rnn.weight_hh", "recurrent_gain", 1.5, 1.0, "orthogonal")};
  return e;
}

// Z7: 20 sigmoid layers at N(0, 1); the first layer's gradient is 0.0045x the last one's.
TEST(InitialisationDiagnosis, AVanishingStartNamesEveryWeightAndItsReplacement) {
  Evidence e = dead_start(false);
  e.divergence_kind = "vanishing_start";
  e.divergence_layer = "layers.1.dense";
  e.divergence_finding = "a vanishing start: vanishing gradients at step 0: the gradient of the first layer "
                         "layers.1.dense is 0.00445x that of the last layer";
  for (int i = 1; i <= 6; ++i) {
    InitFinding f = finding("layers." + std::to_string(i) + ".dense.weight", "weight_scale", 1.0, 0.177, "orthogonal");
    f.gain = 4;
    f.activation = "sigmoid";
    f.input_mean = i == 1 ? 0.0 : 0.5;
    e.init_findings.push_back(f);
  }
  e.init_findings.push_back(finding("layers.7.dense.weight", "weight_scale", 1.0, 0.177, "glorot_uniform"));
  e.init_findings.back().input_mean = 0.5;
  const Diagnosis d = diagnose(e);
  EXPECT_EQ(d.top().cause, cause::bad_initialization);
  EXPECT_EQ(d.top().subkind, "vanishing_start");
  EXPECT_NE(d.top().explanation.find("0.00445x"), std::string::npos) << d.top().explanation;
  // Four findings are listed, the rest counted.
  EXPECT_NE(d.top().explanation.find("layers.4.dense.weight: RMS 1"), std::string::npos) << d.top().explanation;
  EXPECT_EQ(d.top().explanation.find("layers.5.dense.weight: RMS"), std::string::npos) << d.top().explanation;
  EXPECT_NE(d.top().explanation.find("and 3 more (up to 5.65x their reference scale)"), std::string::npos)
      << d.top().explanation;
  EXPECT_EQ(d.top().suggestion,
            "re-initialise layers.1.dense.weight orthogonally with gain 4 (sigmoid), layers.2.dense.weight ... "
            "layers.6.dense.weight (5 parameters) orthogonally with gain 4 (sigmoid), bias centred for inputs at 0.5, "
            "layers.7.dense.weight with Glorot uniform, bias centred for inputs at 0.5, and restart");
  ASSERT_NE(d.find(cause::vanishing_gradients), nullptr);
  EXPECT_EQ(d.find(cause::lr_too_high), nullptr);
}

TEST(InitialisationDiagnosis, ADeadStartWithSaturatingBiasesIsABadInitialisation) {
  const Diagnosis d = diagnose(dead_start(true));
  EXPECT_EQ(d.top().cause, cause::bad_initialization);
  EXPECT_EQ(d.top().subkind, "dead_start");
  EXPECT_NE(d.top().explanation.find("lstm.bias_ih_l0: RMS 15"), std::string::npos) << d.top().explanation;
  // Parameters with the same replacement are named together.
  EXPECT_NE(d.top().suggestion.find("re-initialise lstm.bias_ih_l0, lstm.bias_hh_l0 with its layer's default "
                                    "U(+-1/sqrt(hidden))"),
            std::string::npos)
      << d.top().suggestion;
  ASSERT_NE(d.find(cause::vanishing_gradients), nullptr);
  EXPECT_LT(d.find(cause::vanishing_gradients)->confidence, d.top().confidence);
  // The learning rate has nothing to do with it.
  EXPECT_EQ(d.find(cause::lr_too_high), nullptr);
}

TEST(InitialisationDiagnosis, ADeadStartWithoutOutOfScaleParametersIsNotBlamedOnTheInit) {
  const Diagnosis d = diagnose(dead_start(false));
  EXPECT_EQ(d.top().cause, cause::vanishing_gradients);
  EXPECT_EQ(d.find(cause::bad_initialization), nullptr);
}

TEST(InitialisationDiagnosis, AnExplodingRecurrentGradientWithAGainAboveOneNamesTheGain) {
  const Diagnosis d = diagnose(exploding_rnn(true));
  EXPECT_EQ(d.top().cause, cause::exploding_gradients);
  EXPECT_EQ(d.top().subkind, "recurrent_gain");
  EXPECT_NE(d.top().explanation.find("rnn.weight_hh: largest singular value 1.5"), std::string::npos)
      << d.top().explanation;
  EXPECT_NE(d.top().suggestion.find("re-initialise rnn.weight_hh orthogonally with gain 1"), std::string::npos)
      << d.top().suggestion;
}

TEST(InitialisationDiagnosis, WithoutTheGainFindingTheExplosionKeepsNoSubkind) {
  const Diagnosis d = diagnose(exploding_rnn(false));
  EXPECT_EQ(d.top().cause, cause::exploding_gradients);
  EXPECT_EQ(d.top().subkind, "");
}

TEST(InitialisationPolicy, BothAreRolledBackAndReinitialised) {
  const RepairPolicy policy = RepairPolicy::automatic();
  const RepairLedger ledger(policy.budget);
  using A = RepairAction;
  for (const Evidence& e : {dead_start(true), exploding_rnn(true)}) {
    const auto plan = plan_repair(diagnose(e), e, policy, ledger);
    EXPECT_EQ(plan, (std::vector<A>{A::rollback, A::reinitialize}));
  }
  // An explosion without a gain to replace keeps the clip.
  const Evidence plain = exploding_rnn(false);
  EXPECT_EQ(plan_repair(diagnose(plain), plain, policy, ledger), (std::vector<A>{A::rollback, A::enable_clipping}));
}

TEST(InitialisationPolicy, ReinitializeIsDroppedWithoutFindings) {
  RepairPolicy policy = RepairPolicy::automatic();
  policy.actions[cause::exploding_gradients] = {RepairAction::reinitialize};
  const RepairLedger ledger(policy.budget);
  const Evidence e = exploding_rnn(false);
  EXPECT_EQ(plan_repair(diagnose(e), e, policy, ledger), std::vector<RepairAction>{RepairAction::skip_step});
  EXPECT_EQ(repair_action_from_string("reinitialize"), RepairAction::reinitialize);
  EXPECT_STREQ(to_string(RepairAction::reinitialize), "reinitialize");
}

}  // namespace
}  // namespace nanguard
