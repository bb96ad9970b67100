// The trainer under a finite divergence: inputs left at 0-255 are rescaled by the guard's
// repair (the trainer owns the data pipeline) when a backoff cannot hold or did not, a learning
// rate too high is backed off, and the runs learn.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/train/trainer.h"

namespace nanguard {
namespace {

// Two classes told apart by the mean of 16 integer "pixels" in [0, 255].
data::TensorDataset pixels(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto y = torch::randint(0, 2, {n}, torch::kLong);
  auto base = torch::randint(0, 128, {n, 16}).to(torch::kFloat);
  auto x = base + y.to(torch::kFloat).unsqueeze(1) * 127.0;
  return data::TensorDataset(x, y);
}

Trainer sgd_trainer(double lr) {
  ModelSpec spec;
  spec.input_shape = {16};
  spec.add(layers::dense(32, "relu")).add(layers::dense(2, "softmax"));
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd).learning_rate(lr);
  c.metrics = {"accuracy"};
  torch::manual_seed(1);
  return Trainer(SequentialModel(spec), c);
}

std::vector<std::string> actions_of(const Trainer& t) {
  std::vector<std::string> out;
  for (const auto& i : const_cast<Trainer&>(t).guard()->incidents())
    out.insert(out.end(), i->actions.begin(), i->actions.end());
  return out;
}

TEST(TrainerDivergence, RawPixelsAreRescaledAndTheRunLearns) {
  auto train = pixels(512, 3), test = pixels(256, 4);
  Trainer trainer = sgd_trainer(0.1);
  FitOptions fit;
  fit.epochs = 4;
  fit.batch_size = 32;
  trainer.fit(train, &test, fit);
  ASSERT_FALSE(trainer.guard()->incidents().empty());
  const Incident& first = *trainer.guard()->incidents().front();
  EXPECT_EQ(first.evidence.failed_check, "divergence");
  EXPECT_EQ(first.diagnosis.top().cause, cause::unscaled_inputs);
  const auto actions = actions_of(trainer);
  EXPECT_NE(std::find(actions.begin(), actions.end(), "rescale_inputs"), actions.end());
  EXPECT_DOUBLE_EQ(trainer.input_scale(), 1.0 / 254.0);  // the largest value of the training set
  EXPECT_GT(trainer.evaluate(test).get("accuracy"), 0.95);  // evaluation sees the scaled inputs too
}

// A smaller overshoot (the loss 174x its level in one step, under the 361x past which no 10x
// backoff holds): the backoff comes first and keeps the raw inputs; when the run diverges again
// at the lower rate, the inputs are rescaled and the backoff withdrawn.
TEST(TrainerDivergence, ABackoffThatDoesNotHoldIsReplacedByTheRescale) {
  auto train = pixels(512, 3), test = pixels(256, 4);
  Trainer trainer = sgd_trainer(0.02);
  FitOptions fit;
  fit.epochs = 4;
  fit.batch_size = 32;
  trainer.fit(train, &test, fit);
  const auto& incidents = trainer.guard()->incidents();
  ASSERT_GE(incidents.size(), 2u);
  const Incident& first = *incidents[0];
  const Incident& second = *incidents[1];
  EXPECT_EQ(first.diagnosis.top().cause, cause::unscaled_inputs);
  EXPECT_LT(first.evidence.divergence_value / first.evidence.divergence_reference, 361.0);
  EXPECT_EQ(first.actions.front(), "lr_backoff");
  EXPECT_EQ(std::find(first.actions.begin(), first.actions.end(), "rescale_inputs"), first.actions.end());
  EXPECT_EQ(second.diagnosis.top().cause, cause::unscaled_inputs);
  EXPECT_EQ(second.evidence.unscaled_input_backoffs, 1);
  EXPECT_NE(second.diagnosis.top().explanation.find("already lowered once for these inputs (from 0.02)"),
            std::string::npos)
      << second.diagnosis.top().explanation;
  EXPECT_EQ(second.actions.front(), "rescale_inputs");
  EXPECT_NEAR(trainer.guard()->lr_scale(), 1.0, 1e-12) << "the rescale withdraws the backoff";
  EXPECT_DOUBLE_EQ(trainer.input_scale(), 1.0 / 254.0);
  EXPECT_GT(trainer.evaluate(test).get("accuracy"), 0.8);
}

TEST(TrainerDivergence, ScaledInputsKeepTheirScale) {
  auto train = pixels(512, 3), test = pixels(256, 4);
  const data::TensorDataset scaled_train(train.x() / 255.0, train.y(), train.ids());
  const data::TensorDataset scaled_test(test.x() / 255.0, test.y(), test.ids());
  Trainer trainer = sgd_trainer(0.1);
  FitOptions fit;
  fit.epochs = 4;
  fit.batch_size = 32;
  trainer.fit(scaled_train, &scaled_test, fit);
  EXPECT_TRUE(trainer.guard()->incidents().empty());
  EXPECT_DOUBLE_EQ(trainer.input_scale(), 1.0);
  EXPECT_GT(trainer.evaluate(scaled_test).get("accuracy"), 0.95);
  EXPECT_LT(trainer.first_loss(), 1.0);
}

// A loop of its own around train_step (no fit): the trainer does not know the dataset, so the
// guard keeps the batches' tensors to re-run the steps a rollback loses.
TEST(TrainerDivergence, TrainStepOutsideFitRerunsLostStepsFromKeptBatches) {
  auto train = pixels(512, 3), test = pixels(256, 4);
  Trainer trainer = sgd_trainer(0.1);
  data::BatchLoader loader(train, 32, /*shuffle=*/true, 0);
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    loader.start_epoch(epoch);
    for (int64_t i = 0; i < loader.num_batches(); ++i) trainer.train_step(loader.batch(i));
  }
  ASSERT_FALSE(trainer.guard()->incidents().empty());
  EXPECT_EQ(trainer.guard()->incidents().front()->evidence.failed_check, "divergence");
  const auto actions = actions_of(trainer);
  EXPECT_NE(std::find(actions.begin(), actions.end(), "rollback"), actions.end());
  EXPECT_DOUBLE_EQ(trainer.input_scale(), 1.0);  // the data is the loop's: the trainer cannot rescale it
  EXPECT_GT(trainer.guard()->rerun_steps(), 0);
  EXPECT_FALSE(trainer.guard()->stopped());
}

}  // namespace
}  // namespace nanguard
