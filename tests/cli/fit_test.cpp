// nanguard fit: 0 for a run that trains, 1 when the guard stops it, 2 for a bad flag, config
// or data file, 3 for a file that cannot be read.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {
namespace fs = std::filesystem;

TEST(CliFit, TrainsATinyRunAndWritesItsRunFolder) {
  TempDir dir;
  write_tiny_run(dir.path());
  const CliResult r = run_cli({"fit", "tiny.toml", "--out", "run", "--quiet"}, dir.path());
  ASSERT_EQ(r.code, 0) << describe(r);
  for (const char* file : {"summary.json", "history.csv", "events.jsonl", "env.json", "config.toml", "weights.pt",
                           "report.html"}) {
    EXPECT_TRUE(fs::exists(dir / "run" / file)) << file << "\n" << describe(r);
  }
  const auto summary = nlohmann::json::parse(read_bytes(dir / "run" / "summary.json"));
  EXPECT_EQ(summary["epochs"], 1);
  EXPECT_EQ(summary["train_samples"], 48);
  EXPECT_EQ(summary["guard"]["incidents"], 0);
}

TEST(CliFit, MissingConfigIsAnIoError) {
  TempDir dir;
  const CliResult r = run_cli({"fit", "missing.toml", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"missing.toml", "does not exist"}));
  EXPECT_FALSE(fs::exists(dir / "runs"));
}

TEST(CliFit, UnknownConfigKeyNamesTheKeyAndItsLine) {
  TempDir dir;
  write_tiny_run(dir.path());
  std::string text = tiny_config();
  text.replace(text.find("seed = 1"), 8, "sed = 1");
  write_bytes(dir / "tiny.toml", text);
  const CliResult r = run_cli({"fit", "tiny.toml", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"fit.sed", "tiny.toml:16", "seed"}));
}

TEST(CliFit, CorruptDataFileNamesTheFileAndLine) {
  TempDir dir;
  write_tiny_run(dir.path());
  write_bytes(dir / "train.csv", "x1,x2,x3,x4,y\n0,0,3,0,2\n3,0,0,zero,0\n");
  const CliResult r = run_cli({"fit", "tiny.toml", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"train.csv", "line 3", "zero"}));
}

TEST(CliFit, MissingDataFileIsAnIoError) {
  TempDir dir;
  write_tiny_run(dir.path());
  fs::remove(dir / "test.csv");
  const CliResult r = run_cli({"fit", "tiny.toml", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"data.test", "test.csv", "does not exist"}));
}

TEST(CliFit, BadFlagValuesAreBadInput) {
  TempDir dir;
  write_tiny_run(dir.path());
  CliResult r = run_cli({"fit", "tiny.toml", "--epochs", "0", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--epochs", "expected a positive integer, found '0'"}));
  r = run_cli({"fit", "tiny.toml", "--seed", "-3", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--seed", "non-negative", "'-3'"}));
  r = run_cli({"fit", "tiny.toml", "--device", "tpu", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"device", "tpu"}));
}

TEST(CliFit, SpentRepairBudgetStopsWithExitCode1) {
  TempDir dir;
  // A NaN in a training sample, and a budget of one incident: the first incident stops the run.
  write_tiny_run(dir.path(), "\n[guard]\nmax_incidents = 1\n", /*nan_row=*/20);
  const CliResult r = run_cli({"fit", "tiny.toml", "--out", "run", "--quiet"}, dir.path());
  EXPECT_EQ(r.code, 1) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"training stopped", "events.jsonl"}));
  // The run folder is still written, with the incident.
  EXPECT_TRUE(fs::exists(dir / "run" / "summary.json"));
  EXPECT_TRUE(contains_all(read_bytes(dir / "run" / "events.jsonl"), {"\"incident\""}));
}

}  // namespace
}  // namespace nanguard::cli_test
