// Keras-style sequential models for LibTorch.
//
// A ModelSpec lists layers the way Keras' Sequential does; SequentialModel builds it into an
// ordinary torch::nn::Module after checking every layer's input shape. Shapes exclude the batch
// dimension and follow PyTorch conventions: images are channels-first (channels, height,
// width), so an MNIST model that uses conv2d starts with reshape({1, 28, 28}); sequences are
// (steps, features), batch first.
//
//   nanguard::ModelSpec spec{{28, 28}};
//   spec.add(nanguard::layers::flatten())
//       .add(nanguard::layers::dense(128, "relu"))
//       .add(nanguard::layers::dense(10, "softmax"));
//   torch::manual_seed(0);
//   nanguard::SequentialModel model(spec);
//   torch::Tensor probabilities = model->forward(images);   // [batch, 10]
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace nanguard {

// One layer of a ModelSpec. Options that do not apply to `type` must keep their defaults.
//
// Layer types and their options:
//   flatten                        -
//   dense       units, activation, alpha, use_bias, kernel_initializer, bias_initializer
//   activation  activation, alpha
//   dropout     rate
//   batch_norm  momentum, epsilon
//   conv2d      filters, kernel_size, strides, padding, activation, alpha, use_bias,
//               kernel_initializer, bias_initializer
//   max_pool2d  pool_size, strides, padding
//   reshape     target_shape
//   embedding   input_dim, output_dim, kernel_initializer
//   lstm, gru   units, return_sequences, use_bias, kernel_initializer, recurrent_initializer,
//               bias_initializer
// Shape rules: dense acts on the last axis; batch_norm normalises the first axis (features of a
// vector, channels of an image), as torch's BatchNorm1d/2d do; conv2d and max_pool2d need
// (channels, height, width); lstm/gru need (steps, features); embedding appends output_dim to
// its input of integer indices (float inputs are truncated to integers).
// Activations: linear, relu, sigmoid, tanh, softmax (over the last axis), leaky_relu, elu, gelu.
// Initializers (as in Keras, with Keras' fan_in/fan_out): glorot_uniform, glorot_normal,
// he_uniform, he_normal, lecun_normal, random_normal (stddev 0.05), random_uniform (+-0.05),
// zeros, ones, orthogonal.
struct LayerSpec {
  explicit LayerSpec(std::string type = {}) : type_(std::move(type)) {}

  // Layer type, one of the list above.
  TORCH_ARG(std::string, type);
  // Output features of dense, hidden size of lstm/gru; must be positive.
  TORCH_ARG(int64_t, units) = 0;
  // Activation applied to the layer's output (dense, conv2d, activation).
  TORCH_ARG(std::string, activation) = "linear";
  // Negative slope of leaky_relu (Keras' LeakyReLU default).
  TORCH_ARG(double, alpha) = 0.3;
  // Initializer of the weight (dense, conv2d, embedding) or input kernel (lstm, gru).
  TORCH_ARG(std::string, kernel_initializer) = "glorot_uniform";
  // Initializer of the recurrent kernel of lstm/gru.
  TORCH_ARG(std::string, recurrent_initializer) = "orthogonal";
  // Initializer of the bias; lstm's forget-gate bias starts at 1 regardless (unit_forget_bias).
  TORCH_ARG(std::string, bias_initializer) = "zeros";
  // Whether dense, conv2d, lstm and gru have a bias.
  TORCH_ARG(bool, use_bias) = true;
  // Fraction of inputs dropout zeroes in training, in [0, 1).
  TORCH_ARG(double, rate) = 0.0;
  // Output channels of conv2d; must be positive.
  TORCH_ARG(int64_t, filters) = 0;
  // Window (height, width) of conv2d; one number means a square window.
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size) = 0;
  // Step of the conv2d / max_pool2d window; 0 means 1 for conv2d and pool_size for max_pool2d.
  TORCH_ARG(torch::ExpandingArray<2>, strides) = 0;
  // "valid" (no padding) or "same" (output size = ceil(input / stride), padded as in Keras).
  TORCH_ARG(std::string, padding) = "valid";
  // Window of max_pool2d.
  TORCH_ARG(torch::ExpandingArray<2>, pool_size) = 2;
  // Output shape of reshape without the batch dimension; one entry may be -1 (inferred).
  TORCH_ARG(std::vector<int64_t>, target_shape);
  // Vocabulary size of embedding (inputs are indices in [0, input_dim)).
  TORCH_ARG(int64_t, input_dim) = 0;
  // Vector size of embedding.
  TORCH_ARG(int64_t, output_dim) = 0;
  // lstm/gru: return every step's output (steps, units) instead of the last one (units).
  TORCH_ARG(bool, return_sequences) = false;
  // batch_norm running-average momentum in Keras' sense (torch momentum = 1 - this), in [0, 1).
  TORCH_ARG(double, momentum) = 0.99;
  // batch_norm variance epsilon; must be positive.
  TORCH_ARG(double, epsilon) = 0.001;
  // Line of the spec file the layer came from, for error messages (0 when built in C++).
  TORCH_ARG(int, line) = 0;
};

// A sequential model: the input shape (without the batch dimension) and its layers in order.
struct ModelSpec {
  // Shape of one sample, e.g. {28, 28} for MNIST images or {steps} for embedding inputs.
  std::vector<int64_t> input_shape;
  std::vector<LayerSpec> layers;
  // File the spec was read from ("" when built in C++), named in error messages.
  std::string source;

  // Appends a layer; returns *this for chaining.
  ModelSpec& add(LayerSpec layer);
};

// Factories for the common layers; further options chain on the result
// (e.g. layers::dense(64, "relu").kernel_initializer("he_normal")).
namespace layers {
LayerSpec flatten();
LayerSpec dense(int64_t units, std::string activation = "linear");
LayerSpec activation(std::string name);
LayerSpec dropout(double rate);
LayerSpec batch_norm();
LayerSpec conv2d(int64_t filters, torch::ExpandingArray<2> kernel_size,
                 std::string activation = "linear");
LayerSpec max_pool2d(torch::ExpandingArray<2> pool_size = 2);
LayerSpec reshape(std::vector<int64_t> target_shape);
// Keras' Embedding default initializer: random_uniform.
LayerSpec embedding(int64_t input_dim, int64_t output_dim);
LayerSpec lstm(int64_t units);
LayerSpec gru(int64_t units);
}  // namespace layers

// Checks every layer of spec and returns each layer's output shape (without the batch
// dimension), without allocating weights. Throws ValueError naming the layer index, type,
// expected and actual shapes (and the spec's file and line when known).
std::vector<std::vector<int64_t>> infer_output_shapes(const ModelSpec& spec);

namespace detail {
class Layer;
}

// The module built from a ModelSpec. Weights are initialised from torch's global generator
// (seed with torch::manual_seed for reproducible models). Parameters are named after their
// layer: "layers.1.dense.weight", "layers.1.dense.bias", ... Layouts follow torch: dense and
// conv2d weights are [out, in, ...]; lstm/gru have weight_ih, weight_hh, bias_ih and bias_hh
// (Keras' single LSTM bias starts in bias_ih, bias_hh starts at zero, so an LSTM has 4*units
// more parameters than in Keras); batch_norm has weight, bias and the buffers running_mean,
// running_var.
class SequentialModelImpl : public torch::nn::Module {
 public:
  // Throws ValueError when the spec is invalid (see infer_output_shapes).
  explicit SequentialModelImpl(ModelSpec spec);

  // Runs every layer; for a final softmax/sigmoid the result is probabilities.
  // x has shape [batch, input_shape...] (integer indices when the first layer is embedding).
  torch::Tensor forward(torch::Tensor x);
  // Like forward, but leaves out the final layer's activation when it is softmax or sigmoid,
  // so that a loss can work on logits (log_softmax / logsigmoid are stable, log(softmax) is not).
  torch::Tensor forward_logits(torch::Tensor x);

  // Activation of the final layer: "softmax", "sigmoid", "linear" (also for layers without
  // one, such as flatten), or another activation name.
  const std::string& output_activation() const { return output_activation_; }
  // Output shape of the model without the batch dimension.
  const std::vector<int64_t>& output_shape() const { return output_shapes_.back(); }
  // Output shape of each layer without the batch dimension.
  const std::vector<std::vector<int64_t>>& layer_output_shapes() const { return output_shapes_; }
  // "layers.<index>.<type>" per layer; also the NANGUARD_SCOPE name each layer runs under.
  const std::vector<std::string>& layer_names() const { return names_; }
  const ModelSpec& spec() const { return spec_; }
  // Number of trainable parameter elements.
  int64_t parameter_count() const;
  // A Keras-like table: layer, output shape, activation, parameters, and the totals.
  std::string summary() const;

 private:
  torch::Tensor run(torch::Tensor x, bool logits);
  [[noreturn]] void throw_bad_input(const torch::Tensor& x) const;

  ModelSpec spec_;
  std::vector<std::shared_ptr<detail::Layer>> layers_;
  std::vector<std::string> names_;
  std::vector<std::vector<int64_t>> output_shapes_;
  std::string output_activation_;
  // True when forward_logits drops the final layer's activation.
  bool final_is_probability_ = false;
};
TORCH_MODULE(SequentialModel);

}  // namespace nanguard
