// The guard's API for loops people write: check/apply, the step context, exceptions from the
// closure, several models under one guard, the caller's clipping after the check, the default
// log sink, and batches without dataset ids.
#include "nanguard/guard/guard.h"

#include <limits>
#include <map>
#include <stdexcept>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "clusters.h"
#include "nanguard/core/error.h"
#include "nanguard/core/log.h"
#include "nanguard/guard/optimizer_adapter.h"
#include "nanguard/guard/snapshot.h"
#include "nanguard/numerics/health.h"
#include "nanguard/trace/scope.h"
#include "nanguard/train/optimizer.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using namespace guard_test;

at::Tensor cross_entropy_step(torch::nn::Linear& net, const data::Batch& b) {
  auto loss = torch::nn::functional::cross_entropy(net->forward(b.x), b.y);
  loss.backward();
  return loss;
}

data::Batch with_ids(const data::TensorDataset& ds) {
  data::Batch b;
  b.x = ds.x().clone();
  b.y = ds.y();
  b.ids = ds.ids();
  return b;
}

// step() is begin_step + closure + check + apply: the same calls by hand give the same weights.
TEST(GuardApi, CheckAndApplyByHandMatchStep) {
  auto ds = clusters(64, 3);
  data::BatchLoader loader(ds, 16, false);
  auto run = [&](bool by_hand) {
    torch::manual_seed(0);
    torch::nn::Linear net(kFeatures, kClasses);
    torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(0.01));
    Guard guard(*net, opt);
    for (int64_t i = 0; i < loader.num_batches(); ++i) {
      if (!by_hand) {
        EXPECT_TRUE(guard.step(loader.batch(i), [&](const data::Batch& b) { return cross_entropy_step(net, b); }).applied());
        continue;
      }
      const data::Batch b = guard.begin_step(loader.batch(i));
      auto loss = cross_entropy_step(net, b);
      Decision d = guard.check(loss);
      EXPECT_EQ(d.kind, Decision::Kind::update);
      EXPECT_EQ(d.step, i);
      EXPECT_NEAR(d.loss, loss.item<double>(), 1e-6);
      EXPECT_TRUE(guard.apply(d).applied());
    }
    EXPECT_EQ(guard.applied_steps(), loader.num_batches());
    return net->weight.clone();
  };
  EXPECT_TRUE(torch::equal(run(true), run(false)));
}

TEST(GuardApi, ApplyRejectsADecisionOfAnotherStep) {
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*net, sgd);
  auto batch = with_ids(clusters(8, 1));
  const data::Batch b = guard.begin_step(batch);
  Decision d = guard.check(cross_entropy_step(net, b));
  guard.apply(d);
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { guard.apply(d); }, {"apply()", "begin_step"}));
}

// Without a closure the guard still detects and diagnoses from the evidence, and skips.
TEST(GuardApi, CheckWithoutAClosureDiagnosesFromEvidence) {
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*net, sgd);
  auto batch = with_ids(clusters(8, 1));
  batch.x[3][0] = kNaN;
  const data::Batch b = guard.begin_step(batch);
  Decision d = guard.check(cross_entropy_step(net, b));
  ASSERT_EQ(d.kind, Decision::Kind::incident);
  EXPECT_EQ(d.incident->diagnosis.top().cause, cause::bad_input_data);
  EXPECT_FALSE(guard.apply(d).applied());
  EXPECT_EQ(guard.quarantined(), std::vector<int64_t>{3});
}

// The closure is told which run it is; a transient fault is replayed, then recomputed.
TEST(GuardApi, ClosureSeesItsStepContext) {
  torch::manual_seed(0);
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*net, sgd);
  auto batch = with_ids(clusters(16, 2));
  std::vector<StepContext::Run> runs;
  auto v = guard.step(batch, [&](const data::Batch& b, const StepContext& ctx) {
    runs.push_back(ctx.run);
    EXPECT_EQ(ctx.step, 0);
    EXPECT_EQ(ctx.traced, ctx.run == StepContext::Run::replay);
    auto loss = cross_entropy_step(net, b);
    if (ctx.run == StepContext::Run::first) {
      torch::NoGradGuard no_grad;
      net->weight.grad()[0][0] = kNaN;  // only the first run: a transient fault
    }
    return loss;
  });
  EXPECT_EQ(v.outcome, StepVerdict::Outcome::recomputed);
  ASSERT_GE(runs.size(), 3u);
  EXPECT_EQ(runs.front(), StepContext::Run::first);
  EXPECT_EQ(runs[1], StepContext::Run::replay);
  EXPECT_EQ(runs.back(), StepContext::Run::recompute);
  EXPECT_STREQ(to_string(StepContext::Run::rerun), "rerun");
}

// LibTorch's binary_cross_entropy throws on a NaN input: with the NaN in a sample, the step is an
// incident of bad data (quarantined) instead of the end of the run.
TEST(GuardApi, ExceptionOnANaNSampleIsAnIncident) {
  torch::manual_seed(0);
  torch::nn::Linear net(kFeatures, 1);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(0.01));
  Guard guard(*net, opt);
  auto batch = with_ids(clusters(16, 2));
  batch.x[6][1] = kNaN;
  auto bce = [&](const data::Batch& b) {
    auto p = torch::sigmoid(net->forward(b.x)).squeeze(1);
    auto loss = torch::binary_cross_entropy(p, (b.y % 2).to(torch::kFloat));
    loss.backward();
    return loss;
  };
  ASSERT_THROW(bce(batch), c10::Error);  // what the unguarded loop dies of
  net->zero_grad();
  StepVerdict v = guard.step(batch, bce);
  ASSERT_NE(v.incident, nullptr);
  EXPECT_EQ(v.incident->evidence.failed_check, "exception");
  EXPECT_NE(v.incident->evidence.exception_message.find("between 0 and 1"), std::string::npos);
  EXPECT_EQ(v.incident->diagnosis.top().cause, cause::bad_input_data);
  EXPECT_EQ(guard.quarantined(), std::vector<int64_t>{6});
  EXPECT_FALSE(guard.stopped());
  EXPECT_TRUE(guard.step(batch, bce).applied()) << "the next step trains without the sample";
}

// A NaN made inside the model (sqrt of a negative) reaches binary_cross_entropy, which throws:
// the replay names the op that refused it and the op where the NaN was born.
TEST(GuardApi, ExceptionOnANaNMadeInsideIsLocalized) {
  torch::manual_seed(0);
  torch::nn::Linear net(kFeatures, 1);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.01));
  Guard guard(*net, sgd);
  auto batch = with_ids(clusters(16, 2));
  StepVerdict v = guard.step(batch, [&](const data::Batch& b) {
    at::Tensor p;
    {
      NANGUARD_SCOPE("head");
      p = torch::sigmoid(torch::sqrt(net->forward(b.x) - 1e3)).squeeze(1);  // every input < 0: NaN
    }
    auto loss = torch::binary_cross_entropy(p, (b.y % 2).to(torch::kFloat));
    loss.backward();
    return loss;
  });
  ASSERT_NE(v.incident, nullptr);
  const Evidence& ev = v.incident->evidence;
  EXPECT_EQ(ev.failed_check, "exception");
  EXPECT_EQ(ev.exception_op, "aten::binary_cross_entropy");
  EXPECT_TRUE(ev.reproduced);
  EXPECT_EQ(ev.birth_op, "aten::sqrt");
  EXPECT_EQ(ev.birth_phase, "forward");
  EXPECT_EQ(ev.birth_module, "head");
  EXPECT_NE(v.incident->summary().find("aten::binary_cross_entropy"), std::string::npos);
  EXPECT_FALSE(v.applied());
}

// An exception on finite inputs is the user's bug: it propagates unchanged, nothing is counted
// as an incident.
TEST(GuardApi, ShapeErrorPropagatesUnchanged) {
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*net, sgd);
  auto batch = with_ids(clusters(8, 1));
  auto before = net->weight.clone();
  std::string message;
  try {
    guard.step(batch, [&](const data::Batch& b) {
      auto loss = torch::mm(b.x, torch::ones({kFeatures + 1, 2})).sum();  // wrong inner size
      loss.backward();
      return loss;
    });
  } catch (const c10::Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("mat1 and mat2 shapes cannot be multiplied"), std::string::npos) << message;
  EXPECT_TRUE(guard.incidents().empty());
  EXPECT_TRUE(torch::equal(net->weight, before));
  // Exceptions that are not std::exception propagate too.
  EXPECT_THROW(guard.step(batch, [](const data::Batch&) -> at::Tensor { throw 7; }), int);
  // The failed step is closed: check() now needs a new begin_step().
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { guard.check(torch::zeros({})); }, {"begin_step"}));
}

// An exception that the traced replay does not reproduce is no NaN of this step's: it reaches
// the caller. A finished op that read an -inf earlier (a logged minimum) does not make a later
// shape error an incident.
TEST(GuardApi, ExceptionsThatAreNotIncidentsPropagate) {
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*net, sgd);
  auto batch = with_ids(clusters(8, 1));
  int calls = 0;
  EXPECT_TRUE(testing::throws_with<std::runtime_error>(
      [&] {
        guard.step(batch, [&](const data::Batch& b) -> at::Tensor {
          if (calls++ == 0) throw std::runtime_error("once only");
          return cross_entropy_step(net, b);
        });
      },
      {"once only"}));
  EXPECT_EQ(calls, 2) << "the replay ran once";
  EXPECT_THROW(guard.step(batch,
                          [&](const data::Batch& b) {
                            auto scores = torch::full({4}, -std::numeric_limits<float>::infinity());
                            (void)scores.min().item<float>();  // finished, read an -inf
                            auto loss = torch::mm(b.x, torch::ones({kFeatures + 1, 2})).sum();
                            loss.backward();
                            return loss;
                          }),
               c10::Error);
  EXPECT_TRUE(guard.incidents().empty());
}

// A closure that throws in the repair's recompute: the recompute failed, the step is dropped,
// the incident is recorded and the loop goes on.
TEST(GuardApi, ExceptionInARecomputeDropsTheStep) {
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  GuardHooks quiet;
  quiet.on_event = [](const GuardEvent&) {};
  Guard guard(*net, sgd, GuardOptions(), quiet);
  auto batch = with_ids(clusters(8, 1));
  StepVerdict v = guard.step(batch, [&](const data::Batch& b, const StepContext& ctx) {
    if (ctx.run == StepContext::Run::recompute) throw std::runtime_error("no recompute");
    auto loss = cross_entropy_step(net, b);
    if (ctx.run == StepContext::Run::first) {
      torch::NoGradGuard no_grad;
      net->weight.grad()[0][0] = kNaN;  // transient: the replays are finite
    }
    return loss;
  });
  ASSERT_NE(v.incident, nullptr);
  EXPECT_EQ(v.incident->diagnosis.top().cause, cause::transient_fault);
  EXPECT_FALSE(v.applied());
  EXPECT_EQ(guard.incidents().size(), 1u);
  EXPECT_TRUE(guard.step(batch, [&](const data::Batch& b) { return cross_entropy_step(net, b); }).applied());
}

// A closure that throws while the guard replays an optimizer step leaves the model and the
// optimizer as they were before the replay, and the exception reaches the caller.
TEST(GuardApi, ClosureThrowingInAReplayLeavesTheStateAsItWas) {
  torch::manual_seed(0);
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(0.01));
  Guard guard(*net, opt, GuardOptions().check_state_every(1));
  auto batch = with_ids(clusters(16, 2));
  auto closure = [&](const data::Batch& b, const StepContext& ctx) {
    if (ctx.run == StepContext::Run::replay) throw std::runtime_error("no replays here");
    return cross_entropy_step(net, b);
  };
  ASSERT_TRUE(guard.step(batch, closure).applied());
  {
    torch::NoGradGuard no_grad;
    net->bias[1] = std::numeric_limits<float>::infinity();  // poisoned after the update
  }
  const auto weight = net->weight.clone(), bias = net->bias.clone();
  const auto state = make_optimizer_adapter(opt)->state_tensors();
  std::vector<at::Tensor> state_before;
  for (const auto& t : state) state_before.push_back(t.clone());
  EXPECT_TRUE(testing::throws_with<std::runtime_error>([&] { guard.step(batch, closure); }, {"no replays here"}));
  EXPECT_TRUE(torch::equal(net->weight, weight));
  EXPECT_TRUE(testing::tensors_match(net->bias, bias, 0, 0));
  const auto state_after = make_optimizer_adapter(opt)->state_tensors();
  ASSERT_EQ(state_after.size(), state_before.size());
  for (size_t i = 0; i < state_after.size(); ++i) EXPECT_TRUE(torch::equal(state_after[i], state_before[i]));
}

// The caller's clipping runs after the check: a clamp inside the closure would have made the
// +Inf gradient finite.
TEST(GuardApi, InfiniteGradientWithClipValueIsAnIncident) {
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  GuardHooks hooks;
  int clipped = 0;
  hooks.clip_gradients = [&] {  // as the trainer wires a spec's clipvalue
    ++clipped;
    clip_gradients(OptimizerSpec().type(OptimizerType::sgd).clipvalue(0.5), net->parameters());
  };
  Guard guard(*net, sgd, GuardOptions(), hooks);
  auto batch = with_ids(clusters(8, 1));
  auto v = guard.step(batch, [&](const data::Batch& b, const StepContext& ctx) {
    auto loss = cross_entropy_step(net, b);
    torch::NoGradGuard no_grad;
    net->weight.grad()[0][0] = std::numeric_limits<float>::infinity();
    return loss;
  });
  ASSERT_NE(v.incident, nullptr);
  EXPECT_EQ(v.incident->evidence.failed_check, "gradients");
  EXPECT_EQ(clipped, 0) << "no update, no clip";
  guard.step(batch, [&](const data::Batch& b) { return cross_entropy_step(net, b); });
  EXPECT_EQ(clipped, 1);
  EXPECT_LE(net->weight.grad().abs().max().item<double>(), 0.5);
}

// Two models with two optimizers under one guard: one decision and one rollback restore both.
// The closure computes both models' gradients from the pre-step state (simultaneous updates).
struct TinyGan {
  torch::nn::Linear gen{4, kFeatures}, disc{kFeatures, 1};
  std::unique_ptr<torch::optim::Adam> gen_opt;
  std::unique_ptr<torch::optim::SGD> disc_opt;
  TinyGan() {
    gen_opt = std::make_unique<torch::optim::Adam>(gen->parameters(), torch::optim::AdamOptions(1e-3));
    disc_opt = std::make_unique<torch::optim::SGD>(disc->parameters(), torch::optim::SGDOptions(0.05));
  }
  at::Tensor step(const data::Batch& b) {
    auto noise = torch::randn({b.size(), 4});
    // Generator first, with the discriminator frozen so its gradients stay the discriminator's own.
    for (auto& p : disc->parameters()) p.requires_grad_(false);
    auto fake = gen->forward(noise);
    auto g_loss = torch::softplus(-disc->forward(fake)).mean();
    g_loss.backward();
    for (auto& p : disc->parameters()) p.requires_grad_(true);
    auto d_loss = torch::softplus(-disc->forward(b.x)).mean() + torch::softplus(disc->forward(fake.detach())).mean();
    d_loss.backward();
    return torch::stack({g_loss, d_loss});
  }
};

TEST(GuardApi, TwoModelsShareOneSnapshotAndOneRollback) {
  auto real = with_ids(clusters(16, 4));
  const int64_t poisoned = 5;
  // Every incident is rolled back; the discriminator's gradient goes NaN once, at step 5.
  auto run = [&](bool inject, bool rerun, std::vector<std::pair<at::Tensor, at::Tensor>>* starts) {
    torch::manual_seed(0);
    TinyGan gan;
    GuardHooks hooks;
    hooks.on_event = [](const GuardEvent&) {};
    hooks.override_plan = [](const Incident&, const std::vector<RepairAction>&) {
      return std::vector<RepairAction>{RepairAction::rollback};
    };
    Guard guard({GuardedModel(*gan.gen, *gan.gen_opt, "generator"), GuardedModel(*gan.disc, *gan.disc_opt, "discriminator")},
                GuardOptions().snapshot_every(2).rerun_lost_steps(rerun), hooks);
    bool injected = false;
    for (int64_t s = 0; s < 8; ++s) {
      if (starts) starts->emplace_back(gan.gen->weight.clone(), gan.disc->weight.clone());
      guard.step(real, [&](const data::Batch& b, const StepContext& ctx) {
        auto losses = gan.step(b);
        if (inject && ctx.step == poisoned && !injected) {
          injected = true;
          torch::NoGradGuard no_grad;
          gan.disc->weight.grad()[0][0] = kNaN;
        }
        return losses;
      });
    }
    EXPECT_EQ(guard.incidents().size(), inject ? 1u : 0u);
    int64_t restored = -1;
    for (const auto& e : guard.events()) {
      if (e.action == "rollback") restored = std::stoll(e.detail.substr(e.detail.rfind(' ') + 1));
    }
    return std::make_tuple(gan.gen->weight.clone(), gan.disc->weight.clone(), restored);
  };
  auto [clean_gen, clean_disc, none] = run(false, true, nullptr);
  EXPECT_EQ(none, -1);
  // With the lost steps re-run, the rollback leaves no trace in either model.
  auto [gen, disc, restored] = run(true, true, nullptr);
  ASSERT_GE(restored, 0);
  EXPECT_TRUE(torch::equal(gen, clean_gen));
  EXPECT_TRUE(torch::equal(disc, clean_disc));
  // Without the re-run, both models are back at the snapshot (then train on from it).
  std::vector<std::pair<at::Tensor, at::Tensor>> starts;
  std::vector<std::pair<at::Tensor, at::Tensor>> clean_starts;
  run(false, false, &clean_starts);
  auto [gen2, disc2, restored2] = run(true, false, &starts);
  ASSERT_GE(restored2, 0);
  ASSERT_LT(restored2, poisoned);
  // The step after the incident starts from the snapshot's weights, for both models.
  EXPECT_TRUE(torch::equal(starts[poisoned + 1].first, clean_starts[static_cast<size_t>(restored2)].first));
  EXPECT_TRUE(torch::equal(starts[poisoned + 1].second, clean_starts[static_cast<size_t>(restored2)].second));
  EXPECT_FALSE(torch::equal(gen2, clean_gen));
}

// Without an observer, every event is printed through the log sink.
TEST(GuardApi, EventsGoToTheLogSinkByDefault) {
  std::vector<std::string> lines;
  set_log_sink([&](LogLevel, std::string_view m) { lines.emplace_back(m); });
  {
    torch::nn::Linear net(kFeatures, kClasses);
    torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
    Guard guard(*net, sgd);
    auto batch = with_ids(clusters(8, 1));
    batch.x[2][0] = kNaN;
    guard.step(batch, [&](const data::Batch& b) { return cross_entropy_step(net, b); });
  }
  set_log_sink(nullptr);
  bool incident = false, action = false;
  for (const auto& l : lines) {
    incident |= l.find("incident bad_input_data") != std::string::npos;
    action |= l.find("quarantine_samples") != std::string::npos;
  }
  EXPECT_TRUE(incident && action) << ::testing::PrintToString(lines);
}

// A batch without ids names its rows, and the quarantine says it could not act.
TEST(GuardApi, BatchWithoutIdsCannotBeQuarantined) {
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  GuardHooks quiet;
  quiet.on_event = [](const GuardEvent&) {};
  Guard guard(*net, sgd, GuardOptions(), quiet);
  auto batch = with_ids(clusters(8, 1));
  batch.ids = at::Tensor();
  batch.x[5][0] = kNaN;
  auto v = guard.step(batch, [&](const data::Batch& b) { return cross_entropy_step(net, b); });
  ASSERT_NE(v.incident, nullptr);
  EXPECT_FALSE(v.incident->evidence.batch_has_ids);
  EXPECT_TRUE(guard.quarantined().empty());
  bool could_not = false;
  for (const auto& e : guard.events()) {
    could_not |= e.action == "quarantine_samples" && e.detail.find("could not act") != std::string::npos;
  }
  EXPECT_TRUE(could_not);
  const std::string& text = v.incident->diagnosis.top().explanation;
  EXPECT_EQ(text.find("dataset id 5"), std::string::npos) << text;
  EXPECT_NE(text.find("rows 5 (dataset ids unknown)"), std::string::npos) << text;
}

}  // namespace
}  // namespace nanguard
