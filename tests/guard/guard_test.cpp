// The guard on small seeded scenarios of the NaN zoo (zoo.md): each is detected, localized to
// the right birth op and phase, diagnosed with the right top cause, and repaired.
#include "nanguard/guard/guard.h"

#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/trace/scope.h"
#include "clusters.h"
#include "support/test_support.h"
#include "nanguard/train/trainer.h"

namespace nanguard {
namespace {

using namespace guard_test;

CompileOptions adam(GuardOptions guard = GuardOptions()) {
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  c.guard = guard;
  return c;
}

double fit_and_test(Trainer& trainer, const data::TensorDataset& train, const data::TensorDataset& test,
                    int64_t epochs = 3) {
  FitOptions f;
  f.epochs = epochs;
  f.batch_size = 32;
  f.seed = 5;
  trainer.fit(train, nullptr, f);
  return trainer.evaluate(test).get("accuracy");
}

std::vector<std::string> top_causes(Guard& g) {
  std::vector<std::string> out;
  for (const auto& i : g.incidents()) out.push_back(i->diagnosis.top().cause);
  return out;
}

TEST(Guard, HealthyRunHasNoIncidentsAndNoEvents) {
  torch::manual_seed(0);
  auto train = clusters(600, 1), test = clusters(300, 2);
  Trainer trainer(SequentialModel(mlp()), adam());
  const double acc = fit_and_test(trainer, train, test);
  EXPECT_GT(acc, 0.9);
  ASSERT_NE(trainer.guard(), nullptr);
  EXPECT_TRUE(trainer.guard()->incidents().empty());
  EXPECT_TRUE(trainer.guard()->events().empty());
  EXPECT_EQ(trainer.guard()->skipped_steps(), 0);
}

TEST(Guard, BadInputDataIsQuarantinedByDatasetIdWithoutChangingHyperparameters) {  // Z5
  auto train = clusters(600, 1), test = clusters(300, 2);
  const std::vector<int64_t> poisoned{17, 101, 250, 333, 589};
  auto x = train.x().clone();
  for (size_t i = 0; i < poisoned.size(); ++i) x[poisoned[i]][static_cast<int64_t>(i)] = i % 2 ? kNaN : INFINITY;
  data::TensorDataset bad(x, train.y());

  torch::manual_seed(0);
  Trainer clean(SequentialModel(mlp()), adam());
  const double clean_acc = fit_and_test(clean, train.without_ids(poisoned), test);
  torch::manual_seed(0);
  Trainer guarded(SequentialModel(mlp()), adam());
  const double acc = fit_and_test(guarded, bad, test);

  Guard& g = *guarded.guard();
  ASSERT_FALSE(g.incidents().empty());
  for (const auto& c : top_causes(g)) EXPECT_EQ(c, cause::bad_input_data);
  auto q = g.quarantined();
  std::sort(q.begin(), q.end());
  EXPECT_EQ(q, poisoned);
  const auto& ev = g.incidents().front()->evidence;
  EXPECT_FALSE(ev.nonfinite_samples.empty());
  EXPECT_EQ(g.lr_scale(), 1.0);
  EXPECT_EQ(g.clip_norm(), 0.0);
  EXPECT_NEAR(acc, clean_acc, 0.01);
}

// A loop of your own may pass batches without sample ids: the evidence then names batch rows.
TEST(Guard, BatchWithoutIdsNamesItsRows) {
  torch::manual_seed(0);
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*net, sgd);
  auto data = clusters(8, 3);
  data::Batch batch;
  batch.x = data.x().clone();
  batch.x[5][2] = kNaN;
  batch.y = data.y();
  ASSERT_FALSE(batch.ids.defined());
  const StepVerdict v = guard.step(batch, [&](const data::Batch& b) {
    auto loss = torch::nn::functional::cross_entropy(net->forward(b.x), b.y);
    loss.backward();
    return loss;
  });
  ASSERT_NE(v.incident, nullptr);
  EXPECT_EQ(v.incident->diagnosis.top().cause, cause::bad_input_data);
  ASSERT_EQ(v.incident->evidence.nonfinite_samples.size(), 1u);
  EXPECT_EQ(v.incident->evidence.nonfinite_samples[0].row, 5);
  EXPECT_EQ(v.incident->evidence.nonfinite_samples[0].id, -1) << "a row is not a dataset id";
}

TEST(Guard, TransientFaultIsRecomputedAndLeavesNoTrace) {  // Z6
  auto run = [](bool inject) {
    torch::manual_seed(0);
    torch::nn::Linear model(kFeatures, kClasses);
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(0.01));
    Guard guard(*model, opt);
    auto ds = clusters(320, 3);
    data::BatchLoader loader(ds, 32, false);
    bool injected = false;
    for (int64_t b = 0; b < loader.num_batches(); ++b) {
      auto verdict = guard.step(loader.batch(b), [&](const data::Batch& batch) {
        auto loss = torch::nll_loss(torch::log_softmax(model->forward(batch.x), 1), batch.y);
        loss.backward();
        if (inject && b == 4 && !injected) {  // one NaN, first execution of step 4 only
          torch::NoGradGuard no_grad;
          model->weight.grad()[2][3] = kNaN;
          injected = true;
        }
        return loss;
      });
      EXPECT_TRUE(verdict.applied());
    }
    return std::make_pair(model->weight.clone(), guard.incidents());
  };
  auto [clean_w, clean_incidents] = run(false);
  auto [w, incidents] = run(true);
  EXPECT_TRUE(clean_incidents.empty());
  ASSERT_EQ(incidents.size(), 1u);
  const Incident& inc = *incidents.front();
  EXPECT_EQ(inc.step, 4);
  EXPECT_EQ(inc.diagnosis.top().cause, cause::transient_fault);
  EXPECT_FALSE(inc.evidence.reproduced);
  EXPECT_GE(inc.evidence.replays, 2);
  EXPECT_FALSE(inc.evidence.birth_found);
  EXPECT_TRUE(inc.evidence.blamed_samples.empty());
  EXPECT_EQ(inc.actions, std::vector<std::string>{"recompute"});
  EXPECT_TRUE(torch::equal(w, clean_w)) << "recomputing must give exactly the clean run";
}

TEST(Guard, LogOfZeroIsBornAtLogInForward) {  // Z3, in a user's own loop
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  Guard guard(*model, opt);
  auto ds = clusters(64, 4);
  data::BatchLoader loader(ds, 32, false);
  // Hand-written cross-entropy on logits scaled x50: softmax underflows to exact zeros.
  auto verdict = guard.step(loader.batch(0), [&](const data::Batch& b) {
    NANGUARD_SCOPE("loss");
    auto p = torch::softmax(model->forward(b.x) * 50.0, 1);
    auto y = torch::one_hot(b.y, kClasses).to(torch::kFloat);
    auto loss = -(y * torch::log(p)).sum(1).mean();
    loss.backward();
    return loss;
  });
  ASSERT_NE(verdict.incident, nullptr);
  const Evidence& ev = verdict.incident->evidence;
  EXPECT_EQ(ev.birth_op, "aten::log");
  EXPECT_EQ(ev.birth_phase, "forward");
  EXPECT_EQ(ev.birth_module, "loss");
  EXPECT_GT(ev.birth_input_zeros, 0);
  EXPECT_EQ(verdict.incident->diagnosis.top().cause, cause::unsafe_loss);
  EXPECT_EQ(verdict.incident->diagnosis.top().subkind, unsafe_loss_kind::log_of_zero);
  EXPECT_FALSE(verdict.applied());
}

TEST(Guard, ExpOverflowIsBornAtExpInForward) {  // Z4
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  Guard guard(*model, opt);
  auto ds = clusters(32, 4);
  data::BatchLoader loader(ds, 32, false);
  auto verdict = guard.step(loader.batch(0), [&](const data::Batch& b) {
    NANGUARD_SCOPE("softmax");
    auto z = model->forward(b.x) + 100.0;  // logits above 88: exp overflows float32
    auto e = torch::exp(z);
    auto p = e / e.sum(1, true);
    auto loss = torch::nll_loss(torch::log(p), b.y);
    loss.backward();
    return loss;
  });
  ASSERT_NE(verdict.incident, nullptr);
  const Evidence& ev = verdict.incident->evidence;
  EXPECT_EQ(ev.birth_op, "aten::exp");
  EXPECT_EQ(ev.birth_phase, "forward");
  EXPECT_EQ(ev.birth_module, "softmax");
  EXPECT_GT(ev.birth_input_max, 88.0);
  EXPECT_EQ(verdict.incident->diagnosis.top().cause, cause::unsafe_loss);
  EXPECT_EQ(verdict.incident->diagnosis.top().subkind, unsafe_loss_kind::exp_overflow);
}

TEST(Guard, TrainerSwitchesAnUnsafeLossToItsStableForm) {  // Z3, trainer-owned loss
  auto train = clusters(600, 1, 40.0), test = clusters(300, 2, 40.0);
  torch::manual_seed(0);
  Trainer clean(SequentialModel(mlp()), adam());
  const double clean_acc = fit_and_test(clean, train, test);
  CompileOptions unsafe = adam();
  unsafe.loss.fused(false);  // the literal -log(softmax(z)): log(0) once softmax underflows
  torch::manual_seed(0);
  Trainer guarded(SequentialModel(mlp()), unsafe);
  const double acc = fit_and_test(guarded, train, test);
  Guard& g = *guarded.guard();
  ASSERT_FALSE(g.incidents().empty());
  const Incident& first = *g.incidents().front();
  EXPECT_EQ(first.diagnosis.top().cause, cause::unsafe_loss);
  EXPECT_EQ(first.evidence.birth_op, "aten::log");
  EXPECT_NE(std::find(first.actions.begin(), first.actions.end(), "stable_loss"), first.actions.end());
  EXPECT_TRUE(is_stable(guarded.options().loss));
  EXPECT_EQ(g.incidents().size(), 1u) << "no incident after the switch";
  EXPECT_NEAR(acc, clean_acc, 0.01);
}

TEST(Guard, BudgetsStopAHopelessRun) {
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  RepairPolicy policy = RepairPolicy::automatic();
  policy.budget.max_incidents = 5;
  Guard guard(*model, opt, GuardOptions().policy(policy));
  auto ds = clusters(32, 4);
  data::BatchLoader loader(ds, 32, false);
  int steps = 0;
  while (!guard.stopped() && steps < 100) {
    guard.step(loader.batch(0), [&](const data::Batch& b) {
      auto loss = model->forward(b.x).sum() * std::numeric_limits<float>::infinity();
      loss.backward();
      return loss;
    });
    ++steps;
  }
  EXPECT_TRUE(guard.stopped());
  EXPECT_LE(steps, 5);
  EXPECT_EQ(guard.applied_steps(), 0);
  EXPECT_EQ(guard.events().back().action, "stop");
}

TEST(Guard, ReplayIsDeterministic) {
  auto run = [] {
    torch::manual_seed(0);
    torch::nn::Linear model(kFeatures, kClasses);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
    Guard guard(*model, opt);
    auto ds = clusters(32, 4);
    data::BatchLoader loader(ds, 32, false);
    auto v = guard.step(loader.batch(0), [&](const data::Batch& b) {
      auto z = torch::dropout(model->forward(b.x), 0.5, true) * 60.0;
      auto loss = -(torch::one_hot(b.y, kClasses) * torch::log(torch::softmax(z, 1))).sum(1).mean();
      loss.backward();
      return loss;
    });
    return v.incident->evidence;
  };
  Evidence a = run(), b = run();
  EXPECT_TRUE(a.birth_found);
  EXPECT_EQ(a.birth_op, b.birth_op);
  EXPECT_EQ(a.blamed_rows, b.blamed_rows);
  EXPECT_EQ(a.birth_input_zeros, b.birth_input_zeros);
}

TEST(Guard, ScheduleStaysInStepAcrossSkips) {
  auto train = clusters(320, 1);
  auto x = train.x().clone();
  x[40][0] = kNaN;  // one bad sample: one skipped step
  data::TensorDataset bad(x, train.y());
  CompileOptions c = adam();
  c.schedule = ScheduleSpec().type(ScheduleType::exponential_decay).initial_learning_rate(0.01).decay_steps(5).decay_rate(0.5);
  torch::manual_seed(0);
  Trainer trainer(SequentialModel(mlp()), c);
  FitOptions f;
  f.epochs = 1;
  f.batch_size = 32;
  trainer.fit(bad, nullptr, f);
  Guard& g = *trainer.guard();
  EXPECT_EQ(g.skipped_steps(), 1);
  // Only applied steps advance the schedule: 10 batches, one skipped.
  EXPECT_EQ(trainer.global_step(), 9);
  EXPECT_DOUBLE_EQ(trainer.learning_rate(), 0.01 * std::pow(0.5, 8.0 / 5.0));
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

TEST(Guard, BadOptionsAreRejectedWithTheirName) {
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { Guard(*model, opt, GuardOptions().snapshot_capacity(0)); },
                                               {"snapshot_capacity"}));
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { Guard(*model, opt, GuardOptions().snapshot_every(-1)); },
                                               {"snapshot_every"}));
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { Guard(*model, opt, GuardOptions().history(1)); }, {"history"}));
  RepairPolicy policy = RepairPolicy::automatic();
  policy.budget.lr_factor = 2.0;
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { Guard(*model, opt, GuardOptions().policy(policy)); },
                                               {"lr_factor"}));
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

CompileOptions sgd_options(double lr, bool divergence) {
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd).learning_rate(lr);
  c.guard = GuardOptions().snapshot_every(10).divergence(DivergenceOptions().enabled(divergence));
  return c;
}

bool all_finite_weights_before(const Incident& incident) {
  return !incident.evidence.params_nonfinite_before_step && incident.evidence.nonfinite_tensors.empty();
}

TEST(Guard, LearningRateTooHighIsRolledBackAndBackedOff) {  // Z1
  // Unnormalised inputs (x40) and plain SGD at lr 0.5: the loss and gradient norm grow
  // geometrically and the weights overflow within a few dozen steps. The divergence watch is
  // off: this is the repair of the first non-finite value.
  auto train = clusters(640, 1, 40.0), test = clusters(300, 2, 40.0);
  auto sgd = [](double lr) { return sgd_options(lr, false); };
  torch::manual_seed(0);
  Trainer clean(SequentialModel(mlp()), sgd(0.0005));
  const double clean_acc = fit_and_test(clean, train, test, 4);
  ASSERT_TRUE(clean.guard()->incidents().empty());
  torch::manual_seed(0);
  Trainer guarded(SequentialModel(mlp()), sgd(0.5));
  const double acc = fit_and_test(guarded, train, test, 4);
  Guard& g = *guarded.guard();
  ASSERT_FALSE(g.incidents().empty());
  const Incident& first = *g.incidents().front();
  EXPECT_EQ(first.diagnosis.top().cause, cause::lr_too_high);
  // The activations outgrow float32 before any weight does: the birth is a forward op
  // (aten::addmm of the logits here) whose inputs are finite.
  EXPECT_TRUE(first.evidence.birth_found) << first.summary();
  EXPECT_EQ(first.evidence.birth_phase, "forward") << first.summary();
  EXPECT_GT(first.evidence.weight_absmax, 1e4) << "the weights have run away";
  EXPECT_NE(std::find(first.actions.begin(), first.actions.end(), "rerun_lost_steps"), first.actions.end());
  EXPECT_NE(std::find(first.actions.begin(), first.actions.end(), "rollback"), first.actions.end());
  EXPECT_NE(std::find(first.actions.begin(), first.actions.end(), "lr_backoff"), first.actions.end());
  EXPECT_LT(g.lr_scale(), 1.0);
  EXPECT_FALSE(g.stopped());
  EXPECT_GE(acc, clean_acc - 0.01) << "the repaired run must reach the clean run's accuracy";
}

TEST(Guard, TheSameDivergenceIsCaughtWhileFiniteAndTheInputsRescaled) {
  auto train = clusters(640, 1, 40.0), test = clusters(300, 2, 40.0);
  torch::manual_seed(0);
  Trainer clean(SequentialModel(mlp()), sgd_options(0.0005, true));
  const double clean_acc = fit_and_test(clean, train, test, 4);
  ASSERT_TRUE(clean.guard()->incidents().empty());
  torch::manual_seed(0);
  Trainer guarded(SequentialModel(mlp()), sgd_options(0.5, true));
  const double acc = fit_and_test(guarded, train, test, 4);
  Guard& g = *guarded.guard();
  ASSERT_FALSE(g.incidents().empty());
  const Incident& first = *g.incidents().front();
  EXPECT_EQ(first.evidence.failed_check, "divergence") << first.summary();
  EXPECT_TRUE(all_finite_weights_before(first)) << "caught before any value went non-finite";
  EXPECT_EQ(first.diagnosis.top().cause, cause::unscaled_inputs) << first.summary();
  EXPECT_NE(first.diagnosis.find(cause::lr_too_high), nullptr);
  EXPECT_NE(std::find(first.actions.begin(), first.actions.end(), "rescale_inputs"), first.actions.end());
  EXPECT_LT(guarded.input_scale(), 1.0);
  EXPECT_FALSE(g.stopped());
  EXPECT_GE(acc, clean_acc - 0.01) << "the repaired run must reach the clean run's accuracy";
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

TEST(Guard, WeightsOverflowingInTheOptimizerStepAreLocalizedThere) {
  // SGD at lr 3e38 on unnormalised inputs: the first update overflows the weights to Inf inside the optimizer step
  // (finite gradients, finite loss); the next step's loss is NaN. The guard replays from the
  // snapshot, rebuilding the batch from its sample ids, and traces the optimizer.
  auto train = clusters(256, 1, 10.0);
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd).learning_rate(3e38);
  torch::manual_seed(0);
  Trainer trainer(SequentialModel(mlp()), c);
  FitOptions f;
  f.epochs = 1;
  f.batch_size = 32;
  trainer.fit(train, nullptr, f);
  Guard& g = *trainer.guard();
  ASSERT_FALSE(g.incidents().empty());
  const Incident& first = *g.incidents().front();
  EXPECT_EQ(first.step, 1);
  EXPECT_EQ(first.evidence.failed_check, "parameters");
  EXPECT_TRUE(first.evidence.reproduced);
  EXPECT_EQ(first.evidence.birth_phase, "optimizer");
  EXPECT_FALSE(first.evidence.birth_op.empty());
  EXPECT_EQ(first.diagnosis.top().cause, cause::lr_too_high);
  EXPECT_EQ(first.actions.front(), "rollback");
  // Whatever happened next, the weights the run ends with are finite.
  for (const auto& p : trainer.model()->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

}  // namespace
}  // namespace nanguard
