// nanguard data describe|check|fix: 0 when it ran (check: and passed), 6 when check finds more
// than its rules allow, 2 for a bad flag, rule or data file, 3 for a file that cannot be read.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {
namespace fs = std::filesystem;

class CliData : public ::testing::Test {
 protected:
  void SetUp() override { write_tiny_csv(dir_.path(), 48, /*nan_row=*/-1); }
  TempDir dir_;
};

TEST_F(CliData, DescribeSummarisesAFile) {
  const CliResult r = run_cli({"data", "describe", "train.csv", "--label-column", "y", "--json"}, dir_.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  ASSERT_TRUE(nlohmann::json::accept(r.out)) << r.out;
  EXPECT_TRUE(contains_all(r.out, {"\"x1\"", "\"x4\""}));
}

TEST_F(CliData, DescribeOfAMissingFileIsAnIoError) {
  const CliResult r = run_cli({"data", "describe", "nothing.csv"}, dir_.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"nothing.csv"}));
}

TEST_F(CliData, DescribeOfACorruptFileNamesIt) {
  // An NPY magic followed by a header that is not one.
  write_bytes(dir_ / "broken.npy", std::string("\x93NUMPY\x01\x00\x10\x00", 10) + "{'descr': 12345}");
  CliResult r = run_cli({"data", "describe", "broken.npy"}, dir_.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"broken.npy"}));
  write_bytes(dir_ / "cells.csv", "a,b\n1,2\n3,four\n");
  r = run_cli({"data", "describe", "cells.csv"}, dir_.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"cells.csv", "line 3", "four"}));
}

TEST_F(CliData, DescribeRejectsABadFlag) {
  const CliResult r = run_cli({"data", "describe", "train.csv", "--delimiter", ";;"}, dir_.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--delimiter", ";;"}));
}

TEST_F(CliData, CheckPassesCleanDataAndExits6OnAFinding) {
  CliResult r = run_cli({"data", "check", "train.csv", "--label-column", "y"}, dir_.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"train.csv: passed"}));

  write_tiny_csv(dir_.path(), 48, /*nan_row=*/7);
  r = run_cli({"data", "check", "train.csv", "--label-column", "y", "--out", "findings.json"}, dir_.path());
  EXPECT_EQ(r.code, 6) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"error", "x1", "FAILED"}));
  const auto findings = nlohmann::json::parse(read_bytes(dir_ / "findings.json"));
  EXPECT_TRUE(findings.contains("findings")) << findings.dump(2);
  // Allowing what it found passes.
  r = run_cli(
      {"data", "check", "train.csv", "--label-column", "y", "--rules", "forbid-nonfinite=false,max-missing=0.1"},
      dir_.path());
  EXPECT_EQ(r.code, 0) << describe(r);
}

TEST_F(CliData, CheckRejectsAnUnknownRule) {
  const CliResult r = run_cli({"data", "check", "train.csv", "--rules", "max-misssing=0.1"}, dir_.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"max-misssing"}));
}

TEST_F(CliData, FixWritesARepairedCopyAndItsReport) {
  write_tiny_csv(dir_.path(), 48, /*nan_row=*/7);
  const std::string before = read_bytes(dir_ / "train.csv");
  const CliResult r = run_cli(
      {"data", "fix", "train.csv", "--label-column", "y", "--impute", "median", "--out", "fixed.csv"}, dir_.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"48 rows in", "1 values imputed", "fixed.csv.changes.json"}));
  EXPECT_EQ(read_bytes(dir_ / "train.csv"), before);
  EXPECT_TRUE(fs::exists(dir_ / "fixed.csv.changes.json"));
  EXPECT_EQ(read_bytes(dir_ / "fixed.csv").find("nan"), std::string::npos);
}

TEST_F(CliData, FixRefusesBadInput) {
  const std::string before = read_bytes(dir_ / "train.csv");
  CliResult r = run_cli({"data", "fix", "train.csv", "--impute", "mode", "--out", "fixed.csv"}, dir_.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--impute", "mode"}));
  r = run_cli({"data", "fix", "train.csv", "--impute", "mean", "--out", "train.csv"}, dir_.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"'train.csv'", "never overwrites its input"}));
  EXPECT_EQ(read_bytes(dir_ / "train.csv"), before);
}

}  // namespace
}  // namespace nanguard::cli_test
