#include "nanguard/train/run_config.h"

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;

const char* kGood = R"(name = "tiny"
loss = "sparse_categorical_crossentropy"
optimizer = { type = "sgd", learning_rate = 0.1 }
metrics = ["accuracy"]

[data]
source = "csv"
train = "train.csv"
label = "y"
validation = "split"
validation_fraction = 0.25

[fit]
epochs = 3
batch_size = 16
seed = 7

[model]
input_shape = [4]
[[model.layers]]
type = "dense"
units = 3
activation = "softmax"
)";

TEST(RunConfig, ParsesEverySection) {
  RunConfig c = parse_run_config(kGood, "/some/dir/tiny.toml");
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.data.kind, "csv");
  EXPECT_EQ(c.data.train, std::filesystem::path("/some/dir/train.csv"));
  EXPECT_EQ(c.data.label, "y");
  EXPECT_EQ(c.data.validation, "split");
  EXPECT_DOUBLE_EQ(c.data.validation_fraction, 0.25);
  EXPECT_EQ(c.fit.epochs, 3);
  EXPECT_EQ(c.fit.batch_size, 16);
  EXPECT_EQ(c.fit.seed, 7u);
  EXPECT_EQ(c.data.seed, 7u);
  EXPECT_EQ(c.model.layers.size(), 1u);
  EXPECT_EQ(c.compile.metrics, std::vector<std::string>{"accuracy"});
  EXPECT_DOUBLE_EQ(c.compile.optimizer.effective_learning_rate(), 0.1);
}

TEST(RunConfig, MnistSourceDefaultsToPixelScale) {
  std::string text = kGood;
  text.replace(text.find("source = \"csv\""), 14, "source = \"mnist\"\ndir = \"d\"");
  RunConfig c = parse_run_config(text, "x.toml");
  EXPECT_DOUBLE_EQ(c.data.scale, 255.0);
}

TEST(RunConfig, UnknownTopLevelKeyNamesKeyAndLine) {
  std::string text = std::string("epochz = 3\n") + kGood;
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(text, "bad.toml"); }, {"epochz", "bad.toml:1"}));
}

TEST(RunConfig, UnknownKeyInFitNamesKeyAndLine) {
  std::string text = kGood;
  text.replace(text.find("seed = 7"), 8, "sed = 7");
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(text, "bad.toml"); }, {"fit.sed", "bad.toml:16"}));
}

TEST(RunConfig, WrongTypesAndValuesAreNamed) {
  std::string text = kGood;
  text.replace(text.find("epochs = 3"), 10, "epochs = \"3\"");
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(text, "bad.toml"); }, {"fit.epochs", "integer"}));
  text = kGood;
  text.replace(text.find("batch_size = 16"), 15, "batch_size = 0");
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(text, "bad.toml"); }, {"fit.batch_size", "positive"}));
  text = kGood;
  text.replace(text.find("validation = \"split\""), 20, "validation = \"both\"");
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(text, "bad.toml"); }, {"data.validation", "both"}));
}

TEST(RunConfig, MissingSectionsAndBrokenTomlAreReported) {
  EXPECT_TRUE(throws_with<ValueError>([] { parse_run_config("name = \"x\"\n", "m.toml"); }, {"m.toml", "[data]"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_run_config("[data\n", "broken.toml"); }, {"broken.toml:1", "invalid TOML"}));
  EXPECT_TRUE(throws_with<IoError>([] { load_run_config("/nonexistent/run.toml"); }, {"/nonexistent/run.toml"}));
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

TEST(RunConfig, GuardTableConfiguresTheGuard) {
  std::string text = std::string(kGood) + R"(
[guard]
snapshot_every = 20
rerun_lost_steps = false
kept_batch_bytes = 1000000
max_rollbacks = 2
lr_factor = 0.5
[guard.policy]
lr_too_high = ["rollback", "lr_backoff"]
)";
  RunConfig c = parse_run_config(text, "g.toml");
  EXPECT_TRUE(c.compile.guard.enabled());
  EXPECT_EQ(c.compile.guard.snapshot_every(), 20);
  EXPECT_FALSE(c.compile.guard.rerun_lost_steps());
  EXPECT_EQ(c.compile.guard.kept_batch_bytes(), 1000000);
  EXPECT_TRUE(parse_run_config(kGood, "g.toml").compile.guard.rerun_lost_steps());
  EXPECT_EQ(c.compile.guard.policy().budget.max_rollbacks, 2);
  EXPECT_DOUBLE_EQ(c.compile.guard.policy().budget.lr_factor, 0.5);
  EXPECT_EQ(c.compile.guard.policy().actions_for("lr_too_high"),
            (std::vector<RepairAction>{RepairAction::rollback, RepairAction::lr_backoff}));
}

TEST(RunConfig, GuardTableErrorsNameKeyAndLine) {
  std::string base = std::string(kGood) + "\n[guard]\n";
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "snapshots = 3\n", "g.toml"); },
                                      {"guard.snapshots", "g.toml:"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "lr_factor = 2.0\n", "g.toml"); },
                                      {"guard.lr_factor", "(0, 1]"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "rerun_lost_steps = 1\n", "g.toml"); },
                                      {"guard.rerun_lost_steps", "true or false", "g.toml:"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "kept_batch_bytes = -5\n", "g.toml"); },
                                      {"guard.kept_batch_bytes", ">= 0"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { parse_run_config(base + "[guard.policy]\nlr_too_high = [\"explode\"]\n", "g.toml"); },
      {"guard.policy.lr_too_high", "explode"}));
}

TEST(RunConfig, GuardDivergenceTable) {
  const std::string base = std::string(kGood) + "\n[guard.divergence]\n";
  RunConfig c = parse_run_config(base + "loss_factor = 8\nforecast_steps = 5\ncollapse = false\ndead_start = false\n"
                                        "[guard.policy]\n\"lr_too_high/divergence\" = [\"rollback\"]\n"
                                        "\"bad_initialization/dead_start\" = [\"rollback\", \"reinitialize\"]\n",
                                 "g.toml");
  EXPECT_DOUBLE_EQ(c.compile.guard.divergence().loss_factor(), 8.0);
  EXPECT_EQ(c.compile.guard.divergence().forecast_steps(), 5);
  EXPECT_FALSE(c.compile.guard.divergence().collapse());
  EXPECT_FALSE(c.compile.guard.divergence().dead_start());
  EXPECT_TRUE(c.compile.guard.divergence().enabled());
  EXPECT_EQ(c.compile.guard.policy().actions_for("bad_initialization", "dead_start"),
            (std::vector<RepairAction>{RepairAction::rollback, RepairAction::reinitialize}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "dead_start = 1\n", "g.toml"); },
                                      {"guard.divergence.dead_start", "true or false"}));
  EXPECT_EQ(c.compile.guard.policy().actions_for("lr_too_high", "divergence"),
            (std::vector<RepairAction>{RepairAction::rollback}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "loss_factor = 0.5\n", "g.toml"); },
                                      {"guard.divergence", "loss_factor", "g.toml"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "factor = 2\n", "g.toml"); },
                                      {"guard.divergence.factor", "g.toml:"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(base + "window = \"x\"\n", "g.toml"); },
                                      {"guard.divergence.window", "an integer"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { parse_run_config(std::string(kGood) + "\n[guard]\ndivergence = 3\n", "g.toml"); },
      {"guard.divergence must be a table"}));
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

TEST(RunConfig, DeviceDefaultsToCpuAndReadsCuda) {
  EXPECT_TRUE(parse_run_config(kGood, "x.toml").compile.device.is_cpu());
  const RunConfig c = parse_run_config(std::string("device = \"cuda:1\"\n") + kGood, "x.toml");
  EXPECT_TRUE(c.compile.device.is_cuda());
  EXPECT_EQ(c.compile.device.index(), 1);
}

TEST(RunConfig, BadDeviceNamesWhatWasExpectedAndTheLine) {
  const std::string text = std::string("device = \"gpu\"\n") + kGood;
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { parse_run_config(text, "bad.toml"); },
                                               {"device", "\"gpu\"", "cuda:N", "bad.toml:1"}));
  const std::string number = std::string("device = 0\n") + kGood;
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { parse_run_config(number, "bad.toml"); }, {"device", "bad.toml:1"}));
  for (const char* bad : {"cuda:", "cuda:x", "cuda:-1", "CPU", "cuda:123456789"}) {
    EXPECT_THROW(parse_device(bad), ValueError) << bad;
  }
  EXPECT_TRUE(parse_device("cpu").is_cpu());
}

}  // namespace
}  // namespace nanguard
