#include "nanguard/train/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/monitor/monitor.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

// Three Gaussian blobs in 2-D, well separated: a linear model should reach > 95%.
data::TensorDataset blobs(int64_t per_class, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto centers = torch::tensor({{0.0f, 3.0f}, {3.0f, -2.0f}, {-3.0f, -2.0f}});
  std::vector<at::Tensor> xs, ys;
  for (int64_t c = 0; c < 3; ++c) {
    xs.push_back(torch::randn({per_class, 2}, gen) * 0.7 + centers[c]);
    ys.push_back(torch::full({per_class}, c, torch::kLong));
  }
  return data::TensorDataset(torch::cat(xs), torch::cat(ys));
}

ModelSpec small_mlp() {
  ModelSpec spec;
  spec.input_shape = {2};
  spec.add(layers::dense(16, "relu")).add(layers::dense(3, "softmax"));
  return spec;
}

CompileOptions adam() {
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  c.metrics = {"accuracy"};
  return c;
}

class RecordingCallback : public Callback {
 public:
  std::vector<std::string> calls;
  void on_train_begin(Trainer&, const FitOptions&) override { calls.push_back("train_begin"); }
  void on_epoch_begin(Trainer&, int64_t e, int64_t) override { calls.push_back("epoch_begin " + std::to_string(e)); }
  void on_batch_end(Trainer&, int64_t, const StepResult&) override { ++batches; }
  void on_epoch_end(Trainer&, int64_t e, const Logs&) override { calls.push_back("epoch_end " + std::to_string(e)); }
  void on_train_end(Trainer&, const History&) override { calls.push_back("train_end"); }
  int batches = 0;
};

TEST(Trainer, LearnsASyntheticProblemAbove95Percent) {
  torch::manual_seed(0);
  auto train = blobs(200, 1), test = blobs(100, 2);
  Trainer trainer(SequentialModel(small_mlp()), adam());
  FitOptions fit;
  fit.epochs = 5;
  fit.batch_size = 32;
  RecordingCallback rec;
  History h = trainer.fit(train, &test, fit, {&rec});
  ASSERT_EQ(h.size(), 5u);
  EXPECT_EQ(h.columns(), (std::vector<std::string>{"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}));
  EXPECT_GT(h.logs.back().get("val_accuracy"), 0.95);
  EXPECT_LT(h.logs.back().get("loss"), h.logs.front().get("loss"));
  EXPECT_GT(trainer.evaluate(test).get("accuracy"), 0.95);
  EXPECT_EQ(trainer.global_step(), 5 * 19);  // 600 samples / 32 -> 19 batches
  EXPECT_EQ(rec.batches, 5 * 19);
  EXPECT_EQ(rec.calls.front(), "train_begin");
  EXPECT_EQ(rec.calls[1], "epoch_begin 0");
  EXPECT_EQ(rec.calls.back(), "train_end");
}

TEST(Trainer, PredictReturnsProbabilities) {
  torch::manual_seed(0);
  Trainer trainer(SequentialModel(small_mlp()), adam());
  auto p = trainer.predict(torch::randn({10, 2}), 4);
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{10, 3}));
  EXPECT_TRUE(torch::allclose(p.sum(1), torch::ones({10})));
}

TEST(Trainer, ScheduleDrivesTheLearningRatePerStep) {
  torch::manual_seed(0);
  CompileOptions c = adam();
  c.schedule = ScheduleSpec().type(ScheduleType::exponential_decay).initial_learning_rate(0.1).decay_steps(10).decay_rate(0.5);
  Trainer trainer(SequentialModel(small_mlp()), c);
  auto ds = blobs(10, 3);
  data::BatchLoader loader(ds, 3, false);
  for (int i = 0; i < 20; ++i) trainer.train_step(loader.batch(i % loader.num_batches()));
  // The 20th step (index 19) ran with 0.1 * 0.5^(19/10).
  EXPECT_NEAR(trainer.learning_rate(), 0.1 * std::pow(0.5, 1.9), 1e-12);
}

// The trainer's layers report their activations to the guard's monitor on sampled steps (no op
// callback): a sampled step holds one record per activated layer, named like its parameters.
TEST(Trainer, SampledStepsRecordTheLayersActivations) {
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {2};
  spec.add(layers::dense(8, "relu")).add(layers::dense(8, "sigmoid")).add(layers::dense(3, "softmax"));
  CompileOptions c = adam();
  c.guard = GuardOptions().monitor(monitor::MonitorOptions().sample_every(2));
  Trainer trainer(SequentialModel(spec), c);
  auto ds = blobs(10, 3);
  data::BatchLoader loader(ds, 6, false);
  for (int i = 0; i < 3; ++i) trainer.train_step(loader.batch(i));
  const auto& history = trainer.guard()->monitor()->history();
  ASSERT_EQ(history.size(), 3u);
  for (size_t i = 0; i < history.size(); ++i) {
    EXPECT_EQ(history[i].sampled, i % 2 == 0) << "step " << i;
    if (!history[i].sampled) {
      EXPECT_TRUE(history[i].activations.empty());
      continue;
    }
    ASSERT_EQ(history[i].activations.size(), 2u) << "step " << i;
    EXPECT_EQ(history[i].activations[0].layer, "layers.0.dense");
    EXPECT_EQ(history[i].activations[0].kind, "relu");
    EXPECT_EQ(history[i].activations[1].layer, "layers.1.dense");
    EXPECT_EQ(history[i].activations[1].kind, "sigmoid");
    EXPECT_EQ(history[i].activations[1].units, 8);
  }
}

TEST(Trainer, WeightsRoundTripAndLoadRejectsOtherModels) {
  testing::TempDir dir;
  torch::manual_seed(0);
  Trainer a(SequentialModel(small_mlp()), adam());
  a.save_weights(dir / "w.pt");
  torch::manual_seed(1);
  Trainer b(SequentialModel(small_mlp()), adam());
  b.load_weights(dir / "w.pt");
  auto x = torch::randn({5, 2});
  EXPECT_TRUE(torch::equal(a.predict(x), b.predict(x)));

  ModelSpec other;
  other.input_shape = {2};
  other.add(layers::dense(3, "softmax"));
  Trainer c(SequentialModel(other), adam());
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { c.load_weights(dir / "w.pt"); }, {"w.pt"}));
  testing::write_bytes(dir / "garbage.pt", "not a checkpoint");
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { c.load_weights(dir / "garbage.pt"); }, {"garbage.pt"}));
  EXPECT_THROW(c.load_weights(dir / "missing.pt"), IoError);
}

// A rescaled run's weights carry their input scale, so evaluate / predict after load_weights
// scale the inputs as training did.
TEST(Trainer, TheInputScaleTravelsWithTheWeights) {
  testing::TempDir dir;
  torch::manual_seed(0);
  Trainer a(SequentialModel(small_mlp()), adam());
  EXPECT_DOUBLE_EQ(a.input_scale(), 1.0);
  auto write = [&](const std::string& file, const at::Tensor& scale) {
    write_module_tensors(dir / file, *a.model(), {{"nanguard.input_scale", scale}});
  };
  write("scaled.pt", torch::tensor(1.0 / 255, torch::kDouble));
  Trainer b(SequentialModel(small_mlp()), adam());
  b.load_weights(dir / "scaled.pt");
  EXPECT_DOUBLE_EQ(b.input_scale(), 1.0 / 255);
  auto x = torch::randn({5, 2}) * 255;
  EXPECT_TRUE(torch::allclose(b.predict(x), a.predict(x / 255)));
  // save_weights writes it back, and weights without it reset it.
  b.save_weights(dir / "again.pt");
  Trainer c(SequentialModel(small_mlp()), adam());
  c.load_weights(dir / "again.pt");
  EXPECT_DOUBLE_EQ(c.input_scale(), 1.0 / 255);
  a.save_weights(dir / "plain.pt");
  c.load_weights(dir / "plain.pt");
  EXPECT_DOUBLE_EQ(c.input_scale(), 1.0);
  // Bad values name the key and what was expected, and leave the trainer as it was.
  write("zero.pt", torch::tensor(0.0, torch::kDouble));
  write("nan.pt", torch::tensor(std::nan(""), torch::kDouble));
  write("shape.pt", torch::ones({2}, torch::kDouble));
  for (const char* bad : {"zero.pt", "nan.pt", "shape.pt"}) {
    EXPECT_TRUE(testing::throws_with<ValueError>([&] { c.load_weights(dir / bad); },
                                                 {bad, "nanguard.input_scale", "one finite number > 0"}))
        << bad;
    EXPECT_DOUBLE_EQ(c.input_scale(), 1.0) << bad;
  }
}

TEST(Trainer, RefusesToWriteAPoisonedCheckpoint) {
  testing::TempDir dir;
  torch::manual_seed(0);
  Trainer t(SequentialModel(small_mlp()), adam());
  t.save_weights(dir / "w.pt");
  const std::string before = testing::read_bytes(dir / "w.pt");
  {
    torch::NoGradGuard no_grad;
    t.model()->parameters()[0].view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
  }
  EXPECT_TRUE(testing::throws_with<NonFiniteError>([&] { t.save_weights(dir / "w.pt"); }, {"w.pt", "NaN or Inf"}));
  EXPECT_EQ(testing::read_bytes(dir / "w.pt"), before);
}

TEST(Trainer, FitRejectsBadOptions) {
  torch::manual_seed(0);
  Trainer t(SequentialModel(small_mlp()), adam());
  auto ds = blobs(5, 1);
  FitOptions f;
  f.epochs = 0;
  EXPECT_THROW(t.fit(ds, nullptr, f), ValueError);
  f.epochs = 1;
  f.batch_size = -1;
  EXPECT_THROW(t.fit(ds, nullptr, f), ValueError);
}

TEST(Trainer, UnknownMetricFailsAtConstruction) {
  CompileOptions c = adam();
  c.metrics = {"acuracy"};
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { Trainer(SequentialModel(small_mlp()), c); }, {"acuracy"}));
}

}  // namespace
}  // namespace nanguard

namespace nanguard {
namespace {

TEST(Trainer, OutOfRangeLabelsAreReportedBeforeTraining) {
  torch::manual_seed(0);
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd);
  ModelSpec spec;
  spec.input_shape = {2};
  spec.add(layers::dense(3, "softmax"));
  Trainer t(SequentialModel(spec), c);
  auto y = torch::tensor({0, 1, 2, 7, 1}, torch::kLong);
  data::TensorDataset ds(torch::randn({5, 2}), y);
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { t.fit(ds, nullptr, FitOptions()); },
                                               {"sample 3", "label 7", "[0, 3)"}));
}

}  // namespace
}  // namespace nanguard
