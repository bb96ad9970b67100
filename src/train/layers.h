// Private: the layer registry (types, options, activations, initializers) shared by the model
// builder and the TOML reader, and the modules that layers are built into.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "nanguard/monitor/signals.h"
#include "nanguard/train/model.h"

namespace nanguard::detail {

// ---- Registry -------------------------------------------------------------------------------

enum class Activation { linear, relu, sigmoid, tanh, softmax, leaky_relu, elu, gelu };

// Every layer type, activation, initializer and padding name, in documentation order.
const std::vector<std::string>& layer_types();
const std::vector<std::string>& activation_names();
const std::vector<std::string>& initializer_names();
const std::vector<std::string>& padding_names();

// Option keys that `type` accepts besides "type" (empty for flatten); nullptr for an unknown type.
const std::vector<std::string>* layer_option_keys(std::string_view type);
// Option keys that `type` must set.
std::vector<std::string> layer_required_keys(std::string_view type);
// Every option key of any layer type.
const std::vector<std::string>& all_option_keys();
// Whether option `key` of spec differs from a default-constructed LayerSpec.
bool option_is_set(const LayerSpec& spec, std::string_view key);

bool is_known(const std::vector<std::string>& names, std::string_view name);
// "a, b, c"
std::string join_names(const std::vector<std::string>& names);
// "[1, 28, 28]"
std::string format_shape(const std::vector<int64_t>& shape);
// The closest name within a small edit distance, or "" (for "did you mean" hints).
std::string closest_name(std::string_view name, const std::vector<std::string>& names);

Activation parse_activation(std::string_view name);

// ---- Modules --------------------------------------------------------------------------------

// A layer without its activation; the model applies the activation after forward() so that
// forward_logits can leave out the final one.
class Layer : public torch::nn::Module {
 public:
  explicit Layer(const std::string& name) : torch::nn::Module(name) {}
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;

  torch::Tensor activate(const torch::Tensor& x) const {
    switch (activation_) {
      case Activation::linear:
        return x;
      case Activation::relu:
        return reported(torch::relu(x), "relu");
      case Activation::sigmoid:
        return reported(torch::sigmoid(x), "sigmoid");
      case Activation::tanh:
        return reported(torch::tanh(x), "tanh");
      case Activation::softmax:
        return torch::softmax(x, -1);
      case Activation::leaky_relu:
        return torch::leaky_relu(x, alpha_);
      case Activation::elu:
        return torch::elu(x);
      case Activation::gelu:
        return torch::gelu(x);
    }
    return x;
  }
  Activation activation() const { return activation_; }
  void set_activation(Activation activation, double alpha) {
    activation_ = activation;
    alpha_ = alpha;
  }

  // Printed by operator<< after the module name, e.g. "in_features=784, units=128".
  void set_description(std::string description) { description_ = std::move(description); }
  void pretty_print(std::ostream& stream) const override {
    stream << name();
    if (!description_.empty()) stream << "(" << description_ << ")";
  }

 private:
  // Hands the output to the monitor's activation recorder on sampled steps.
  static torch::Tensor reported(torch::Tensor out, const char* kind) {
    monitor::report_activation(out, kind);
    return out;
  }

  Activation activation_ = Activation::linear;
  double alpha_ = 0.0;
  std::string description_;
};

// Checks layer `index` of model against its input shape and returns its output shape.
// Throws ValueError "layer <index> (<type>): ... (<source>:<line>)".
std::vector<int64_t> infer_layer_shape(const ModelSpec& model, size_t index,
                                       const std::vector<int64_t>& input_shape);

// Builds a checked layer (infer_layer_shape passed) and initialises its weights.
std::shared_ptr<Layer> make_layer(const LayerSpec& spec, const std::vector<int64_t>& input_shape,
                                  const std::vector<int64_t>& output_shape);

}  // namespace nanguard::detail
