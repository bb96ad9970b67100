// End to end: the guard feeds its monitor on small generated runs, and the warnings reach
// the events, the diagnosis evidence and the config file.
#include <cmath>
#include <iostream>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include <torch/torch.h>

#include "nanguard/diagnose/diagnosis.h"
#include "nanguard/guard/guard.h"
#include "nanguard/monitor/monitor.h"
#include "nanguard/trace/scope.h"
#include "nanguard/train/run_config.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;

// An MLP whose layers run in scopes named like their parameters ("layers.3" owns
// "layers.3.weight"), as the trainer's models do.
struct Mlp : torch::nn::Module {
  Mlp(int64_t in, int64_t width, int64_t depth, int64_t out, std::string act) : act_(std::move(act)) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < depth; ++i) layers->push_back(torch::nn::Linear(i == 0 ? in : width, width));
    layers->push_back(torch::nn::Linear(depth == 0 ? in : width, out));
  }
  at::Tensor forward(at::Tensor x) {
    for (size_t i = 0; i < layers->size(); ++i) {
      NANGUARD_SCOPE("layers." + std::to_string(i));
      x = layers[i]->as<torch::nn::Linear>()->forward(x);
      if (i + 1 < layers->size()) x = act_ == "relu" ? torch::relu(x) : torch::sigmoid(x);
    }
    return x;
  }
  torch::nn::ModuleList layers;
  std::string act_;
};

struct RunResult {
  std::vector<GuardEvent> warnings, actions;
  double lr_scale = 1;
  int64_t first_incident = -1;
};

// Trains on generated data (a linear rule on 16 features, 4 classes) for `steps` steps, with
// cross-entropy or (mse) squared error against one-hot targets.
RunResult train(Mlp& net, torch::optim::Optimizer& opt, double input_scale, int64_t steps, GuardOptions options,
                bool mse = false) {
  torch::manual_seed(1);
  auto x = torch::rand({512, 16}) * input_scale;
  auto w = torch::randn({16, 4});
  auto y = (x / input_scale - 0.5).matmul(w).argmax(1);
  auto ids = torch::arange(512);
  Guard guard(net, opt, options.replay(false).repair(false));
  RunResult run;
  for (int64_t s = 0; s < steps; ++s) {
    auto rows = torch::arange((s * 32) % 512, (s * 32) % 512 + 32);
    data::Batch b{x.index_select(0, rows), y.index_select(0, rows), ids.index_select(0, rows)};
    auto verdict = guard.step(b, [&](const data::Batch& batch) {
      auto out = net.forward(batch.x);
      auto loss = mse ? (out - torch::one_hot(batch.y, 4).to(torch::kFloat)).pow(2).mean()
                      : torch::nn::functional::cross_entropy(out, batch.y);
      loss.backward();
      return loss;
    });
    if (verdict.incident) {
      run.first_incident = s;
      break;
    }
  }
  for (const auto& e : guard.events()) (e.kind == "warning" ? run.warnings : run.actions).push_back(e);
  run.lr_scale = guard.lr_scale();
  return run;
}

TEST(EarlyWarning, HealthyRunsRaiseNoWarning) {
  for (int seed = 0; seed < 3; ++seed) {
    torch::manual_seed(seed);
    Mlp net(16, 32, 1, 4, "relu");
    torch::optim::Adam adam(net.parameters(), torch::optim::AdamOptions(1e-3));
    RunResult run = train(net, adam, 1.0, 600, GuardOptions());
    EXPECT_EQ(run.first_incident, -1);
    for (const auto& w : run.warnings) ADD_FAILURE() << "seed " << seed << ": " << w.cause << ": " << w.explanation;
  }
}

TEST(EarlyWarning, DivergingSgdWarnsBeforeTheFirstNonFiniteValue) {
  // A linear model on raw 0-255 inputs: SGD's step is above 2 / (largest curvature), so every
  // step multiplies the error by about 1.6 until the gradient norm overflows.
  torch::manual_seed(0);
  Mlp net(16, 32, 0, 4, "relu");
  torch::optim::SGD sgd(net.parameters(), torch::optim::SGDOptions(2e-5));
  // The divergence watch would make the excursion an incident before the monitor's forecast:
  // this test is about the forecast.
  RunResult run = train(net, sgd, 255.0, 300, GuardOptions().divergence(DivergenceOptions().enabled(false)),
                        /*mse=*/true);
  ASSERT_GE(run.first_incident, 0) << "the run did not diverge";
  ASSERT_FALSE(run.warnings.empty());
  const GuardEvent& first = run.warnings.front();
  EXPECT_LT(first.step, run.first_incident);
  EXPECT_NE(first.cause.find("growth"), std::string::npos) << first.cause << ": " << first.explanation;
  EXPECT_NE(first.explanation.find("per step"), std::string::npos) << first.explanation;
  EXPECT_NE(first.detail.find("overflow in ~"), std::string::npos) << first.detail;
  std::cout << "warned " << run.first_incident - first.step << " steps ahead: " << first.explanation << "\n";
}

TEST(EarlyWarning, LrCutOnAForecastOverflowPreventsTheDivergence) {
  torch::manual_seed(0);
  Mlp net(16, 32, 0, 4, "relu");
  torch::optim::SGD sgd(net.parameters(), torch::optim::SGDOptions(2e-5));
  RunResult run = train(net, sgd, 255.0, 300,
                        GuardOptions()
                            .monitor(monitor::MonitorOptions().lr_cut(true))
                            .divergence(DivergenceOptions().enabled(false)),  // prevention alone
                        /*mse=*/true);
  EXPECT_EQ(run.first_incident, -1);
  ASSERT_FALSE(run.actions.empty());
  EXPECT_EQ(run.actions.front().action, "lr_backoff");
  EXPECT_NE(run.actions.front().detail.find("prevention: learning rate 2e-05 -> 2e-06"), std::string::npos)
      << run.actions.front().detail;
  EXPECT_EQ(run.actions.size(), 1u);
  EXPECT_DOUBLE_EQ(run.lr_scale, 0.1);
}

TEST(EarlyWarning, DeepSigmoidNetWarnsVanishingAndSaturation) {
  torch::manual_seed(0);
  Mlp net(16, 64, 19, 4, "sigmoid");  // 20 layers
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net.named_parameters())
      if (p.key().find("weight") != std::string::npos) p.value().normal_(0.0, 1.0);
  }
  torch::optim::Adam adam(net.parameters(), torch::optim::AdamOptions(1e-3));
  RunResult run = train(net, adam, 1.0, 20, GuardOptions().monitor(monitor::MonitorOptions().sample_every(5)));
  // The warnings of step 0 come first; with weights out of scale the guard then makes them a
  // vanishing start at the next check (tests/guard/init_repair_test.cpp repairs it).
  EXPECT_EQ(run.first_incident, 1);
  const GuardEvent* vanishing = nullptr;
  const GuardEvent* saturation = nullptr;
  for (const auto& w : run.warnings) {
    if (w.cause == "vanishing_gradients" && !vanishing) vanishing = &w;
    if (w.cause == "saturation" && !saturation) saturation = &w;
  }
  ASSERT_NE(vanishing, nullptr);
  std::cout << vanishing->explanation << "\n";
  EXPECT_EQ(vanishing->step, 0);
  EXPECT_EQ(vanishing->module, "layers.0");
  EXPECT_NE(vanishing->explanation.find("that of the last layer layers.19"), std::string::npos)
      << vanishing->explanation;
  EXPECT_NE(vanishing->explanation.find("orders of magnitude"), std::string::npos);
  ASSERT_NE(saturation, nullptr);
  EXPECT_NE(saturation->explanation.find("saturated sigmoid"), std::string::npos) << saturation->explanation;
}

TEST(EarlyWarning, MonitorOffMeansNoMonitor) {
  Mlp net(16, 8, 1, 4, "relu");
  torch::optim::SGD sgd(net.parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(net, sgd, GuardOptions().monitor(monitor::MonitorOptions().enabled(false)));
  EXPECT_EQ(guard.monitor(), nullptr);
  Guard on(net, sgd);
  ASSERT_NE(on.monitor(), nullptr);
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { Guard bad(net, sgd, GuardOptions().monitor(monitor::MonitorOptions().growth_factor(0.5))); },
      {"growth_factor"}));
}

TEST(EarlyWarning, GrowthWarningsSupportLrTooHighInTheDiagnosis) {
  Evidence e;
  e.step = 40;
  e.failed_check = "parameters";
  e.params_nonfinite_before_step = true;
  e.prior_warnings = {"loss_growth"};
  monitor::Warning w;
  w.detector = "loss_growth";
  w.step = 31;
  w.message = "the loss grew geometrically over the last 4 steps (x9 per step, from 2.3 to 1.5e+04)";
  e.monitor_warnings = {w};
  Diagnosis with = diagnose(e);
  const CauseScore* lr = with.find(cause::lr_too_high);
  ASSERT_NE(lr, nullptr);
  EXPECT_NE(lr->explanation.find("The monitor warned 9 steps before the incident"), std::string::npos)
      << lr->explanation;
  Evidence bare = e;
  bare.prior_warnings.clear();
  bare.monitor_warnings.clear();
  const CauseScore* lr_bare = diagnose(bare).find(cause::lr_too_high);
  ASSERT_NE(lr_bare, nullptr);
  EXPECT_GT(lr->confidence, lr_bare->confidence);
}

const char* kConfig = R"(name = "tiny"
loss = "sparse_categorical_crossentropy"
optimizer = { type = "sgd", learning_rate = 0.1 }
[data]
source = "csv"
train = "train.csv"
label = "y"
[model]
input_shape = [4]
[[model.layers]]
type = "dense"
units = 3
activation = "softmax"
)";

TEST(EarlyWarning, GuardMonitorTable) {
  RunConfig c = parse_run_config(std::string(kConfig) + R"(
[guard.monitor]
sample_every = 10
lr_cut = true
growth_factor = 2
)",
                                 "run.toml");
  EXPECT_EQ(c.compile.guard.monitor().sample_every(), 10);
  EXPECT_TRUE(c.compile.guard.monitor().lr_cut());
  EXPECT_EQ(c.compile.guard.monitor().growth_factor(), 2.0);
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { parse_run_config(std::string(kConfig) + "[guard.monitor]\nsample_every = 0\n", "run.toml"); },
      {"guard.monitor", "sample_every", "run.toml"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { parse_run_config(std::string(kConfig) + "[guard.monitor]\nbogus = 1\n", "run.toml"); },
      {"guard.monitor.bogus", "run.toml"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { parse_run_config(std::string(kConfig) + "[guard.monitor]\nlr_cut = 3\n", "run.toml"); },
      {"guard.monitor.lr_cut", "true or false"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { parse_run_config(std::string(kConfig) + "[guard]\nmonitor = 3\n", "run.toml"); },
                                      {"guard.monitor must be a table"}));
}

}  // namespace
}  // namespace nanguard
