#include "train/compile_toml.h"

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;

// Parses text as mnist.toml and returns the node under key.
class Doc {
 public:
  explicit Doc(const std::string& text) : table_(toml::parse(std::string_view(text), std::string("mnist.toml"))) {}
  const toml::node& operator[](const char* key) const {
    const toml::node* n = table_.get(key);
    if (!n) throw std::logic_error(std::string("test document lacks ") + key);
    return *n;
  }

 private:
  toml::table table_;
};

LossSpec loss(const std::string& text) { return loss_spec_from_toml(Doc(text)["loss"], "mnist.toml"); }
OptimizerSpec optimizer(const std::string& text) {
  return optimizer_spec_from_toml(Doc(text)["optimizer"], "mnist.toml");
}
ScheduleSpec schedule(const std::string& text) {
  return schedule_spec_from_toml(Doc(text)["schedule"], "mnist.toml");
}
std::vector<std::string> metrics(const std::string& text) {
  return metrics_from_toml(Doc(text)["metrics"], "mnist.toml");
}

// ---- loss ----

TEST(CompileToml, LossAsStringOrTable) {
  EXPECT_EQ(loss("loss = \"sparse_categorical_crossentropy\"").type(),
            LossType::sparse_categorical_crossentropy);
  EXPECT_EQ(loss("loss = \"mean_squared_error\"").type(), LossType::mse);
  LossSpec spec = loss(
      "[loss]\n"
      "type = \"categorical_crossentropy\"\n"
      "from_logits = true\n"
      "fused = false\n");
  EXPECT_EQ(spec.type(), LossType::categorical_crossentropy);
  EXPECT_TRUE(spec.from_logits());
  EXPECT_FALSE(spec.fused());
  EXPECT_TRUE(spec.check_labels());
  EXPECT_FALSE(loss("loss = { type = \"sparse_categorical_crossentropy\", check_labels = false }")
                   .check_labels());
}

TEST(CompileToml, BadLosses) {
  EXPECT_TRUE(throws_with<ValueError>([] { loss("\n\nloss = \"crossentropy\""); },
                                      {"loss: unknown loss \"crossentropy\"", "(mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { loss("loss = 5"); },
                                      {"loss: expected a loss name or a table, got integer 5 (mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { loss("[loss]\nfrom_logits = true\n"); },
                                      {"loss: missing key \"type\" (mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { loss("[loss]\ntype = 3\n"); },
                                      {"loss.type: expected a loss name, got integer 3 (mnist.toml:2)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [] { loss("[loss]\ntype = \"binary_crossentropy\"\nfrom_logit = true\n"); },
      {"loss: unknown key \"from_logit\" (did you mean \"from_logits\"?) (mnist.toml:3)",
       "valid keys for binary_crossentropy: type, from_logits, fused"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [] { loss("[loss]\ntype = \"binary_crossentropy\"\nfused = \"no\"\n"); },
      {"loss.fused: expected true or false, got string \"no\" (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [] { loss("[loss]\ntype = \"mse\"\nfrom_logits = true\n"); },
      {"loss.from_logits: does not apply to mse (only to binary_crossentropy", "(mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [] { loss("[loss]\ntype = \"mse\"\ncheck_labels = true\n"); },
      {"loss.check_labels: does not apply to mse"}));
}

// ---- optimizer ----

TEST(CompileToml, OptimizerAsStringOrTable) {
  OptimizerSpec adam = optimizer("optimizer = \"adam\"");
  EXPECT_EQ(adam.type(), OptimizerType::adam);
  EXPECT_FALSE(adam.learning_rate().has_value());
  EXPECT_EQ(adam.effective_learning_rate(), 0.001);

  OptimizerSpec sgd = optimizer(
      "[optimizer]\n"
      "type = \"sgd\"\n"
      "learning_rate = 1\n"  // an integer is a number too
      "momentum = 0.9\n"
      "nesterov = true\n"
      "weight_decay = 0.0001\n"
      "clipnorm = 1.5\n");
  EXPECT_EQ(sgd.type(), OptimizerType::sgd);
  EXPECT_EQ(sgd.effective_learning_rate(), 1.0);
  EXPECT_EQ(sgd.momentum(), 0.9);
  EXPECT_TRUE(sgd.nesterov());
  EXPECT_EQ(sgd.effective_weight_decay(), 0.0001);
  EXPECT_EQ(sgd.clipnorm(), 1.5);

  OptimizerSpec adamw = optimizer(
      "[optimizer]\ntype = \"adamw\"\nbeta_1 = 0.8\nbeta_2 = 0.99\nepsilon = 1e-8\namsgrad = true\n"
      "global_clipnorm = 2.0\n");
  EXPECT_EQ(adamw.beta_1(), 0.8);
  EXPECT_EQ(adamw.beta_2(), 0.99);
  EXPECT_EQ(adamw.epsilon(), 1e-8);
  EXPECT_TRUE(adamw.amsgrad());
  EXPECT_EQ(adamw.global_clipnorm(), 2.0);
  EXPECT_EQ(adamw.effective_weight_decay(), 0.004);

  OptimizerSpec rms = optimizer("[optimizer]\ntype = \"rmsprop\"\nrho = 0.8\nmomentum = 0.5\nclipvalue = 3\n");
  EXPECT_EQ(rms.rho(), 0.8);
  EXPECT_EQ(rms.momentum(), 0.5);
  EXPECT_EQ(rms.clipvalue(), 3.0);
}

TEST(CompileToml, BadOptimizers) {
  std::string head = "[optimizer]\ntype = \"adam\"\n";  // the next line is line 3
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { optimizer(head + "learning_rate = \"x\"\n"); },
      {"optimizer.learning_rate: expected a positive number, got string \"x\" (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { optimizer(head + "learning_rate = -0.1\n"); },
      {"optimizer.learning_rate: expected a positive number, got float -0.1 (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "learning_rate = 0\n"); },
                                      {"optimizer.learning_rate", "got integer 0"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "learning_rate = nan\n"); },
                                      {"optimizer.learning_rate", "got float nan"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { optimizer(head + "beta_1 = 1.0\n"); },
      {"optimizer.beta_1: expected a number in [0, 1), got float 1 (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "beta_2 = -0.5\n"); },
                                      {"optimizer.beta_2", "[0, 1)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "epsilon = 0.0\n"); },
                                      {"optimizer.epsilon", "positive"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "weight_decay = -1\n"); },
                                      {"optimizer.weight_decay", ">= 0"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "clipnorm = -1\n"); },
                                      {"optimizer.clipnorm", "0 = off"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "amsgrad = 1\n"); },
                                      {"optimizer.amsgrad: expected true or false, got integer 1"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { optimizer(head + "lerning_rate = 0.1\n"); },
      {"optimizer: unknown key \"lerning_rate\" (did you mean \"learning_rate\"?) (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { optimizer(head + "momentum = 0.9\n"); },
      {"optimizer.momentum: does not apply to adam (only to sgd, rmsprop) (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer("[optimizer]\ntype = \"sgd\"\nrho = 0.9\n"); },
                                      {"optimizer.rho: does not apply to sgd"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { optimizer("[optimizer]\ntype = \"sgd\"\nnesterov = true\n"); },
      {"optimizer: sgd: nesterov needs momentum > 0 (mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { optimizer(head + "clipnorm = 1\nclipvalue = 1\n"); },
                                      {"at most one of clipnorm, clipvalue and global_clipnorm"}));
  EXPECT_TRUE(throws_with<ValueError>([] { optimizer("[optimizer]\nlearning_rate = 0.1\n"); },
                                      {"optimizer: missing key \"type\" (mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { optimizer("optimizer = \"adagrad\"\n"); },
                                      {"optimizer: unknown optimizer \"adagrad\"", "(mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { optimizer("optimizer = [\"adam\"]\n"); },
                                      {"optimizer: expected an optimizer name or a table, got an array"}));
}

// ---- schedule ----

TEST(CompileToml, Schedules) {
  ScheduleSpec exp = schedule(
      "[schedule]\ntype = \"exponential_decay\"\ninitial_learning_rate = 0.1\ndecay_steps = 1e3\n"
      "decay_rate = 0.96\nstaircase = true\n");
  EXPECT_EQ(exp.type(), ScheduleType::exponential_decay);
  EXPECT_EQ(exp.initial_learning_rate(), 0.1);
  EXPECT_EQ(exp.decay_steps(), 1000);
  EXPECT_EQ(exp.decay_rate(), 0.96);
  EXPECT_TRUE(exp.staircase());

  ScheduleSpec pw = schedule(
      "[schedule]\ntype = \"piecewise_constant\"\nboundaries = [100, 200]\nvalues = [1, 0.5, 0.1]\n");
  EXPECT_EQ(pw.boundaries(), (std::vector<int64_t>{100, 200}));
  EXPECT_EQ(pw.values(), (std::vector<double>{1.0, 0.5, 0.1}));

  ScheduleSpec cos = schedule(
      "[schedule]\ntype = \"cosine_decay\"\ndecay_steps = 100\nalpha = 0.1\nwarmup_steps = 10\n"
      "warmup_target = 0.01\ninitial_learning_rate = 0\n");
  EXPECT_EQ(cos.decay_steps(), 100);
  EXPECT_EQ(cos.alpha(), 0.1);
  EXPECT_EQ(cos.warmup_steps(), 10);
  EXPECT_EQ(cos.warmup_target(), 0.01);
  EXPECT_EQ(cos.initial_learning_rate(), 0.0);

  ScheduleSpec plateau = schedule(
      "[schedule]\ntype = \"reduce_on_plateau\"\nmonitor = \"val_accuracy\"\nfactor = 0.5\n"
      "patience = 3\nmin_delta = 0.001\ncooldown = 1\nmin_lr = 1e-6\nmode = \"max\"\n");
  EXPECT_EQ(plateau.monitor(), "val_accuracy");
  EXPECT_EQ(plateau.factor(), 0.5);
  EXPECT_EQ(plateau.patience(), 3);
  EXPECT_EQ(plateau.min_delta(), 0.001);
  EXPECT_EQ(plateau.cooldown(), 1);
  EXPECT_EQ(plateau.min_lr(), 1e-6);
  EXPECT_EQ(plateau.mode(), "max");

  EXPECT_EQ(schedule("schedule = \"constant\"").type(), ScheduleType::constant);
  EXPECT_FALSE(schedule("schedule = \"constant\"").initial_learning_rate().has_value());
}

TEST(CompileToml, BadSchedules) {
  std::string exp = "[schedule]\ntype = \"exponential_decay\"\n";  // next line is 3
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(exp + "decay_steps = 10\n"); },
      {"schedule: exponential_decay needs key \"decay_rate\" (mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(exp + "decay_steps = 10\ndecay_rate = 0\n"); },
      {"schedule.decay_rate: expected a positive number, got integer 0 (mnist.toml:4)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(exp + "decay_steps = 10.5\ndecay_rate = 0.5\n"); },
      {"schedule.decay_steps: expected a positive integer, got float 10.5 (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(exp + "decay_steps = 0\ndecay_rate = 0.5\n"); },
                                      {"schedule.decay_steps", "got integer 0"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(exp + "decay_steps = 10\ndecay_rate = 0.5\nstaircase = \"yes\"\n"); },
      {"schedule.staircase: expected true or false", "(mnist.toml:5)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(exp + "decay_steps = 10\ndecay_rate = 0.5\nalpha = 0.1\n"); },
      {"schedule.alpha: does not apply to exponential_decay (only to cosine_decay) (mnist.toml:5)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(exp + "decay_step = 10\n"); },
      {"schedule: unknown key \"decay_step\" (did you mean \"decay_steps\"?) (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(exp + "initial_learning_rate = -1\n"); },
      {"schedule.initial_learning_rate: expected a number >= 0, got integer -1 (mnist.toml:3)"}));

  std::string pw = "[schedule]\ntype = \"piecewise_constant\"\n";
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(pw + "boundaries = [100,\n 50]\nvalues = [1, 2, 3]\n"); },
      {"schedule.boundaries[1]: expected an integer >= 0, larger than the one before, got integer 50 "
       "(mnist.toml:4)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(pw + "boundaries = [100, 200]\nvalues = [1, 2]\n"); },
      {"schedule.values: expected 3 values (one more than boundaries), got 2 (mnist.toml:4)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(pw + "boundaries = 100\nvalues = [1, 2]\n"); },
                                      {"schedule.boundaries: expected an array", "got integer 100"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(pw + "boundaries = [100]\nvalues = [1, \"x\"]\n"); },
      {"schedule.values[1]: expected a number >= 0, got string \"x\" (mnist.toml:4)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(pw + "values = [1]\n"); },
                                      {"piecewise_constant needs key \"boundaries\""}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { schedule(pw + "boundaries = [1]\nvalues = [1, 2]\ninitial_learning_rate = 0.1\n"); },
      {"schedule.initial_learning_rate: does not apply to piecewise_constant"}));

  std::string cos = "[schedule]\ntype = \"cosine_decay\"\n";
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(cos + "decay_steps = 10\nwarmup_steps = 5\n"); },
                                      {"schedule: cosine_decay: warmup_steps needs warmup_target",
                                       "(mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(cos + "decay_steps = 10\nalpha = 2\n"); },
                                      {"schedule.alpha: expected a number in [0, 1]"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(cos + "alpha = 0.5\n"); },
                                      {"cosine_decay needs key \"decay_steps\""}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(cos + "decay_steps = 10\nwarmup_steps = -1\n"); },
                                      {"schedule.warmup_steps: expected an integer >= 0"}));

  std::string plateau = "[schedule]\ntype = \"reduce_on_plateau\"\n";
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(plateau + "mode = \"avg\"\n"); },
                                      {"schedule.mode: expected \"min\", \"max\" or \"auto\", got string "
                                       "\"avg\" (mnist.toml:3)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(plateau + "factor = 1.5\n"); },
                                      {"schedule.factor: expected a number in (0, 1)"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(plateau + "patience = -2\n"); },
                                      {"schedule.patience: expected an integer >= 0, got integer -2"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(plateau + "cooldown = 0.5\n"); },
                                      {"schedule.cooldown", "got float 0.5"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(plateau + "monitor = \"\"\n"); },
                                      {"schedule.monitor: expected the name of a history value"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(plateau + "min_lr = -1e-3\n"); },
                                      {"schedule.min_lr"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { schedule(plateau + "min_delta = true\n"); },
                                      {"schedule.min_delta: expected a number >= 0, got boolean true"}));

  EXPECT_TRUE(throws_with<ValueError>([] { schedule("[schedule]\ndecay_steps = 3\n"); },
                                      {"schedule: missing key \"type\""}));
  EXPECT_TRUE(throws_with<ValueError>([] { schedule("[schedule]\ntype = \"cosine\"\n"); },
                                      {"schedule.type: unknown schedule \"cosine\"", "(mnist.toml:2)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { schedule("schedule = \"exponential_decay\"\n"); },
                                      {"schedule: exponential_decay: decay_steps", "(mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { schedule("schedule = 1979-05-27\n"); },
                                      {"schedule: expected a schedule name or a table, got a date/time"}));
}

// ---- metrics ----

TEST(CompileToml, Metrics) {
  EXPECT_EQ(metrics("metrics = [\"accuracy\", \"mae\"]"), (std::vector<std::string>{"accuracy", "mae"}));
  EXPECT_EQ(metrics("metrics = \"accuracy\""), (std::vector<std::string>{"accuracy"}));
  EXPECT_TRUE(metrics("metrics = []").empty());
}

TEST(CompileToml, BadMetrics) {
  EXPECT_TRUE(throws_with<ValueError>(
      [] { metrics("metrics = [\n\"accuracy\",\n\"acuracy\"]"); },
      {"metrics[1]: unknown metric \"acuracy\" (did you mean \"accuracy\"?)", "(mnist.toml:3)",
       "valid metrics: accuracy"}));
  EXPECT_TRUE(throws_with<ValueError>([] { metrics("metrics = [\"mae\", \"mae\"]"); },
                                      {"metrics[1]: metric \"mae\" is listed twice (mnist.toml:1)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { metrics("metrics = [\"mae\", 3]"); },
                                      {"metrics[1]: expected a metric name, got integer 3"}));
  EXPECT_TRUE(throws_with<ValueError>([] { metrics("\nmetrics = 3"); },
                                      {"metrics: expected an array of metric names, got integer 3 (mnist.toml:2)"}));
  EXPECT_TRUE(throws_with<ValueError>([] { metrics("[metrics]\naccuracy = true"); },
                                      {"metrics: expected an array of metric names, got a table"}));
}

}  // namespace
}  // namespace nanguard
