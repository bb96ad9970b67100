#include "nanguard/monitor/monitor.h"

#include <cmath>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include <torch/torch.h>

#include "nanguard/guard/optimizer_adapter.h"
#include "support/test_support.h"

namespace nanguard::monitor {
namespace {

using testing::throws_with;

struct Net : torch::nn::Module {
  Net() {
    layers = register_module("layers", torch::nn::ModuleList());
    layers->push_back(torch::nn::Linear(4, 8));
    layers->push_back(torch::nn::Linear(8, 2));
  }
  torch::nn::ModuleList layers;
};

TEST(Monitor, RejectsBadOptionsAndMismatchedLists) {
  auto p = torch::zeros({2}, torch::requires_grad());
  EXPECT_TRUE(throws_with<ValueError>([&] { Monitor({"a.weight"}, {p}, MonitorOptions().sample_every(0)); },
                                      {"sample_every"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { Monitor({"a.weight", "b.weight"}, {p}); }, {"2 parameter names", "1"}));
}

TEST(Monitor, SamplesEverySSteps) {
  Net net;
  Monitor m(net, MonitorOptions().sample_every(10));
  EXPECT_TRUE(m.sample_due(0));
  EXPECT_FALSE(m.sample_due(5));
  EXPECT_TRUE(m.sample_due(20));
  Monitor off(net, MonitorOptions().enabled(false));
  EXPECT_FALSE(off.sample_due(0));
  EXPECT_TRUE(off.observe_step(0, 1, 1, 0.1).empty());
  EXPECT_TRUE(off.history().empty());
}

TEST(Monitor, PerLayerSignalsOfASampledStepMatchTheGradients) {
  torch::manual_seed(0);
  Net net;
  torch::optim::Adam adam(net.parameters(), torch::optim::AdamOptions(1e-2));
  Monitor m(net, MonitorOptions().sample_every(2));
  auto x = torch::randn({16, 4});
  auto y = torch::randint(0, 2, {16});
  for (int64_t step = 0; step < 4; ++step) {
    adam.zero_grad();
    auto h = torch::relu(net.layers[0]->as<torch::nn::Linear>()->forward(x));
    auto loss = torch::nn::functional::cross_entropy(net.layers[1]->as<torch::nn::Linear>()->forward(h), y);
    loss.backward();
    double sq = 0;
    for (auto& p : net.parameters()) sq += p.grad().pow(2).sum().item<double>();
    const double lr = 1e-2;
    m.observe_step(step, loss.item<double>(), std::sqrt(sq), lr);
    const bool sample = m.sample_due(step);
    std::vector<at::Tensor> before;
    for (auto& p : net.parameters()) before.push_back(p.detach().clone());
    if (sample) m.begin_update();
    adam.step();
    if (sample) m.end_update(step, make_optimizer_adapter(adam)->second_moments());
    if (!sample) continue;
    const StepSignals& s = m.history().back();
    ASSERT_TRUE(s.sampled);
    ASSERT_EQ(s.layers.size(), 2u);
    EXPECT_EQ(s.layers[0].layer, "layers.0");
    EXPECT_EQ(s.layers[1].layer, "layers.1");
    // Reference: torch's own norms of the concatenated weight and bias.
    auto p = net.parameters();
    const double g0 = torch::cat({p[0].grad().flatten(), p[1].grad().flatten()}).norm().item<double>();
    const double w0 = torch::cat({p[0].flatten(), p[1].flatten()}).norm().item<double>();
    const double d0 = torch::cat({(p[0] - before[0]).flatten(), (p[1] - before[1]).flatten()}).norm().item<double>();
    const double b0 = torch::cat({before[0].flatten(), before[1].flatten()}).norm().item<double>();
    EXPECT_NEAR(s.layers[0].grad_norm, g0, 1e-5 * g0);
    EXPECT_NEAR(s.layers[0].weight_norm, w0, 1e-5 * w0);
    EXPECT_NEAR(s.layers[0].update_ratio, d0 / b0, 1e-4 * d0 / b0);
    EXPECT_GT(s.optimizer_state.max, 0);
    EXPECT_LE(s.optimizer_state.mean, s.optimizer_state.max);
  }
  ASSERT_EQ(m.history().size(), 4u);
  EXPECT_FALSE(m.history()[1].sampled);
  EXPECT_DOUBLE_EQ(m.history()[3].learning_rate, 1e-2);
}

TEST(Monitor, GrowthWarnsAndAsksForTheLrCut) {
  Net net;
  Monitor m(net, MonitorOptions().lr_cut(true).lr_cut_horizon(200));
  std::vector<Warning> all;
  double v = 1;
  for (int64_t t = 0; t < 8; ++t, v *= 3) {
    for (auto& w : m.observe_step(t, v, v, 0.1)) all.push_back(w);
  }
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all[0].detector, "loss_growth");
  EXPECT_EQ(all[0].step, 4);
  EXPECT_GT(all[0].forecast_steps, 0);
  EXPECT_TRUE(m.wants_lr_cut(all[0]));
  EXPECT_FALSE(m.wants_lr_cut(all[0]));  // one cut per growth run
  EXPECT_EQ(m.warnings().size(), all.size());
  Monitor no_cut(net);
  EXPECT_FALSE(no_cut.wants_lr_cut(all[0]));
}

TEST(Monitor, AdaptiveClipOnAGradientNormSpike) {
  Net net;
  Monitor m(net, MonitorOptions().adaptive_clip(true).clip_z(4).warmup(20));
  for (int64_t t = 0; t < 100; ++t) m.observe_step(t, 1.0, t % 2 ? 1.1 : 0.9, 0.1);
  EXPECT_EQ(m.adaptive_clip_norm(1.0), 0.0);
  const double clip = m.adaptive_clip_norm(100.0);
  EXPECT_GT(clip, 1.1);
  EXPECT_LT(clip, 3.0);
  Monitor off(net, MonitorOptions().warmup(20));
  for (int64_t t = 0; t < 100; ++t) off.observe_step(t, 1.0, 1.0, 0.1);
  EXPECT_EQ(off.adaptive_clip_norm(100.0), 0.0);
}

TEST(Monitor, WritesItsHistory) {
  Net net;
  Monitor m(net);
  m.observe_step(0, 2.0, 1.0, 0.1);
  testing::TempDir dir;
  m.write_csv(dir / "monitor.csv");
  EXPECT_EQ(testing::read_bytes(dir / "monitor.csv"), "step,signal,layer,value\n0,loss,,2\n0,grad_norm,,1\n0,lr,,0.1\n");
}

}  // namespace
}  // namespace nanguard::monitor
