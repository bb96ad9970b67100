// nanguard evaluate: 0 for weights that fit the config's model, 2 for weights of another model
// or a bad flag, 3 for a missing weights or config file.
#include <gtest/gtest.h>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {

TEST(CliEvaluate, EvaluatesTheWeightsOfAFitAndNamesBadWeights) {
  TempDir dir;
  write_tiny_run(dir.path());
  const CliResult fit = run_cli({"fit", "tiny.toml", "--out", "run", "--quiet"}, dir.path());
  ASSERT_EQ(fit.code, 0) << describe(fit);

  CliResult r = run_cli({"evaluate", "tiny.toml", "--weights", "run/weights.pt"}, dir.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"24 samples (test split)", "loss", "accuracy"}));

  r = run_cli({"evaluate", "tiny.toml", "--weights", "run/nope.pt"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"run/nope.pt", "does not exist"}));

  // Weights of another model (a hidden layer of 8 before the output).
  std::string deeper = tiny_config();
  deeper.replace(deeper.find("units = 3"), 9,
                 "units = 8\nactivation = \"relu\"\n[[model.layers]]\ntype = \"dense\"\nunits = 3");
  write_bytes(dir / "deeper.toml", deeper);
  r = run_cli({"evaluate", "deeper.toml", "--weights", "run/weights.pt"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"run/weights.pt", "'layers.0.dense.weight'", "[3, 4]", "[8, 4]"}));
}

TEST(CliEvaluate, BadFlagOrMissingConfig) {
  TempDir dir;
  write_tiny_run(dir.path());
  CliResult r = run_cli({"evaluate", "tiny.toml", "--weights", "w.pt", "--split", "validation"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--split", "validation"}));
  r = run_cli({"evaluate", "gone.toml", "--weights", "w.pt"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"gone.toml", "does not exist"}));
}

}  // namespace
}  // namespace nanguard::cli_test
