#include "nanguard/train/schedule.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;

TEST(Schedule, ConstantFallsBackToTheOptimizerRate) {
  auto s = make_schedule(ScheduleType::constant, 0.003);
  EXPECT_EQ(s->learning_rate(0), 0.003);
  EXPECT_EQ(s->learning_rate(123456), 0.003);
  EXPECT_EQ(s->spec().initial_learning_rate(), 0.003);
  auto own = make_schedule(ScheduleSpec(ScheduleType::constant).initial_learning_rate(0.5), 0.003);
  EXPECT_EQ(own->learning_rate(7), 0.5);
  EXPECT_TRUE(own->state().empty());
}

TEST(Schedule, ExponentialDecayIsKerasFormula) {
  for (bool staircase : {false, true}) {
    SCOPED_TRACE(staircase);
    auto spec = ScheduleSpec(ScheduleType::exponential_decay)
                    .initial_learning_rate(0.1)
                    .decay_steps(1000)
                    .decay_rate(0.96)
                    .staircase(staircase);
    auto s = make_schedule(spec, 1.0);
    for (int64_t step = 0; step <= 10000; step += 37) {
      double exponent = static_cast<double>(step) / 1000.0;
      if (staircase) exponent = std::floor(exponent);
      EXPECT_DOUBLE_EQ(s->learning_rate(step), 0.1 * std::pow(0.96, exponent)) << step;
    }
  }
  // By hand: halving every 10 steps.
  auto smooth = make_schedule(
      ScheduleSpec(ScheduleType::exponential_decay).initial_learning_rate(0.1).decay_steps(10).decay_rate(0.5),
      1.0);
  auto stairs = make_schedule(ScheduleSpec(ScheduleType::exponential_decay)
                                  .initial_learning_rate(0.1)
                                  .decay_steps(10)
                                  .decay_rate(0.5)
                                  .staircase(true),
                              1.0);
  EXPECT_DOUBLE_EQ(smooth->learning_rate(0), 0.1);
  EXPECT_DOUBLE_EQ(smooth->learning_rate(10), 0.05);
  EXPECT_NEAR(smooth->learning_rate(15), 0.1 * std::pow(0.5, 1.5), 1e-15);
  EXPECT_DOUBLE_EQ(stairs->learning_rate(15), 0.05);
  EXPECT_DOUBLE_EQ(stairs->learning_rate(19), 0.05);
  EXPECT_DOUBLE_EQ(stairs->learning_rate(20), 0.025);
}

TEST(Schedule, PiecewiseConstantBoundariesAreInclusiveLikeKeras) {
  auto s = make_schedule(ScheduleSpec(ScheduleType::piecewise_constant)
                             .boundaries({100, 200})
                             .values({1.0, 0.5, 0.1}),
                         9.0);
  EXPECT_EQ(s->learning_rate(0), 1.0);
  EXPECT_EQ(s->learning_rate(100), 1.0);
  EXPECT_EQ(s->learning_rate(101), 0.5);
  EXPECT_EQ(s->learning_rate(200), 0.5);
  EXPECT_EQ(s->learning_rate(201), 0.1);
  EXPECT_EQ(s->learning_rate(1000000), 0.1);
}

TEST(Schedule, CosineDecayWithoutWarmup) {
  auto s = make_schedule(
      ScheduleSpec(ScheduleType::cosine_decay).initial_learning_rate(1.0).decay_steps(100).alpha(0.1), 0.0);
  EXPECT_DOUBLE_EQ(s->learning_rate(0), 1.0);
  EXPECT_NEAR(s->learning_rate(50), 0.9 * 0.5 + 0.1, 1e-12);
  EXPECT_NEAR(s->learning_rate(25), 0.9 * 0.5 * (1 + std::cos(M_PI / 4)) + 0.1, 1e-12);
  EXPECT_NEAR(s->learning_rate(100), 0.1, 1e-12);
  EXPECT_NEAR(s->learning_rate(5000), 0.1, 1e-12);
}

TEST(Schedule, CosineDecayWarmupEndpoints) {
  auto s = make_schedule(ScheduleSpec(ScheduleType::cosine_decay)
                             .initial_learning_rate(0.0)
                             .warmup_target(1.0)
                             .warmup_steps(10)
                             .decay_steps(100),
                         0.5);
  EXPECT_DOUBLE_EQ(s->learning_rate(0), 0.0);
  EXPECT_DOUBLE_EQ(s->learning_rate(5), 0.5);
  EXPECT_DOUBLE_EQ(s->learning_rate(10), 1.0);  // end of warmup = start of decay
  EXPECT_NEAR(s->learning_rate(60), 0.5, 1e-12);
  EXPECT_NEAR(s->learning_rate(110), 0.0, 1e-12);
  EXPECT_NEAR(s->learning_rate(100000), 0.0, 1e-12);
  // Unset initial_learning_rate warms up from the optimizer's rate.
  auto from_opt = make_schedule(
      ScheduleSpec(ScheduleType::cosine_decay).warmup_target(1.0).warmup_steps(10).decay_steps(100), 0.5);
  EXPECT_DOUBLE_EQ(from_opt->learning_rate(0), 0.5);
  EXPECT_DOUBLE_EQ(from_opt->learning_rate(5), 0.75);
}

TEST(Schedule, PlateauReducesAfterPatienceWithCooldownAndFloor) {
  auto s = make_schedule(ScheduleSpec(ScheduleType::reduce_on_plateau)
                             .patience(2)
                             .factor(0.5)
                             .cooldown(1)
                             .min_lr(0.2),
                         1.0);
  // A flat loss: reductions at epochs 2, 4 and 6 (cooldown then two waits), then the floor.
  const double expected[] = {1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2};
  for (int epoch = 0; epoch < 10; ++epoch) {
    s->on_epoch_end(epoch, 1.0);
    EXPECT_DOUBLE_EQ(s->learning_rate(0), expected[epoch]) << epoch;
  }
}

TEST(Schedule, PlateauCountsOnlyImprovementsLargerThanMinDelta) {
  auto s = make_schedule(
      ScheduleSpec(ScheduleType::reduce_on_plateau).patience(2).min_delta(0.01), 1.0);
  s->on_epoch_end(0, 1.0);
  s->on_epoch_end(1, 0.995);  // too small to count
  s->on_epoch_end(2, 0.992);  // still within 0.01 of the best (1.0): reduce
  EXPECT_DOUBLE_EQ(s->learning_rate(0), 0.1);
  auto improving = make_schedule(ScheduleSpec(ScheduleType::reduce_on_plateau).patience(2), 1.0);
  for (int epoch = 0; epoch < 10; ++epoch) improving->on_epoch_end(epoch, 1.0 - 0.1 * epoch);
  EXPECT_DOUBLE_EQ(improving->learning_rate(0), 1.0);
  // NaN never improves.
  auto nan = make_schedule(ScheduleSpec(ScheduleType::reduce_on_plateau).patience(1), 1.0);
  nan->on_epoch_end(0, std::nan(""));
  EXPECT_DOUBLE_EQ(nan->learning_rate(0), 0.1);
}

TEST(Schedule, PlateauModes) {
  auto max = make_schedule(ScheduleSpec(ScheduleType::reduce_on_plateau).patience(1).mode("max"), 1.0);
  max->on_epoch_end(0, 0.5);
  max->on_epoch_end(1, 0.6);  // higher is better
  EXPECT_DOUBLE_EQ(max->learning_rate(0), 1.0);
  max->on_epoch_end(2, 0.4);
  EXPECT_DOUBLE_EQ(max->learning_rate(0), 0.1);
  // auto: an accuracy monitor is maximised, a loss minimised.
  auto acc = make_schedule(
      ScheduleSpec(ScheduleType::reduce_on_plateau).patience(1).mode("auto").monitor("val_accuracy"), 1.0);
  acc->on_epoch_end(0, 0.5);
  acc->on_epoch_end(1, 0.6);
  EXPECT_DOUBLE_EQ(acc->learning_rate(0), 1.0);
  auto loss = make_schedule(ScheduleSpec(ScheduleType::reduce_on_plateau).patience(1).mode("auto"), 1.0);
  loss->on_epoch_end(0, 0.5);
  loss->on_epoch_end(1, 0.6);
  EXPECT_DOUBLE_EQ(loss->learning_rate(0), 0.1);
}

TEST(Schedule, PlateauStateRoundTripContinuesIdentically) {
  auto spec = ScheduleSpec(ScheduleType::reduce_on_plateau).patience(3).factor(0.3).cooldown(2);
  auto a = make_schedule(spec, 0.01);
  const double losses[] = {1.0, 0.9, 0.95, 0.93, 0.92, 0.91, 0.94, 0.96, 0.97, 0.98, 0.99, 1.0, 1.1};
  for (int e = 0; e < 6; ++e) a->on_epoch_end(e, losses[e]);
  std::vector<double> saved = a->state();
  ASSERT_EQ(saved.size(), 4u);
  auto b = make_schedule(spec, 0.01);
  b->load_state(saved);
  EXPECT_EQ(b->state(), saved);
  for (int e = 6; e < 13; ++e) {
    a->on_epoch_end(e, losses[e]);
    b->on_epoch_end(e, losses[e]);
    EXPECT_EQ(a->learning_rate(0), b->learning_rate(0)) << e;
    EXPECT_EQ(a->state(), b->state()) << e;
  }
  EXPECT_LT(a->learning_rate(0), 0.01);  // the run did reduce
  // A fresh schedule's state holds an infinite best and survives the round trip too.
  auto fresh = make_schedule(spec, 0.01);
  EXPECT_TRUE(std::isinf(fresh->state()[1]));
  b->load_state(fresh->state());
  EXPECT_EQ(b->learning_rate(0), 0.01);
}

TEST(Schedule, LoadStateRefusesBadState) {
  auto plateau = make_schedule(ScheduleType::reduce_on_plateau, 0.01);
  EXPECT_TRUE(throws_with<ValueError>([&] { plateau->load_state({0.1, 1.0}); }, {"4 values", "got 2"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { plateau->load_state({-0.1, 1.0, 0, 0}); }, {"lr"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { plateau->load_state({0.1, std::nan(""), 0, 0}); },
                                      {"best", "NaN"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { plateau->load_state({0.1, 1.0, 1.5, 0}); }, {"wait"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { plateau->load_state({0.1, 1.0, 0, -1}); }, {"cooldown"}));
  EXPECT_EQ(plateau->learning_rate(0), 0.01);  // untouched by refused states
  auto constant = make_schedule(ScheduleType::constant, 0.01);
  constant->load_state({});
  EXPECT_TRUE(throws_with<ValueError>([&] { constant->load_state({1.0}); }, {"constant", "empty"}));
}

TEST(Schedule, NegativeStepIsRefused) {
  auto s = make_schedule(ScheduleType::constant, 0.01);
  EXPECT_TRUE(throws_with<ValueError>([&] { s->learning_rate(-1); }, {"step", "-1"}));
}

TEST(Schedule, InvalidSpecsAreRefused) {
  auto refused = [](const ScheduleSpec& spec, std::initializer_list<std::string> needles) {
    return throws_with<ValueError>([&] { make_schedule(spec, 0.01); }, needles);
  };
  using T = ScheduleType;
  EXPECT_TRUE(refused(ScheduleSpec(T::exponential_decay).decay_rate(0.5), {"decay_steps"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::exponential_decay).decay_steps(10), {"decay_rate", "got 0"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::exponential_decay).decay_steps(10).decay_rate(-0.5), {"decay_rate"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::constant).initial_learning_rate(-1.0), {"initial_learning_rate"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::piecewise_constant).boundaries({10, 20}).values({1.0, 0.5}),
                      {"one more entry", "2 values for 2 boundaries"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::piecewise_constant).boundaries({10, 10}).values({1.0, 0.5, 0.1}),
                      {"strictly increasing", "boundaries[1] = 10"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::piecewise_constant).boundaries({-1}).values({1.0, 0.5}),
                      {"boundaries[0]"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::piecewise_constant).boundaries({1}).values({1.0, -0.5}),
                      {"values[1]"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::cosine_decay), {"decay_steps"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::cosine_decay).decay_steps(10).alpha(1.5), {"alpha"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::cosine_decay).decay_steps(10).warmup_steps(5), {"warmup_target"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::reduce_on_plateau).factor(1.0), {"factor", "(0, 1)"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::reduce_on_plateau).patience(-1), {"patience"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::reduce_on_plateau).mode("avg"), {"mode", "\"avg\""}));
  EXPECT_TRUE(refused(ScheduleSpec(T::reduce_on_plateau).monitor(""), {"monitor"}));
  EXPECT_TRUE(refused(ScheduleSpec(T::reduce_on_plateau).min_lr(-1.0), {"min_lr"}));
}

TEST(Schedule, TypeNames) {
  for (auto type : {ScheduleType::constant, ScheduleType::exponential_decay, ScheduleType::piecewise_constant,
                    ScheduleType::cosine_decay, ScheduleType::reduce_on_plateau}) {
    EXPECT_EQ(parse_schedule_type(to_string(type)), type);
  }
  EXPECT_TRUE(throws_with<ValueError>([] { parse_schedule_type("cosine"); },
                                      {"unknown schedule \"cosine\"", "cosine_decay"}));
}

}  // namespace
}  // namespace nanguard
