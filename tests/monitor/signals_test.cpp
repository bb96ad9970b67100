#include "nanguard/monitor/signals.h"

#include <cmath>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include <torch/torch.h>

#include "nanguard/trace/scope.h"
#include "nanguard/guard/optimizer_adapter.h"
#include "support/test_support.h"

namespace nanguard::monitor {
namespace {

TEST(LayerOf, DropsTheLastComponent) {
  EXPECT_EQ(layer_of("layers.0.dense.weight"), "layers.0.dense");
  EXPECT_EQ(layer_of("layers.3.lstm.weight_hh_l0"), "layers.3.lstm");
  EXPECT_EQ(layer_of("bias"), "bias");
}

TEST(ActivationStats, MatchesAPlainLoop) {
  torch::manual_seed(0);
  auto x = torch::relu(torch::randn({16, 8}) - 0.5);
  x.index_put_({torch::indexing::Slice(), 3}, 0.0);  // unit 3 dead
  x.index_put_({torch::indexing::Slice(), 5}, 0.0);  // unit 5 dead
  auto s = activation_stats(x, "relu", 0.01);
  auto acc = x.accessor<float, 2>();
  double sum = 0, sq = 0;
  int dead = 0;
  for (int j = 0; j < 8; ++j) {
    bool alive = false;
    for (int i = 0; i < 16; ++i) {
      sum += acc[i][j];
      alive = alive || acc[i][j] > 0;
    }
    dead += alive ? 0 : 1;
  }
  const double mean = sum / 128;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) sq += (acc[i][j] - mean) * (acc[i][j] - mean);
  EXPECT_NEAR(s.mean, mean, 1e-6);
  EXPECT_NEAR(s.std, std::sqrt(sq / 127), 1e-6);
  EXPECT_DOUBLE_EQ(s.dead_fraction, dead / 8.0);
  EXPECT_GE(s.dead_fraction, 0.25);
  EXPECT_EQ(s.units, 8);
}

TEST(ActivationStats, SaturationOfSigmoidAndTanh) {
  auto sig = torch::tensor({0.001f, 0.5f, 0.999f, 0.3f}).reshape({2, 2});
  EXPECT_DOUBLE_EQ(activation_stats(sig, "sigmoid", 0.01).saturated_fraction, 0.5);
  auto th = torch::tensor({-0.999f, 0.0f, 0.5f, 0.99f}).reshape({4, 1});
  EXPECT_DOUBLE_EQ(activation_stats(th, "tanh", 0.01).saturated_fraction, 0.5);  // |x| >= 0.98
  EXPECT_EQ(activation_stats(at::Tensor(), "relu", 0.01).units, 0);
}

TEST(LayerSignals, NormsAndUpdateRatioPerLayer) {
  auto w0 = torch::tensor({3.0f, 4.0f}), b0 = torch::tensor({0.0f}), w1 = torch::tensor({1.0f, 0.0f});
  w0.mutable_grad() = torch::tensor({1.0f, 2.0f});
  b0.mutable_grad() = torch::tensor({2.0f});
  w1.mutable_grad() = torch::tensor({0.5f, 0.0f});
  std::vector<at::Tensor> before{w0.clone(), b0.clone(), w1.clone()};
  w0.add_(torch::tensor({0.3f, 0.4f}));  // |dw| = 0.5, |w_before| = 5
  auto layers = layer_signals({"layers.0.dense.weight", "layers.0.dense.bias", "layers.1.dense.weight"},
                              {w0, b0, w1}, before);
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].layer, "layers.0.dense");
  EXPECT_NEAR(layers[0].grad_norm, 3.0, 1e-6);  // sqrt(1 + 4 + 4)
  EXPECT_NEAR(layers[0].weight_norm, 5.5, 1e-5);
  EXPECT_NEAR(layers[0].update_ratio, 0.1, 1e-6);
  EXPECT_EQ(layers[0].numel, 3);
  EXPECT_EQ(layers[1].layer, "layers.1.dense");
  EXPECT_NEAR(layers[1].grad_norm, 0.5, 1e-6);
  EXPECT_DOUBLE_EQ(layers[1].update_ratio, 0.0);
  auto no_before = layer_signals({"a.weight"}, {w1}, {});
  EXPECT_TRUE(std::isnan(no_before[0].update_ratio));
}

TEST(OptimizerStateStats, AdamSecondMoment) {
  auto p = torch::ones({3}, torch::requires_grad());
  torch::optim::Adam adam({p}, torch::optim::AdamOptions(0.1));
  auto adapter = make_optimizer_adapter(adam);
  EXPECT_TRUE(std::isnan(optimizer_state_stats(adapter->second_moments()).max));  // no state before the first step
  p.mutable_grad() = torch::tensor({1.0f, 2.0f, 3.0f});
  adam.step();
  auto s = optimizer_state_stats(adapter->second_moments());
  // exp_avg_sq = (1 - 0.999) * g^2
  EXPECT_NEAR(s.max, 0.001 * 9, 1e-7);
  EXPECT_NEAR(s.mean, 0.001 * 14 / 3, 1e-7);
  torch::optim::SGD sgd({p}, torch::optim::SGDOptions(0.1));
  sgd.step();
  EXPECT_TRUE(std::isnan(optimizer_state_stats(make_optimizer_adapter(sgd)->second_moments()).mean));
}

TEST(ActivationRecorder, RecordsActivationsWithTheirScope) {
  torch::manual_seed(0);
  auto x = torch::randn({8, 4});
  std::vector<ActivationStats> stats;
  {
    ActivationRecorder rec(0.01);
    {
      NANGUARD_SCOPE("layers.0.dense");
      auto h = torch::relu(x);
      NANGUARD_SCOPE("inner");
      (void)torch::sigmoid(h * 100);
    }
    {
      NANGUARD_SCOPE("loss");
      (void)torch::sigmoid(x);  // left out
    }
    (void)torch::exp(x);  // not an activation
    stats = rec.finish();
  }
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0].layer, "layers.0.dense");
  EXPECT_EQ(stats[0].kind, "relu");
  EXPECT_NEAR(stats[0].mean, torch::relu(x).mean().item<double>(), 1e-6);
  EXPECT_EQ(stats[1].layer, "layers.0.dense.inner");
  EXPECT_EQ(stats[1].kind, "sigmoid");
  EXPECT_GT(stats[1].saturated_fraction, 0.4);
  // Nothing is recorded once finished.
  (void)torch::relu(x);
}

// Each source records only its own kind of activation: reports or ops, never both twice.
TEST(ActivationRecorder, ModelReportsAreRecordedOnlyByAReportReadingRecorder) {
  auto x = torch::randn({8, 4});
  std::vector<ActivationStats> from_reports, from_ops;
  {
    ActivationRecorder rec(0.01, ActivationSource::model_reports);
    NANGUARD_SCOPE("layers.2.dense");
    report_activation(torch::tanh(x), "tanh");  // the tanh op itself is not recorded
    (void)torch::relu(x);
    from_reports = rec.finish();
  }
  {
    ActivationRecorder rec(0.01, ActivationSource::op_callbacks);
    report_activation(torch::relu(x), "relu");  // recorded once, from the op
    from_ops = rec.finish();
  }
  report_activation(x, "relu");  // no recorder: ignored
  ASSERT_EQ(from_reports.size(), 1u);
  EXPECT_EQ(from_reports[0].layer, "layers.2.dense");
  EXPECT_EQ(from_reports[0].kind, "tanh");
  EXPECT_NEAR(from_reports[0].mean, torch::tanh(x).mean().item<double>(), 1e-6);
  ASSERT_EQ(from_ops.size(), 1u);
  EXPECT_EQ(from_ops[0].kind, "relu");
}

TEST(ActivationRecorder, ReportOfAnUnknownKindNamesTheValidOnes) {
  auto x = torch::randn({2, 2});
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([&] { report_activation(x, "softplus"); },
                                                         {"report_activation", "\"relu\"", "got \"softplus\""}));
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([&] { report_activation(x, nullptr); }, {"got null"}));
}

// A recorder started inside another records until it stops, then the outer one goes on.
TEST(ActivationRecorder, NestedRecorderHandsBackToTheOuterOne) {
  auto x = torch::randn({4, 3});
  std::vector<ActivationStats> outer_stats, inner_stats;
  ActivationRecorder outer(0.01, ActivationSource::model_reports);
  report_activation(x, "relu");
  {
    ActivationRecorder inner(0.01, ActivationSource::model_reports);
    report_activation(x, "tanh");
    inner_stats = inner.finish();
  }
  report_activation(x, "sigmoid");
  outer_stats = outer.finish();
  ASSERT_EQ(inner_stats.size(), 1u);
  EXPECT_EQ(inner_stats[0].kind, "tanh");
  ASSERT_EQ(outer_stats.size(), 2u);
  EXPECT_EQ(outer_stats[0].kind, "relu");
  EXPECT_EQ(outer_stats[1].kind, "sigmoid");
}

// Per-layer norms of a diverging run are computed in double once float32 overflows.
TEST(LayerSignals, NormsPastFloatRangeAreComputedInDouble) {
  auto w = torch::full({4}, 3e19f);  // each square is 9e38: past float32's range
  auto before = torch::zeros({4});
  w.mutable_grad() = torch::full({4}, 3e19f);
  const auto layers = layer_signals({"layer.weight"}, {w}, {before});
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_NEAR(layers[0].grad_norm, 6e19, 1e13);
  EXPECT_NEAR(layers[0].weight_norm, 6e19, 1e13);
  EXPECT_TRUE(std::isnan(layers[0].update_ratio));  // no weight before: no ratio
}

TEST(SignalsCsv, OneRowPerNumber) {
  testing::TempDir dir;
  StepSignals a;
  a.step = 0;
  a.loss = 2.5;
  a.grad_norm = 1;
  a.learning_rate = 0.001;
  a.sampled = true;
  a.layers = {{"layers.0.dense", 0.5, 3, std::nan("")}};
  a.activations = {{"layers.0.dense", "relu", 0.2, 0.3, 0.25, 0, 4}};
  a.optimizer_state = {std::nan(""), std::nan("")};
  StepSignals b;
  b.step = 1;
  b.loss = 2.0;
  b.grad_norm = 0.9;
  b.learning_rate = 0.001;
  write_signals_csv(dir / "monitor.csv", {a, b});
  const std::string text = testing::read_bytes(dir / "monitor.csv");
  EXPECT_EQ(text,
            "step,signal,layer,value\n"
            "0,loss,,2.5\n0,grad_norm,,1\n0,lr,,0.001\n"
            "0,layer_grad_norm,layers.0.dense,0.5\n0,weight_norm,layers.0.dense,3\n"
            "0,act_mean,layers.0.dense,0.2\n0,act_std,layers.0.dense,0.3\n0,dead_fraction,layers.0.dense,0.25\n"
            "1,loss,,2\n1,grad_norm,,0.9\n1,lr,,0.001\n");
  // A folder where the file should go: the rename fails.
  std::filesystem::create_directories(dir / "taken");
  EXPECT_THROW(write_signals_csv(dir / "taken", {a}), IoError);
}

}  // namespace
}  // namespace nanguard::monitor
