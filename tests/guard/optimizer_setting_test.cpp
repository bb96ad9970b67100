// The guard on an optimizer setting that poisons the update (epsilon 0 where a gradient is
// exactly 0), a fully masked attention row, values that were in the input batch, and samples
// the data audit flagged for the same property.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>

#include "clusters.h"
#include "nanguard/data/audit.h"
#include "nanguard/guard/guard.h"
#include "nanguard/guard/optimizer_adapter.h"
#include "nanguard/train/trainer.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using namespace guard_test;

// Clusters whose feature 0 is 0 in every sample: the weights reading it get a gradient of
// exactly 0 on every step, so with epsilon 0 their update is 0 / 0.
data::TensorDataset dead_feature(int64_t n) {
  auto ds = clusters(n, 1);
  auto x = ds.x().clone();
  x.select(1, 0).zero_();
  return data::TensorDataset(x, ds.y());
}

struct Trained {
  std::vector<std::shared_ptr<const Incident>> incidents;
  std::vector<double> losses;  // per step
  double epsilon_after = 0;
};

template <typename Optimizer, typename Options>
Trained train_with(Options options, int64_t steps) {
  auto train = dead_feature(256);
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  Optimizer opt(model->parameters(), options);
  Guard guard(*model, opt);
  data::BatchLoader loader(train, 32, false);
  Trained r;
  for (int64_t i = 0; i < steps; ++i) {
    auto v = guard.step(loader.batch(i % loader.num_batches()), [&](const data::Batch& b) {
      auto loss = torch::nn::functional::cross_entropy(model->forward(b.x), b.y);
      loss.backward();
      return loss;
    });
    r.losses.push_back(v.loss);
    if (v.stopped()) break;
  }
  r.incidents = guard.incidents();
  r.epsilon_after = make_optimizer_adapter(opt)->epsilon(0);
  return r;
}

void expect_repaired(const Trained& r, const char* what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(r.incidents.size(), 1u);
  const Incident& inc = *r.incidents.front();
  const Evidence& ev = inc.evidence;
  EXPECT_EQ(ev.birth_op, "aten::addcdiv_");
  EXPECT_EQ(ev.birth_phase, "optimizer");
  EXPECT_EQ(ev.birth_parameter, "weight");
  EXPECT_EQ(ev.optimizer_epsilon, 0.0);
  EXPECT_EQ(ev.birth_denominator_zeros, kClasses);  // weight[:, 0], one per class
  const CauseScore& top = inc.diagnosis.top();
  EXPECT_EQ(top.cause, cause::optimizer_setting);
  EXPECT_EQ(top.subkind, optimizer_setting_kind::zero_epsilon);
  EXPECT_NE(top.explanation.find("weight"), std::string::npos) << top.explanation;
  EXPECT_NE(top.explanation.find("10 exact zeros"), std::string::npos) << top.explanation;
  EXPECT_NE(top.suggestion.find("1e-7"), std::string::npos);
  EXPECT_NE(top.suggestion.find("1e-8"), std::string::npos);
  ASSERT_GE(inc.actions.size(), 2u);
  EXPECT_EQ(inc.actions[0], "rollback");
  EXPECT_EQ(inc.actions[1], "safe_epsilon");
  EXPECT_EQ(r.epsilon_after, 1e-8);
  // It trains on: every step from the incident on has a finite loss, and the loss falls.
  const size_t from = static_cast<size_t>(inc.step);
  ASSERT_GT(r.losses.size(), from + 10);
  for (size_t i = from; i < r.losses.size(); ++i) EXPECT_TRUE(std::isfinite(r.losses[i])) << "step " << i;
  EXPECT_LT(r.losses.back(), r.losses[from]);
}

TEST(OptimizerSetting, ZeroEpsilonIsDiagnosedRaisedAndTheRunTrainsOn) {
  using namespace torch::optim;
  expect_repaired(train_with<Adam>(AdamOptions(0.01).eps(0), 40), "adam");
  expect_repaired(train_with<AdamW>(AdamWOptions(0.01).eps(0), 40), "adamw");
  expect_repaired(train_with<RMSprop>(RMSpropOptions(0.01).eps(0), 40), "rmsprop");
  expect_repaired(train_with<Adagrad>(AdagradOptions(0.1).eps(0), 40), "adagrad");
}

TEST(OptimizerSetting, AHealthyEpsilonSeesNoIncident) {
  Trained r = train_with<torch::optim::Adam>(torch::optim::AdamOptions(0.01).eps(1e-8), 40);
  EXPECT_TRUE(r.incidents.empty());
  EXPECT_EQ(r.epsilon_after, 1e-8);
}

// Sequences of 4 positions; a position whose input is 0 is padding and masked with -inf. The
// samples that are all padding leave a row with nothing to attend to.
TEST(FullyMaskedRow, TheSoftmaxIsTheBirthAndThePaddedSamplesAreQuarantined) {
  torch::manual_seed(0);
  const int64_t n = 64;
  auto x = torch::randn({n, 4}) + 3.0;
  x.index_put_({torch::indexing::Slice(), 3}, 0.0);  // every sample pads its last position
  const std::vector<int64_t> empty{5, 17, 40};
  for (int64_t id : empty) x[id].zero_();
  data::TensorDataset train(x, torch::randint(0, 4, {n}, torch::kLong));
  torch::nn::Linear model(4, 4);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*model, opt);
  data::BatchLoader loader(train, 16, false);
  std::vector<double> losses;
  for (int64_t epoch = 0; epoch < 3; ++epoch)
    for (int64_t i = 0; i < loader.num_batches(); ++i)
      losses.push_back(guard.step(loader.batch(i), [&](const data::Batch& b) {
        auto scores = model->forward(b.x).masked_fill(b.x == 0, -std::numeric_limits<float>::infinity());
        auto p = torch::softmax(scores, 1);
        auto loss = (p - torch::one_hot(b.y, 4).to(torch::kFloat)).pow(2).sum(1).mean();
        loss.backward();
        return loss;
      }).loss);
  ASSERT_EQ(guard.incidents().size(), empty.size());
  for (size_t k = 0; k < empty.size(); ++k) {
    const Incident& inc = *guard.incidents()[k];
    EXPECT_EQ(inc.evidence.birth_op, "aten::_softmax");
    EXPECT_EQ(inc.evidence.birth_inf_source.rfind("aten::masked_fill", 0), 0u) << inc.evidence.birth_inf_source;
    EXPECT_EQ(inc.diagnosis.top().cause, cause::fully_masked_row);
    EXPECT_EQ(inc.diagnosis.top().samples, std::vector<int64_t>{empty[k]});
  }
  auto q = guard.quarantined();
  std::sort(q.begin(), q.end());
  EXPECT_EQ(q, empty);
  for (size_t i = static_cast<size_t>(loader.num_batches()); i < losses.size(); ++i) EXPECT_TRUE(std::isfinite(losses[i]));
}

TEST(InputBirth, ValuesInTheInputBatchAreSaidToBeThere) {
  auto ds = clusters(64, 4);
  auto x = ds.x().clone();
  x[3][2] = kNaN;
  data::TensorDataset bad(x, ds.y());
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  Guard guard(*model, opt);
  data::BatchLoader loader(bad, 32, false);
  auto v = guard.step(loader.batch(0), [&](const data::Batch& b) {
    auto loss = torch::nn::functional::cross_entropy(model->forward(b.x), b.y);
    loss.backward();
    return loss;
  });
  ASSERT_NE(v.incident, nullptr);
  EXPECT_FALSE(v.incident->evidence.birth_found);
  EXPECT_EQ(v.incident->evidence.birth_phase, "input");
  EXPECT_NE(v.incident->summary().find("born in the input batch, before any op"), std::string::npos)
      << v.incident->summary();
}

AuditFlags audit_flags_of(const data::TensorDataset& ds) {
  const data::QuickAudit audit = data::quick_audit(ds.x(), ds.y(), ds.ids());
  AuditFlags flags(audit.flagged_ids);
  for (const auto& f : audit.flags) flags.add(f.kind, f.samples);
  return flags;
}

// One epoch of the trainer with the audit's flags; the incidents it had.
size_t incidents_in_one_epoch(const data::TensorDataset& ds, AuditFlags flags, std::unique_ptr<Trainer>& trainer) {
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  torch::manual_seed(0);
  trainer = std::make_unique<Trainer>(SequentialModel(mlp()), c);
  trainer->set_audit_flagged_samples(std::move(flags));
  FitOptions f;
  f.epochs = 1;
  f.batch_size = 32;
  f.seed = 5;
  trainer->fit(ds, nullptr, f);
  return trainer->guard()->incidents().size();
}

// Five samples with a NaN and one all +Inf, flagged by the audit before fit: the first incident
// quarantines all six, so the epoch has one incident, not one per sample.
TEST(AuditedKind, EverySampleFlaggedNonFiniteIsQuarantinedByTheFirstIncident) {
  auto train = clusters(600, 1);
  const std::vector<int64_t> poisoned{17, 101, 250, 333, 470, 589};
  auto x = train.x().clone();
  for (size_t i = 0; i + 1 < poisoned.size(); ++i) x[poisoned[i]][static_cast<int64_t>(i)] = kNaN;
  x[poisoned.back()].fill_(std::numeric_limits<float>::infinity());
  data::TensorDataset bad(x, train.y());
  const AuditFlags flags = audit_flags_of(bad);
  EXPECT_EQ(flags.with_property("non_finite"), poisoned);

  std::unique_ptr<Trainer> trainer;
  // Without the properties (the plain id list) each batch holding one is its own incident.
  const size_t without = incidents_in_one_epoch(bad, AuditFlags(flags.ids), trainer);
  EXPECT_GT(without, 1u);
  std::cout << "incidents in one epoch: " << without << " from the plain id list, ";
  ASSERT_EQ(incidents_in_one_epoch(bad, flags, trainer), 1u);
  std::cout << "1 with the properties\n";
  Guard& g = *trainer->guard();
  EXPECT_EQ(g.incidents().front()->diagnosis.top().cause, cause::bad_input_data);
  EXPECT_EQ(g.incidents().front()->diagnosis.top().samples, poisoned);
  auto q = g.quarantined();
  std::sort(q.begin(), q.end());
  EXPECT_EQ(q, poisoned);
}

// A per-sample standardisation (x - mean) / std divides 0 by 0 on blank samples: the first
// incident blames every blank sample the audit saw, not only those of its batch.
TEST(AuditedKind, AZeroDivisionOnBlankSamplesBlamesEveryBlankSample) {
  auto ds = clusters(256, 3);
  auto x = ds.x().clone();
  const std::vector<int64_t> blank{3, 40, 77, 150, 201};
  for (int64_t id : blank) x[id].zero_();
  data::TensorDataset train(x, ds.y());
  const AuditFlags flags = audit_flags_of(train);
  EXPECT_EQ(flags.with_property("blank"), blank);
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  GuardHooks hooks;
  hooks.audit_flagged_samples = [&] { return flags; };
  Guard guard(*model, opt, GuardOptions(), hooks);
  data::BatchLoader loader(train, 32, false);
  auto v = guard.step(loader.batch(0), [&](const data::Batch& b) {
    auto z = (b.x - b.x.mean(1, true)) / b.x.std(1, true, true);
    auto loss = torch::nn::functional::cross_entropy(model->forward(z), b.y);
    loss.backward();
    return loss;
  });
  ASSERT_NE(v.incident, nullptr);
  EXPECT_EQ(v.incident->evidence.birth_op, "aten::div");
  EXPECT_EQ(v.incident->evidence.blamed_samples, std::vector<int64_t>{3});  // the only one in batch 0
  EXPECT_EQ(v.incident->diagnosis.top().cause, cause::bad_input_data);
  EXPECT_EQ(v.incident->diagnosis.top().samples, blank);
  // bad_input_data quarantines them all at once: no later batch fails.
  auto q = guard.quarantined();
  std::sort(q.begin(), q.end());
  EXPECT_EQ(q, blank);
  for (int64_t i = 1; i < loader.num_batches(); ++i) {
    auto later = guard.step(loader.batch(i), [&](const data::Batch& b) {
      auto z = (b.x - b.x.mean(1, true)) / b.x.std(1, true, true);
      auto loss = torch::nn::functional::cross_entropy(model->forward(z), b.y);
      loss.backward();
      return loss;
    });
    EXPECT_EQ(later.incident, nullptr) << "batch " << i;
    EXPECT_TRUE(std::isfinite(later.loss));
  }
}

// A loop with no data audit: the guard looks at the blamed rows of the failing batch itself. A
// blank row there makes the zero division the sample's fault (quarantined), a row that is not
// blank leaves it the division's.
TEST(AuditedKind, WithoutAnAuditBlankRowsOfTheFailingBatchAreTheCause) {
  auto ds = clusters(64, 3);
  auto x = ds.x().clone();
  x[3].zero_();
  x[9].fill_(0.25);  // constant: its std is 0 too
  data::TensorDataset train(x, ds.y());
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  Guard guard(*model, opt);
  data::BatchLoader loader(train, 32, false);
  const auto normalised_step = [&](const data::Batch& b) {
    auto z = (b.x - b.x.mean(1, true)) / b.x.std(1, true, true);
    auto loss = torch::nn::functional::cross_entropy(model->forward(z), b.y);
    loss.backward();
    return loss;
  };
  auto v = guard.step(loader.batch(0), normalised_step);
  ASSERT_NE(v.incident, nullptr);
  const Evidence& ev = v.incident->evidence;
  EXPECT_EQ(ev.birth_op, "aten::div");
  EXPECT_EQ(ev.blamed_samples, (std::vector<int64_t>{3, 9}));
  EXPECT_EQ(ev.batch_flagged_samples.with_property("blank"), std::vector<int64_t>{3});
  EXPECT_EQ(ev.batch_flagged_samples.with_property("constant"), std::vector<int64_t>{9});
  const CauseScore& top = v.incident->diagnosis.top();
  EXPECT_EQ(top.cause, cause::bad_input_data);
  EXPECT_EQ(top.samples, (std::vector<int64_t>{3, 9}));
  EXPECT_NE(top.explanation.find("are blank or constant (every value the same) in the input batch"), std::string::npos)
      << top.explanation;
  EXPECT_EQ(top.explanation.find("data audit"), std::string::npos) << top.explanation;
  auto q = guard.quarantined();
  std::sort(q.begin(), q.end());
  EXPECT_EQ(q, (std::vector<int64_t>{3, 9}));
  EXPECT_EQ(guard.step(loader.batch(1), normalised_step).incident, nullptr);

  // A division by zero on rows that are not degenerate (the denominator is the loop's own)
  // stays the loss's: nothing is quarantined.
  Guard plain(*model, opt);
  auto w = plain.step(loader.batch(1), [&](const data::Batch& b) {
    auto z = b.x / (b.x.narrow(1, 0, 1) * 0);
    auto loss = torch::nn::functional::cross_entropy(model->forward(z), b.y);
    loss.backward();
    return loss;
  });
  ASSERT_NE(w.incident, nullptr);
  EXPECT_TRUE(w.incident->evidence.batch_flagged_samples.ids.empty());
  EXPECT_EQ(w.incident->diagnosis.top().cause, cause::unsafe_loss);
  EXPECT_TRUE(plain.quarantined().empty());
}

// The old hook (a plain id list) still fits and blames only the batch's own samples.
TEST(AuditedKind, APlainIdListStillWorksWithoutProperties) {
  GuardHooks hooks;
  hooks.audit_flagged_samples = [] { return std::vector<int64_t>{9, 3, 3}; };
  const AuditFlags f = hooks.audit_flagged_samples();
  EXPECT_EQ(f.ids, (std::vector<int64_t>{3, 9}));
  EXPECT_TRUE(f.by_property.empty());
}

}  // namespace
}  // namespace nanguard
