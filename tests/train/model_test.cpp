#include "nanguard/train/model.h"

#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/monitor/signals.h"
#include "nanguard/trace/scope.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::tensors_match;
using testing::throws_with;
using Shape = std::vector<int64_t>;

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(7); }
};

// The article's Keras MLP on MNIST.
ModelSpec article_mlp() {
  ModelSpec spec{{28, 28}};
  spec.add(layers::flatten()).add(layers::dense(128, "relu")).add(layers::dense(10, "softmax"));
  return spec;
}

torch::Tensor param(const SequentialModel& model, const std::string& name) {
  auto params = model->named_parameters();
  const torch::Tensor* found = params.find(name);
  EXPECT_NE(found, nullptr) << "no parameter " << name;
  return found ? *found : torch::Tensor();
}

// Builds [input] -> layer and checks the inferred shape and the real forward output shape.
void expect_layer_shape(const Shape& input, const LayerSpec& layer, const Shape& expected,
                        bool integer_input = false) {
  SCOPED_TRACE(layer.type());
  ModelSpec spec{input};
  spec.add(layer);
  SequentialModel model(spec);
  EXPECT_EQ(model->output_shape(), expected);
  EXPECT_EQ(infer_output_shapes(spec).back(), expected);
  Shape batch_shape = {3};
  batch_shape.insert(batch_shape.end(), input.begin(), input.end());
  torch::Tensor x =
      integer_input ? torch::randint(0, 5, batch_shape, torch::kLong) : torch::randn(batch_shape);
  Shape out_shape = {3};
  out_shape.insert(out_shape.end(), expected.begin(), expected.end());
  EXPECT_EQ(model->forward(x).sizes().vec(), out_shape);
}

TEST_F(ModelTest, ArticleMlpMatchesKeras) {
  SequentialModel model(article_mlp());
  EXPECT_EQ(model->parameter_count(), 101770);
  EXPECT_EQ(model->output_shape(), Shape({10}));
  EXPECT_EQ(model->output_activation(), "softmax");
  EXPECT_EQ(model->layer_names(),
            (std::vector<std::string>{"layers.0.flatten", "layers.1.dense", "layers.2.dense"}));
  EXPECT_EQ(model->layer_output_shapes(), (std::vector<Shape>{{784}, {128}, {10}}));
  EXPECT_EQ(model->spec().layers.size(), 3u);
  auto probabilities = model->forward(torch::rand({5, 28, 28}));
  EXPECT_EQ(probabilities.sizes().vec(), Shape({5, 10}));
  EXPECT_TRUE(tensors_match(probabilities.sum(1), torch::ones({5}), 1e-5, 1e-5));
}

// The model's own activation reports give the monitor what op callbacks see, layer by layer
// (the trainer's guard reads reports, to spare sampled steps the per-op callback).
TEST_F(ModelTest, ActivationReportsMatchWhatOpCallbacksRecord) {
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {12};
  spec.add(layers::dense(16, "relu")).add(layers::dense(8, "tanh")).add(layers::dense(6, "sigmoid"))
      .add(layers::dense(3, "softmax"));
  SequentialModel model(spec);
  auto x = torch::randn({5, 12}) * 3;
  auto record = [&](monitor::ActivationSource source) {
    monitor::ActivationRecorder rec(0.01, source);
    (void)model->forward(x);
    return rec.finish();
  };
  const auto reports = record(monitor::ActivationSource::model_reports);
  const auto ops = record(monitor::ActivationSource::op_callbacks);
  ASSERT_EQ(reports.size(), 3u);
  ASSERT_EQ(reports.size(), ops.size());
  for (size_t i = 0; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].layer, ops[i].layer);
    EXPECT_EQ(reports[i].kind, ops[i].kind);
    EXPECT_DOUBLE_EQ(reports[i].mean, ops[i].mean);
    EXPECT_DOUBLE_EQ(reports[i].dead_fraction, ops[i].dead_fraction);
    EXPECT_DOUBLE_EQ(reports[i].saturated_fraction, ops[i].saturated_fraction);
  }
  EXPECT_EQ(reports[0].layer, "layers.0.dense");
  EXPECT_EQ(reports[2].kind, "sigmoid");
}

TEST_F(ModelTest, ParametersAreNamedAfterTheirLayer) {
  SequentialModel model(article_mlp());
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) names.push_back(item.key());
  EXPECT_EQ(names, (std::vector<std::string>{"layers.1.dense.weight", "layers.1.dense.bias",
                                             "layers.2.dense.weight", "layers.2.dense.bias"}));
  EXPECT_EQ(param(model, "layers.1.dense.weight").sizes().vec(), Shape({128, 784}));
}

TEST_F(ModelTest, InfersShapeOfEveryLayerType) {
  expect_layer_shape({2, 3, 4}, layers::flatten(), {24});
  expect_layer_shape({7}, layers::dense(5), {5});
  expect_layer_shape({4, 7}, layers::dense(5, "tanh"), {4, 5});  // on the last axis, like Keras
  expect_layer_shape({4, 7}, layers::activation("gelu"), {4, 7});
  expect_layer_shape({4, 7}, layers::dropout(0.5), {4, 7});
  expect_layer_shape({6}, layers::batch_norm(), {6});
  expect_layer_shape({3, 5, 5}, layers::batch_norm(), {3, 5, 5});
  expect_layer_shape({1, 28, 28}, layers::conv2d(8, 3), {8, 26, 26});
  expect_layer_shape({1, 28, 28}, layers::conv2d(8, 3).padding("same"), {8, 28, 28});
  expect_layer_shape({1, 28, 28}, layers::conv2d(8, 3).padding("same").strides(2), {8, 14, 14});
  expect_layer_shape({1, 28, 28}, layers::conv2d(8, {4, 2}).padding("same"), {8, 28, 28});
  expect_layer_shape({2, 9, 7}, layers::conv2d(4, {3, 1}).strides({2, 3}), {4, 4, 3});
  expect_layer_shape({8, 26, 26}, layers::max_pool2d(), {8, 13, 13});
  expect_layer_shape({2, 5, 5}, layers::max_pool2d(2), {2, 2, 2});
  expect_layer_shape({2, 5, 5}, layers::max_pool2d(2).padding("same"), {2, 3, 3});
  expect_layer_shape({2, 6, 6}, layers::max_pool2d(3).strides(1), {2, 4, 4});
  expect_layer_shape({784}, layers::reshape({1, 28, 28}), {1, 28, 28});
  expect_layer_shape({784}, layers::reshape({4, -1}), {4, 196});
  expect_layer_shape({10}, layers::embedding(5, 16), {10, 16}, /*integer_input=*/true);
  expect_layer_shape({10, 16}, layers::lstm(32), {32});
  expect_layer_shape({10, 16}, layers::lstm(32).return_sequences(true), {10, 32});
  expect_layer_shape({10, 16}, layers::gru(12), {12});
  expect_layer_shape({10, 16}, layers::gru(12).return_sequences(true), {10, 12});
}

TEST_F(ModelTest, FullConvolutionalAndRecurrentModelsRunForwardAndBackward) {
  ModelSpec cnn{{28, 28}};
  cnn.add(layers::reshape({1, 28, 28}))
      .add(layers::conv2d(4, 3, "relu"))
      .add(layers::batch_norm())
      .add(layers::max_pool2d(2))
      .add(layers::conv2d(6, 3, "elu").padding("same"))
      .add(layers::dropout(0.25))
      .add(layers::flatten())
      .add(layers::dense(10, "softmax"));
  SequentialModel model(cnn);
  EXPECT_EQ(model->layer_output_shapes(), (std::vector<Shape>{{1, 28, 28},
                                                              {4, 26, 26},
                                                              {4, 26, 26},
                                                              {4, 13, 13},
                                                              {6, 13, 13},
                                                              {6, 13, 13},
                                                              {1014},
                                                              {10}}));
  auto out = model->forward_logits(torch::rand({4, 28, 28}));
  EXPECT_EQ(out.sizes().vec(), Shape({4, 10}));
  torch::nn::functional::cross_entropy(out, torch::tensor({1, 2, 3, 4})).backward();
  for (const auto& p : model->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
  }

  ModelSpec rnn{{12}};
  rnn.add(layers::embedding(50, 8))
      .add(layers::gru(16).return_sequences(true))
      .add(layers::lstm(10))
      .add(layers::dense(1, "sigmoid"));
  SequentialModel text(rnn);
  EXPECT_EQ(text->output_shape(), Shape({1}));
  EXPECT_EQ(text->layer_names(), (std::vector<std::string>{"layers.0.embedding", "layers.1.gru",
                                                           "layers.2.lstm", "layers.3.dense"}));
  auto indices = torch::randint(0, 50, {3, 12}, torch::kLong);
  auto p = text->forward(indices);
  EXPECT_EQ(p.sizes().vec(), Shape({3, 1}));
  EXPECT_TRUE(((p > 0) & (p < 1)).all().item<bool>());
  // Float indices (as a numeric data pipeline delivers them) give the same result.
  EXPECT_TRUE(tensors_match(text->forward(indices.to(torch::kFloat)), p));
  text->forward_logits(indices).sum().backward();
  EXPECT_TRUE(param(text, "layers.0.embedding.weight").grad().defined());
  EXPECT_TRUE(param(text, "layers.1.gru.weight_hh").grad().defined());
}

TEST_F(ModelTest, MlpForwardMatchesManualComputation) {
  ModelSpec spec{{4}};
  spec.add(layers::dense(3, "relu")).add(layers::dense(2, "softmax"));
  SequentialModel model(spec);
  {
    // Non-zero biases so that a missing bias would show.
    torch::NoGradGuard no_grad;
    param(model, "layers.0.dense.bias").uniform_(-0.5, 0.5);
    param(model, "layers.1.dense.bias").uniform_(-0.5, 0.5);
  }
  auto x = torch::randn({6, 4});
  auto w1 = param(model, "layers.0.dense.weight"), b1 = param(model, "layers.0.dense.bias");
  auto w2 = param(model, "layers.1.dense.weight"), b2 = param(model, "layers.1.dense.bias");
  auto hidden = torch::clamp_min(torch::matmul(x, w1.t()) + b1, 0);
  auto logits = torch::matmul(hidden, w2.t()) + b2;
  auto expected = torch::exp(logits) / torch::exp(logits).sum(1, true);
  EXPECT_TRUE(tensors_match(model->forward(x), expected, 1e-5, 1e-6));
  EXPECT_TRUE(tensors_match(model->forward_logits(x), logits, 1e-5, 1e-6));
}

TEST_F(ModelTest, ForwardLogitsLeavesOutOnlyAFinalSoftmaxOrSigmoid) {
  auto x = torch::randn({5, 6});
  {
    ModelSpec spec{{6}};
    spec.add(layers::dense(4, "relu")).add(layers::dense(3, "softmax"));
    SequentialModel model(spec);
    EXPECT_EQ(model->output_activation(), "softmax");
    EXPECT_TRUE(tensors_match(torch::softmax(model->forward_logits(x), -1), model->forward(x)));
    EXPECT_FALSE(tensors_match(model->forward_logits(x), model->forward(x)));
  }
  {
    ModelSpec spec{{6}};
    spec.add(layers::dense(3)).add(layers::activation("sigmoid"));
    SequentialModel model(spec);
    EXPECT_EQ(model->output_activation(), "sigmoid");
    EXPECT_TRUE(tensors_match(torch::sigmoid(model->forward_logits(x)), model->forward(x)));
  }
  {
    ModelSpec spec{{6}};
    spec.add(layers::dense(3, "relu"));
    SequentialModel model(spec);
    EXPECT_EQ(model->output_activation(), "relu");
    EXPECT_TRUE(tensors_match(model->forward_logits(x), model->forward(x)));
  }
  {
    // A softmax that is not the final layer stays in.
    ModelSpec spec{{6}};
    spec.add(layers::dense(3, "softmax")).add(layers::flatten());
    SequentialModel model(spec);
    EXPECT_EQ(model->output_activation(), "linear");
    EXPECT_TRUE(tensors_match(model->forward_logits(x), model->forward(x)));
    EXPECT_TRUE(tensors_match(model->forward(x).sum(1), torch::ones({5}), 1e-5, 1e-5));
  }
}

TEST_F(ModelTest, ActivationsComputeWhatTheirNamesSay) {
  auto x = torch::linspace(-3, 3, 13).reshape({1, 13});
  std::map<std::string, torch::Tensor> expected = {
      {"linear", x},
      {"relu", torch::clamp_min(x, 0)},
      {"sigmoid", 1 / (1 + torch::exp(-x))},
      {"tanh", torch::tanh(x)},
      {"softmax", torch::exp(x) / torch::exp(x).sum()},
      {"leaky_relu", torch::where(x > 0, x, 0.3 * x)},
      {"elu", torch::where(x > 0, x, torch::exp(x) - 1)},
      {"gelu", 0.5 * x * (1 + torch::erf(x / std::sqrt(2.0)))},
  };
  for (const auto& [name, want] : expected) {
    SCOPED_TRACE(name);
    ModelSpec spec{{13}};
    spec.add(layers::activation(name));
    SequentialModel model(spec);
    EXPECT_TRUE(tensors_match(model->forward(x), want, 1e-5, 1e-6));
  }
  ModelSpec spec{{13}};
  spec.add(layers::activation("leaky_relu").alpha(0.1));
  SequentialModel model(spec);
  EXPECT_TRUE(tensors_match(model->forward(x), torch::where(x > 0, x, 0.1 * x)));
}

TEST_F(ModelTest, GlorotUniformStaysWithinKerasLimit) {
  ModelSpec spec{{200}};
  spec.add(layers::dense(300)).add(layers::reshape({3, 10, 10})).add(layers::conv2d(64, 3));
  SequentialModel model(spec);
  auto check = [](const torch::Tensor& w, double fan_in, double fan_out) {
    const double limit = std::sqrt(6.0 / (fan_in + fan_out));
    EXPECT_LE(w.abs().max().item<double>(), limit);
    EXPECT_GT(w.abs().max().item<double>(), 0.95 * limit);
    EXPECT_NEAR(w.std().item<double>(), limit / std::sqrt(3.0), 0.03 * limit);
  };
  check(param(model, "layers.0.dense.weight"), 200, 300);
  check(param(model, "layers.2.conv2d.weight"), 3 * 9, 64 * 9);
  EXPECT_EQ(param(model, "layers.0.dense.bias").abs().max().item<double>(), 0.0);
}

TEST_F(ModelTest, InitializersFollowKeras) {
  auto weight_of = [](const std::string& initializer) {
    ModelSpec spec{{400}};
    spec.add(layers::dense(200).kernel_initializer(initializer).bias_initializer("ones"));
    SequentialModel model(spec);
    EXPECT_TRUE(tensors_match(param(model, "layers.0.dense.bias"), torch::ones({200})));
    return param(model, "layers.0.dense.weight").detach();
  };
  const double fan_in = 400, fan_out = 200;
  // Truncated normals: std as requested, nothing beyond two of Keras' untruncated stddev.
  auto check_truncated = [](const torch::Tensor& w, double stddev) {
    EXPECT_NEAR(w.std().item<double>(), stddev, 0.03 * stddev);
    EXPECT_LE(w.abs().max().item<double>(), 2 * stddev / 0.87962566103423978 + 1e-6);
  };
  check_truncated(weight_of("glorot_normal"), std::sqrt(2.0 / (fan_in + fan_out)));
  check_truncated(weight_of("he_normal"), std::sqrt(2.0 / fan_in));
  check_truncated(weight_of("lecun_normal"), std::sqrt(1.0 / fan_in));
  auto he_uniform = weight_of("he_uniform");
  EXPECT_LE(he_uniform.abs().max().item<double>(), std::sqrt(6.0 / fan_in));
  EXPECT_NEAR(he_uniform.std().item<double>(), std::sqrt(2.0 / fan_in),
              0.03 * std::sqrt(2.0 / fan_in));
  EXPECT_NEAR(weight_of("random_normal").std().item<double>(), 0.05, 0.002);
  EXPECT_LE(weight_of("random_uniform").abs().max().item<double>(), 0.05);
  EXPECT_EQ(weight_of("zeros").abs().max().item<double>(), 0.0);
  EXPECT_TRUE(tensors_match(weight_of("ones"), torch::ones({200, 400})));
  auto orthogonal = weight_of("orthogonal");  // [200, 400]: orthonormal rows
  EXPECT_TRUE(
      tensors_match(torch::matmul(orthogonal, orthogonal.t()), torch::eye(200), 1e-4, 1e-4));
}

TEST_F(ModelTest, WeightsAreDeterministicGivenTheSeed) {
  torch::manual_seed(123);
  SequentialModel a(article_mlp());
  torch::manual_seed(123);
  SequentialModel b(article_mlp());
  SequentialModel c(article_mlp());
  EXPECT_TRUE(tensors_match(param(a, "layers.1.dense.weight"), param(b, "layers.1.dense.weight")));
  EXPECT_FALSE(torch::equal(param(b, "layers.1.dense.weight"), param(c, "layers.1.dense.weight")));
}

TEST_F(ModelTest, LstmStartsWithKerasForgetBiasAndOrthogonalRecurrentKernel) {
  const int64_t units = 6, features = 5;
  ModelSpec spec{{4, features}};
  spec.add(layers::lstm(units));
  SequentialModel model(spec);
  auto bias_ih = param(model, "layers.0.lstm.bias_ih");
  auto bias_hh = param(model, "layers.0.lstm.bias_hh");
  auto expected = torch::zeros({4 * units});
  expected.narrow(0, units, units).fill_(1.0);  // gates (input, forget, cell, output)
  EXPECT_TRUE(tensors_match(bias_ih, expected));
  EXPECT_TRUE(tensors_match(bias_hh, torch::zeros({4 * units})));
  auto w_hh = param(model, "layers.0.lstm.weight_hh");  // [4u, u]
  EXPECT_TRUE(tensors_match(torch::matmul(w_hh.t(), w_hh), torch::eye(units), 1e-4, 1e-4));
  EXPECT_LE(param(model, "layers.0.lstm.weight_ih").abs().max().item<double>(),
            std::sqrt(6.0 / (features + 4 * units)));
  EXPECT_EQ(model->parameter_count(), 4 * units * (features + units) + 2 * 4 * units);

  // Keras' GRU keeps both biases (reset_after) at the bias initializer.
  ModelSpec gru_spec{{4, features}};
  gru_spec.add(layers::gru(units));
  SequentialModel gru(gru_spec);
  EXPECT_TRUE(tensors_match(param(gru, "layers.0.gru.bias_ih"), torch::zeros({3 * units})));
  EXPECT_TRUE(tensors_match(param(gru, "layers.0.gru.bias_hh"), torch::zeros({3 * units})));

  ModelSpec no_bias{{4, features}};
  no_bias.add(layers::lstm(units).use_bias(false));
  SequentialModel plain(no_bias);
  EXPECT_EQ(plain->parameter_count(), 4 * units * (features + units));
  EXPECT_EQ(plain->forward(torch::randn({2, 4, features})).sizes().vec(), Shape({2, units}));
}

TEST_F(ModelTest, LstmLastOutputIsTheLastStepOfTheSequence) {
  ModelSpec seq{{7, 3}};
  seq.add(layers::lstm(4).return_sequences(true));
  torch::manual_seed(1);
  SequentialModel all(seq);
  ModelSpec last{{7, 3}};
  last.add(layers::lstm(4));
  torch::manual_seed(1);
  SequentialModel one(last);
  auto x = torch::randn({2, 7, 3});
  EXPECT_TRUE(tensors_match(one->forward(x), all->forward(x).select(1, 6)));
}

TEST_F(ModelTest, SamePaddingMatchesKeras) {
  // Keras puts odd "same" padding at the bottom/right.
  ModelSpec conv{{1, 3, 3}};
  conv.add(layers::conv2d(1, 2).padding("same").use_bias(false).kernel_initializer("ones"));
  SequentialModel conv_model(conv);
  auto out = conv_model->forward(torch::ones({1, 1, 3, 3}));
  EXPECT_TRUE(tensors_match(
      out, torch::tensor({4.f, 4.f, 2.f, 4.f, 4.f, 2.f, 2.f, 2.f, 1.f}).reshape({1, 1, 3, 3})));

  // Padding never wins a max, even when every input is negative; no infinities appear.
  ModelSpec pool{{1, 3, 3}};
  pool.add(layers::max_pool2d(2).padding("same"));
  SequentialModel pool_model(pool);
  auto x = -torch::arange(1, 10, torch::kFloat).reshape({1, 1, 3, 3});
  EXPECT_TRUE(tensors_match(pool_model->forward(x),
                            torch::tensor({-1.f, -3.f, -7.f, -9.f}).reshape({1, 1, 2, 2})));
}

TEST_F(ModelTest, DropoutAndBatchNormFollowTrainingMode) {
  ModelSpec spec{{1000}};
  spec.add(layers::dropout(0.5));
  SequentialModel dropout(spec);
  auto x = torch::ones({2, 1000});
  dropout->train();
  auto dropped = dropout->forward(x);
  const double zero_fraction = (dropped == 0).to(torch::kFloat).mean().item<double>();
  EXPECT_NEAR(zero_fraction, 0.5, 0.05);
  EXPECT_TRUE(tensors_match(dropped.mean(), torch::tensor(1.0f), 0.1, 0.1));
  dropout->eval();
  EXPECT_TRUE(tensors_match(dropout->forward(x), x));

  // Keras momentum 0.9 keeps 90% of the old running mean (torch momentum 0.1).
  ModelSpec bn_spec{{3}};
  bn_spec.add(layers::batch_norm().momentum(0.9).epsilon(1e-3));
  SequentialModel bn(bn_spec);
  auto batch = torch::tensor({{1.f, 2.f, 3.f}, {3.f, 6.f, 9.f}});
  bn->train();
  bn->forward(batch);
  auto buffers = bn->named_buffers();
  EXPECT_TRUE(tensors_match(*buffers.find("layers.0.batch_norm.running_mean"),
                            torch::tensor({0.2f, 0.4f, 0.6f})));
  bn->eval();
  auto expected = (batch - torch::tensor({0.2f, 0.4f, 0.6f})) /
                  torch::sqrt(*buffers.find("layers.0.batch_norm.running_var") + 1e-3);
  EXPECT_TRUE(tensors_match(bn->forward(batch), expected, 1e-5, 1e-5));
}

TEST_F(ModelTest, ShapeErrorsNameLayerTypeAndBothShapes) {
  ModelSpec spec{{28, 28}};
  spec.add(layers::flatten()).add(layers::dense(10)).add(layers::conv2d(4, 3));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { SequentialModel m(spec); },
      {"layer 2 (conv2d): expects input of rank 3 (channels, height, width), got [10]"}));
  EXPECT_TRUE(
      throws_with<ValueError>([&] { infer_output_shapes(spec); }, {"layer 2 (conv2d)", "[10]"}));

  auto build = [](Shape input, LayerSpec layer) {
    ModelSpec s{std::move(input)};
    s.add(std::move(layer));
    SequentialModel m(s);
  };
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({784}, layers::reshape({1, 28, 29}));
      },
      {"layer 0 (reshape)", "[784]", "784 elements", "[1, 28, 29]", "812 elements"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({10}, layers::reshape({3, -1}));
      },
      {"layer 0 (reshape)", "[10]", "[3, -1]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({12}, layers::reshape({-1, -1}));
      },
      {"-1 at most once"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({1, 3, 3}, layers::conv2d(2, 5));
      },
      {"layer 0 (conv2d)", "kernel_size [5, 5]", "[1, 3, 3]", "\"valid\""}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({1, 3, 3}, layers::max_pool2d(4));
      },
      {"layer 0 (max_pool2d)", "pool_size [4, 4]", "[1, 3, 3]"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({784}, layers::max_pool2d(2)); },
                                      {"layer 0 (max_pool2d)", "rank 3", "[784]"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({784}, layers::lstm(4)); },
                                      {"layer 0 (lstm)", "rank 2 (steps, features)", "[784]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({5, 4, 3, 2}, layers::gru(4));
      },
      {"layer 0 (gru)", "[5, 4, 3, 2]"}));
}

TEST_F(ModelTest, InvalidOptionsAreRejected) {
  auto build = [](Shape input, LayerSpec layer) {
    ModelSpec s{std::move(input)};
    s.add(std::move(layer));
    SequentialModel m(s);
  };
  EXPECT_TRUE(throws_with<ValueError>([&] { build({4}, layers::dense(0)); },
                                      {"layer 0 (dense)", "units", "got 0"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({4}, layers::lstm(-2)); },
                                      {"layer 0 (lstm)", "units", "-2"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({4}, layers::dropout(1.0)); },
                                      {"layer 0 (dropout)", "[0, 1)", "got 1"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({4}, layers::dropout(-0.1)); }, {"rate"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { build({4}, layers::dense(3, "relux")); },
      {"layer 0 (dense)", "unknown activation \"relux\"", "relu, sigmoid, tanh, softmax"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { build({4}, LayerSpec("conv3d")); },
      {"layer 0 (conv3d)", "unknown layer type \"conv3d\"", "did you mean \"conv2d\"",
       "flatten, dense, activation, dropout, batch_norm, conv2d, max_pool2d, reshape, "
       "embedding, lstm, gru"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({4}, LayerSpec()); },
                                      {"layer 0 (no type)", "unknown layer type"}));
  EXPECT_TRUE(
      throws_with<ValueError>([&] { build({4}, layers::dense(3).kernel_initializer("xavier")); },
                              {"unknown kernel_initializer \"xavier\"", "glorot_uniform"}));
  EXPECT_TRUE(
      throws_with<ValueError>([&] { build({4}, layers::dense(3).bias_initializer("orthogonal")); },
                              {"bias_initializer", "orthogonal"}));
  EXPECT_TRUE(
      throws_with<ValueError>([&] { build({4}, layers::flatten().units(3)); },
                              {"layer 0 (flatten)", "option units does not apply to flatten"}));
  EXPECT_TRUE(
      throws_with<ValueError>([&] { build({4}, layers::dense(3).rate(0.5)); },
                              {"option rate does not apply to dense", "kernel_initializer"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({1, 8, 8}, layers::conv2d(2, 3).padding("full"));
      },
      {"unknown padding \"full\"", "valid, same"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({1, 8, 8}, layers::conv2d(2, 0));
      },
      {"kernel_size must be positive"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({1, 8, 8}, layers::conv2d(2, 3).strides({1, -1}));
      },
      {"strides must be positive"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({1, 8, 8}, layers::conv2d(0, 3));
      },
      {"filters must be positive"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({4}, layers::embedding(0, 3)); },
                                      {"input_dim must be positive"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({4}, layers::batch_norm().momentum(1.0)); },
                                      {"momentum"}));
  EXPECT_TRUE(
      throws_with<ValueError>([&] { build({4}, layers::batch_norm().epsilon(0)); }, {"epsilon"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { build({}, layers::flatten()); },
                                      {"input_shape must not be empty"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        build({0, 3}, layers::flatten());
      },
      {"input_shape", "[0, 3]"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { SequentialModel m(ModelSpec{{4}}); }, {"no layers"}));
}

TEST_F(ModelTest, ErrorsNameTheSourceFileAndLine) {
  ModelSpec spec{{4}};
  spec.source = "net.toml";
  spec.add(layers::dense(0).line(9));
  EXPECT_TRUE(throws_with<ValueError>([&] { SequentialModel m(spec); },
                                      {"layer 0 (dense)", "(net.toml:9)"}));
  spec.source.clear();
  EXPECT_TRUE(throws_with<ValueError>([&] { SequentialModel m(spec); }, {"(line 9)"}));
}

TEST_F(ModelTest, ForwardRejectsInputOfTheWrongShape) {
  SequentialModel model(article_mlp());
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        model->forward(torch::rand({4, 784}));
      },
      {"expects input of shape [batch, 28, 28], got [4, 784]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        model->forward_logits(torch::rand({28, 28}));
      },
      {"got [28, 28]"}));
  EXPECT_EQ(model->forward(torch::rand({0, 28, 28})).sizes().vec(), Shape({0, 10}));
}

// Records the scope each dense-layer op ran under, as the op tracer does.
std::vector<std::pair<std::string, std::string>>& recorded_ops() {
  static std::vector<std::pair<std::string, std::string>> ops;
  return ops;
}

std::unique_ptr<at::ObserverContext> record_scope(const at::RecordFunction& fn) {
  recorded_ops().emplace_back(fn.name(), trace::Scope::current());
  return nullptr;
}

TEST_F(ModelTest, LayersRunInsideTheirTraceScope) {
  SequentialModel model(article_mlp());
  auto x = torch::rand({2, 28, 28});
  recorded_ops().clear();
  auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(record_scope));
  model->forward(x);
  at::removeCallback(handle);
  std::map<std::string, std::string> scope_of;
  for (const auto& [op, scope] : recorded_ops()) scope_of.emplace(op, scope);  // first occurrence
  EXPECT_EQ(scope_of["aten::flatten"], "layers.0.flatten");
  EXPECT_EQ(scope_of["aten::linear"], "layers.1.dense");
  EXPECT_EQ(scope_of["aten::relu"], "layers.1.dense");
  EXPECT_EQ(scope_of["aten::softmax"], "layers.2.dense");
  EXPECT_EQ(trace::Scope::depth(), 0u);
}

TEST_F(ModelTest, SummaryListsLayersShapesAndTotals) {
  SequentialModel model(article_mlp());
  const std::string summary = model->summary();
  for (const char* needle :
       {"layers.0.flatten", "[batch, 784]", "layers.1.dense", "relu", "100,480", "layers.2.dense",
        "softmax", "1,290", "Trainable params: 101,770"}) {
    EXPECT_NE(summary.find(needle), std::string::npos) << needle << " not in\n" << summary;
  }
  ModelSpec bn{{3}};
  bn.add(layers::batch_norm());
  SequentialModel with_buffers(bn);
  EXPECT_NE(with_buffers->summary().find("Non-trainable buffers: 6"), std::string::npos);
}

}  // namespace
}  // namespace nanguard
