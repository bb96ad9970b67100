#include "train/model_toml.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/train/model.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;
using Shape = std::vector<int64_t>;

ModelSpec parse(const std::string& text) { return model_spec_from_toml_text(text, "model.toml"); }

// Asserts that parsing text throws ValueError whose message contains every needle.
::testing::AssertionResult rejects(const std::string& text,
                                   std::initializer_list<std::string> needles) {
  return throws_with<ValueError>([&] { parse(text); }, needles);
}

const char* const kArticleModel = R"(# the article's MLP
[model]
input_shape = [28, 28]

[[model.layers]]
type = "flatten"

[[model.layers]]
type = "dense"
units = 128
activation = "relu"

[[model.layers]]
type = "dense"
units = 10
activation = "softmax"
)";

TEST(ModelToml, ReadsTheArticleModel) {
  ModelSpec spec = parse(kArticleModel);
  EXPECT_EQ(spec.input_shape, Shape({28, 28}));
  EXPECT_EQ(spec.source, "model.toml");
  ASSERT_EQ(spec.layers.size(), 3u);
  EXPECT_EQ(spec.layers[0].type(), "flatten");
  EXPECT_EQ(spec.layers[1].type(), "dense");
  EXPECT_EQ(spec.layers[1].units(), 128);
  EXPECT_EQ(spec.layers[1].activation(), "relu");
  EXPECT_EQ(spec.layers[1].kernel_initializer(), "glorot_uniform");
  EXPECT_EQ(spec.layers[2].activation(), "softmax");
  EXPECT_EQ(spec.layers[0].line(), 5);
  EXPECT_EQ(spec.layers[1].line(), 8);
  torch::manual_seed(0);
  SequentialModel model(spec);
  EXPECT_EQ(model->parameter_count(), 101770);
}

TEST(ModelToml, ReadsEveryOption) {
  ModelSpec spec = parse(R"(
[model]
input_shape = [784]
[[model.layers]]
type = "reshape"
target_shape = [1, 28, -1]
[[model.layers]]
type = "conv2d"
filters = 8
kernel_size = [3, 5]
strides = 2
padding = "same"
activation = "leaky_relu"
alpha = 0.1
use_bias = false
kernel_initializer = "he_normal"
bias_initializer = "ones"
[[model.layers]]
type = "batch_norm"
momentum = 0.9
epsilon = 1e-5
[[model.layers]]
type = "max_pool2d"
pool_size = [2, 1]
strides = [1, 1]
padding = "valid"
[[model.layers]]
type = "dropout"
rate = 0
[[model.layers]]
type = "activation"
activation = "gelu"
[[model.layers]]
type = "flatten"
)");
  ASSERT_EQ(spec.layers.size(), 7u);
  EXPECT_EQ(spec.layers[0].target_shape(), Shape({1, 28, -1}));
  const LayerSpec& conv = spec.layers[1];
  EXPECT_EQ(conv.filters(), 8);
  EXPECT_EQ((*conv.kernel_size())[0], 3);
  EXPECT_EQ((*conv.kernel_size())[1], 5);
  EXPECT_EQ((*conv.strides())[0], 2);
  EXPECT_EQ((*conv.strides())[1], 2);
  EXPECT_EQ(conv.padding(), "same");
  EXPECT_EQ(conv.activation(), "leaky_relu");
  EXPECT_DOUBLE_EQ(conv.alpha(), 0.1);
  EXPECT_FALSE(conv.use_bias());
  EXPECT_EQ(conv.kernel_initializer(), "he_normal");
  EXPECT_EQ(conv.bias_initializer(), "ones");
  EXPECT_DOUBLE_EQ(spec.layers[2].momentum(), 0.9);
  EXPECT_DOUBLE_EQ(spec.layers[2].epsilon(), 1e-5);
  EXPECT_EQ((*spec.layers[3].pool_size())[0], 2);
  EXPECT_EQ((*spec.layers[3].pool_size())[1], 1);
  EXPECT_DOUBLE_EQ(spec.layers[4].rate(), 0.0);
  EXPECT_EQ(spec.layers[5].activation(), "gelu");
  SequentialModel model(spec);
  EXPECT_EQ(model->output_shape(), Shape({8 * 13 * 14}));

  ModelSpec text = parse(R"(
[model]
input_shape = [20]
[[model.layers]]
type = "embedding"
input_dim = 100
output_dim = 8
[[model.layers]]
type = "lstm"
units = 16
return_sequences = true
recurrent_initializer = "glorot_uniform"
[[model.layers]]
type = "gru"
units = 4
)");
  EXPECT_EQ(text.layers[0].input_dim(), 100);
  EXPECT_EQ(text.layers[0].output_dim(), 8);
  EXPECT_EQ(text.layers[0].kernel_initializer(), "random_uniform");  // Keras' Embedding default
  EXPECT_TRUE(text.layers[1].return_sequences());
  EXPECT_EQ(text.layers[1].recurrent_initializer(), "glorot_uniform");
  EXPECT_FALSE(text.layers[2].return_sequences());
  SequentialModel rnn(text);
  EXPECT_EQ(rnn->output_shape(), Shape({4}));
}

TEST(ModelToml, WrongValueTypeNamesPathValueAndLine) {
  const std::string text =
      std::string(kArticleModel)
          .replace(std::string(kArticleModel).find("units = 128"), 11, "units = \"abc\"");
  EXPECT_TRUE(rejects(
      text, {"layers[1].units: expected a positive integer, got string \"abc\" (model.toml:10)"}));
  auto layer = [](const std::string& body) {
    return "[model]\ninput_shape = [4]\n[[model.layers]]\n" + body;
  };
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 0\n"),
                      {"layers[0].units", "positive integer", "integer 0", ":5)"}));
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 2.5\n"), {"layers[0].units", "float 2.5"}));
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 3\nuse_bias = \"yes\"\n"),
                      {"layers[0].use_bias", "true or false"}));
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 3\nactivation = 1\n"),
                      {"layers[0].activation", "a string", "integer 1"}));
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 3\nactivation = \"relux\"\n"),
                      {"layers[0].activation", "unknown activation \"relux\"",
                       "did you mean \"relu\"", "softmax"}));
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 3\nkernel_initializer = \"xavier\"\n"),
                      {"kernel_initializer", "unknown initializer \"xavier\"", "glorot_uniform"}));
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 3\nbias_initializer = \"orthogonal\"\n"),
                      {"bias_initializer", "needs a matrix"}));
  EXPECT_TRUE(rejects(layer("type = \"dropout\"\nrate = 1.5\n"),
                      {"layers[0].rate", "[0, 1)", "float 1.5"}));
  EXPECT_TRUE(
      rejects(layer("type = \"dropout\"\nrate = nan\n"), {"layers[0].rate", "finite number"}));
  EXPECT_TRUE(rejects(layer("type = \"batch_norm\"\nepsilon = -1\n"),
                      {"layers[0].epsilon", "positive number"}));
  EXPECT_TRUE(
      rejects(layer("type = \"batch_norm\"\nmomentum = 1\n"), {"layers[0].momentum", "[0, 1)"}));
  EXPECT_TRUE(rejects(layer("type = \"conv2d\"\nfilters = 2\nkernel_size = [3]\n"),
                      {"layers[0].kernel_size", "[height, width]", "array"}));
  EXPECT_TRUE(rejects(layer("type = \"conv2d\"\nfilters = 2\nkernel_size = [3, 0]\n"),
                      {"layers[0].kernel_size"}));
  EXPECT_TRUE(
      rejects(layer("type = \"conv2d\"\nfilters = 2\nkernel_size = 3\npadding = \"full\"\n"),
              {"layers[0].padding", "unknown padding \"full\"", "valid, same"}));
  EXPECT_TRUE(rejects(layer("type = \"reshape\"\ntarget_shape = [1, 0]\n"),
                      {"layers[0].target_shape", "-1"}));
  EXPECT_TRUE(rejects(layer("type = \"reshape\"\ntarget_shape = 4\n"),
                      {"layers[0].target_shape", "integer 4"}));
  EXPECT_TRUE(rejects(layer("type = \"lstm\"\nunits = 3\nreturn_sequences = 1\n"),
                      {"layers[0].return_sequences"}));
  EXPECT_TRUE(rejects(layer("type = \"activation\"\nactivation = \"relu\"\nalpha = \"x\"\n"),
                      {"layers[0].alpha", "number"}));
}

TEST(ModelToml, UnknownKeysNameKeyAndLine) {
  auto layer = [](const std::string& body) {
    return "[model]\ninput_shape = [4]\n[[model.layers]]\n" + body;
  };
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunitz = 3\n"),
                      {"layers[0].unitz: unknown key", "did you mean \"units\"",
                       "valid keys for dense: type, units", "(model.toml:5)"}));
  EXPECT_TRUE(rejects(layer("type = \"flatten\"\nunits = 3\n"),
                      {"layers[0].units: key does not apply to flatten layers",
                       "valid keys for flatten: type", "(model.toml:5)"}));
  EXPECT_TRUE(rejects(layer("type = \"dense\"\nunits = 3\nrate = 0.5\n"),
                      {"layers[0].rate", "does not apply to dense", "(model.toml:6)"}));
  EXPECT_TRUE(rejects(
      "[model]\ninput_shape = [4]\ninput_shap = [4]\n[[model.layers]]\ntype = \"flatten\"\n",
      {"model.input_shap: unknown key", "did you mean \"input_shape\"", "(model.toml:3)"}));
}

TEST(ModelToml, MissingOrUnknownTypeIsReported) {
  EXPECT_TRUE(rejects("[model]\ninput_shape = [4]\n[[model.layers]]\nunits = 3\n",
                      {"layers[0]: missing key \"type\"", "flatten, dense", "(model.toml:3)"}));
  EXPECT_TRUE(rejects("[model]\ninput_shape = [4]\n[[model.layers]]\ntype = \"conv3d\"\n",
                      {"layers[0].type: unknown layer type \"conv3d\"", "did you mean \"conv2d\"",
                       "flatten, dense, activation", "(model.toml:4)"}));
  EXPECT_TRUE(rejects("[model]\ninput_shape = [4]\n[[model.layers]]\ntype = 3\n",
                      {"layers[0].type: expected a string, got integer 3"}));
  EXPECT_TRUE(rejects(
      "[model]\ninput_shape = [4]\n[[model.layers]]\ntype = \"dense\"\nactivation = \"relu\"\n",
      {"layers[0]: dense layers need key \"units\"", "(model.toml:3)"}));
  EXPECT_TRUE(
      rejects("[model]\ninput_shape = [4]\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 3\n",
              {"conv2d layers need key \"kernel_size\""}));
}

TEST(ModelToml, ModelTableErrors) {
  EXPECT_TRUE(rejects("[training]\nepochs = 3\n", {"model.toml: missing [model] table"}));
  EXPECT_TRUE(rejects("model = 3\n", {"expected a table", "integer 3"}));
  EXPECT_TRUE(rejects("[model]\n[[model.layers]]\ntype = \"flatten\"\n",
                      {"model: missing key \"input_shape\""}));
  EXPECT_TRUE(
      rejects("[model]\ninput_shape = [4]\n", {"model: missing layers", "[[model.layers]]"}));
  EXPECT_TRUE(rejects("[model]\ninput_shape = [4]\nlayers = []\n",
                      {"model.layers", "non-empty array of tables"}));
  EXPECT_TRUE(rejects("[model]\ninput_shape = [4]\nlayers = [1, 2]\n",
                      {"layers[0]: expected a table", "integer 1"}));
  EXPECT_TRUE(rejects(
      "[model]\ninput_shape = [28, 0]\n[[model.layers]]\ntype = \"flatten\"\n",
      {"model.input_shape: expected a non-empty array of positive integers", "(model.toml:2)"}));
  EXPECT_TRUE(rejects("[model]\ninput_shape = \"28x28\"\n[[model.layers]]\ntype = \"flatten\"\n",
                      {"model.input_shape", "string \"28x28\""}));
  EXPECT_TRUE(rejects("[model]\ninput_shape = [4\n", {"model.toml:", "invalid TOML"}));
  EXPECT_TRUE(
      rejects("[model]\ninput_shape = [4]\ninput_shape = [5]\n", {"model.toml:3", "invalid TOML"}));
}

TEST(ModelToml, BuildErrorsPointAtTheLayerLine) {
  ModelSpec spec = parse(R"([model]
input_shape = [28, 28]
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
)");
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { SequentialModel m(spec); },
      {"layer 1 (conv2d): expects input of rank 3", "got [784]", "(model.toml:5)"}));
}

TEST(ModelToml, ReadsAParsedTable) {
  toml::table document = toml::parse(kArticleModel);
  ModelSpec spec = model_spec_from_toml(*document["model"].as_table(), "config.toml");
  EXPECT_EQ(spec.source, "config.toml");
  EXPECT_EQ(spec.layers.size(), 3u);
}

}  // namespace
}  // namespace nanguard
