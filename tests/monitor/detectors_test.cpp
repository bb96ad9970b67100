#include "nanguard/monitor/detectors.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"

namespace nanguard::monitor {
namespace {

// A noisy but healthy decreasing loss: 2.3 * exp(-t/300) + 0.05, times lognormal noise.
std::vector<double> healthy_series(int n, unsigned seed, double noise = 0.2) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, noise);
  std::vector<double> v;
  for (int t = 0; t < n; ++t) v.push_back((2.3 * std::exp(-t / 300.0) + 0.05) * std::exp(normal(rng)));
  return v;
}

TEST(Cooldown, AllowsOncePerWindowPerLayer) {
  Cooldown c(10);
  EXPECT_TRUE(c.allow(0, "a"));
  EXPECT_FALSE(c.allow(5, "a"));
  EXPECT_TRUE(c.allow(5, "b"));
  EXPECT_TRUE(c.allow(10, "a"));
}

TEST(LogEma, MeanAndStdOfLogValues) {
  LogEma e(1000);
  for (int i = 0; i < 2000; ++i) e.add(i % 2 ? std::exp(1.0) : std::exp(-1.0));
  EXPECT_NEAR(e.mean(), 0.0, 0.05);
  EXPECT_NEAR(e.std(), 1.0, 0.05);
  EXPECT_NEAR(e.z(std::exp(3.0)), 3.0, 0.2);
  LogEma flat(10);
  for (int i = 0; i < 20; ++i) flat.add(2.0);
  EXPECT_DOUBLE_EQ(flat.std(), 0.05);  // floored: a flat series does not make infinite z-scores
}

TEST(SpikeDetector, QuietOnHealthyNoise) {
  for (unsigned seed = 0; seed < 5; ++seed) {
    SpikeDetector d("loss", 8.0, 10.0, 100, 50, 500);
    auto series = healthy_series(3000, seed, 0.3);
    for (size_t t = 0; t < series.size(); ++t) EXPECT_FALSE(d.update(static_cast<int64_t>(t), series[t])) << t;
  }
}

TEST(SpikeDetector, FiresOnAJumpWithTheNumbers) {
  SpikeDetector d("loss", 8.0, 0.0, 100, 50, 500);
  auto series = healthy_series(200, 1, 0.1);
  for (size_t t = 0; t < series.size(); ++t) ASSERT_FALSE(d.update(static_cast<int64_t>(t), series[t]));
  auto w = d.update(200, 50.0);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->detector, "loss_spike");
  EXPECT_EQ(w->step, 200);
  EXPECT_GE(w->value, 8.0);
  EXPECT_EQ(w->cause, "lr_too_high");
  EXPECT_NE(w->message.find("spiked to 50"), std::string::npos) << w->message;
  EXPECT_NE(w->message.find("z-score"), std::string::npos);
  EXPECT_FALSE(d.update(201, 60.0));  // cooldown
}

TEST(SpikeDetector, TenTimesTheRecentMaximumRule) {
  // A noisy window (wide spread, so the z-score stays low) and a value 12x its maximum.
  SpikeDetector d("loss", 1e6, 10.0, 100, 50, 500);
  for (int t = 0; t < 100; ++t) EXPECT_FALSE(d.update(t, t % 2 ? 0.01 : 1.0)) << t;  // the maximum comes first
  auto w = d.update(100, 12.0);
  ASSERT_TRUE(w);
  EXPECT_NE(w->message.find("12x the recent maximum 1"), std::string::npos) << w->message;
  SpikeDetector off("loss", 1e6, 0.0, 100, 50, 500);
  for (int t = 0; t < 100; ++t) off.update(t, t % 2 ? 0.01 : 1.0);
  EXPECT_FALSE(off.update(100, 12.0));
}

// The recent maximum is that of the last `window` values: a large value stops counting once it
// has left the window, and a reset forgets it.
TEST(SpikeDetector, RecentMaximumSlidesWithTheWindow) {
  SpikeDetector d("loss", 1e6, 10.0, 5, 50, 0);
  EXPECT_FALSE(d.update(0, 100.0));
  for (int t = 1; t <= 4; ++t) EXPECT_FALSE(d.update(t, 1.0)) << t;
  EXPECT_FALSE(d.update(5, 15.0));  // 100 is still one of the last 5 values
  for (int t = 6; t <= 10; ++t) EXPECT_FALSE(d.update(t, 1.0)) << t;
  auto w = d.update(11, 15.0);  // the last 5 are 1.0: 15x their maximum
  ASSERT_TRUE(w);
  EXPECT_NE(w->message.find("15x the recent maximum 1)"), std::string::npos) << w->message;
  d.reset();
  EXPECT_FALSE(d.update(12, 1e6));  // nothing to compare against after a reset
  // A falling series keeps its window's maximum, not the newest value.
  SpikeDetector falling("loss", 1e6, 10.0, 3, 50, 0);
  const double values[] = {9.0, 8.0, 7.0, 6.0};
  for (int t = 0; t < 4; ++t) EXPECT_FALSE(falling.update(t, values[t])) << t;
  EXPECT_FALSE(falling.update(4, 75.0));  // 75 < 10 x 8 (8, 7, 6 are the last 3)
  EXPECT_TRUE(falling.update(5, 800.0));
}

TEST(SpikeDetector, RatioRuleFiresBeforeWarmupFromTheSecondValue) {
  // A loss 1000x everything seen before, at the 4th step: no z-score yet, the ratio rule fires.
  SpikeDetector d("loss", 8.0, 10.0, 100, 50, 500);
  EXPECT_FALSE(d.update(0, 2.3));
  EXPECT_FALSE(d.update(1, 2.2));
  EXPECT_FALSE(d.update(2, 2.25));
  auto w = d.update(3, 3400.0);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->detector, "loss_spike");
  EXPECT_NE(w->message.find("within the first 4 steps"), std::string::npos) << w->message;
  EXPECT_NE(w->message.find("x the recent maximum 2.3"), std::string::npos) << w->message;
  // The first value has nothing to compare against; the second can fire.
  SpikeDetector early("loss", 8.0, 10.0, 100, 50, 500);
  EXPECT_FALSE(early.update(0, 1e4));
  EXPECT_TRUE(early.update(1, 1e6));
  // A healthy start (falling loss, a 3x bump) stays silent with the rule on.
  SpikeDetector calm("loss", 8.0, 10.0, 100, 50, 500);
  const double start[] = {2.3, 2.1, 1.8, 1.5, 1.2, 3.6, 1.0, 0.9};
  for (int t = 0; t < 8; ++t) EXPECT_FALSE(calm.update(t, start[t])) << t;
}

TEST(SpikeDetector, SilentDuringWarmupAndOnNonPositiveValues) {
  SpikeDetector d("grad_norm", 3.0, 0.0, 100, 50, 0);
  for (int t = 0; t < 50; ++t) EXPECT_FALSE(d.update(t, t == 10 ? 1e6 : 1.0));
  EXPECT_FALSE(d.update(60, -1.0));
  EXPECT_FALSE(d.update(61, std::nan("")));
  EXPECT_EQ(SpikeDetector("loss", 3.0, 0.0, 100, 50, 0).z(1e6), 0.0);  // not warm yet
  auto w = d.update(62, 1e6);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->detector, "grad_norm_spike");
  EXPECT_EQ(w->cause, "exploding_gradients");
}

TEST(GrowthDetector, FiresOnGeometricGrowthWithAForecast) {
  GrowthDetector d("loss", 4, 1.5, kFloat32Max, 100);
  EXPECT_FALSE(d.update(0, 1.0));
  EXPECT_FALSE(d.update(1, 2.0));
  EXPECT_FALSE(d.update(2, 4.0));
  EXPECT_FALSE(d.update(3, 8.0));
  auto w = d.update(4, 16.0);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->detector, "loss_growth");
  EXPECT_NEAR(w->value, 2.0, 1e-9);
  // log2(3.4e38 / 16) = 124
  EXPECT_EQ(w->forecast_steps, 124);
  EXPECT_NE(w->message.find("x2 per step, from 1 to 16"), std::string::npos) << w->message;
  EXPECT_NE(w->message.find("about 124 steps"), std::string::npos) << w->message;
}

TEST(GrowthDetector, AFallOrSlowGrowthDoesNotFire) {
  GrowthDetector d("grad_norm", 4, 1.5, kGradNormOverflow, 0);
  for (double v : {1.0, 2.0, 4.0, 3.0, 6.0, 12.0, 24.0}) EXPECT_FALSE(d.update(0, v));  // the fall restarts the run
  GrowthDetector slow("grad_norm", 4, 1.5, kGradNormOverflow, 0);
  double v = 1;
  for (int t = 0; t < 50; ++t) EXPECT_FALSE(slow.update(t, v *= 1.2));
  GrowthDetector noisy("loss", 4, 1.5, kFloat32Max, 0);
  auto series = healthy_series(2000, 3, 0.3);
  for (size_t t = 0; t < series.size(); ++t) EXPECT_FALSE(noisy.update(static_cast<int64_t>(t), series[t])) << t;
}

TEST(GrowthDetector, HeavyTailedNoiseDoesNotFireButADivergenceDoes) {
  // Late mini-batch losses: lognormal with a wide spread rise a few steps in a row by chance.
  GrowthDetector d("loss", 4, 1.5, kFloat32Max, 0, 100, 50, 6.0);
  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0.0, 1.2);
  int64_t t = 0;
  for (; t < 50; ++t) ASSERT_FALSE(d.update(t, 2.0 / (1.0 + t)));  // a healthy start falls
  for (; t < 20000; ++t) ASSERT_FALSE(d.update(t, 0.02 * std::exp(normal(rng)))) << t;
  GrowthDetector ungated("loss", 4, 1.5, kFloat32Max, 0, 100, 1000000, 6.0);
  int fired = 0;
  std::mt19937 rng2(5);
  for (int64_t k = 0; k < 20000; ++k) fired += ungated.update(k, 0.02 * std::exp(normal(rng2))) ? 1 : 0;
  EXPECT_GT(fired, 0);  // what the gate is for
  std::optional<Warning> w;
  double v = 0.05;
  int64_t start = t;
  for (; t < start + 30 && !w; ++t) w = d.update(t, v *= 4);
  ASSERT_TRUE(w);
  EXPECT_LE(t - start, 8);
}

TEST(VanishingDetector, RatioOfFirstToLastLayerPerElement) {
  VanishingDetector d(1e-2, 100);
  // A wide first layer: a smaller per-element gradient than its norm suggests, still healthy.
  std::vector<LayerSignals> healthy{{"layers.0.dense", 0.8, 1, 0, 100480}, {"layers.1.dense", 1.0, 1, 0, 1290}};
  EXPECT_FALSE(d.update(0, healthy));
  std::vector<LayerSignals> fading{{"layers.0.dense", 2e-5, 1, 0, 400}, {"layers.5.dense", 1e-3, 1, 0, 100},
                                   {"layers.19.dense", 4e-2, 1, 0, 100}};
  auto w = d.update(1, fading);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->detector, "vanishing_gradients");
  EXPECT_EQ(w->layer, "layers.0.dense");
  // RMS 2e-5/20 = 1e-6 against 4e-2/10 = 4e-3.
  EXPECT_NEAR(w->value, 2.5e-4, 1e-12);
  EXPECT_NE(w->message.find("is 0.00025x that of the last layer layers.19.dense"), std::string::npos) << w->message;
  EXPECT_NE(w->message.find("3.602 orders of magnitude"), std::string::npos) << w->message;
  EXPECT_FALSE(d.update(2, fading));  // cooldown
  EXPECT_FALSE(d.update(3, {{"only", 1e-12, 1, 0, 1}}));
  VanishingDetector zero(1e-2, 0);
  auto z = zero.update(0, {{"layers.0.dense", 0.0, 1, 0, 10}, {"layers.1.dense", 0.1, 1, 0, 10}});
  ASSERT_TRUE(z);
  EXPECT_NE(z->message.find("receives no gradient at all"), std::string::npos) << z->message;
}

TEST(ActivationDetector, DyingReluNeedsPatience) {
  ActivationDetector d(ActivationDetector::Mode::dying_relu, 0.5, 2, 100);
  ActivationStats dead{"layers.1.dense", "relu", 0.01, 0.1, 0.75, 0, 128};
  ActivationStats sig{"layers.2.dense", "sigmoid", 0.5, 0.4, 0, 0.9, 10};
  EXPECT_TRUE(d.update(0, {dead, sig}).empty());
  auto w = d.update(50, {dead, sig});
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].detector, "dying_relu");
  EXPECT_EQ(w[0].layer, "layers.1.dense");
  EXPECT_NE(w[0].message.find("75% of its 128 units"), std::string::npos) << w[0].message;
  ActivationStats alive = dead;
  alive.dead_fraction = 0.1;
  EXPECT_TRUE(d.update(100, {alive}).empty());
}

TEST(ActivationDetector, Saturation) {
  ActivationDetector d(ActivationDetector::Mode::saturation, 0.3, 1, 100);
  ActivationStats relu{"layers.1.dense", "relu", 0.01, 0.1, 0.99, 0, 128};
  ActivationStats ok{"layers.2.dense", "tanh", 0.0, 0.4, 0, 0.1, 10};
  ActivationStats sat{"layers.3.dense", "sigmoid", 0.5, 0.49, 0, 0.62, 10};
  auto w = d.update(0, {relu, ok, sat});
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].detector, "saturation");
  EXPECT_EQ(w[0].layer, "layers.3.dense");
  EXPECT_NEAR(w[0].value, 0.62, 1e-12);
  EXPECT_NE(w[0].message.find("62%"), std::string::npos) << w[0].message;
}

TEST(OscillationDetector, FiresOnAZigzagOnly) {
  OscillationDetector d(40, 0.5, 0, 1000);
  std::optional<Warning> w;
  for (int t = 0; t < 60 && !w; ++t) w = d.update(t, t % 2 ? 3.0 : 1.0);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->detector, "loss_oscillation");
  EXPECT_NEAR(w->value, 1.0, 0.05);  // |diff| 2 over a mean level of about 2
  OscillationDetector small(40, 0.5, 0, 1000);
  for (int t = 0; t < 100; ++t) EXPECT_FALSE(small.update(t, t % 2 ? 1.1 : 1.0));  // amplitude too small
  OscillationDetector noise(40, 0.5, 0, 1000);
  auto series = healthy_series(5000, 7, 0.5);
  for (size_t t = 0; t < series.size(); ++t) EXPECT_FALSE(noise.update(static_cast<int64_t>(t), series[t])) << t;
}

TEST(StallDetector, FiresWhenTheSmoothedLossStopsImproving) {
  StallDetector d(200, 0.0, 0, 200);
  std::optional<Warning> w;
  int64_t fired = -1;
  for (int t = 0; t < 1000 && !w; ++t) {
    w = d.update(t, 2.3 + 0.01 * ((t * 7919) % 13 - 6) / 6.0);
    if (w) fired = t;
  }
  ASSERT_TRUE(w);
  EXPECT_EQ(w->detector, "loss_stall");
  EXPECT_GE(fired, 200);
  EXPECT_NE(w->message.find("over 200 steps"), std::string::npos) << w->message;
  StallDetector improving(200, 0.0, 0, 200);
  auto series = healthy_series(3000, 11, 0.2);
  for (size_t t = 0; t < 1500; ++t) EXPECT_FALSE(improving.update(static_cast<int64_t>(t), series[t])) << t;
}

}  // namespace
}  // namespace nanguard::monitor
