// nanguard fit --nproc-per-node N: N local ranks train one model (gloo on loopback); rank 0
// writes the run folder; a bad sample in one rank's shard is one incident, quarantined on all.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {
namespace fs = std::filesystem;

TEST(CliFitDistributed, TwoRanksTrainAsOneProcessAtTheGlobalBatch) {
  TempDir dir;
  write_tiny_csv(dir.path());
  write_bytes(dir / "tiny.toml", tiny_config());
  // One process at batch 16 and two at batch 8 see the same samples per step.
  CliResult one = run_cli({"fit", "tiny.toml", "--out", "one", "--quiet", "--batch-size", "16"}, dir.path());
  ASSERT_EQ(one.code, 0) << describe(one);
  CliResult two = run_cli({"fit", "tiny.toml", "--out", "two", "--quiet", "--batch-size", "8", "--nproc-per-node", "2"},
                          dir.path());
  ASSERT_EQ(two.code, 0) << describe(two);
  const auto s1 = nlohmann::json::parse(read_bytes(dir / "one" / "summary.json"));
  const auto s2 = nlohmann::json::parse(read_bytes(dir / "two" / "summary.json"));
  EXPECT_EQ(s2["steps"], s1["steps"]);
  EXPECT_NEAR(s2["test_accuracy"].get<double>(), s1["test_accuracy"].get<double>(), 1e-9);
  const auto& d = s2["distributed"];
  EXPECT_EQ(d["world_size"], 2);
  EXPECT_EQ(d["global_batch_size"], 16);
  EXPECT_EQ(d["weights_identical"], true);
  ASSERT_EQ(d["ranks"].size(), 2u);
  EXPECT_EQ(d["ranks"][0]["weights_digest"], d["ranks"][1]["weights_digest"]);
  EXPECT_EQ(d["ranks"][1]["rank"], 1);
  EXPECT_FALSE(fs::exists(dir / "runs"));  // the other rank writes nothing
}

TEST(CliFitDistributed, ABadSampleOfRankOneIsQuarantinedOnEveryRank) {
  TempDir dir;
  write_tiny_csv(dir.path(), 48, /*nan_row=*/9);  // unshuffled: step 0's second half, rank 1's shard at batch 8
  std::string config = tiny_config();
  config.replace(config.find("seed = 1"), 8, "seed = 1\nshuffle = false");
  write_bytes(dir / "tiny.toml", config);
  CliResult r = run_cli({"fit", "tiny.toml", "--out", "run", "--quiet", "--batch-size", "8", "--nproc-per-node", "2",
                         "--epochs", "2"},
                        dir.path());
  ASSERT_EQ(r.code, 0) << describe(r);
  const auto s = nlohmann::json::parse(read_bytes(dir / "run" / "summary.json"));
  EXPECT_EQ(s["guard"]["incidents"], 1) << s.dump(1);
  EXPECT_EQ(s["distributed"]["weights_identical"], true);
  const std::string events = read_bytes(dir / "run" / "events.jsonl");
  EXPECT_TRUE(contains_all(events, {"\"kind\":\"incident\"", "\"rank\":1", "bad_input_data", "quarantine_samples"}));
}

TEST(CliFitDistributed, BadProcessCountIsBadInput) {
  TempDir dir;
  write_tiny_csv(dir.path());
  write_bytes(dir / "tiny.toml", tiny_config());
  const CliResult r = run_cli({"fit", "tiny.toml", "--quiet", "--nproc-per-node", "0"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--nproc-per-node", "positive integer"}));
}

}  // namespace
}  // namespace nanguard::cli_test
