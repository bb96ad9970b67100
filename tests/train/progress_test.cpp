#include "nanguard/train/progress.h"

#include <sstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nanguard {
namespace {

TEST(Progress, FormatsDurationsLikeKeras) {
  EXPECT_EQ(format_duration(0.25), "250ms");
  EXPECT_EQ(format_duration(0.00028), "280us");
  EXPECT_EQ(format_duration(3.2), "3s");
  EXPECT_EQ(format_duration(65), "1m05s");
  EXPECT_EQ(format_duration(7300), "2h01m");
  EXPECT_EQ(format_duration(-1), "?");
}

TEST(Progress, PlainModePrintsOneLinePerEpochWithoutCarriageReturns) {
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {2};
  spec.add(layers::dense(2, "softmax"));
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd);
  Trainer trainer(SequentialModel(spec), c);
  data::TensorDataset ds(torch::randn({20, 2}), torch::randint(0, 2, {20}, torch::kLong));
  std::ostringstream out;
  ProgressBar bar(out, /*interactive=*/false);
  FitOptions f;
  f.epochs = 2;
  f.batch_size = 8;
  trainer.fit(ds, nullptr, f, {&bar});
  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_NE(text.find("Epoch 1/2 - 3 steps"), std::string::npos) << text;
  EXPECT_NE(text.find("Epoch 2/2"), std::string::npos);
  EXPECT_NE(text.find("loss: "), std::string::npos);
  EXPECT_NE(text.find("accuracy: "), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

TEST(Progress, InteractiveModeRedrawsInPlace) {
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {2};
  spec.add(layers::dense(2, "softmax"));
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd);
  Trainer trainer(SequentialModel(spec), c);
  data::TensorDataset ds(torch::randn({20, 2}), torch::randint(0, 2, {20}, torch::kLong));
  std::ostringstream out;
  ProgressBar bar(out, /*interactive=*/true);
  FitOptions f;
  f.epochs = 1;
  f.batch_size = 8;
  trainer.fit(ds, nullptr, f, {&bar});
  const std::string text = out.str();
  EXPECT_NE(text.find("Epoch 1/1\n"), std::string::npos);
  EXPECT_NE(text.find("\r3/3 [==============================]"), std::string::npos) << text;
}

}  // namespace
}  // namespace nanguard
