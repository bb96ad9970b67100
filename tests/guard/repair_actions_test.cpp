// Repair actions of the guard: a rollback re-runs the steps it lost (rerun_lost_steps); a
// gradient norm beyond float32's range with finite gradients is applied and watched, not treated
// as a NaN; clipping after exploding gradients bounds each tensor on its own.
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/guard/guard.h"
#include "nanguard/train/trainer.h"

#include "clusters.h"

namespace nanguard {
namespace {

using namespace guard_test;

struct LoopResult {
  at::Tensor weight;
  int64_t applied = 0;
  int64_t rerun = 0;
  int64_t counter = 0;  // the loop's own step counter (drives its learning-rate schedule)
  std::vector<GuardEvent> events;
  std::vector<std::string> actions;
  std::vector<std::string> outcomes;
};

struct LoopOptions {
  // Writes a NaN into a gradient when it returns true for (batch, how often it ran before).
  std::function<bool(int64_t batch, int64_t execution)> fault = [](int64_t, int64_t) { return false; };
  std::vector<RepairAction> plan{RepairAction::rollback};  // the answer to a transient fault
  bool rerun = true;
  int64_t kept_batch_bytes = GuardOptions().kept_batch_bytes();
};

// A user's loop over 10 batches with Adam and its own schedule (lr 0.01 x 0.8^k at its k-th
// applied step); the rollback's re-run advances the loop's counter through the hook.
LoopResult run_loop(const LoopOptions& o) {
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(0.01));
  RepairPolicy policy = RepairPolicy::automatic();
  policy.actions["transient_fault"] = o.plan;
  int64_t counter = 0;
  auto set_lr = [&] { static_cast<torch::optim::AdamOptions&>(opt.param_groups()[0].options()).lr(0.01 * std::pow(0.8, counter)); };
  GuardHooks hooks;
  hooks.save_extra = [&] { return std::vector<double>{static_cast<double>(counter)}; };
  hooks.load_extra = [&](const std::vector<double>& v) { counter = static_cast<int64_t>(v.at(0)); };
  hooks.rerun_step_applied = [&] {
    ++counter;
    set_lr();
  };
  Guard guard(*model, opt, GuardOptions().snapshot_every(4).policy(policy).rerun_lost_steps(o.rerun).kept_batch_bytes(o.kept_batch_bytes),
              hooks);
  auto ds = clusters(320, 3);
  data::BatchLoader loader(ds, 32, false);
  std::map<int64_t, int64_t> executions;
  LoopResult r;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    set_lr();
    const StepVerdict v = guard.step(loader.batch(b), [&](const data::Batch& batch) {
      auto loss = torch::nll_loss(torch::log_softmax(model->forward(batch.x), 1), batch.y);
      loss.backward();
      // Batches are told apart by their first sample id (re-runs rebuild them).
      const int64_t which = batch.ids[0].item<int64_t>() / 32;
      if (o.fault(which, executions[which]++)) {
        torch::NoGradGuard no_grad;
        model->weight.grad()[1][2] = kNaN;
      }
      return loss;
    });
    if (v.applied()) ++counter;
    r.outcomes.push_back(to_string(v.outcome));
  }
  r.weight = model->weight.clone();
  r.applied = guard.applied_steps();
  r.rerun = guard.rerun_steps();
  r.counter = counter;
  r.events = guard.events();
  if (!guard.incidents().empty()) r.actions = guard.incidents().front()->actions;
  return r;
}

LoopOptions fault_once_at(int64_t batch) {
  LoopOptions o;
  o.fault = [batch](int64_t b, int64_t execution) { return b == batch && execution == 0; };
  return o;
}

TEST(GuardRepair, ReRunsTheLostStepsAndEndsBitwiseWhereTheUnfaultedRunEnds) {
  const LoopResult clean = run_loop(LoopOptions());
  const LoopResult repaired = run_loop(fault_once_at(6));
  // Snapshots at steps 0 and 4: the rollback from step 6 loses steps 4 and 5, re-runs them,
  // then recomputes step 6 (the fault hit only its first execution).
  EXPECT_EQ(repaired.actions, (std::vector<std::string>{"rollback", "rerun_lost_steps"}));
  EXPECT_EQ(repaired.rerun, 2);
  EXPECT_EQ(repaired.applied, clean.applied + 2);  // applied_steps counts the re-run updates too
  EXPECT_EQ(repaired.counter, 10);                 // the loop's schedule stands where the clean one does
  bool described = false;
  for (const auto& e : repaired.events) {
    if (e.action == "rerun_lost_steps") {
      described = e.detail.find("re-ran the 2 steps applied since the snapshot of step 4") != std::string::npos;
    }
  }
  EXPECT_TRUE(described);
  // Bitwise: the same batches, in order, each at its own step's learning rate.
  EXPECT_TRUE(torch::equal(repaired.weight, clean.weight)) << "no data may be lost to the rollback";

  // Without the re-run the two steps are lost: the run ends elsewhere.
  LoopOptions lossy_options = fault_once_at(6);
  lossy_options.rerun = false;
  const LoopResult lossy = run_loop(lossy_options);
  EXPECT_EQ(lossy.actions, std::vector<std::string>{"rollback"});
  EXPECT_EQ(lossy.rerun, 0);
  EXPECT_FALSE(torch::equal(lossy.weight, clean.weight));
}

TEST(GuardRepair, ARecomputePlannedWithTheRollbackRunsOnceAfterTheReRun) {
  const LoopResult clean = run_loop(LoopOptions());
  for (const auto& plan : {std::vector<RepairAction>{RepairAction::rollback, RepairAction::recompute},
                           std::vector<RepairAction>{RepairAction::recompute, RepairAction::rollback}}) {
    LoopOptions o = fault_once_at(6);
    o.plan = plan;
    const LoopResult r = run_loop(o);
    EXPECT_EQ(r.applied, clean.applied + 2) << "step 6 is applied once";
    EXPECT_EQ(r.outcomes[6], "recomputed");
    EXPECT_TRUE(torch::equal(r.weight, clean.weight));
  }
}

TEST(GuardRepair, AReRunThatFailsAgainStaysAtTheSnapshot) {
  LoopOptions o;
  // Batch 4 fails on its re-run (its second execution): the run stays at the snapshot of step 4.
  o.fault = [](int64_t b, int64_t execution) { return (b == 6 && execution == 0) || (b == 4 && execution == 1); };
  const LoopResult r = run_loop(o);
  const LoopResult clean = run_loop(LoopOptions());
  EXPECT_EQ(r.rerun, 0);
  EXPECT_EQ(r.outcomes[6], "rolled_back");
  // applied_steps counts updates as they happened (steps 4 and 5 were applied, then undone);
  // step 6 never was.
  EXPECT_EQ(r.applied, clean.applied - 1);
  EXPECT_EQ(r.counter, 7) << "the loop's counter came back with the snapshot: steps 4, 5 and 6 are lost";
  EXPECT_FALSE(torch::equal(r.weight, clean.weight));
  bool described = false;
  for (const auto& e : r.events) {
    if (e.action == "rerun_lost_steps") described = e.detail.find("went non-finite again") != std::string::npos;
  }
  EXPECT_TRUE(described);
  EXPECT_TRUE(torch::isfinite(r.weight).all().item<bool>());
}

// The trainer on data with one NaN sample (in batch 1, unshuffled) and a decaying schedule; the
// policy answers bad_input_data with `second` after quarantining the sample.
std::unique_ptr<Trainer> fit_with_bad_sample(RepairAction second) {
  auto train = clusters(320, 1);
  auto x = train.x().clone();
  x[40][0] = kNaN;
  data::TensorDataset bad(x, train.y());
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  c.schedule = ScheduleSpec().type(ScheduleType::exponential_decay).initial_learning_rate(0.01).decay_steps(5).decay_rate(0.5);
  RepairPolicy policy = RepairPolicy::automatic();
  policy.actions["bad_input_data"] = {RepairAction::quarantine_samples, second};
  c.guard = GuardOptions().policy(policy);
  torch::manual_seed(0);
  auto trainer = std::make_unique<Trainer>(SequentialModel(mlp()), c);
  FitOptions f;
  f.epochs = 1;
  f.batch_size = 32;
  f.shuffle = false;
  trainer->fit(bad, nullptr, f);
  return trainer;
}

TEST(GuardRepair, TrainerScheduleAdvancesWithTheReRunSteps) {
  // Rolling back to step 0 and re-running it, then recomputing step 1 without the sample, must
  // give exactly what recomputing step 1 in place gives: step 0 re-run at its own learning rate,
  // step 1 at step 1's (the schedule decays every step).
  const auto rolled = fit_with_bad_sample(RepairAction::rollback);
  const auto in_place = fit_with_bad_sample(RepairAction::recompute);
  Guard& g = *rolled->guard();
  ASSERT_EQ(g.incidents().size(), 1u);
  EXPECT_EQ(g.incidents().front()->step, 1);
  EXPECT_EQ(g.rerun_steps(), 1);
  EXPECT_EQ(g.skipped_steps(), 0);
  EXPECT_EQ(in_place->guard()->rerun_steps(), 0);
  // Every batch ended up applied once: the counter and the schedule stand where a run without
  // the rollback would (10 steps; the last one ran at global step 9).
  EXPECT_EQ(rolled->global_step(), 10);
  EXPECT_DOUBLE_EQ(rolled->learning_rate(), 0.01 * std::pow(0.5, 9.0 / 5.0));
  const auto a = rolled->model()->parameters(), b = in_place->model()->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

// Every gradient is 1e18 on 1000 weights: each is finite, but float32's squared norm (1e39)
// is not. Such a step is applied; the guard warns once and checks the weights after each update.
struct Overflowing {
  at::Tensor w = torch::zeros({1000}, torch::requires_grad());
  torch::optim::SGD opt;
  Guard guard;
  explicit Overflowing(double lr)
      : opt(std::vector<at::Tensor>{w}, torch::optim::SGDOptions(lr)),
        guard(std::vector<at::Tensor>{w}, {}, opt, GuardOptions().snapshot_every(1)) {}
  StepVerdict step() {
    data::Batch batch{torch::zeros({4, 1}), torch::zeros({4}, torch::kLong), torch::arange(4)};
    return guard.step(batch, [&](const data::Batch& b) {
      auto loss = (w * 1e18f).sum() + b.x.sum();
      loss.backward();
      return loss;
    });
  }
};

TEST(GuardRepair, GradientNormBeyondFloatRangeIsAppliedAndWatched) {
  Overflowing run(1e-18);  // updates of -1 per weight: large gradients, finite weights
  for (int i = 0; i < 3; ++i) EXPECT_EQ(run.step().outcome, StepVerdict::Outcome::applied);
  EXPECT_TRUE(run.guard.incidents().empty());
  EXPECT_FLOAT_EQ(run.w[0].item<float>(), -3.0f);
  int warnings = 0;
  for (const auto& e : run.guard.events()) {
    if (e.kind == "warning" && e.cause == "gradient_norm_overflow") ++warnings;
  }
  EXPECT_EQ(warnings, 1) << "one warning per streak";
}

TEST(GuardRepair, WeightsOverflowingAfterANormOverflowAreBornInTheOptimizer) {
  Overflowing run(1e21);  // the first update (1e39) overflows every weight
  EXPECT_EQ(run.step().outcome, StepVerdict::Outcome::applied);
  const StepVerdict second = run.step();  // its forced state check fails
  ASSERT_NE(second.incident, nullptr);
  const Evidence& ev = second.incident->evidence;
  EXPECT_EQ(ev.failed_check, "parameters");
  EXPECT_TRUE(ev.gradient_norm_overflow);
  EXPECT_TRUE(ev.birth_found);
  EXPECT_EQ(ev.birth_phase, "optimizer");
  EXPECT_TRUE(torch::isfinite(run.w).all().item<bool>()) << "the rollback restores finite weights";
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

// A recurrent-looking weight whose gradient explodes in backward (inputs of 1e10 times an
// upstream gradient of 1e30: the forward product stays small since the weight is 1e-20) beside
// a head whose gradient stays ordinary.
struct TwoPartImpl : torch::nn::Module {
  TwoPartImpl() {
    auto rnn = register_module("rnn", std::make_shared<torch::nn::Module>());
    weight_hh = rnn->register_parameter("weight_hh", torch::full({4, 4}, 1e-20f));
    head = register_module("head", torch::nn::Linear(4, 1));
  }
  at::Tensor weight_hh;
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(TwoPart);

TEST(GuardRepair, ExplodingGradientsAreClippedPerTensorLeavingOtherLayersAlone) {
  torch::manual_seed(0);
  TwoPart model;
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  Guard guard(*model, opt);
  at::Tensor head_grad;
  auto step = [&](int64_t b, float upstream) {
    data::Batch batch{torch::full({8, 4}, 1e10f), torch::zeros({8}, torch::kLong), torch::arange(8) + 8 * b};
    return guard.step(batch, [&](const data::Batch& x) {
      auto loss = model->head->forward(x.x * 1e-10f).sum() + (torch::matmul(x.x, model->weight_hh) * upstream).sum();
      loss.backward();
      head_grad = model->head->weight.grad().clone();
      return loss;
    });
  };
  // Healthy steps: no gradient reaches the weight (upstream 0), the head learns.
  for (int64_t b = 0; b < 10; ++b) ASSERT_EQ(step(b, 0.0f).outcome, StepVerdict::Outcome::applied);
  // Step 10: the weight's gradient x^T * 1e30 overflows inside the backward matrix product.
  const StepVerdict exploded = step(10, 1e30f);
  ASSERT_NE(exploded.incident, nullptr);
  EXPECT_EQ(exploded.incident->evidence.birth_phase, "backward") << exploded.incident->summary();
  ASSERT_EQ(exploded.incident->diagnosis.top().cause, cause::exploding_gradients);
  EXPECT_TRUE(guard.clip_per_tensor());
  ASSERT_GT(guard.clip_norm(), 0);
  // Step 11: the weight's gradient (8e10 per element) is far past the clip, the head's is not:
  // only the weight is scaled, the head's update is its own gradient times the learning rate.
  const at::Tensor head_before = model->head->weight.detach().clone();
  const at::Tensor weight_before = model->weight_hh.detach().clone();
  ASSERT_EQ(step(11, 1.0f).outcome, StepVerdict::Outcome::applied);
  ASSERT_LT(head_grad.norm().item<double>(), guard.clip_norm());
  EXPECT_TRUE(torch::allclose(model->head->weight.detach(), head_before - 0.01 * head_grad));
  const double weight_step = (model->weight_hh.detach() - weight_before).norm().item<double>();
  EXPECT_NEAR(weight_step, 0.01 * guard.clip_norm(), 1e-3 * 0.01 * guard.clip_norm());
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

// Adagrad sums squared gradients: 1.5e19 squared is 2.25e38, finite once, Inf after two steps
// (the update of step 1). The update then divides by Inf (zero change): weights and loss stay
// finite, so only the periodic state check (every 5 steps) sees it, at step 5. The loop's own
// schedule gives step b the learning rate 0.1 x (b + 1).
struct AccumulatorOverflow {
  at::Tensor w = torch::zeros({1}, torch::requires_grad());
  torch::optim::Adagrad opt{std::vector<at::Tensor>{w}, torch::optim::AdagradOptions(0.1)};
  std::vector<std::pair<std::vector<int64_t>, double>> dumps;  // batch ids and learning rate
  std::unique_ptr<Guard> guard;
  explicit AccumulatorOverflow(int64_t max_rollbacks) {
    RepairPolicy policy = RepairPolicy::automatic();
    policy.budget.max_rollbacks = max_rollbacks;
    GuardHooks hooks;
    hooks.dump_incident = [this](int64_t, const data::Batch& b, const at::Tensor&) {
      std::vector<int64_t> ids(b.ids.data_ptr<int64_t>(), b.ids.data_ptr<int64_t>() + b.ids.numel());
      dumps.emplace_back(ids, opt.param_groups()[0].options().get_lr());
    };
    guard = std::make_unique<Guard>(std::vector<at::Tensor>{w}, std::vector<at::Tensor>{}, opt,
                                    GuardOptions().check_state_every(5).policy(policy), hooks);
  }
  StepVerdict step(int64_t b) {
    opt.param_groups()[0].options().set_lr(0.1 * static_cast<double>(b + 1));
    data::Batch batch{torch::zeros({2, 1}), torch::zeros({2}, torch::kLong), torch::arange(2) + 2 * b};
    return guard->step(batch, [&](const data::Batch& x) {
      auto loss = (w * 1.5e19f).sum() + x.x.sum();
      loss.backward();
      return loss;
    });
  }
  std::shared_ptr<const Incident> run() {
    for (int64_t b = 0; b < 8; ++b) {
      if (auto incident = step(b).incident) return incident;
    }
    return nullptr;
  }
};

TEST(GuardRepair, AStateFailureFoundStepsLaterIsTracedAtTheUpdateThatFailed) {
  AccumulatorOverflow run(/*max_rollbacks=*/5);
  const auto incident = run.run();
  ASSERT_NE(incident, nullptr);
  EXPECT_EQ(incident->step, 5);
  const Evidence& ev = incident->evidence;
  EXPECT_EQ(ev.failed_check, "optimizer_state");
  EXPECT_TRUE(ev.reproduced);
  // Tracing the last update would find the state already Inf on the way in: no birth.
  ASSERT_TRUE(ev.birth_found) << incident->summary();
  EXPECT_EQ(ev.birth_phase, "optimizer");
  EXPECT_EQ(incident->diagnosis.top().cause, cause::optimizer_state_overflow) << incident->summary();
  // The dump holds the state before the update that failed: step 1's batch, at step 1's rate.
  ASSERT_EQ(run.dumps.size(), 1u);
  EXPECT_EQ(run.dumps[0].first, (std::vector<int64_t>{2, 3}));
  EXPECT_DOUBLE_EQ(run.dumps[0].second, 0.2);
}

TEST(GuardRepair, AStopAfterAnOptimizerReplayLeavesTheSnapshotsState) {
  AccumulatorOverflow run(/*max_rollbacks=*/0);  // no rollback allowed: the incident stops the run
  const auto incident = run.run();
  ASSERT_NE(incident, nullptr);
  EXPECT_TRUE(run.guard->stopped());
  // Not the replay's half-way state: the snapshot of step 0, finite, optimizer state included.
  EXPECT_EQ(run.w.item<float>(), 0.0f);
  for (const auto& st : run.opt.state()) {
    const auto& s = static_cast<const torch::optim::AdagradParamState&>(*st.second);
    EXPECT_TRUE(torch::isfinite(s.sum()).all().item<bool>());
  }
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

TEST(GuardRepair, BatchesPastTheByteBudgetAreNotKeptAndTheRollbackSaysSo) {
  // Each batch of the loop is 32 x 20 floats + 32 labels + 32 ids = 3,072 bytes; a budget of
  // 5,000 bytes keeps one. The rollback from step 6 then has no batches to re-run.
  LoopOptions o = fault_once_at(6);
  o.kept_batch_bytes = 5000;
  const LoopResult r = run_loop(o);
  EXPECT_EQ(r.actions, std::vector<std::string>{"rollback"});
  EXPECT_EQ(r.rerun, 0);
  int warnings = 0;
  for (const auto& e : r.events) {
    if (e.kind == "warning" && e.cause == "kept_batches_budget") ++warnings;
  }
  EXPECT_EQ(warnings, 1);
  EXPECT_TRUE(torch::isfinite(r.weight).all().item<bool>());

  // A budget that holds one interval (4 batches, 12,288 bytes) but not the snapshot step's batch
  // on top: the batches before the snapshot are dropped first, so keeping goes on and the
  // rollback re-runs its steps (stopping at step 4 would have left none to re-run).
  LoopOptions fits = fault_once_at(6);
  fits.kept_batch_bytes = 13000;
  const LoopResult kept = run_loop(fits);
  EXPECT_EQ(kept.rerun, 2);
  EXPECT_TRUE(torch::equal(kept.weight, run_loop(LoopOptions()).weight));

  EXPECT_THROW(run_loop([] {
                 LoopOptions bad;
                 bad.kept_batch_bytes = -1;
                 return bad;
               }()),
               ValueError);
}

}  // namespace
}  // namespace nanguard
