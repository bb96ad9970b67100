// nanguard zoo list|run|table: 0 when the scenarios ran, 2 for an unknown scenario, baseline or
// flag, 3 when MNIST or the output folder cannot be used. Runs use a tiny stand-in for MNIST
// (write_fake_mnist: random 28x28 images), never the real data set.
#include <cstdint>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {
namespace fs = std::filesystem;

TEST(CliZoo, ListNamesEveryScenario) {
  TempDir dir;
  const CliResult r = run_cli({"zoo", "list"}, dir.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"Z0", "Z1", "Z2", "Z3", "Z4", "Z5", "Z6", "Z7", "Z8", "healthy MLP", "Z9", "Z15",
                                   "lr_too_high/divergence", "optimizer_setting/zero_epsilon", "fully_masked_row"}));
}

TEST(CliZoo, RunWritesItsResult) {
  TempDir dir;
  write_fake_mnist(dir / "mnist", 128, 64);
  const CliResult r = run_cli({"zoo", "run", "Z0", "--baseline", "none", "--mnist", "mnist", "--train-samples", "128",
                               "--epochs", "1", "--out", "z0"},
                              dir.path());
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"Z0 none seed 0", "z0/result.json", "not diagnosed by this baseline"}));
  const auto result = nlohmann::json::parse(read_bytes(dir / "z0" / "result.json"));
  EXPECT_EQ(result["scenario"], "Z0");
}

// The healthy scenario's right answer is no cause: a quiet run says so, not "- (wrong)".
TEST(CliZoo, RunOfTheHealthyScenarioCallsNoCauseCorrect) {
  TempDir dir;
  write_fake_mnist(dir / "mnist", 128, 64);
  const CliResult r = run_cli({"zoo", "run", "Z0", "--mnist", "mnist", "--train-samples", "128", "--epochs", "1",
                               "--out", "z0"},
                              dir.path());
  ASSERT_EQ(r.code, 0) << describe(r);
  const auto result = nlohmann::json::parse(read_bytes(dir / "z0" / "result.json"));
  if (result["detected"].get<bool>()) GTEST_SKIP() << "the guard warned on the stand-in data: " << r.out;
  EXPECT_TRUE(contains_all(r.out, {"Z0 nanguard seed 0", "cause none (correct)"})) << r.out;
}

TEST(CliZoo, RunRejectsUnknownScenarioAndBaseline) {
  TempDir dir;
  CliResult r = run_cli({"zoo", "run", "Z99", "--out", "out"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"'Z99'", "Z0", "Z8"}));
  r = run_cli({"zoo", "run", "Z0", "--baseline", "hope", "--out", "out"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"'hope'", "nanguard"}));
}

TEST(CliZoo, RunWithoutMnistIsAnIoError) {
  TempDir dir;
  const CliResult r = run_cli({"zoo", "run", "Z0", "--mnist", "no-mnist-here", "--out", "out"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"no-mnist-here", "train-images-idx3-ubyte", "--mnist"}));
}

TEST(CliZoo, TableOfOneScenarioWritesTheTable) {
  TempDir dir;
  write_fake_mnist(dir / "mnist", 128, 64);
  const CliResult r = run_cli({"zoo", "table", "--only", "Z0", "--baselines", "none,nanguard", "--seeds", "1",
                               "--train-samples", "128", "--epochs", "1", "--mnist", "mnist", "--python",
                               (dir / "no-python").string(), "--out", "table"},
                              dir.path());
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(fs::exists(dir / "table" / "table.md"));
  EXPECT_TRUE(fs::exists(dir / "table" / "table.json"));
  EXPECT_TRUE(contains_all(r.out, {"table/table.md"}));
}

TEST(CliZoo, TableRejectsBadSelections) {
  TempDir dir;
  CliResult r = run_cli({"zoo", "table", "--only", "Z0,Z42", "--out", "table"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"'Z42'"}));
  r = run_cli({"zoo", "table", "--seeds", "0", "--out", "table"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--seeds"}));
  r = run_cli({"zoo", "table", "--baselines", "oracle", "--out", "table"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"'oracle'"}));
  EXPECT_FALSE(fs::exists(dir / "table"));  // rejected before the output folder was made
}

}  // namespace
}  // namespace nanguard::cli_test
