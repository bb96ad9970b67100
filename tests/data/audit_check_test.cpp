#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/data/audit.h"
#include "nanguard/data/idx.h"
#include "nanguard/diagnose/diagnosis.h"
#include "nanguard/diagnose/evidence.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

using nanguard::testing::TempDir;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

// The dataset ids the NaN zoo corrupts in Z5 and Z8.
const std::vector<int64_t> kCorrupted{7, 123, 345, 678, 901};

// MNIST-like images: float32 [n, 28, 28] in [0, 1], a bright stroke on a dark background.
torch::Tensor fake_mnist(int64_t n) {
  torch::manual_seed(5);
  torch::Tensor x = torch::zeros({n, 28, 28});
  const torch::Tensor strokes = torch::rand({n, 12, 12});
  x.narrow(1, 8, 12).narrow(2, 8, 12).copy_((strokes > 0.5).to(torch::kFloat32) * strokes);
  return x;
}

const Finding* find_rule(const std::vector<Finding>& findings, const std::string& rule, const std::string& column = "") {
  for (const auto& f : findings) {
    if (f.rule == rule && (column.empty() || f.column == column)) return &f;
  }
  return nullptr;
}

TEST(AuditCheck, Z5NonFiniteSamplesFoundByIndex) {
  TempDir dir;
  torch::Tensor x = fake_mnist(1200);
  for (size_t i = 0; i < kCorrupted.size(); ++i) {
    x[kCorrupted[i]][14][14] = i < 3 ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  }
  write_idx(dir / "train-images-idx3-ubyte", x);
  const AuditReport r = describe_file(dir / "train-images-idx3-ubyte");
  ASSERT_NE(r.flag("non_finite"), nullptr);
  EXPECT_EQ(r.flag("non_finite")->samples, kCorrupted);
  EXPECT_EQ(r.columns[0].nan, 3);
  EXPECT_EQ(r.columns[0].pos_inf, 2);
  const auto findings = check_report(r, CheckRules());
  EXPECT_TRUE(check_failed(findings));
  const Finding* f = find_rule(findings, "non_finite_samples");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, "error");
  EXPECT_EQ(f->samples, kCorrupted);
  EXPECT_NE(f->message.find("7, 123, 345, 678, 901"), std::string::npos) << f->message;
}

TEST(AuditCheck, Z8ExtremeSamplesFoundByIndex) {
  TempDir dir;
  torch::Tensor x = fake_mnist(1200);
  for (int64_t id : kCorrupted) x[id].mul_(1e6);
  write_idx(dir / "train-images-idx3-ubyte", x);
  const AuditReport r = describe_file(dir / "train-images-idx3-ubyte");
  ASSERT_NE(r.flag("extreme"), nullptr);
  EXPECT_EQ(r.flag("extreme")->samples, kCorrupted);
  EXPECT_EQ(r.flagged_samples(), kCorrupted);  // nothing else is flagged in clean images
  const auto findings = check_report(r, CheckRules());
  EXPECT_TRUE(check_failed(findings));
  const Finding* f = find_rule(findings, "bad_samples", "extreme");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->samples, kCorrupted);
  // The per-sample maximum column names them as z-score outliers too.
  const ColumnSummary* sample_max = nullptr;
  for (const auto& c : r.columns) {
    if (c.name == "sample_max") sample_max = &c;
  }
  ASSERT_NE(sample_max, nullptr);
  EXPECT_EQ(sample_max->zscore_outliers, 5);
  // A range check catches them as well when the range is known.
  const AuditReport ranged = describe_file(dir / "train-images-idx3-ubyte", AuditOptions().range_min(0).range_max(1));
  ASSERT_NE(ranged.flag("out_of_range"), nullptr);
  EXPECT_EQ(ranged.flag("out_of_range")->samples, kCorrupted);
}

TEST(AuditCheck, CleanImagesPass) {
  const auto flags = audit_samples(fake_mnist(1200), AuditOptions().range_min(0).range_max(1));
  EXPECT_TRUE(flags.empty()) << flags[0].kind << " " << flags[0].count;
}

TEST(AuditCheck, AuditSamplesIsFastOnMnistSize) {
  const torch::Tensor x = fake_mnist(60000);
  const auto start = std::chrono::steady_clock::now();
  const auto flags = audit_samples(x);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(flags.empty());
  EXPECT_LT(seconds, 2.0);  // about 0.1 s; generous for loaded machines
}

TEST(AuditCheck, RulesThresholds) {
  TempDir dir;
  std::string text = "a,b\n";
  for (int i = 0; i < 100; ++i) text += i == 4 ? "1,\n" : (i == 50 ? "1000,2\n" : "1,2\n");
  text.replace(text.find("1,2\n"), 4, "1.5,2\n");
  write_bytes(dir / "r.csv", text);
  const AuditReport r = describe_file(dir / "r.csv", AuditOptions().zscore_limit(4));
  // Defaults: any missing value fails, outliers fail.
  auto findings = check_report(r, CheckRules());
  EXPECT_TRUE(check_failed(findings));
  const Finding* missing = find_rule(findings, "missing", "b");
  ASSERT_NE(missing, nullptr);
  EXPECT_EQ(missing->severity, "error");
  EXPECT_EQ(missing->samples, (std::vector<int64_t>{4}));
  const Finding* outliers = find_rule(findings, "outliers", "a");
  ASSERT_NE(outliers, nullptr);
  EXPECT_EQ(outliers->samples, (std::vector<int64_t>{50}));
  // Relaxed rules pass; the findings stay as warnings.
  const CheckRules relaxed = parse_check_rules("max-missing=0.05, max-outliers=1");
  findings = check_report(r, relaxed);
  EXPECT_FALSE(check_failed(findings));
  ASSERT_NE(find_rule(findings, "missing", "b"), nullptr);
  EXPECT_EQ(find_rule(findings, "missing", "b")->severity, "warning");
  EXPECT_EQ(find_rule(findings, "outliers", "a")->severity, "warning");
  // Constant column b (all 2) is a warning unless forbidden.
  ASSERT_NE(find_rule(findings, "constant", "b"), nullptr);
  EXPECT_TRUE(check_failed(check_report(r, parse_check_rules("max-missing=1,max-outliers=-1,forbid-constant"))));
}

TEST(AuditCheck, RuleParsingRejectsBadRules) {
  const CheckRules r = parse_check_rules("max-missing=0.1,forbid-nonfinite=false,zscore=3,max-bad-samples=2");
  EXPECT_DOUBLE_EQ(r.max_missing_fraction(), 0.1);
  EXPECT_FALSE(r.forbid_nonfinite());
  EXPECT_DOUBLE_EQ(r.zscore_limit(), 3);
  EXPECT_EQ(r.max_bad_samples(), 2);
  EXPECT_TRUE(throws_with<ValueError>([] { parse_check_rules("max-misssing=1"); }, {"unknown rule", "max-misssing"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_check_rules("max-missing=abc"); }, {"max-missing", "abc"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_check_rules("forbid-constant=maybe"); }, {"forbid-constant", "maybe"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_check_rules("zscore=-1"); }, {"zscore"}));
}

TEST(AuditCheck, JsonCarriesFindingsAndVerdict) {
  TempDir dir;
  write_bytes(dir / "j.csv", "a\n1\nnan\n3\n");
  const AuditReport r = describe_file(dir / "j.csv");
  const auto findings = check_report(r, CheckRules());
  const std::string json = audit_to_json(r, &findings);
  EXPECT_NE(json.find("\"passed\": false"), std::string::npos);
  EXPECT_NE(json.find("\"non_finite\""), std::string::npos);
}

}  // namespace
}  // namespace nanguard::data

namespace nanguard::data {
namespace {

TEST(AuditCheck, QuickAuditNamesDatasetIds) {
  torch::Tensor x = fake_mnist(200);
  x[5][3][3] = std::numeric_limits<float>::quiet_NaN();
  x[40].mul_(1e6);
  torch::Tensor y = torch::randint(0, 10, {200}, torch::kInt64);
  y[77] = -3;
  const torch::Tensor ids = torch::arange(1000, 1200, torch::kInt64);  // a subset keeps its ids
  const QuickAudit q = quick_audit(x, y, ids, AuditOptions().range_min(0).range_max(1));
  EXPECT_EQ(q.samples, 200);
  EXPECT_EQ(q.flagged_ids, (std::vector<int64_t>{1005, 1040, 1077}));
  const std::string json = q.to_json();
  EXPECT_NE(json.find("\"label_out_of_range\""), std::string::npos);
  EXPECT_NE(json.find("\"extreme\""), std::string::npos);
}

TEST(AuditCheck, DiagnosisNamesSamplesTheAuditFlagged) {
  Evidence e;
  e.step = 12;
  e.failed_check = "loss";
  e.batch_size = 32;
  SampleEvidence s;
  s.id = 123;
  s.row = 4;
  s.nonfinite = 1;
  e.nonfinite_samples.push_back(s);
  const Diagnosis without = diagnose(e);
  ASSERT_FALSE(without.ranked.empty());
  EXPECT_EQ(without.ranked[0].explanation.find("data audit"), std::string::npos);
  e.audit_flagged_samples = {7, 123, 345};
  const Diagnosis with = diagnose(e);
  EXPECT_EQ(with.ranked[0].cause, "bad_input_data");
  EXPECT_NE(with.ranked[0].explanation.find("The data audit had flagged id 123 before training"), std::string::npos)
      << with.ranked[0].explanation;
}

}  // namespace
}  // namespace nanguard::data
