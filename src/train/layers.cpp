#include "train/layers.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/init.h>

#include "core/check.h"
#include "core/text.h"
#include "nanguard/core/error.h"

namespace nanguard::detail {
namespace {

// ---- Registry -------------------------------------------------------------------------------

struct OptionInfo {
  std::string key;
  std::function<bool(const LayerSpec&)> is_set;
};

template <typename Get>
OptionInfo option(std::string key, Get get) {
  return {std::move(key), [get](const LayerSpec& spec) {
            static const LayerSpec defaults;
            return !(get(spec) == get(defaults));
          }};
}

bool same_pair(const torch::ExpandingArray<2>& a, const torch::ExpandingArray<2>& b) {
  return (*a)[0] == (*b)[0] && (*a)[1] == (*b)[1];
}

OptionInfo pair_option(std::string key, const torch::ExpandingArray<2>& (LayerSpec::*get)() const) {
  return {std::move(key), [get](const LayerSpec& spec) {
            static const LayerSpec defaults;
            return !same_pair((spec.*get)(), (defaults.*get)());
          }};
}

const std::vector<OptionInfo>& option_table() {
  static const std::vector<OptionInfo> table = {
      option("units", [](const LayerSpec& s) { return s.units(); }),
      option("activation", [](const LayerSpec& s) { return s.activation(); }),
      option("alpha", [](const LayerSpec& s) { return s.alpha(); }),
      option("use_bias", [](const LayerSpec& s) { return s.use_bias(); }),
      option("kernel_initializer", [](const LayerSpec& s) { return s.kernel_initializer(); }),
      option("recurrent_initializer", [](const LayerSpec& s) { return s.recurrent_initializer(); }),
      option("bias_initializer", [](const LayerSpec& s) { return s.bias_initializer(); }),
      option("rate", [](const LayerSpec& s) { return s.rate(); }),
      option("filters", [](const LayerSpec& s) { return s.filters(); }),
      pair_option("kernel_size", &LayerSpec::kernel_size),
      pair_option("strides", &LayerSpec::strides),
      option("padding", [](const LayerSpec& s) { return s.padding(); }),
      pair_option("pool_size", &LayerSpec::pool_size),
      option("target_shape", [](const LayerSpec& s) { return s.target_shape(); }),
      option("input_dim", [](const LayerSpec& s) { return s.input_dim(); }),
      option("output_dim", [](const LayerSpec& s) { return s.output_dim(); }),
      option("return_sequences", [](const LayerSpec& s) { return s.return_sequences(); }),
      option("momentum", [](const LayerSpec& s) { return s.momentum(); }),
      option("epsilon", [](const LayerSpec& s) { return s.epsilon(); }),
  };
  return table;
}

struct TypeInfo {
  std::string name;
  std::vector<std::string> keys;
  std::vector<std::string> required;
};

const std::vector<TypeInfo>& type_table() {
  static const std::vector<TypeInfo> table = {
      {"flatten", {}, {}},
      {"dense",
       {"units", "activation", "alpha", "use_bias", "kernel_initializer", "bias_initializer"},
       {"units"}},
      {"activation", {"activation", "alpha"}, {"activation"}},
      {"dropout", {"rate"}, {"rate"}},
      {"batch_norm", {"momentum", "epsilon"}, {}},
      {"conv2d",
       {"filters", "kernel_size", "strides", "padding", "activation", "alpha", "use_bias",
        "kernel_initializer", "bias_initializer"},
       {"filters", "kernel_size"}},
      {"max_pool2d", {"pool_size", "strides", "padding"}, {}},
      {"reshape", {"target_shape"}, {"target_shape"}},
      {"embedding", {"input_dim", "output_dim", "kernel_initializer"}, {"input_dim", "output_dim"}},
      {"lstm",
       {"units", "return_sequences", "use_bias", "kernel_initializer", "recurrent_initializer",
        "bias_initializer"},
       {"units"}},
      {"gru",
       {"units", "return_sequences", "use_bias", "kernel_initializer", "recurrent_initializer",
        "bias_initializer"},
       {"units"}},
  };
  return table;
}

const TypeInfo* find_type(std::string_view type) {
  for (const auto& info : type_table()) {
    if (info.name == type) return &info;
  }
  return nullptr;
}

// ---- Errors ---------------------------------------------------------------------------------

// Formats errors about one layer: "layer 2 (conv2d): <message> (model.toml:14)".
class LayerErrors {
 public:
  LayerErrors(const ModelSpec& model, size_t index) : model_(model), index_(index) {}

  template <typename... Args>
  void check(bool ok, fmt::format_string<Args...> format, Args&&... args) const {
    if (!ok) fail(fmt::format(format, std::forward<Args>(args)...));
  }

  [[noreturn]] void fail(const std::string& message) const {
    const LayerSpec& spec = model_.layers[index_];
    std::string where;
    if (spec.line() > 0) {
      where = model_.source.empty() ? fmt::format(" (line {})", spec.line())
                                    : fmt::format(" ({}:{})", model_.source, spec.line());
    } else if (!model_.source.empty()) {
      where = fmt::format(" ({})", model_.source);
    }
    const std::string type = spec.type().empty() ? "no type" : spec.type();
    throw ValueError(fmt::format("layer {} ({}): {}{}", index_, type, message, where));
  }

 private:
  const ModelSpec& model_;
  size_t index_;
};

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

void check_initializer(const LayerErrors& errors, const char* option, const std::string& name,
                       bool for_bias) {
  errors.check(is_known(initializer_names(), name), "unknown {} \"{}\"; valid: {}", option, name,
               join_names(initializer_names()));
  errors.check(!(for_bias && name == "orthogonal"),
               "{} \"orthogonal\" needs a matrix, but a bias is a vector", option);
}

void check_activation(const LayerErrors& errors, const LayerSpec& spec) {
  errors.check(is_known(activation_names(), spec.activation()),
               "unknown activation \"{}\"; valid: {}", spec.activation(),
               join_names(activation_names()));
  errors.check(std::isfinite(spec.alpha()), "alpha must be finite, got {}", spec.alpha());
}

void check_positive_pair(const LayerErrors& errors, const char* option,
                         const torch::ExpandingArray<2>& value) {
  errors.check((*value)[0] > 0 && (*value)[1] > 0, "{} must be positive, got [{}, {}]", option,
               (*value)[0], (*value)[1]);
}

struct Window {
  int64_t out = 0;
  int64_t pad_before = 0;
  int64_t pad_after = 0;
};

// One spatial axis of a conv/pool window, as Keras computes it: "valid" uses no padding,
// "same" gives ceil(in / stride) outputs with the extra padding at the end.
Window window_axis(int64_t in, int64_t kernel, int64_t stride, bool same) {
  Window w;
  if (same) {
    w.out = (in + stride - 1) / stride;
    int64_t total = std::max<int64_t>((w.out - 1) * stride + kernel - in, 0);
    w.pad_before = total / 2;
    w.pad_after = total - w.pad_before;
  } else {
    w.out = in >= kernel ? (in - kernel) / stride + 1 : 0;
  }
  return w;
}

// strides 0 means the layer's default: 1 for conv2d, the window itself for max_pool2d.
std::array<int64_t, 2> effective_strides(const LayerSpec& spec,
                                         const torch::ExpandingArray<2>& window,
                                         bool default_stride_is_window) {
  const auto& s = *spec.strides();
  if (s[0] == 0 && s[1] == 0) {
    if (default_stride_is_window) return {(*window)[0], (*window)[1]};
    return {1, 1};
  }
  return {s[0], s[1]};
}

std::array<Window, 2> compute_windows(const LayerSpec& spec, const std::vector<int64_t>& in,
                                      const torch::ExpandingArray<2>& window,
                                      bool default_stride_is_window) {
  const std::array<int64_t, 2> stride = effective_strides(spec, window, default_stride_is_window);
  const bool same = spec.padding() == "same";
  return {window_axis(in[1], (*window)[0], stride[0], same),
          window_axis(in[2], (*window)[1], stride[1], same)};
}

// Shared by conv2d and max_pool2d: checks and the (height, width) windows.
std::array<Window, 2> spatial_windows(const LayerErrors& errors, const LayerSpec& spec,
                                      const std::vector<int64_t>& in,
                                      const torch::ExpandingArray<2>& window,
                                      const char* window_name, bool default_stride_is_window) {
  errors.check(in.size() == 3, "expects input of rank 3 (channels, height, width), got {}",
               format_shape(in));
  check_positive_pair(errors, window_name, window);
  const auto& s = *spec.strides();
  errors.check((s[0] == 0 && s[1] == 0) || (s[0] > 0 && s[1] > 0),
               "strides must be positive, got [{}, {}]", s[0], s[1]);
  errors.check(is_known(padding_names(), spec.padding()), "unknown padding \"{}\"; valid: {}",
               spec.padding(), join_names(padding_names()));
  const std::array<Window, 2> w = compute_windows(spec, in, window, default_stride_is_window);
  errors.check(w[0].out > 0 && w[1].out > 0,
               "{} [{}, {}] does not fit input {} (height {}, width {}) with padding \"{}\"",
               window_name, (*window)[0], (*window)[1], format_shape(in), in[1], in[2],
               spec.padding());
  return w;
}

// ---- Initializers ---------------------------------------------------------------------------

// Keras' truncated normal: values beyond two standard deviations are redrawn. Drawn by
// inverting the normal CDF on the truncated range, so one pass and no data-dependent loop.
void truncated_normal_(torch::Tensor& t, double stddev) {
  const double low = 0.5 * std::erfc(2.0 / std::sqrt(2.0));  // Phi(-2)
  const double high = 1.0 - low;
  t.uniform_(low, high)
      .mul_(2)
      .sub_(1)
      .erfinv_()
      .mul_(std::sqrt(2.0) * stddev)
      .clamp_(-2 * stddev, 2 * stddev);
}

// Initialises t in place as Keras would a weight with these fans.
void initialize(torch::Tensor t, const std::string& name, int64_t fan_in, int64_t fan_out) {
  torch::NoGradGuard no_grad;
  // Standard deviation of a standard normal truncated to [-2, 2]; Keras divides by it.
  constexpr double kTruncatedStd = 0.87962566103423978;
  const double fan_avg = 0.5 * static_cast<double>(fan_in + fan_out);
  if (name == "glorot_uniform") {
    const double limit = std::sqrt(3.0 / fan_avg);
    t.uniform_(-limit, limit);
  } else if (name == "glorot_normal") {
    truncated_normal_(t, std::sqrt(1.0 / fan_avg) / kTruncatedStd);
  } else if (name == "he_uniform") {
    const double limit = std::sqrt(6.0 / static_cast<double>(fan_in));
    t.uniform_(-limit, limit);
  } else if (name == "he_normal") {
    truncated_normal_(t, std::sqrt(2.0 / static_cast<double>(fan_in)) / kTruncatedStd);
  } else if (name == "lecun_normal") {
    truncated_normal_(t, std::sqrt(1.0 / static_cast<double>(fan_in)) / kTruncatedStd);
  } else if (name == "random_normal") {
    t.normal_(0.0, 0.05);
  } else if (name == "random_uniform") {
    t.uniform_(-0.05, 0.05);
  } else if (name == "zeros") {
    t.zero_();
  } else if (name == "ones") {
    t.fill_(1.0);
  } else if (name == "orthogonal") {
    torch::nn::init::orthogonal_(t);
  } else {
    NANGUARD_INTERNAL_ASSERT(false, "initializer \"{}\" passed the checks but is not implemented",
                             name);
  }
}

// A bias as Keras sees it: a vector whose fans are both its length.
void initialize_bias(const torch::Tensor& t, const std::string& name) {
  initialize(t, name, t.numel(), t.numel());
}

// ---- Layers ---------------------------------------------------------------------------------

class FlattenLayer : public Layer {
 public:
  FlattenLayer() : Layer("nanguard::Flatten") {}
  torch::Tensor forward(const torch::Tensor& x) override { return x.flatten(1); }
};

class IdentityLayer : public Layer {  // standalone activation: the model applies it
 public:
  IdentityLayer() : Layer("nanguard::Activation") {}
  torch::Tensor forward(const torch::Tensor& x) override { return x; }
};

class DenseLayer : public Layer {
 public:
  DenseLayer(const LayerSpec& spec, int64_t in_features) : Layer("nanguard::Dense") {
    // torch keeps the weight as [out, in]; Keras' fans are fan_in = in, fan_out = out.
    weight_ = register_parameter("weight", torch::empty({spec.units(), in_features}));
    initialize(weight_, spec.kernel_initializer(), in_features, spec.units());
    if (spec.use_bias()) {
      bias_ = register_parameter("bias", torch::empty({spec.units()}));
      initialize_bias(bias_, spec.bias_initializer());
    }
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    return torch::linear(x, weight_, bias_);
  }

 private:
  torch::Tensor weight_, bias_;
};

class DropoutLayer : public Layer {
 public:
  explicit DropoutLayer(double rate) : Layer("nanguard::Dropout"), rate_(rate) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    if (rate_ == 0.0 || !is_training()) return x;
    return torch::dropout(x, rate_, true);
  }

 private:
  double rate_;
};

class BatchNormLayer : public Layer {
 public:
  BatchNormLayer(const LayerSpec& spec, int64_t features)
      : Layer("nanguard::BatchNorm"), momentum_(1.0 - spec.momentum()), epsilon_(spec.epsilon()) {
    weight_ = register_parameter("weight", torch::ones({features}));
    bias_ = register_parameter("bias", torch::zeros({features}));
    running_mean_ = register_buffer("running_mean", torch::zeros({features}));
    running_var_ = register_buffer("running_var", torch::ones({features}));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    return torch::batch_norm(x, weight_, bias_, running_mean_, running_var_, is_training(),
                             momentum_, epsilon_, /*cudnn_enabled=*/true);
  }

 private:
  double momentum_, epsilon_;
  torch::Tensor weight_, bias_, running_mean_, running_var_;
};

class Conv2dLayer : public Layer {
 public:
  Conv2dLayer(const LayerSpec& spec, int64_t in_channels, const std::array<Window, 2>& w)
      : Layer("nanguard::Conv2d") {
    const int64_t kh = (*spec.kernel_size())[0], kw = (*spec.kernel_size())[1];
    weight_ = register_parameter("weight", torch::empty({spec.filters(), in_channels, kh, kw}));
    initialize(weight_, spec.kernel_initializer(), in_channels * kh * kw, spec.filters() * kh * kw);
    if (spec.use_bias()) {
      bias_ = register_parameter("bias", torch::empty({spec.filters()}));
      initialize_bias(bias_, spec.bias_initializer());
    }
    stride_ = effective_strides(spec, spec.kernel_size(), false);
    // Symmetric padding goes to the convolution itself; Keras' odd "same" padding puts the
    // extra row/column at the end, which needs an explicit pad first.
    if (w[0].pad_before == w[0].pad_after && w[1].pad_before == w[1].pad_after) {
      conv_padding_ = {w[0].pad_before, w[1].pad_before};
    } else {
      pre_pad_ = {w[1].pad_before, w[1].pad_after, w[0].pad_before, w[0].pad_after};
      needs_pre_pad_ = true;
    }
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    const torch::Tensor& input = needs_pre_pad_ ? torch::constant_pad_nd(x, pre_pad_, 0) : x;
    return torch::conv2d(input, weight_, bias_, stride_, conv_padding_);
  }

 private:
  torch::Tensor weight_, bias_;
  std::array<int64_t, 2> stride_{1, 1};
  std::array<int64_t, 2> conv_padding_{0, 0};
  std::array<int64_t, 4> pre_pad_{0, 0, 0, 0};
  bool needs_pre_pad_ = false;
};

class MaxPool2dLayer : public Layer {
 public:
  MaxPool2dLayer(const LayerSpec& spec, const std::array<Window, 2>& w)
      : Layer("nanguard::MaxPool2d") {
    kernel_ = {(*spec.pool_size())[0], (*spec.pool_size())[1]};
    stride_ = effective_strides(spec, spec.pool_size(), true);
    pad_ = {w[1].pad_before, w[1].pad_after, w[0].pad_before, w[0].pad_after};
    needs_pad_ = w[0].pad_before + w[0].pad_after + w[1].pad_before + w[1].pad_after > 0;
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    // Keras pads "same" pooling with -inf. Every window overlaps the input by at least one row
    // and column next to the padding, so repeating the edge gives the same maxima without
    // putting infinities into tensors that the op tracer would report as non-finite.
    if (needs_pad_) return torch::max_pool2d(torch::replication_pad2d(x, pad_), kernel_, stride_);
    return torch::max_pool2d(x, kernel_, stride_);
  }

 private:
  std::array<int64_t, 2> kernel_{2, 2}, stride_{2, 2};
  std::array<int64_t, 4> pad_{0, 0, 0, 0};
  bool needs_pad_ = false;
};

class ReshapeLayer : public Layer {
 public:
  explicit ReshapeLayer(std::vector<int64_t> shape)
      : Layer("nanguard::Reshape"), shape_(std::move(shape)) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    at::DimVector shape;
    shape.reserve(shape_.size() + 1);
    shape.push_back(x.size(0));
    shape.append(shape_.begin(), shape_.end());
    return x.reshape(shape);
  }

 private:
  std::vector<int64_t> shape_;  // resolved: no -1
};

class EmbeddingLayer : public Layer {
 public:
  explicit EmbeddingLayer(const LayerSpec& spec) : Layer("nanguard::Embedding") {
    weight_ = register_parameter("weight", torch::empty({spec.input_dim(), spec.output_dim()}));
    initialize(weight_, spec.kernel_initializer(), spec.input_dim(), spec.output_dim());
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    // Indices often arrive as floats from a numeric data pipeline; embedding needs integers.
    if (!c10::isIntegralType(x.scalar_type(), /*includeBool=*/false)) {
      return torch::embedding(weight_, x.to(torch::kLong));
    }
    return torch::embedding(weight_, x);
  }

 private:
  torch::Tensor weight_;
};

// lstm and gru through ATen's fused kernels, one layer, batch first, zero initial state.
class RecurrentLayer : public Layer {
 public:
  RecurrentLayer(const LayerSpec& spec, int64_t in_features)
      : Layer(spec.type() == "lstm" ? "nanguard::LSTM" : "nanguard::GRU"),
        lstm_(spec.type() == "lstm"),
        units_(spec.units()),
        return_sequences_(spec.return_sequences()) {
    const int64_t gates = (lstm_ ? 4 : 3) * units_;
    weight_ih_ = register_parameter("weight_ih", torch::empty({gates, in_features}));
    initialize(weight_ih_, spec.kernel_initializer(), in_features, gates);
    weight_hh_ = register_parameter("weight_hh", torch::empty({gates, units_}));
    initialize(weight_hh_, spec.recurrent_initializer(), units_, gates);
    if (spec.use_bias()) {
      // torch has an input and a recurrent bias where Keras' LSTM has one: the input bias takes
      // Keras' values and the recurrent one starts at zero, so their sum matches Keras.
      bias_ih_ = register_parameter("bias_ih", torch::empty({gates}));
      bias_hh_ = register_parameter("bias_hh", torch::empty({gates}));
      initialize_bias(bias_ih_, spec.bias_initializer());
      if (lstm_) {
        initialize_bias(bias_hh_, "zeros");
        // Keras' unit_forget_bias: gates are ordered (input, forget, cell, output).
        torch::NoGradGuard no_grad;
        bias_ih_.narrow(0, units_, units_).fill_(1.0);
      } else {
        // Keras' GRU (reset_after) has both biases too.
        initialize_bias(bias_hh_, spec.bias_initializer());
      }
    }
  }

  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor h0 = torch::zeros({1, x.size(0), units_}, x.options());
    const bool has_bias = bias_ih_.defined();
    std::array<torch::Tensor, 4> params = {weight_ih_, weight_hh_, bias_ih_, bias_hh_};
    c10::ArrayRef<torch::Tensor> param_list(params.data(), has_bias ? 4 : 2);
    if (lstm_) {
      std::array<torch::Tensor, 2> state = {h0, torch::zeros_like(h0)};
      auto result = torch::lstm(x, state, param_list, has_bias, 1, 0.0, is_training(),
                                /*bidirectional=*/false, /*batch_first=*/true);
      return return_sequences_ ? std::get<0>(result) : std::get<1>(result).select(0, 0);
    }
    auto result = torch::gru(x, h0, param_list, has_bias, 1, 0.0, is_training(),
                             /*bidirectional=*/false, /*batch_first=*/true);
    return return_sequences_ ? std::get<0>(result) : std::get<1>(result).select(0, 0);
  }

 private:
  bool lstm_;
  int64_t units_;
  bool return_sequences_;
  torch::Tensor weight_ih_, weight_hh_, bias_ih_, bias_hh_;
};

}  // namespace

// ---- Registry (public to the library) -------------------------------------------------------

const std::vector<std::string>& layer_types() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& info : type_table()) v.push_back(info.name);
    return v;
  }();
  return names;
}

const std::vector<std::string>& activation_names() {
  static const std::vector<std::string> names = {"linear",  "relu",       "sigmoid", "tanh",
                                                 "softmax", "leaky_relu", "elu",     "gelu"};
  return names;
}

const std::vector<std::string>& initializer_names() {
  static const std::vector<std::string> names = {
      "glorot_uniform", "glorot_normal",  "he_uniform", "he_normal", "lecun_normal",
      "random_normal",  "random_uniform", "zeros",      "ones",      "orthogonal"};
  return names;
}

const std::vector<std::string>& padding_names() {
  static const std::vector<std::string> names = {"valid", "same"};
  return names;
}

const std::vector<std::string>* layer_option_keys(std::string_view type) {
  const TypeInfo* info = find_type(type);
  return info ? &info->keys : nullptr;
}

std::vector<std::string> layer_required_keys(std::string_view type) {
  const TypeInfo* info = find_type(type);
  return info ? info->required : std::vector<std::string>{};
}

const std::vector<std::string>& all_option_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> v;
    for (const auto& option : option_table()) v.push_back(option.key);
    return v;
  }();
  return keys;
}

bool option_is_set(const LayerSpec& spec, std::string_view key) {
  for (const auto& option : option_table()) {
    if (option.key == key) return option.is_set(spec);
  }
  NANGUARD_INTERNAL_ASSERT(false, "unknown layer option \"{}\"", key);
}

bool is_known(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string join_names(const std::vector<std::string>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string format_shape(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string closest_name(std::string_view name, const std::vector<std::string>& names) {
  // Longer names tolerate more typos: a third of their length, at least two edits.
  return nanguard::detail::closest_name(name, names, std::max<size_t>(2, name.size() / 3));
}

Activation parse_activation(std::string_view name) {
  static const std::array<std::pair<std::string_view, Activation>, 8> table = {{
      {"linear", Activation::linear},
      {"relu", Activation::relu},
      {"sigmoid", Activation::sigmoid},
      {"tanh", Activation::tanh},
      {"softmax", Activation::softmax},
      {"leaky_relu", Activation::leaky_relu},
      {"elu", Activation::elu},
      {"gelu", Activation::gelu},
  }};
  for (const auto& [key, value] : table) {
    if (key == name) return value;
  }
  throw ValueError(
      fmt::format("unknown activation \"{}\"; valid: {}", name, join_names(activation_names())));
}

// ---- Shape inference ------------------------------------------------------------------------

std::vector<int64_t> infer_layer_shape(const ModelSpec& model, size_t index,
                                       const std::vector<int64_t>& in) {
  const LayerSpec& spec = model.layers[index];
  const LayerErrors errors(model, index);
  const std::string& type = spec.type();
  const std::vector<std::string>* keys = layer_option_keys(type);
  if (keys == nullptr) {
    std::string hint = closest_name(type, layer_types());
    errors.fail(fmt::format("unknown layer type \"{}\"{}; valid: {}", type,
                            hint.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", hint),
                            join_names(layer_types())));
  }
  for (const auto& key : all_option_keys()) {
    errors.check(is_known(*keys, key) || !option_is_set(spec, key),
                 "option {} does not apply to {} layers (valid options: {})", key, type,
                 keys->empty() ? std::string("none") : join_names(*keys));
  }

  if (type == "flatten") {
    return {element_count(in)};
  }
  if (type == "dense") {
    errors.check(spec.units() > 0, "units must be positive, got {}", spec.units());
    check_activation(errors, spec);
    check_initializer(errors, "kernel_initializer", spec.kernel_initializer(), false);
    check_initializer(errors, "bias_initializer", spec.bias_initializer(), true);
    std::vector<int64_t> out = in;
    out.back() = spec.units();
    return out;
  }
  if (type == "activation") {
    check_activation(errors, spec);
    return in;
  }
  if (type == "dropout") {
    errors.check(spec.rate() >= 0.0 && spec.rate() < 1.0, "rate must be in [0, 1), got {}",
                 spec.rate());
    return in;
  }
  if (type == "batch_norm") {
    errors.check(
        spec.momentum() >= 0.0 && spec.momentum() < 1.0,
        "momentum must be in [0, 1) (Keras' meaning: weight of the old running average), got {}",
        spec.momentum());
    errors.check(spec.epsilon() > 0.0 && std::isfinite(spec.epsilon()),
                 "epsilon must be positive, got {}", spec.epsilon());
    return in;
  }
  if (type == "conv2d") {
    errors.check(spec.filters() > 0, "filters must be positive, got {}", spec.filters());
    check_activation(errors, spec);
    check_initializer(errors, "kernel_initializer", spec.kernel_initializer(), false);
    check_initializer(errors, "bias_initializer", spec.bias_initializer(), true);
    auto w = spatial_windows(errors, spec, in, spec.kernel_size(), "kernel_size", false);
    return {spec.filters(), w[0].out, w[1].out};
  }
  if (type == "max_pool2d") {
    auto w = spatial_windows(errors, spec, in, spec.pool_size(), "pool_size", true);
    return {in[0], w[0].out, w[1].out};
  }
  if (type == "reshape") {
    const auto& target = spec.target_shape();
    errors.check(!target.empty(), "target_shape must not be empty");
    int64_t known = 1;
    int unknown = 0;
    for (int64_t d : target) {
      errors.check(d > 0 || d == -1, "target_shape entries must be positive or -1, got {}",
                   format_shape(target));
      if (d == -1) {
        ++unknown;
      } else {
        known *= d;
      }
    }
    errors.check(unknown <= 1, "target_shape may contain -1 at most once, got {}",
                 format_shape(target));
    const int64_t count = element_count(in);
    std::vector<int64_t> out = target;
    if (unknown == 1) {
      errors.check(count % known == 0,
                   "cannot reshape input {} ({} elements) to {}: {} is not a multiple of {}",
                   format_shape(in), count, format_shape(target), count, known);
      *std::find(out.begin(), out.end(), -1) = count / known;
    }
    errors.check(element_count(out) == count,
                 "cannot reshape input {} ({} elements) to {} ({} elements)", format_shape(in),
                 count, format_shape(out), element_count(out));
    return out;
  }
  if (type == "embedding") {
    errors.check(spec.input_dim() > 0, "input_dim must be positive, got {}", spec.input_dim());
    errors.check(spec.output_dim() > 0, "output_dim must be positive, got {}", spec.output_dim());
    check_initializer(errors, "kernel_initializer", spec.kernel_initializer(), false);
    std::vector<int64_t> out = in;
    out.push_back(spec.output_dim());
    return out;
  }
  if (type == "lstm" || type == "gru") {
    errors.check(spec.units() > 0, "units must be positive, got {}", spec.units());
    check_initializer(errors, "kernel_initializer", spec.kernel_initializer(), false);
    check_initializer(errors, "recurrent_initializer", spec.recurrent_initializer(), false);
    check_initializer(errors, "bias_initializer", spec.bias_initializer(), true);
    errors.check(in.size() == 2, "expects input of rank 2 (steps, features), got {}",
                 format_shape(in));
    if (spec.return_sequences()) return {in[0], spec.units()};
    return {spec.units()};
  }
  NANGUARD_INTERNAL_ASSERT(false, "layer type \"{}\" is registered but has no shape rule", type);
}

std::shared_ptr<Layer> make_layer(const LayerSpec& spec, const std::vector<int64_t>& in,
                                  const std::vector<int64_t>& out) {
  const std::string& type = spec.type();
  std::shared_ptr<Layer> layer;
  if (type == "flatten") {
    layer = std::make_shared<FlattenLayer>();
  } else if (type == "dense") {
    layer = std::make_shared<DenseLayer>(spec, in.back());
  } else if (type == "activation") {
    layer = std::make_shared<IdentityLayer>();
  } else if (type == "dropout") {
    layer = std::make_shared<DropoutLayer>(spec.rate());
  } else if (type == "batch_norm") {
    layer = std::make_shared<BatchNormLayer>(spec, in[0]);
  } else if (type == "conv2d") {
    layer = std::make_shared<Conv2dLayer>(spec, in[0],
                                          compute_windows(spec, in, spec.kernel_size(), false));
  } else if (type == "max_pool2d") {
    layer =
        std::make_shared<MaxPool2dLayer>(spec, compute_windows(spec, in, spec.pool_size(), true));
  } else if (type == "reshape") {
    layer = std::make_shared<ReshapeLayer>(out);
  } else if (type == "embedding") {
    layer = std::make_shared<EmbeddingLayer>(spec);
  } else if (type == "lstm" || type == "gru") {
    layer = std::make_shared<RecurrentLayer>(spec, in.back());
  }
  NANGUARD_INTERNAL_ASSERT(layer != nullptr, "no module for layer type \"{}\"", type);
  std::string description = fmt::format("input={}, output={}", format_shape(in), format_shape(out));
  if (type == "dense" || type == "conv2d" || type == "activation") {
    layer->set_activation(parse_activation(spec.activation()), spec.alpha());
    description += fmt::format(", activation={}", spec.activation());
    if (spec.activation() == "leaky_relu") description += fmt::format(", alpha={}", spec.alpha());
  }
  if (type == "dropout") description += fmt::format(", rate={}", spec.rate());
  if (type == "batch_norm") {
    description += fmt::format(", momentum={}, epsilon={}", spec.momentum(), spec.epsilon());
  }
  layer->set_description(std::move(description));
  return layer;
}

}  // namespace nanguard::detail
