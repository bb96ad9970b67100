// Finite divergence: the watch's rule on synthetic losses, and the guard's incident and repair
// on a run whose learning rate is too high (every value stays finite).
#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "guard/divergence_watch.h"
#include "nanguard/core/error.h"
#include "nanguard/guard/guard.h"
#include "nanguard/monitor/signals.h"
#include "nanguard/monitor/warning.h"

namespace nanguard {
namespace {

using detail::DivergenceWatch;

TEST(DivergenceWatch, LossAboveTheFactorTimesTheHealthyLevelIsAnExcursion) {
  DivergenceWatch watch(DivergenceOptions().loss_factor(4.0));
  EXPECT_FALSE(watch.check_loss(0, 2.3));
  EXPECT_FALSE(watch.check_loss(1, 9.2));  // exactly 4x: not above the ceiling
  EXPECT_DOUBLE_EQ(watch.reference(), 5.75);  // the median of the first steps
  auto found = watch.check_loss(2, 40.0);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->kind, "loss_excursion");
  EXPECT_EQ(found->excursion_start, 2);
  EXPECT_DOUBLE_EQ(found->reference, 5.75);
  EXPECT_DOUBLE_EQ(found->threshold, 23.0);
  EXPECT_NE(found->message.find("40"), std::string::npos);
  // The excursion's loss did not join the history.
  EXPECT_DOUBLE_EQ(watch.reference(), 5.75);
}

TEST(DivergenceWatch, TheCeilingMakesRoomForTheRunsOwnBatchNoise) {
  // A guard that starts on a trained model (a resumed run): batch losses scatter log-normally
  // (standard deviation 1) around 0.35. The first steps, before there is a noise estimate, are
  // not judged here.
  torch::manual_seed(0);
  const auto noise = torch::randn({100}, torch::kDouble);
  DivergenceWatch watch{DivergenceOptions()};
  for (int64_t t = 0; t < 100; ++t) watch.check_loss(t, 0.35 * std::exp(noise[t].item<double>()));
  EXPECT_NEAR(watch.loss_noise(), 1.0, 0.3);
  // 4.1x the level is one hard batch, not a divergence (the bare 4x ceiling called it one).
  EXPECT_FALSE(watch.check_loss(100, 4.1 * watch.reference()));
  // Far above the noise: an excursion, with its widened ceiling in the message (the hard batch
  // joined the healthy history).
  const double level = watch.reference(), spread = watch.loss_noise();
  auto found = watch.check_loss(101, 1e4 * level);
  ASSERT_TRUE(found);
  EXPECT_NEAR(found->threshold, 4 * level * std::exp(3 * spread), 1e-6 * found->threshold);
  EXPECT_NE(found->message.find("batch-to-batch noise"), std::string::npos) << found->message;
}

TEST(DivergenceWatch, ASteadyTrendIsNotNoise) {
  // A loss falling x0.9 per step leaves the ceiling at 4x its level.
  DivergenceWatch watch{DivergenceOptions()};
  double loss = 2.3;
  for (int64_t t = 0; t < 30; ++t, loss *= 0.9) ASSERT_FALSE(watch.check_loss(t, loss));
  EXPECT_NEAR(watch.loss_noise(), 0.0, 1e-12);
  EXPECT_TRUE(watch.check_loss(30, 4.1 * watch.reference()));
}

TEST(DivergenceWatch, AYoungRunHasTheBareCeiling) {
  // Fewer than initial_steps healthy losses: no noise estimate, the ceiling is 4x.
  DivergenceWatch watch{DivergenceOptions()};
  for (double loss : {2.4, 0.9, 2.2}) ASSERT_FALSE(watch.check_loss(0, loss));
  EXPECT_EQ(watch.loss_noise(), 0.0);
  EXPECT_TRUE(watch.check_loss(3, 4.1 * 2.2));
}

TEST(DivergenceWatch, AGeometricGrowthCannotDragTheLevelAlong) {
  // x2.5 per step never passes 4x the previous maximum, but passes 4x the lagging median.
  DivergenceWatch watch{DivergenceOptions()};
  double loss = 2.3;
  int64_t found_at = -1;
  for (int64_t t = 0; t < 10 && found_at < 0; ++t, loss *= 2.5)
    if (watch.check_loss(t, loss)) found_at = t;
  EXPECT_EQ(found_at, 3);  // 35.9 > 4 x median(2.3, 5.75, 14.4)
}

TEST(DivergenceWatch, TheInitialLevelStaysAfterTheLossFalls) {
  DivergenceWatch watch(DivergenceOptions().initial_steps(2).window(3));
  watch.check_loss(0, 2.0);
  watch.check_loss(1, 1.5);
  for (int64_t t = 2; t < 50; ++t) EXPECT_FALSE(watch.check_loss(t, 0.05));
  EXPECT_DOUBLE_EQ(watch.reference(), 1.75);
  // A late batch at 20x the trained loss is still below 4x the initial level: not a divergence.
  EXPECT_FALSE(watch.check_loss(50, 1.0));
  EXPECT_TRUE(watch.check_loss(51, 7.5));
}

TEST(DivergenceWatch, LossesThatCanBeNegativeAreNotJudgedByRatio) {
  DivergenceWatch watch{DivergenceOptions()};
  watch.check_loss(0, 1.0);
  watch.check_loss(1, -0.5);
  EXPECT_FALSE(watch.check_loss(2, 1000.0));
}

TEST(DivergenceWatch, RollbackForgetsTheLossesAfterTheSnapshot) {
  DivergenceWatch watch(DivergenceOptions().initial_steps(1));
  watch.check_loss(0, 1.0);
  watch.check_loss(1, 3.0);
  watch.check_loss(2, 3.0);  // the recent median is 3 now
  EXPECT_DOUBLE_EQ(watch.reference(), 3.0);
  watch.rolled_back_to(1);
  EXPECT_DOUBLE_EQ(watch.reference(), 1.0);
}

TEST(DivergenceWatch, RestartLearnsTheLevelAgain) {
  DivergenceWatch watch(DivergenceOptions().initial_steps(1));
  watch.check_loss(0, 186.0);  // raw pixels
  watch.restart_level();        // rescaled
  EXPECT_DOUBLE_EQ(watch.reference(), 0.0);
  EXPECT_FALSE(watch.check_loss(1, 2.3));
  EXPECT_TRUE(watch.check_loss(2, 50.0));
}

TEST(DivergenceWatch, DisabledWatchFindsNothing) {
  DivergenceWatch watch(DivergenceOptions().enabled(false));
  watch.check_loss(0, 1.0);
  EXPECT_FALSE(watch.check_loss(1, 1e30));
}

TEST(DivergenceWatch, OverflowForecastWithinTheHorizon) {
  DivergenceWatch watch(DivergenceOptions().forecast_steps(20));
  monitor::Warning w;
  w.detector = "loss_growth";
  w.step = 30;
  w.forecast_steps = 35;
  EXPECT_FALSE(watch.check_warning(w));
  w.forecast_steps = 12;
  auto found = watch.check_warning(w);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->kind, "overflow_forecast");
  w.forecast_steps = -1;  // not a growth warning
  EXPECT_FALSE(watch.check_warning(w));
}

monitor::ActivationStats relu(const std::string& layer, double dead) {
  monitor::ActivationStats a;
  a.layer = layer;
  a.kind = "relu";
  a.units = 128;
  a.dead_fraction = dead;
  return a;
}

TEST(DivergenceWatch, CollapseIsADeadLayerThatWasAliveAndStaysDead) {
  DivergenceWatch watch{DivergenceOptions()};
  // Dead from the first sample on: a dead start (the initialisation), not a divergence.
  EXPECT_FALSE(watch.check_activations(0, {relu("layers.1.dense", 1.0)}));
  EXPECT_FALSE(watch.check_activations(200, {relu("layers.1.dense", 1.0)}));
  DivergenceWatch alive_first{DivergenceOptions()};
  EXPECT_FALSE(alive_first.check_activations(0, {relu("layers.1.dense", 0.2)}));
  EXPECT_FALSE(alive_first.check_activations(200, {relu("layers.1.dense", 0.99)}));
  // One batch on which every unit is zero: it may be that batch.
  EXPECT_FALSE(alive_first.check_activations(400, {relu("layers.1.dense", 1.0)}));
  auto found = alive_first.check_activations(600, {relu("layers.1.dense", 1.0)});
  ASSERT_TRUE(found);
  EXPECT_EQ(found->kind, "collapse");
  EXPECT_EQ(found->layer, "layers.1.dense");
  EXPECT_EQ(found->excursion_start, 201);
  // Dead, then alive again: no collapse.
  DivergenceWatch recovers{DivergenceOptions()};
  recovers.check_activations(0, {relu("a", 0.1)});
  recovers.check_activations(200, {relu("a", 1.0)});
  recovers.check_activations(400, {relu("a", 0.5)});
  EXPECT_FALSE(recovers.check_activations(600, {relu("a", 1.0)}));
  DivergenceWatch off(DivergenceOptions().collapse(false));
  off.check_activations(0, {relu("a", 0.0)});
  off.check_activations(200, {relu("a", 1.0)});
  EXPECT_FALSE(off.check_activations(400, {relu("a", 1.0)}));
}

TEST(DivergenceOptions, RejectsValuesOutOfRange) {
  EXPECT_THROW(DivergenceOptions().loss_factor(1.0).validate(), ValueError);
  EXPECT_THROW(DivergenceOptions().loss_factor(std::nan("")).validate(), ValueError);
  EXPECT_THROW(DivergenceOptions().initial_steps(0).validate(), ValueError);
  EXPECT_THROW(DivergenceOptions().window(0).validate(), ValueError);
  EXPECT_THROW(DivergenceOptions().forecast_steps(-1).validate(), ValueError);
  torch::nn::Linear model(1, 1);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  EXPECT_THROW(Guard(*model, opt, GuardOptions().divergence(DivergenceOptions().loss_factor(0.5))), ValueError);
}

// loss = w^2 with plain SGD: each step multiplies w by (1 - 2 lr), so lr 1.6 multiplies the loss
// by 4.84 per step (1, 4.84, 23.4, ...) with every value finite, and lr 0.16 by 0.46.
struct Quadratic {
  torch::nn::Linear model{torch::nn::LinearOptions(1, 1).bias(false)};
  torch::optim::SGD opt;
  explicit Quadratic(double lr) : opt(model->parameters(), torch::optim::SGDOptions(lr)) {
    torch::NoGradGuard no_grad;
    model->weight.fill_(1.0);
  }
  double w() const { return model->weight.item<double>(); }
};

TEST(GuardDivergence, ATooHighLearningRateIsRolledBackAndBackedOff) {
  Quadratic q(1.6);
  std::vector<GuardEvent> events;
  GuardHooks hooks;
  hooks.on_event = [&](const GuardEvent& e) { events.push_back(e); };
  Guard guard(*q.model, q.opt, GuardOptions().monitor(monitor::MonitorOptions().enabled(false)), hooks);
  const data::Batch batch{torch::ones({1, 1}), torch::zeros({1, 1}), torch::tensor({int64_t{0}})};
  auto closure = [&](const data::Batch& b) {
    auto loss = q.model->forward(b.x).pow(2).mean();
    loss.backward();
    return loss;
  };
  std::vector<double> losses;
  for (int i = 0; i < 20; ++i) losses.push_back(guard.step(batch, closure).loss);
  ASSERT_EQ(guard.incidents().size(), 1u);
  const Incident& incident = *guard.incidents().front();
  EXPECT_EQ(incident.step, 1);  // 4.84 > 4 x the level 1 of step 0
  EXPECT_EQ(incident.evidence.failed_check, "divergence");
  EXPECT_TRUE(incident.evidence.diverged);
  EXPECT_EQ(incident.diagnosis.top().cause, cause::lr_too_high);
  EXPECT_EQ(incident.diagnosis.top().subkind, "divergence");
  const std::vector<std::string> expected{"rollback", "lr_backoff", "rerun_lost_steps"};
  EXPECT_EQ(incident.actions, expected);
  EXPECT_NEAR(guard.lr_scale(), 0.1, 1e-12);
  // Back at lr 0.16 the loss falls by 0.46 per step: far below where it started.
  EXPECT_LT(std::abs(q.w()), 1e-3);
  EXPECT_TRUE(std::isfinite(losses.back()));
  bool rollback_to_zero = false;
  for (const auto& e : events)
    if (e.action == "rollback") rollback_to_zero = e.detail.find("step 0") != std::string::npos;
  EXPECT_TRUE(rollback_to_zero);
}

TEST(DivergenceWatch, ARunUnderWayIsNotJudgedBeforeItsNoiseIsKnown) {
  for (bool under_way : {false, true}) {
    DivergenceWatch watch{DivergenceOptions()};
    watch.set_run_under_way(under_way);
    EXPECT_FALSE(watch.check_loss(0, 0.03));
    // 8x: an easy batch then a hard one, as a trained model's batches of 32 can be.
    EXPECT_EQ(static_cast<bool>(watch.check_loss(1, 0.25)), !under_way) << "under way: " << under_way;
  }
}

// A guard that joins a run under way (its Adam has state) does not take one hard batch among its
// first for a divergence; a fresh run's guard does.
TEST(GuardDivergence, AGuardJoiningARunUnderWayWaitsForTheNoise) {
  for (bool under_way : {false, true}) {
    auto w = torch::zeros({3}).requires_grad_(true);
    torch::optim::Adam opt({w}, torch::optim::AdamOptions(1e-3));
    if (under_way) {
      w.mutable_grad() = torch::ones({3});
      opt.step();
    }
    Guard guard({w}, {}, opt, GuardOptions().monitor(monitor::MonitorOptions().enabled(false)));
    const data::Batch batch{torch::ones({1, 1}), torch::zeros({1, 1}), torch::tensor({int64_t{0}})};
    for (double value : {0.03, 0.25, 0.05, 0.2}) {
      guard.step(batch, [&](const data::Batch&) {
        auto loss = (w * 0).sum() + value;
        loss.backward();
        return loss;
      });
    }
    EXPECT_EQ(guard.incidents().empty(), under_way) << "under way: " << under_way;
  }
}

TEST(DivergenceWatch, AYoungRunThatBarelyMovedMetAHarderBatch) {
  // Before the noise is known, a loss above the bare ceiling is judged by how far the
  // parameters moved, which is asked only then.
  for (double moved : {0.002, 0.8, std::nan("")}) {
    DivergenceWatch watch{DivergenceOptions()};
    int asked = 0;
    const auto parameters_moved = [&] {
      ++asked;
      return moved;
    };
    EXPECT_FALSE(watch.check_loss(0, 0.03, parameters_moved));
    EXPECT_FALSE(watch.check_loss(1, 0.1, parameters_moved));  // within 4x of 0.03
    EXPECT_EQ(asked, 0);
    const bool found = static_cast<bool>(watch.check_loss(2, 0.5, parameters_moved));  // 7.7x 0.065
    EXPECT_EQ(asked, 1);
    EXPECT_EQ(found, !(moved < 0.05)) << "moved " << moved;  // NaN (not known): judged as before
  }
  // Once the noise is known it is not asked.
  DivergenceWatch known{DivergenceOptions()};
  for (int64_t t = 0; t < 20; ++t) known.check_loss(t, t % 2 ? 0.3 : 0.2);
  ASSERT_TRUE(known.noise_known());
  bool asked = false;
  EXPECT_TRUE(known.check_loss(20, 100.0, [&] {
    asked = true;
    return 0.0;
  }));
  EXPECT_FALSE(asked);
}

// A plain-SGD run resumed from a trained model has no optimizer state to say it is under way:
// a hard batch among its first is not a divergence while its updates have barely moved the
// parameters, and is one where they moved far.
TEST(GuardDivergence, AHardBatchEarlyInAResumedPlainSgdRunIsNotADivergence) {
  for (double lr : {1e-3, 1.0}) {
    auto w = torch::ones({3}).requires_grad_(true);
    torch::optim::SGD opt({w}, torch::optim::SGDOptions(lr));
    Guard guard({w}, {}, opt, GuardOptions().monitor(monitor::MonitorOptions().enabled(false)));
    const data::Batch batch{torch::ones({1, 1}), torch::zeros({1, 1}), torch::tensor({int64_t{0}})};
    for (double value : {0.03, 0.25, 0.05, 0.2}) {
      guard.step(batch, [&](const data::Batch&) {
        // The loss's value is the batch's; its gradient is 1 for every weight.
        auto loss = (w - w.detach()).sum() + value;
        loss.backward();
        return loss;
      });
    }
    EXPECT_EQ(guard.incidents().empty(), lr < 0.01) << "lr " << lr;
  }
}

TEST(GuardDivergence, AHealthyRunHasNoIncident) {
  Quadratic q(0.16);
  Guard guard(*q.model, q.opt);
  const data::Batch batch{torch::ones({1, 1}), torch::zeros({1, 1}), torch::tensor({int64_t{0}})};
  for (int i = 0; i < 20; ++i) {
    guard.step(batch, [&](const data::Batch& b) {
      auto loss = q.model->forward(b.x).pow(2).mean();
      loss.backward();
      return loss;
    });
  }
  EXPECT_TRUE(guard.incidents().empty());
}

TEST(GuardDivergence, TheWatchCanBeTurnedOff) {
  Quadratic q(1.6);
  Guard guard(*q.model, q.opt, GuardOptions().divergence(DivergenceOptions().enabled(false)));
  const data::Batch batch{torch::ones({1, 1}), torch::zeros({1, 1}), torch::tensor({int64_t{0}})};
  for (int i = 0; i < 10; ++i) {
    guard.step(batch, [&](const data::Batch& b) {
      auto loss = q.model->forward(b.x).pow(2).mean();
      loss.backward();
      return loss;
    });
  }
  EXPECT_TRUE(guard.incidents().empty());
  EXPECT_GT(std::abs(q.w()), 1000.0);  // 2.2^10: diverged, unguarded
}

}  // namespace
}  // namespace nanguard
