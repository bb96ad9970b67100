#include "train/model_toml.h"

#include <cmath>
#include <sstream>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/check.h"
#include "nanguard/core/error.h"
#include "train/layers.h"

namespace nanguard {
namespace {

using detail::closest_name;
using detail::is_known;
using detail::join_names;

// Reads values and reports errors as "<path>: <message> (<source>:<line>)".
class Reader {
 public:
  explicit Reader(const std::string& source) : source_(source) {}

  [[noreturn]] void fail(const std::string& path, const toml::node& node,
                         const std::string& message) const {
    throw ValueError(fmt::format("{}: {} ({})", path, message, where(node)));
  }

  [[noreturn]] void expected(const std::string& path, const toml::node& node,
                             const std::string& what) const {
    fail(path, node, fmt::format("expected {}, got {}", what, describe(node)));
  }

  std::string where(const toml::node& node) const {
    const auto line = node.source().begin.line;
    return line > 0 ? fmt::format("{}:{}", source_, line) : source_;
  }

  int64_t positive_int(const std::string& path, const toml::node& node) const {
    const auto* value = node.as_integer();
    if (value == nullptr || value->get() <= 0) expected(path, node, "a positive integer");
    return value->get();
  }

  double number(const std::string& path, const toml::node& node) const {
    if (const auto* i = node.as_integer()) return static_cast<double>(i->get());
    const auto* f = node.as_floating_point();
    if (f == nullptr || !std::isfinite(f->get())) expected(path, node, "a finite number");
    return f->get();
  }

  // A number in [0, 1).
  double fraction(const std::string& path, const toml::node& node) const {
    double value = number(path, node);
    if (!(value >= 0.0 && value < 1.0)) expected(path, node, "a number in [0, 1)");
    return value;
  }

  bool boolean(const std::string& path, const toml::node& node) const {
    const auto* value = node.as_boolean();
    if (value == nullptr) expected(path, node, "true or false");
    return value->get();
  }

  std::string string(const std::string& path, const toml::node& node) const {
    const auto* value = node.as_string();
    if (value == nullptr) expected(path, node, "a string");
    return value->get();
  }

  // A string from names, e.g. an activation.
  std::string choice(const std::string& path, const toml::node& node,
                     const std::vector<std::string>& names, const char* what) const {
    std::string value = string(path, node);
    if (!is_known(names, value)) {
      const std::string hint = closest_name(value, names);
      fail(path, node,
           fmt::format("unknown {} \"{}\"{}; valid: {}", what, value,
                       hint.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", hint),
                       join_names(names)));
    }
    return value;
  }

  // A positive integer or [height, width] of positive integers.
  torch::ExpandingArray<2> pair(const std::string& path, const toml::node& node) const {
    if (node.is_integer()) {
      int64_t value = positive_int(path, node);
      return torch::ExpandingArray<2>(value);
    }
    const auto* array = node.as_array();
    const char* what = "a positive integer or [height, width] of positive integers";
    if (array == nullptr || array->size() != 2) expected(path, node, what);
    std::array<int64_t, 2> values{};
    for (size_t i = 0; i < 2; ++i) {
      const auto* element = (*array)[i].as_integer();
      if (element == nullptr || element->get() <= 0) expected(path, node, what);
      values[i] = element->get();
    }
    return torch::ExpandingArray<2>(values);
  }

  // A non-empty array of positive integers, where one entry may be -1 if allow_inferred.
  std::vector<int64_t> shape(const std::string& path, const toml::node& node,
                             bool allow_inferred) const {
    const char* what = allow_inferred ? "a non-empty array of positive integers (one may be -1)"
                                      : "a non-empty array of positive integers";
    const auto* array = node.as_array();
    if (array == nullptr || array->empty()) expected(path, node, what);
    std::vector<int64_t> values;
    for (const auto& element : *array) {
      const auto* value = element.as_integer();
      if (value == nullptr || !(value->get() > 0 || (allow_inferred && value->get() == -1))) {
        expected(path, node, what);
      }
      values.push_back(value->get());
    }
    return values;
  }

  // "string \"abc\"", "integer 5", "array [1, 2]", ...
  static std::string describe(const toml::node& node) {
    std::ostringstream text;
    switch (node.type()) {
      case toml::node_type::string:
        return fmt::format("string \"{}\"", node.as_string()->get());
      case toml::node_type::integer:
        return fmt::format("integer {}", node.as_integer()->get());
      case toml::node_type::floating_point:
        return fmt::format("float {}", node.as_floating_point()->get());
      case toml::node_type::boolean:
        return node.as_boolean()->get() ? "boolean true" : "boolean false";
      case toml::node_type::array:
        text << "array " << *node.as_array();
        break;
      case toml::node_type::table:
        return "a table";
      case toml::node_type::date:
        text << "date " << *node.as_date();
        break;
      case toml::node_type::time:
        text << "time " << *node.as_time();
        break;
      case toml::node_type::date_time:
        text << "date-time " << *node.as_date_time();
        break;
      default:
        return "nothing";
    }
    std::string out = text.str();
    if (out.size() > 60) out = out.substr(0, 57) + "...";
    return out;
  }

 private:
  const std::string& source_;
};

// Reads option `key` (a LayerSpec option valid for the layer's type) into spec.
void read_option(const Reader& r, LayerSpec& spec, const std::string& key, const std::string& path,
                 const toml::node& node) {
  if (key == "units") {
    spec.units(r.positive_int(path, node));
  } else if (key == "activation") {
    spec.activation(r.choice(path, node, detail::activation_names(), "activation"));
  } else if (key == "alpha") {
    spec.alpha(r.number(path, node));
  } else if (key == "use_bias") {
    spec.use_bias(r.boolean(path, node));
  } else if (key == "kernel_initializer") {
    spec.kernel_initializer(r.choice(path, node, detail::initializer_names(), "initializer"));
  } else if (key == "recurrent_initializer") {
    spec.recurrent_initializer(r.choice(path, node, detail::initializer_names(), "initializer"));
  } else if (key == "bias_initializer") {
    std::string name = r.choice(path, node, detail::initializer_names(), "initializer");
    if (name == "orthogonal") {
      r.fail(path, node, "\"orthogonal\" needs a matrix, but a bias is a vector");
    }
    spec.bias_initializer(name);
  } else if (key == "rate") {
    spec.rate(r.fraction(path, node));
  } else if (key == "filters") {
    spec.filters(r.positive_int(path, node));
  } else if (key == "kernel_size") {
    spec.kernel_size(r.pair(path, node));
  } else if (key == "strides") {
    spec.strides(r.pair(path, node));
  } else if (key == "padding") {
    spec.padding(r.choice(path, node, detail::padding_names(), "padding"));
  } else if (key == "pool_size") {
    spec.pool_size(r.pair(path, node));
  } else if (key == "target_shape") {
    spec.target_shape(r.shape(path, node, /*allow_inferred=*/true));
  } else if (key == "input_dim") {
    spec.input_dim(r.positive_int(path, node));
  } else if (key == "output_dim") {
    spec.output_dim(r.positive_int(path, node));
  } else if (key == "return_sequences") {
    spec.return_sequences(r.boolean(path, node));
  } else if (key == "momentum") {
    spec.momentum(r.fraction(path, node));
  } else if (key == "epsilon") {
    double value = r.number(path, node);
    if (!(value > 0.0)) r.expected(path, node, "a positive number");
    spec.epsilon(value);
  } else {
    NANGUARD_INTERNAL_ASSERT(false, "layer option \"{}\" has no TOML reader", key);
  }
}

// The defaults of a layer type as its factory in nanguard::layers sets them.
LayerSpec default_layer(const std::string& type) {
  LayerSpec spec(type);
  if (type == "embedding") spec.kernel_initializer("random_uniform");
  return spec;
}

LayerSpec read_layer(const Reader& reader, const toml::node& node, size_t index) {
  const std::string path = fmt::format("layers[{}]", index);
  const auto* table = node.as_table();
  if (table == nullptr) reader.expected(path, node, "a table ([[model.layers]])");

  const toml::node* type_node = table->get("type");
  if (type_node == nullptr) {
    reader.fail(
        path, node,
        fmt::format("missing key \"type\" (one of: {})", join_names(detail::layer_types())));
  }
  const std::string type = reader.string(path + ".type", *type_node);
  const std::vector<std::string>* keys = detail::layer_option_keys(type);
  if (keys == nullptr) {
    const std::string hint = closest_name(type, detail::layer_types());
    reader.fail(path + ".type", *type_node,
                fmt::format("unknown layer type \"{}\"{}; valid: {}", type,
                            hint.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", hint),
                            join_names(detail::layer_types())));
  }
  const std::string valid_keys = keys->empty() ? "type" : "type, " + join_names(*keys);

  LayerSpec spec = default_layer(type);
  spec.line(static_cast<int>(table->source().begin.line));
  for (const auto& [key_name, value] : *table) {
    const std::string key(key_name.str());
    if (key == "type") continue;
    const std::string key_path = path + "." + key;
    if (!is_known(*keys, key)) {
      if (is_known(detail::all_option_keys(), key)) {
        reader.fail(key_path, value,
                    fmt::format("key does not apply to {} layers; valid keys for {}: {}", type,
                                type, valid_keys));
      }
      std::vector<std::string> candidates = *keys;
      candidates.push_back("type");
      const std::string hint = closest_name(key, candidates);
      reader.fail(key_path, value,
                  fmt::format("unknown key{}; valid keys for {}: {}",
                              hint.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", hint),
                              type, valid_keys));
    }
    read_option(reader, spec, key, key_path, value);
  }
  for (const auto& required : detail::layer_required_keys(type)) {
    if (table->get(required) == nullptr) {
      reader.fail(path, node, fmt::format("{} layers need key \"{}\"", type, required));
    }
  }
  return spec;
}

}  // namespace

ModelSpec model_spec_from_toml(const toml::table& model_table, const std::string& source_name) {
  const Reader reader(source_name);
  ModelSpec spec;
  spec.source = source_name;
  for (const auto& [key_name, value] : model_table) {
    const std::string key(key_name.str());
    if (key != "input_shape" && key != "layers") {
      const std::string hint = closest_name(key, {"input_shape", "layers"});
      reader.fail("model." + key, value,
                  fmt::format("unknown key{}; valid keys in [model]: input_shape, layers",
                              hint.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", hint)));
    }
  }
  const toml::node* input_shape = model_table.get("input_shape");
  if (input_shape == nullptr) {
    reader.fail("model", model_table,
                "missing key \"input_shape\" (the shape of one sample, e.g. [28, 28])");
  }
  spec.input_shape = reader.shape("model.input_shape", *input_shape, /*allow_inferred=*/false);

  const toml::node* layers = model_table.get("layers");
  if (layers == nullptr)
    reader.fail("model", model_table, "missing layers (add [[model.layers]] tables)");
  const auto* array = layers->as_array();
  if (array == nullptr || array->empty()) {
    reader.expected("model.layers", *layers, "a non-empty array of tables ([[model.layers]])");
  }
  for (size_t i = 0; i < array->size(); ++i)
    spec.layers.push_back(read_layer(reader, (*array)[i], i));
  return spec;
}

ModelSpec model_spec_from_toml_text(std::string_view text, const std::string& source_name) {
  toml::table document;
  try {
    document = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    throw ValueError(fmt::format("{}:{}:{}: invalid TOML: {}", source_name, begin.line,
                                 begin.column, e.description()));
  }
  const toml::node* model = document.get("model");
  if (model == nullptr) throw ValueError(fmt::format("{}: missing [model] table", source_name));
  const auto* table = model->as_table();
  if (table == nullptr) {
    throw ValueError(fmt::format("model: expected a table ([model]), got {} ({}:{})",
                                 Reader::describe(*model), source_name,
                                 model->source().begin.line));
  }
  return model_spec_from_toml(*table, source_name);
}

}  // namespace nanguard
