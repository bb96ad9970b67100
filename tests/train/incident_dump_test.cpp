#include "nanguard/train/incident_dump.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/data/npy.h"
#include "nanguard/train/trainer.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

// Ten clusters in 20-D scaled x40: the literal log(softmax) loss hits log(0) on the first steps.
data::TensorDataset scaled_clusters() {
  auto gen = at::detail::createCPUGenerator(3);
  auto y = torch::randint(0, 10, {256}, gen, torch::kLong);
  auto centers = torch::randn({10, 20}, gen) * 2.0;
  return data::TensorDataset((centers.index_select(0, y) + torch::randn({256, 20}, gen)) * 40.0, y);
}

std::unique_ptr<Trainer> unsafe_trainer() {
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {20};
  spec.add(layers::dense(32, "relu")).add(layers::dense(10, "softmax"));
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy).fused(false);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  return std::make_unique<Trainer>(SequentialModel(spec), c);
}

TEST(IncidentDump, AnOfflineReplayNamesTheSameBirthOp) {
  testing::TempDir dir;
  auto ds = scaled_clusters();
  auto trainer = unsafe_trainer();
  trainer->set_incident_dump_dir(dir.path());
  FitOptions f;
  f.epochs = 1;
  trainer->fit(ds, nullptr, f);
  ASSERT_FALSE(trainer->guard()->incidents().empty());
  const Incident& original = *trainer->guard()->incidents().front();
  const auto dump_dir = dir / ("step_" + std::to_string(original.step));
  ASSERT_TRUE(std::filesystem::exists(dump_dir / "state.pt"));

  IncidentDump dump = read_incident_dump(dump_dir);
  EXPECT_EQ(dump.batch.size(), original.evidence.batch_size);
  auto offline = unsafe_trainer();  // fresh weights, replaced by the dumped ones
  offline->load_weights(dump.state_file);
  at::Generator generator = at::globalContext().defaultGenerator(c10::Device(c10::kCPU));
  generator.set_state(dump.rng_state);
  auto incident = offline->examine(dump.batch);
  ASSERT_NE(incident, nullptr);
  EXPECT_EQ(incident->evidence.birth_op, original.evidence.birth_op);
  EXPECT_EQ(incident->evidence.birth_phase, original.evidence.birth_phase);
  EXPECT_EQ(incident->evidence.blamed_samples, original.evidence.blamed_samples);
  EXPECT_EQ(incident->diagnosis.top().cause, original.diagnosis.top().cause);
  EXPECT_EQ(offline->guard()->steps(), 0) << "examine must not count or apply a step";
}

TEST(IncidentDump, MissingOrInconsistentDumpsAreNamed) {
  testing::TempDir dir;
  EXPECT_TRUE(testing::throws_with<IoError>([&] { read_incident_dump(dir / "nope"); }, {"nope", "not a folder"}));
  auto trainer = unsafe_trainer();
  data::Batch b{torch::zeros({4, 20}), torch::zeros({4}, torch::kLong), torch::arange(4, torch::kLong)};
  write_incident_dump(dir / "d", *trainer->model(), b, at::Tensor());
  std::filesystem::remove(dir / "d" / "x.npy");
  EXPECT_TRUE(testing::throws_with<IoError>([&] { read_incident_dump(dir / "d"); }, {"lacks x.npy"}));
  write_incident_dump(dir / "e", *trainer->model(), b, at::Tensor());
  data::write_npy(dir / "e" / "ids.npy", torch::arange(3, torch::kLong));
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { read_incident_dump(dir / "e"); }, {"batch size"}));
}

// SGD at lr 3e38: finite loss and gradients, but the first update overflows the weights inside
// the optimizer step. The dump holds the state before that step (rebuilt from the guard's
// snapshot), with the optimizer's state, so the offline replay takes the step again.
std::unique_ptr<Trainer> overflowing_sgd_trainer() {
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {20};
  spec.add(layers::dense(32, "relu")).add(layers::dense(10, "softmax"));
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd).learning_rate(3e38).momentum(0.5);
  return std::make_unique<Trainer>(SequentialModel(spec), c);
}

TEST(IncidentDump, AnOptimizerPhaseIncidentReplaysOfflineInTheOptimizer) {
  testing::TempDir dir;
  auto ds = scaled_clusters();
  auto trainer = overflowing_sgd_trainer();
  trainer->set_incident_dump_dir(dir.path());
  FitOptions f;
  f.epochs = 1;
  trainer->fit(ds, nullptr, f);
  ASSERT_FALSE(trainer->guard()->incidents().empty());
  const Incident& original = *trainer->guard()->incidents().front();
  ASSERT_EQ(original.evidence.birth_phase, "optimizer");
  const auto dump_dir = dir / ("step_" + std::to_string(original.step));
  ASSERT_TRUE(std::filesystem::exists(dump_dir / "optimizer.pt"));

  IncidentDump dump = read_incident_dump(dump_dir);
  ASSERT_FALSE(dump.optimizer_file.empty());
  auto offline = overflowing_sgd_trainer();
  offline->load_weights(dump.state_file);
  std::vector<at::Tensor> before;
  for (const auto& p : offline->model()->parameters()) {
    EXPECT_TRUE(torch::isfinite(p).all().item<bool>()) << "the dump must hold the state before the failing step";
    before.push_back(p.clone());
  }
  offline->load_optimizer_state(dump.optimizer_file);
  at::Generator generator = at::globalContext().defaultGenerator(c10::Device(c10::kCPU));
  generator.set_state(dump.rng_state);
  auto incident = offline->examine(dump.batch);
  ASSERT_NE(incident, nullptr);
  EXPECT_EQ(incident->evidence.birth_phase, "optimizer");
  EXPECT_EQ(incident->evidence.birth_op, original.evidence.birth_op);
  EXPECT_EQ(incident->diagnosis.top().cause, original.diagnosis.top().cause);
  EXPECT_EQ(offline->guard()->steps(), 0) << "examine must not count a step";
  const auto after = offline->model()->parameters();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(after[i], before[i])) << "examine left the weights changed";
}

TEST(IncidentDump, AHealthyStepIsNotAnIncidentAndLeavesTheStateAlone) {
  auto ds = scaled_clusters();
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {20};
  spec.add(layers::dense(10, "softmax"));
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  Trainer trainer(SequentialModel(spec), c);
  const auto before = trainer.model()->parameters()[0].clone();
  data::BatchLoader loader(ds, 32, false);
  EXPECT_EQ(trainer.examine(loader.batch(0)), nullptr);
  EXPECT_TRUE(torch::equal(trainer.model()->parameters()[0], before));
}

TEST(IncidentDump, OptimizerStateFromAnotherOptimizerIsRefusedWithTheFileName) {
  testing::TempDir dir;
  auto sgd = overflowing_sgd_trainer();
  const auto ds = scaled_clusters();
  data::BatchLoader loader(ds, 32, false);
  sgd->train_step(loader.batch(0));
  sgd->save_optimizer_state(dir / "sgd.pt");
  auto adam = unsafe_trainer();
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { adam->load_optimizer_state(dir / "sgd.pt"); }, {"sgd.pt", "adam"}));
  EXPECT_TRUE(testing::throws_with<IoError>([&] { adam->load_optimizer_state(dir / "none.pt"); }, {"none.pt"}));
  testing::write_bytes(dir / "junk.pt", "not an archive");
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { adam->load_optimizer_state(dir / "junk.pt"); }, {"junk.pt"}));
}

}  // namespace
}  // namespace nanguard
