// The incident as bytes for the data-parallel broadcast: every field comes back, NaN and Inf
// included; bytes that are not an incident are a clear error.
#include "guard/incident_wire.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::detail {
namespace {

TEST(IncidentWire, RoundTripsEvidenceAndDiagnosisWithNonFiniteNumbers) {
  Incident in;
  in.step = 17;
  in.evidence.step = 17;
  in.evidence.rank = 1;
  in.evidence.host = "node-b";
  in.evidence.failed_ranks = {1, 2};
  in.evidence.birth_op = "aten::log";
  in.evidence.birth_phase = "forward";
  in.evidence.blamed_samples = {43, 45};
  in.evidence.loss_history = {2.3, std::numeric_limits<double>::infinity()};
  in.evidence.optimizer_epsilon = std::numeric_limits<double>::quiet_NaN();
  in.evidence.audit_flagged_samples.add("non_finite", {43, 45, 99});
  in.evidence.nonfinite_samples.push_back(SampleEvidence{43, 3, 1, {2}, 0.5, 0});
  in.evidence.init_findings.push_back(InitFinding{"rnn.weight_hh", "recurrent_gain", 1.5, 1, "orthogonal", 0});
  monitor::Warning w;
  w.detector = "loss_spike";
  w.step = 16;
  w.forecast_steps = 3;
  in.evidence.monitor_warnings.push_back(w);
  CauseScore top;
  top.cause = "bad_input_data";
  top.confidence = 0.9;
  top.samples = {43, 45};
  in.diagnosis.ranked.push_back(top);
  in.actions = {"quarantine_samples"};

  const auto out = decode_incident(encode_incident(in));
  EXPECT_EQ(out->step, 17);
  EXPECT_EQ(out->evidence.rank, 1);
  EXPECT_EQ(out->evidence.host, "node-b");
  EXPECT_EQ(out->evidence.failed_ranks, (std::vector<int>{1, 2}));
  EXPECT_EQ(out->evidence.birth_op, "aten::log");
  EXPECT_EQ(out->evidence.blamed_samples, (std::vector<int64_t>{43, 45}));
  ASSERT_EQ(out->evidence.loss_history.size(), 2u);
  EXPECT_TRUE(std::isinf(out->evidence.loss_history[1]));
  EXPECT_TRUE(std::isnan(out->evidence.optimizer_epsilon));
  EXPECT_EQ(out->evidence.audit_flagged_samples.with_property("non_finite"), (std::vector<int64_t>{43, 45, 99}));
  ASSERT_EQ(out->evidence.nonfinite_samples.size(), 1u);
  EXPECT_EQ(out->evidence.nonfinite_samples[0].features, (std::vector<int64_t>{2}));
  ASSERT_EQ(out->evidence.init_findings.size(), 1u);
  EXPECT_EQ(out->evidence.init_findings[0].scheme, "orthogonal");
  ASSERT_EQ(out->evidence.monitor_warnings.size(), 1u);
  EXPECT_EQ(out->evidence.monitor_warnings[0].forecast_steps, 3);
  EXPECT_EQ(out->diagnosis.top().cause, "bad_input_data");
  EXPECT_EQ(out->diagnosis.top().samples, (std::vector<int64_t>{43, 45}));
  EXPECT_EQ(out->actions, (std::vector<std::string>{"quarantine_samples"}));
}

TEST(IncidentWire, BytesThatAreNotAnIncidentAreAValueError) {
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { decode_incident("not cbor"); }, {"not an encoded incident"}));
  Incident empty;  // no diagnosis
  EXPECT_TRUE(
      nanguard::testing::throws_with<ValueError>([&] { decode_incident(encode_incident(empty)); }, {"without a diagnosis"}));
}

}  // namespace
}  // namespace nanguard::detail
