// The guard and the trainer on a CUDA device. Each test skips itself where no GPU is present;
// names end in _CUDA so a GPU run can select them (--gtest_filter='*_CUDA').
#include <limits>

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "nanguard/guard/guard.h"
#include "nanguard/trace/scope.h"
#include "nanguard/train/trainer.h"

#include "clusters.h"

namespace nanguard {
namespace {

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here"

using namespace guard_test;

CompileOptions adam_on(c10::Device device) {
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  c.device = device;
  return c;
}

FitOptions three_epochs() {
  FitOptions f;
  f.epochs = 3;
  f.seed = 5;
  return f;
}

TEST(Trainer, FitsOnTheGpuWithTheGuard_CUDA) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(0);
  auto train = clusters(600, 1), test = clusters(300, 2);
  Trainer trainer(SequentialModel(mlp()), adam_on(c10::Device(c10::kCUDA)));
  for (const auto& p : trainer.model()->parameters()) EXPECT_TRUE(p.is_cuda());
  trainer.fit(train, nullptr, three_epochs());
  EXPECT_GT(trainer.evaluate(test).get("accuracy"), 0.9);
  ASSERT_NE(trainer.guard(), nullptr);
  EXPECT_TRUE(trainer.guard()->incidents().empty());
  EXPECT_TRUE(trainer.predict(test.x()).is_cpu());  // predictions come back where the input was
}

TEST(Guard, NonFiniteSamplesAreQuarantinedOnTheGpu_CUDA) {  // Z5 on a GPU
  SKIP_WITHOUT_CUDA();
  auto train = clusters(600, 1);
  const std::vector<int64_t> poisoned{17, 101, 250};
  auto x = train.x().clone();
  for (auto id : poisoned) x[id][3] = std::numeric_limits<float>::quiet_NaN();
  torch::manual_seed(0);
  Trainer trainer(SequentialModel(mlp()), adam_on(c10::Device(c10::kCUDA)));
  trainer.fit(data::TensorDataset(x, train.y()), nullptr, three_epochs());
  Guard& g = *trainer.guard();
  ASSERT_FALSE(g.incidents().empty());
  EXPECT_EQ(g.incidents().front()->diagnosis.top().cause, cause::bad_input_data);
  auto q = g.quarantined();
  std::sort(q.begin(), q.end());
  EXPECT_EQ(q, poisoned);
}

// fp16 overflows far earlier than float32: exp of anything above about 11.09 is Inf in half.
TEST(Guard, HalfPrecisionExpOverflowIsBornAtExp_CUDA) {  // Z4 in fp16
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(0);
  torch::nn::Linear model(kFeatures, kClasses);
  model->to(torch::kCUDA, torch::kHalf);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  Guard guard(*model, opt);
  auto ds = clusters(32, 4);
  data::BatchLoader loader(ds, 32, false);
  data::Batch batch = loader.batch(0);
  batch.x = batch.x.to(torch::kCUDA, torch::kHalf);
  batch.y = batch.y.to(torch::kCUDA);
  auto verdict = guard.step(batch, [&](const data::Batch& b) {
    NANGUARD_SCOPE("softmax");
    auto z = model->forward(b.x) + 12.0;  // above log(65504) = 11.09
    auto e = torch::exp(z);
    auto p = e / e.sum(1, true);
    auto loss = torch::nll_loss(torch::log(p).to(torch::kFloat), b.y);
    loss.backward();
    return loss;
  });
  ASSERT_NE(verdict.incident, nullptr);
  const Evidence& ev = verdict.incident->evidence;
  EXPECT_EQ(ev.birth_op, "aten::exp");
  EXPECT_EQ(ev.birth_phase, "forward");
  EXPECT_EQ(ev.birth_module, "softmax");
  EXPECT_GT(ev.birth_input_max, 11.0);
  EXPECT_LT(ev.birth_input_max, 88.0);  // float32 would not have overflowed
  EXPECT_EQ(verdict.incident->diagnosis.top().cause, cause::unsafe_loss);
  EXPECT_EQ(verdict.incident->diagnosis.top().subkind, unsafe_loss_kind::exp_overflow);
}

TEST(Trainer, CudaDeviceIsRefusedClearlyWithoutAGpu) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  try {
    Trainer trainer(SequentialModel(mlp()), adam_on(c10::Device(c10::kCUDA)));
    FAIL() << "expected a ValueError";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA is not available"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nanguard
