// nanguard zoo run ID --nproc N --fault-rank R: a scenario run data-parallel with its fault on
// one rank. Bad samples in rank 1's copy of the data are quarantined on every rank; a transient
// NaN in rank 1's gradient is recomputed and rank 1 named; a rank that dies mid-epoch ends the
// run with an error naming it. Runs use the tiny stand-in for MNIST (random images).
#include <chrono>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {

nlohmann::json zoo_run(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), {"zoo", "run"});
  for (const char* a : {"--mnist", "mnist", "--train-samples", "1024", "--out", "z"}) args.emplace_back(a);
  const CliResult r = run_cli(args, dir.path(), 240);
  EXPECT_EQ(r.code, 0) << describe(r);
  if (r.code != 0) return nlohmann::json();
  return nlohmann::json::parse(read_bytes(dir / "z" / "result.json"));
}

TEST(CliZooDistributed, BadSamplesOnRankOneAreQuarantinedOnEveryRank) {
  TempDir dir;
  write_fake_mnist(dir / "mnist", 1024, 200);
  const auto r = zoo_run(dir, {"Z5", "--nproc", "2", "--fault-rank", "1", "--epochs", "1"});
  ASSERT_FALSE(r.is_null());
  EXPECT_EQ(r["world_size"], 2);
  EXPECT_EQ(r["fault_rank"], 1);
  EXPECT_EQ(r["top_cause"], "bad_input_data") << r.dump(1);
  EXPECT_EQ(r["samples"], nlohmann::json::array({7, 123, 345, 678, 901})) << r.dump(1);
  ASSERT_GE(r["incidents"].get<int>(), 1);
  for (const auto& rank : r["incident_ranks"]) EXPECT_EQ(rank, 1) << r.dump(1);  // the clean rank never failed
  EXPECT_EQ(r["rank"], 1);
  EXPECT_EQ(r["weights_identical"], true);
  EXPECT_TRUE(r["finite_at_end"].get<bool>());
}

TEST(CliZooDistributed, ATransientNaNOnRankOneIsRecomputedAndNamesIt) {
  TempDir dir;
  write_fake_mnist(dir / "mnist", 1024, 200);
  // Z6 writes its NaN at step 40: the third epoch of 16 steps.
  const auto r = zoo_run(dir, {"Z6", "--nproc", "2", "--fault-rank", "1", "--epochs", "3"});
  ASSERT_FALSE(r.is_null());
  EXPECT_EQ(r["top_cause"], "transient_fault") << r.dump(1);
  EXPECT_EQ(r["incident_ranks"], nlohmann::json::array({1})) << r.dump(1);
  EXPECT_EQ(r["actions"], nlohmann::json::array({"recompute"})) << r.dump(1);
  EXPECT_EQ(r["skipped_steps"], 0);
  EXPECT_EQ(r["weights_identical"], true);
}

TEST(CliZooDistributed, ARankKilledMidEpochEndsTheRunNamingIt) {
  TempDir dir;
  write_fake_mnist(dir / "mnist", 1024, 200);
  const auto start = std::chrono::steady_clock::now();
  const CliResult r = run_cli({"zoo", "run", "Z0", "--nproc", "2", "--fault-rank", "1", "--kill-step", "5", "--mnist",
                               "mnist", "--train-samples", "1024", "--epochs", "1", "--out", "z"},
                              dir.path(), 120);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.code, 7) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"rank 1", "signal 9"})) << describe(r);
  EXPECT_LT(seconds, 60.0);
  EXPECT_FALSE(std::filesystem::exists(dir / "z" / "result.json"));  // no result from a broken run
}

TEST(CliZooDistributed, BadRankArgumentsAreBadInput) {
  TempDir dir;
  write_fake_mnist(dir / "mnist", 128, 64);
  const std::vector<std::string> base{"zoo", "run", "Z5", "--mnist", "mnist", "--out", "z"};
  auto with = [&](std::initializer_list<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra);
    return run_cli(args, dir.path());
  };
  CliResult r = with({"--nproc", "2", "--fault-rank", "2"});
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--fault-rank 2", "0-1"})) << describe(r);
  r = with({"--fault-rank", "1"});
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--fault-rank 1", "--nproc"})) << describe(r);
  r = with({"--nproc", "2", "--kill-step", "3"});
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--kill-step", "--fault-rank"})) << describe(r);
  r = with({"--nproc", "0"});
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--nproc", "a number of processes"})) << describe(r);
  r = with({"--nproc", "2", "--baseline", "none"});
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"guarded baseline", "none"})) << describe(r);
}

}  // namespace
}  // namespace nanguard::cli_test
