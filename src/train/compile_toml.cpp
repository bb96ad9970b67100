#include "train/compile_toml.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/text.h"
#include "nanguard/core/error.h"
#include "nanguard/train/metrics.h"

namespace nanguard {
namespace {

std::string describe(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return fmt::format("string \"{}\"", n.as_string()->get());
    case toml::node_type::integer: return fmt::format("integer {}", n.as_integer()->get());
    case toml::node_type::floating_point: return fmt::format("float {}", n.as_floating_point()->get());
    case toml::node_type::boolean: return fmt::format("boolean {}", n.as_boolean()->get());
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time: return "a date/time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// " (did you mean "x"?)" when a candidate is within two edits, else "".
std::string suggestion(const std::string& word, const std::vector<std::string>& candidates) {
  return nanguard::detail::did_you_mean(word, candidates, 2);
}

// Reads typed values out of one section of one file, reporting errors with file and line.
class Reader {
 public:
  Reader(std::string section, const std::string& source) : section_(std::move(section)), source_(source) {}

  const std::string& section() const { return section_; }

  std::string where(const toml::node& n) const {
    return fmt::format("({}:{})", source_, n.source().begin.line);
  }

  [[noreturn]] void fail(const std::string& path, const toml::node& n, const std::string& what) const {
    throw ValueError(fmt::format("{}: {} {}", path, what, where(n)));
  }

  [[noreturn]] void expected(const std::string& path, const toml::node& n,
                             const std::string& what) const {
    fail(path, n, fmt::format("expected {}, got {}", what, describe(n)));
  }

  double number(const std::string& path, const toml::node& n, const char* what,
                const std::function<bool(double)>& ok) const {
    std::optional<double> v;
    if (auto* i = n.as_integer()) v = static_cast<double>(i->get());
    if (auto* f = n.as_floating_point()) v = f->get();
    if (!v || !std::isfinite(*v) || !ok(*v)) expected(path, n, what);
    return *v;
  }

  // Integers; a float with an integral value (decay_steps = 1e4) is accepted too.
  int64_t integer(const std::string& path, const toml::node& n, const char* what,
                  const std::function<bool(int64_t)>& ok) const {
    std::optional<int64_t> v;
    if (auto* i = n.as_integer()) v = i->get();
    if (auto* f = n.as_floating_point()) {
      double d = f->get();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) v = static_cast<int64_t>(d);
    }
    if (!v || !ok(*v)) expected(path, n, what);
    return *v;
  }

  bool boolean(const std::string& path, const toml::node& n) const {
    if (auto* b = n.as_boolean()) return b->get();
    expected(path, n, "true or false");
  }

  std::string string(const std::string& path, const toml::node& n, const char* what) const {
    if (auto* s = n.as_string()) return s->get();
    expected(path, n, what);
  }

  const toml::array& array(const std::string& path, const toml::node& n, const char* what) const {
    if (auto* a = n.as_array()) return *a;
    expected(path, n, what);
  }

  // Runs parse (one of the parse_*_type functions) and adds path and line to its error.
  template <typename Parse>
  auto parse_name(const std::string& path, const toml::node& n, const char* what, Parse parse) const {
    std::string name = string(path, n, what);
    try {
      return parse(name);
    } catch (const ValueError& e) {
      fail(path, n, e.what());
    }
  }

  // Re-throws a cross-field check of the finished spec with the section's position.
  template <typename Spec>
  void validate(const Spec& spec, const toml::node& n) const {
    try {
      spec.validate();
    } catch (const ValueError& e) {
      fail(section_, n, e.what());
    }
  }

 private:
  std::string section_;
  const std::string& source_;
};

// One key of a table: the types it applies to (empty = all) and how it is stored.
template <typename Type>
struct KeyRule {
  const char* key;
  std::vector<Type> types;
  std::function<void(const toml::node&, const std::string& path)> apply;
};

const toml::table& as_table(const Reader& r, const toml::node& node, const char* what) {
  const toml::table* table = node.as_table();
  if (!table) r.expected(r.section(), node, what);
  return *table;
}

// Applies every key of table through rules, refusing unknown keys and keys of another type.
template <typename Type>
void apply_keys(const Reader& r, const toml::table& table, Type type,
                const std::vector<KeyRule<Type>>& rules, const std::vector<const char*>& required) {
  std::vector<std::string> valid = {"type"};
  for (const auto& rule : rules) {
    if (rule.types.empty() || std::count(rule.types.begin(), rule.types.end(), type)) {
      valid.emplace_back(rule.key);
    }
  }
  for (auto&& [k, value] : table) {
    std::string key(k.str());
    if (key == "type") continue;
    std::string path = r.section() + "." + key;
    auto rule = std::find_if(rules.begin(), rules.end(), [&](const auto& x) { return key == x.key; });
    if (rule == rules.end()) {
      throw ValueError(fmt::format("{}: unknown key \"{}\"{} {}; valid keys for {}: {}", r.section(),
                                   key, suggestion(key, valid), r.where(value), to_string(type),
                                   fmt::join(valid, ", ")));
    }
    if (!rule->types.empty() && !std::count(rule->types.begin(), rule->types.end(), type)) {
      std::vector<std::string> users;
      for (auto t : rule->types) users.emplace_back(to_string(t));
      r.fail(path, value,
             fmt::format("does not apply to {} (only to {})", to_string(type), fmt::join(users, ", ")));
    }
    rule->apply(value, path);
  }
  for (const char* key : required) {
    if (!table.contains(key)) {
      r.fail(r.section(), table, fmt::format("{} needs key \"{}\"", to_string(type), key));
    }
  }
}

template <typename Type, typename Parse>
Type read_type(const Reader& r, const toml::table& table, const char* what, Parse parse) {
  const toml::node* type = table.get("type");
  if (!type) r.fail(r.section(), table, "missing key \"type\"");
  return r.parse_name(r.section() + ".type", *type, what, parse);
}

bool positive(double v) { return v > 0; }
bool non_negative(double v) { return v >= 0; }
bool unit_interval_open(double v) { return v >= 0 && v < 1; }

}  // namespace

LossSpec loss_spec_from_toml(const toml::node& node, const std::string& source_name) {
  Reader r("loss", source_name);
  const char* what = "a loss name";
  if (node.is_string()) return LossSpec(r.parse_name("loss", node, what, parse_loss_type));
  const auto& table = as_table(r, node, "a loss name or a table");
  LossSpec spec(read_type<LossType>(r, table, what, parse_loss_type));
  std::vector<KeyRule<LossType>> rules = {
      {"from_logits", {LossType::binary_crossentropy, LossType::categorical_crossentropy,
                       LossType::sparse_categorical_crossentropy},
       [&](const toml::node& n, const std::string& p) { spec.from_logits(r.boolean(p, n)); }},
      {"fused", {}, [&](const toml::node& n, const std::string& p) { spec.fused(r.boolean(p, n)); }},
      {"check_labels", {LossType::sparse_categorical_crossentropy},
       [&](const toml::node& n, const std::string& p) { spec.check_labels(r.boolean(p, n)); }},
  };
  apply_keys(r, table, spec.type(), rules, {});
  r.validate(spec, node);
  return spec;
}

OptimizerSpec optimizer_spec_from_toml(const toml::node& node, const std::string& source_name) {
  Reader r("optimizer", source_name);
  const char* what = "an optimizer name";
  if (node.is_string()) {
    return OptimizerSpec(r.parse_name("optimizer", node, what, parse_optimizer_type));
  }
  const auto& table = as_table(r, node, "an optimizer name or a table");
  OptimizerSpec spec(read_type<OptimizerType>(r, table, what, parse_optimizer_type));
  using T = OptimizerType;
  using Setter = OptimizerSpec& (OptimizerSpec::*)(const double&);
  auto num = [&](Setter set, const char* expect, bool (*ok)(double)) {
    return [&r, &spec, set, expect, ok](const toml::node& n, const std::string& p) {
      (spec.*set)(r.number(p, n, expect, ok));
    };
  };
  using OptSetter = OptimizerSpec& (OptimizerSpec::*)(const std::optional<double>&);
  auto opt_num = [&](OptSetter set, const char* expect, bool (*ok)(double)) {
    return [&r, &spec, set, expect, ok](const toml::node& n, const std::string& p) {
      (spec.*set)(std::optional<double>(r.number(p, n, expect, ok)));
    };
  };
  using BoolSetter = OptimizerSpec& (OptimizerSpec::*)(const bool&);
  auto flag = [&](BoolSetter set) {
    return [&r, &spec, set](const toml::node& n, const std::string& p) { (spec.*set)(r.boolean(p, n)); };
  };
  const char* in_unit = "a number in [0, 1)";
  const char* off_or_positive = "a number >= 0 (0 = off)";
  std::vector<KeyRule<T>> rules = {
      {"learning_rate", {}, opt_num(&OptimizerSpec::learning_rate, "a positive number", positive)},
      {"weight_decay", {}, opt_num(&OptimizerSpec::weight_decay, "a number >= 0", non_negative)},
      {"clipnorm", {}, num(&OptimizerSpec::clipnorm, off_or_positive, non_negative)},
      {"clipvalue", {}, num(&OptimizerSpec::clipvalue, off_or_positive, non_negative)},
      {"global_clipnorm", {}, num(&OptimizerSpec::global_clipnorm, off_or_positive, non_negative)},
      {"momentum", {T::sgd, T::rmsprop}, num(&OptimizerSpec::momentum, in_unit, unit_interval_open)},
      {"nesterov", {T::sgd}, flag(&OptimizerSpec::nesterov)},
      {"beta_1", {T::adam, T::adamw}, num(&OptimizerSpec::beta_1, in_unit, unit_interval_open)},
      {"beta_2", {T::adam, T::adamw}, num(&OptimizerSpec::beta_2, in_unit, unit_interval_open)},
      {"amsgrad", {T::adam, T::adamw}, flag(&OptimizerSpec::amsgrad)},
      {"epsilon", {T::adam, T::adamw, T::rmsprop},
       num(&OptimizerSpec::epsilon, "a positive number", positive)},
      {"rho", {T::rmsprop}, num(&OptimizerSpec::rho, in_unit, unit_interval_open)},
  };
  apply_keys(r, table, spec.type(), rules, {});
  r.validate(spec, node);
  return spec;
}

ScheduleSpec schedule_spec_from_toml(const toml::node& node, const std::string& source_name) {
  Reader r("schedule", source_name);
  const char* what = "a schedule name";
  if (node.is_string()) {
    ScheduleSpec spec(r.parse_name("schedule", node, what, parse_schedule_type));
    r.validate(spec, node);
    return spec;
  }
  const auto& table = as_table(r, node, "a schedule name or a table");
  ScheduleSpec spec(read_type<ScheduleType>(r, table, what, parse_schedule_type));
  using T = ScheduleType;
  using Setter = ScheduleSpec& (ScheduleSpec::*)(const double&);
  using IntSetter = ScheduleSpec& (ScheduleSpec::*)(const int64_t&);
  using OptSetter = ScheduleSpec& (ScheduleSpec::*)(const std::optional<double>&);
  auto num = [&](Setter set, const char* expect, bool (*ok)(double)) {
    return [&r, &spec, set, expect, ok](const toml::node& n, const std::string& p) {
      (spec.*set)(r.number(p, n, expect, ok));
    };
  };
  auto opt_num = [&](OptSetter set, const char* expect, bool (*ok)(double)) {
    return [&r, &spec, set, expect, ok](const toml::node& n, const std::string& p) {
      (spec.*set)(std::optional<double>(r.number(p, n, expect, ok)));
    };
  };
  auto integer = [&](IntSetter set, const char* expect, int64_t min) {
    return [&r, &spec, set, expect, min](const toml::node& n, const std::string& p) {
      (spec.*set)(r.integer(p, n, expect, [min](int64_t v) { return v >= min; }));
    };
  };
  auto boundaries = [&](const toml::node& n, const std::string& p) {
    const char* expect = "an array of strictly increasing integers >= 0";
    std::vector<int64_t> out;
    size_t i = 0;
    for (const auto& element : r.array(p, n, expect)) {
      out.push_back(r.integer(fmt::format("{}[{}]", p, i), element,
                              "an integer >= 0, larger than the one before",
                              [&](int64_t v) { return v >= 0 && (out.empty() || v > out.back()); }));
      ++i;
    }
    spec.boundaries(out);
  };
  auto values = [&](const toml::node& n, const std::string& p) {
    std::vector<double> out;
    size_t i = 0;
    for (const auto& element : r.array(p, n, "an array of learning rates")) {
      out.push_back(r.number(fmt::format("{}[{}]", p, i++), element, "a number >= 0", non_negative));
    }
    spec.values(out);
  };
  auto mode = [&](const toml::node& n, const std::string& p) {
    std::string m = r.string(p, n, "\"min\", \"max\" or \"auto\"");
    if (m != "min" && m != "max" && m != "auto") r.expected(p, n, "\"min\", \"max\" or \"auto\"");
    spec.mode(m);
  };
  auto monitor = [&](const toml::node& n, const std::string& p) {
    std::string m = r.string(p, n, "the name of a history value such as \"val_loss\"");
    if (m.empty()) r.expected(p, n, "the name of a history value such as \"val_loss\"");
    spec.monitor(m);
  };
  const std::vector<T> decays = {T::exponential_decay, T::cosine_decay};
  const std::vector<T> not_piecewise = {T::constant, T::exponential_decay, T::cosine_decay,
                                        T::reduce_on_plateau};
  std::vector<KeyRule<T>> rules = {
      {"initial_learning_rate", not_piecewise,
       opt_num(&ScheduleSpec::initial_learning_rate, "a number >= 0", non_negative)},
      {"decay_steps", decays, integer(&ScheduleSpec::decay_steps, "a positive integer", 1)},
      {"decay_rate", {T::exponential_decay},
       num(&ScheduleSpec::decay_rate, "a positive number", positive)},
      {"staircase", {T::exponential_decay},
       [&](const toml::node& n, const std::string& p) { spec.staircase(r.boolean(p, n)); }},
      {"boundaries", {T::piecewise_constant}, boundaries},
      {"values", {T::piecewise_constant}, values},
      {"alpha", {T::cosine_decay},
       num(&ScheduleSpec::alpha, "a number in [0, 1]", [](double v) { return v >= 0 && v <= 1; })},
      {"warmup_steps", {T::cosine_decay}, integer(&ScheduleSpec::warmup_steps, "an integer >= 0", 0)},
      {"warmup_target", {T::cosine_decay},
       opt_num(&ScheduleSpec::warmup_target, "a number >= 0", non_negative)},
      {"monitor", {T::reduce_on_plateau}, monitor},
      {"factor", {T::reduce_on_plateau},
       num(&ScheduleSpec::factor, "a number in (0, 1)", [](double v) { return v > 0 && v < 1; })},
      {"patience", {T::reduce_on_plateau}, integer(&ScheduleSpec::patience, "an integer >= 0", 0)},
      {"min_delta", {T::reduce_on_plateau}, num(&ScheduleSpec::min_delta, "a number >= 0", non_negative)},
      {"cooldown", {T::reduce_on_plateau}, integer(&ScheduleSpec::cooldown, "an integer >= 0", 0)},
      {"min_lr", {T::reduce_on_plateau}, num(&ScheduleSpec::min_lr, "a number >= 0", non_negative)},
      {"mode", {T::reduce_on_plateau}, mode},
  };
  std::vector<const char*> required;
  switch (spec.type()) {
    case T::exponential_decay: required = {"decay_steps", "decay_rate"}; break;
    case T::cosine_decay: required = {"decay_steps"}; break;
    case T::piecewise_constant: required = {"boundaries", "values"}; break;
    default: break;
  }
  apply_keys(r, table, spec.type(), rules, required);
  if (const toml::node* v = table.get("values"); v && spec.values().size() != spec.boundaries().size() + 1) {
    r.fail("schedule.values", *v,
           fmt::format("expected {} values (one more than boundaries), got {}",
                       spec.boundaries().size() + 1, spec.values().size()));
  }
  r.validate(spec, node);
  return spec;
}

std::vector<std::string> metrics_from_toml(const toml::node& node, const std::string& source_name) {
  Reader r("metrics", source_name);
  const std::vector<std::string> known = metric_names();
  std::vector<std::string> out;
  auto add = [&](const toml::node& n, const std::string& path) {
    std::string name = r.string(path, n, "a metric name");
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      r.fail(path, n,
             fmt::format("unknown metric \"{}\"{}; valid metrics: {}", name, suggestion(name, known),
                         fmt::join(known, ", ")));
    }
    if (std::find(out.begin(), out.end(), name) != out.end()) {
      r.fail(path, n, fmt::format("metric \"{}\" is listed twice", name));
    }
    out.push_back(name);
  };
  if (node.is_string()) {
    add(node, "metrics");
    return out;
  }
  size_t i = 0;
  for (const auto& element : r.array("metrics", node, "an array of metric names")) {
    add(element, fmt::format("metrics[{}]", i++));
  }
  return out;
}

}  // namespace nanguard
