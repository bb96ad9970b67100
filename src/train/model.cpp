#include "nanguard/train/model.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/modules/container/modulelist.h>

#include "core/check.h"
#include "nanguard/core/error.h"
#include "nanguard/trace/scope.h"
#include "train/layers.h"

namespace nanguard {

ModelSpec& ModelSpec::add(LayerSpec layer) {
  layers.push_back(std::move(layer));
  return *this;
}

namespace layers {

LayerSpec flatten() { return LayerSpec("flatten"); }

LayerSpec dense(int64_t units, std::string activation) {
  return LayerSpec("dense").units(units).activation(std::move(activation));
}

LayerSpec activation(std::string name) {
  return LayerSpec("activation").activation(std::move(name));
}

LayerSpec dropout(double rate) { return LayerSpec("dropout").rate(rate); }

LayerSpec batch_norm() { return LayerSpec("batch_norm"); }

LayerSpec conv2d(int64_t filters, torch::ExpandingArray<2> kernel_size, std::string activation) {
  return LayerSpec("conv2d")
      .filters(filters)
      .kernel_size(kernel_size)
      .activation(std::move(activation));
}

LayerSpec max_pool2d(torch::ExpandingArray<2> pool_size) {
  return LayerSpec("max_pool2d").pool_size(pool_size);
}

LayerSpec reshape(std::vector<int64_t> target_shape) {
  return LayerSpec("reshape").target_shape(std::move(target_shape));
}

LayerSpec embedding(int64_t input_dim, int64_t output_dim) {
  return LayerSpec("embedding")
      .input_dim(input_dim)
      .output_dim(output_dim)
      .kernel_initializer("random_uniform");
}

LayerSpec lstm(int64_t units) { return LayerSpec("lstm").units(units); }

LayerSpec gru(int64_t units) { return LayerSpec("gru").units(units); }

}  // namespace layers

std::vector<std::vector<int64_t>> infer_output_shapes(const ModelSpec& spec) {
  const std::string where = spec.source.empty() ? "" : fmt::format(" ({})", spec.source);
  NANGUARD_CHECK(!spec.input_shape.empty(), "model: input_shape must not be empty{}", where);
  NANGUARD_CHECK(std::all_of(spec.input_shape.begin(), spec.input_shape.end(),
                             [](int64_t d) { return d > 0; }),
                 "model: input_shape entries must be positive, got {}{}",
                 detail::format_shape(spec.input_shape), where);
  NANGUARD_CHECK(!spec.layers.empty(), "model: no layers{}", where);
  std::vector<std::vector<int64_t>> shapes;
  shapes.reserve(spec.layers.size());
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    shapes.push_back(detail::infer_layer_shape(spec, i, i == 0 ? spec.input_shape : shapes.back()));
  }
  return shapes;
}

SequentialModelImpl::SequentialModelImpl(ModelSpec spec) : spec_(std::move(spec)) {
  output_shapes_ = infer_output_shapes(spec_);
  // Each layer sits in its own slot named by index, under the layer's type, so parameters are
  // named like the layer's trace scope: "layers.1.dense.weight" belongs to "layers.1.dense".
  auto list = register_module("layers", torch::nn::ModuleList());
  for (size_t i = 0; i < spec_.layers.size(); ++i) {
    const LayerSpec& layer_spec = spec_.layers[i];
    const std::vector<int64_t>& in = i == 0 ? spec_.input_shape : output_shapes_[i - 1];
    std::shared_ptr<detail::Layer> layer = detail::make_layer(layer_spec, in, output_shapes_[i]);
    auto slot = std::make_shared<torch::nn::Module>("nanguard::Layer");
    slot->register_module(layer_spec.type(), layer);
    list->push_back(slot);
    layers_.push_back(std::move(layer));
    names_.push_back(fmt::format("layers.{}.{}", i, layer_spec.type()));
  }
  const LayerSpec& last = spec_.layers.back();
  const bool has_activation =
      last.type() == "dense" || last.type() == "conv2d" || last.type() == "activation";
  output_activation_ = has_activation ? last.activation() : "linear";
  final_is_probability_ = output_activation_ == "softmax" || output_activation_ == "sigmoid";
}

torch::Tensor SequentialModelImpl::forward(torch::Tensor x) { return run(std::move(x), false); }

torch::Tensor SequentialModelImpl::forward_logits(torch::Tensor x) {
  return run(std::move(x), true);
}

torch::Tensor SequentialModelImpl::run(torch::Tensor x, bool logits) {
  // Checking the shape here costs no sync and turns a deep ATen error into a clear one.
  const auto& expected = spec_.input_shape;
  if (x.dim() != static_cast<int64_t>(expected.size()) + 1 ||
      !std::equal(expected.begin(), expected.end(), x.sizes().begin() + 1)) {
    throw_bad_input(x);
  }
  const size_t last = layers_.size() - 1;
  for (size_t i = 0; i < layers_.size(); ++i) {
    NANGUARD_SCOPE(names_[i]);
    detail::Layer& layer = *layers_[i];
    x = layer.forward(x);
    if (!(logits && i == last && final_is_probability_)) x = layer.activate(x);
  }
  return x;
}

void SequentialModelImpl::throw_bad_input(const torch::Tensor& x) const {
  std::vector<int64_t> got(x.sizes().begin(), x.sizes().end());
  throw ValueError(
      fmt::format("model: expects input of shape [batch, {}], got {}{}",
                  fmt::join(spec_.input_shape, ", "), detail::format_shape(got),
                  spec_.source.empty() ? "" : fmt::format(" (model from {})", spec_.source)));
}

int64_t SequentialModelImpl::parameter_count() const {
  int64_t count = 0;
  for (const auto& p : parameters()) count += p.numel();
  return count;
}

namespace {

// 101770 -> "101,770"
std::string with_thousands(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

}  // namespace

std::string SequentialModelImpl::summary() const {
  struct Row {
    std::string name, shape, activation, params;
  };
  std::vector<Row> rows;
  rows.push_back({"Layer", "Output shape", "Activation", "Params"});
  int64_t buffer_count = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    int64_t params = 0;
    for (const auto& p : layers_[i]->parameters()) params += p.numel();
    for (const auto& b : layers_[i]->buffers()) buffer_count += b.numel();
    const LayerSpec& s = spec_.layers[i];
    const bool has_activation =
        s.type() == "dense" || s.type() == "conv2d" || s.type() == "activation";
    std::string shape = "[batch";
    for (int64_t d : output_shapes_[i]) shape += fmt::format(", {}", d);
    shape += "]";
    rows.push_back(
        {names_[i], shape, has_activation ? s.activation() : "", with_thousands(params)});
  }
  size_t w0 = 0, w1 = 0, w2 = 0, w3 = 0;
  for (const auto& r : rows) {
    w0 = std::max(w0, r.name.size());
    w1 = std::max(w1, r.shape.size());
    w2 = std::max(w2, r.activation.size());
    w3 = std::max(w3, r.params.size());
  }
  const size_t width = w0 + w1 + w2 + w3 + 6;
  std::string out =
      fmt::format("Model: sequential, input [batch, {}]\n", fmt::join(spec_.input_shape, ", "));
  auto line = [&](const Row& r) {
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>{}}\n", r.name, w0, r.shape, w1, r.activation,
                       w2, r.params, w3);
  };
  line(rows[0]);
  out += std::string(width, '=') + "\n";
  for (size_t i = 1; i < rows.size(); ++i) line(rows[i]);
  out += std::string(width, '=') + "\n";
  out += fmt::format("Trainable params: {}\n", with_thousands(parameter_count()));
  if (buffer_count > 0) {
    out += fmt::format("Non-trainable buffers: {} (batch-norm running statistics)\n",
                       with_thousands(buffer_count));
  }
  return out;
}

}  // namespace nanguard
