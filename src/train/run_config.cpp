#include "nanguard/train/run_config.h"

#include <toml++/toml.h>

#include "core/check.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "train/compile_toml.h"
#include "train/model_toml.h"

namespace nanguard {
namespace fs = std::filesystem;

namespace {

// Reads TOML values with errors that name the key, the file and the line.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string prefix, std::string file)
      : table_(table), prefix_(std::move(prefix)), file_(std::move(file)) {}

  std::string where(const toml::node& node) const {
    return fmt::format("{}:{}", file_, node.source().begin.line);
  }
  std::string key_name(std::string_view key) const { return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key); }

  void reject_unknown(std::initializer_list<std::string_view> known) const {
    for (const auto& [key, node] : table_) {
      bool ok = false;
      for (auto k : known) ok = ok || key.str() == k;
      if (!ok) {
        std::string list;
        for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
        throw ValueError(fmt::format("unknown key '{}' ({}); expected one of: {}", key_name(key.str()), where(node), list));
      }
    }
  }

  template <typename T>
  void read(std::string_view key, T& out, const char* expected) const {
    const toml::node* node = table_.get(key);
    if (node == nullptr) return;
    std::optional<T> value;
    if constexpr (std::is_same_v<T, double>) {
      if (auto v = node->value<double>()) value = *v;  // integers convert too
    } else {
      if (auto v = node->value_exact<T>()) value = *v;
    }
    if (!value) {
      throw ValueError(fmt::format("{}: expected {}, got {} ({})", key_name(key), expected,
                                   describe(*node), where(*node)));
    }
    out = *value;
  }

  void read_path(std::string_view key, fs::path& out, const fs::path& base) const {
    std::string text;
    read(key, text, "a path string");
    if (!text.empty()) out = fs::path(text).is_absolute() ? fs::path(text) : base / text;
  }

  void check(bool ok, std::string_view key, const std::string& what) const {
    if (!ok) {
      const toml::node* node = table_.get(key);
      throw ValueError(fmt::format("{}: {} ({})", key_name(key), what, node ? where(*node) : file_));
    }
  }

  static std::string describe(const toml::node& node) {
    std::ostringstream ss;
    ss << node.type();
    if (node.is_value()) {
      ss << " ";
      node.visit([&](auto&& v) {
        if constexpr (toml::is_value<decltype(v)>) ss << v;
      });
    }
    return ss.str();
  }

 private:
  const toml::table& table_;
  std::string prefix_;
  std::string file_;
};

const toml::table& require_table(const toml::table& root, std::string_view key, const std::string& file) {
  const toml::node* node = root.get(key);
  if (node == nullptr) throw ValueError(fmt::format("{}: missing required table [{}]", file, key));
  if (!node->is_table()) {
    throw ValueError(fmt::format("{}: '{}' must be a table ({}:{})", file, key, file, node->source().begin.line));
  }
  return *node->as_table();
}

data::DataSource parse_data(const toml::table& table, const std::string& file, const fs::path& base) {
  TableReader r(table, "data", file);
  r.reject_unknown({"source", "dir", "train", "test", "label", "train_x", "train_y", "test_x", "test_y",
                    "scale", "validation", "validation_fraction", "max_train_samples", "max_test_samples", "audit"});
  data::DataSource s;
  r.read(std::string_view("source"), s.kind, "a string (mnist, csv or npy)");
  r.check(s.kind == "mnist" || s.kind == "csv" || s.kind == "npy", "source",
          "expected \"mnist\", \"csv\" or \"npy\", got \"" + s.kind + "\"");
  if (s.kind == "mnist") s.scale = 255.0;  // 8-bit pixels to [0, 1] unless told otherwise
  r.read_path("dir", s.dir, base);
  r.read_path("train", s.train, base);
  r.read_path("test", s.test, base);
  r.read_path("train_x", s.train_x, base);
  r.read_path("train_y", s.train_y, base);
  r.read_path("test_x", s.test_x, base);
  r.read_path("test_y", s.test_y, base);
  r.read(std::string_view("label"), s.label, "a column name");
  r.read(std::string_view("scale"), s.scale, "a positive number");
  r.check(s.scale > 0, "scale", "must be positive");
  r.read(std::string_view("validation"), s.validation, "\"test\", \"split\" or \"none\"");
  r.check(s.validation == "test" || s.validation == "split" || s.validation == "none", "validation",
          "expected \"test\", \"split\" or \"none\", got \"" + s.validation + "\"");
  r.read(std::string_view("validation_fraction"), s.validation_fraction, "a number in (0, 1)");
  r.check(s.validation_fraction > 0 && s.validation_fraction < 1, "validation_fraction", "must be in (0, 1)");
  r.read(std::string_view("max_train_samples"), s.max_train_samples, "a non-negative integer");
  r.check(s.max_train_samples >= 0, "max_train_samples", "must be >= 0");
  r.read(std::string_view("max_test_samples"), s.max_test_samples, "a non-negative integer");
  r.check(s.max_test_samples >= 0, "max_test_samples", "must be >= 0");
  r.read(std::string_view("audit"), s.audit, "true or false");
  return s;
}

FitOptions parse_fit(const toml::table& table, const std::string& file) {
  TableReader r(table, "fit", file);
  r.reject_unknown({"epochs", "batch_size", "shuffle", "seed"});
  FitOptions f;
  r.read(std::string_view("epochs"), f.epochs, "a positive integer");
  r.check(f.epochs > 0, "epochs", "must be a positive integer");
  r.read(std::string_view("batch_size"), f.batch_size, "a positive integer");
  r.check(f.batch_size > 0, "batch_size", "must be a positive integer");
  r.read(std::string_view("shuffle"), f.shuffle, "true or false");
  int64_t seed = 0;
  r.read(std::string_view("seed"), seed, "a non-negative integer");
  r.check(seed >= 0, "seed", "must be >= 0");
  f.seed = static_cast<uint64_t>(seed);
  return f;
}

// [guard.monitor]: the training monitor's switches and thresholds (names as in MonitorOptions).
monitor::MonitorOptions parse_monitor(const toml::table& table, const std::string& file) {
  TableReader r(table, "guard.monitor", file);
  r.reject_unknown({"enabled", "activations", "adaptive_clip", "lr_cut", "sample_every", "warmup", "window",
                    "cooldown", "loss_spike_z", "loss_spike_ratio", "grad_spike_z", "growth_steps", "growth_factor",
                    "vanishing_ratio", "dead_relu_fraction", "saturation_fraction", "stall_steps", "clip_z",
                    "lr_cut_factor", "lr_cut_horizon"});
  monitor::MonitorOptions m;
  auto flag = [&](std::string_view key, auto set) {
    bool v = false;
    if (table.contains(key)) r.read(key, v, "true or false"), set(v);
  };
  auto count = [&](std::string_view key, auto set) {
    int64_t v = 0;
    if (table.contains(key)) r.read(key, v, "an integer"), set(v);
  };
  auto number = [&](std::string_view key, auto set) {
    double v = 0;
    if (table.contains(key)) r.read(key, v, "a number"), set(v);
  };
  flag("enabled", [&](bool v) { m.enabled(v); });
  flag("activations", [&](bool v) { m.activations(v); });
  flag("adaptive_clip", [&](bool v) { m.adaptive_clip(v); });
  flag("lr_cut", [&](bool v) { m.lr_cut(v); });
  count("sample_every", [&](int64_t v) { m.sample_every(v); });
  count("warmup", [&](int64_t v) { m.warmup(v); });
  count("window", [&](int64_t v) { m.window(v); });
  count("cooldown", [&](int64_t v) { m.cooldown(v); });
  count("growth_steps", [&](int64_t v) { m.growth_steps(v); });
  count("stall_steps", [&](int64_t v) { m.stall_steps(v); });
  count("lr_cut_horizon", [&](int64_t v) { m.lr_cut_horizon(v); });
  number("loss_spike_z", [&](double v) { m.loss_spike_z(v); });
  number("loss_spike_ratio", [&](double v) { m.loss_spike_ratio(v); });
  number("grad_spike_z", [&](double v) { m.grad_spike_z(v); });
  number("growth_factor", [&](double v) { m.growth_factor(v); });
  number("vanishing_ratio", [&](double v) { m.vanishing_ratio(v); });
  number("dead_relu_fraction", [&](double v) { m.dead_relu_fraction(v); });
  number("saturation_fraction", [&](double v) { m.saturation_fraction(v); });
  number("clip_z", [&](double v) { m.clip_z(v); });
  number("lr_cut_factor", [&](double v) { m.lr_cut_factor(v); });
  try {
    m.validate();
  } catch (const ValueError& e) {
    throw ValueError(fmt::format("[guard.monitor] in {}: {}", file, e.what()));
  }
  return m;
}

// [guard.divergence]: the finite-divergence watch (names as in DivergenceOptions).
DivergenceOptions parse_divergence(const toml::table& table, const std::string& file) {
  TableReader r(table, "guard.divergence", file);
  r.reject_unknown({"enabled", "collapse", "dead_start", "loss_factor", "initial_steps", "window", "forecast_steps"});
  DivergenceOptions d;
  bool flag = false;
  int64_t n = 0;
  double x = 0;
  if (table.contains("enabled")) r.read(std::string_view("enabled"), flag, "true or false"), d.enabled(flag);
  if (table.contains("collapse")) r.read(std::string_view("collapse"), flag, "true or false"), d.collapse(flag);
  if (table.contains("dead_start")) r.read(std::string_view("dead_start"), flag, "true or false"), d.dead_start(flag);
  if (table.contains("loss_factor")) r.read(std::string_view("loss_factor"), x, "a number"), d.loss_factor(x);
  if (table.contains("initial_steps")) r.read(std::string_view("initial_steps"), n, "an integer"), d.initial_steps(n);
  if (table.contains("window")) r.read(std::string_view("window"), n, "an integer"), d.window(n);
  if (table.contains("forecast_steps"))
    r.read(std::string_view("forecast_steps"), n, "an integer"), d.forecast_steps(n);
  try {
    d.validate();
  } catch (const ValueError& e) {
    throw ValueError(fmt::format("[guard.divergence] in {}: {}", file, e.what()));
  }
  return d;
}

GuardOptions parse_guard(const toml::table& table, const std::string& file) {
  TableReader r(table, "guard", file);
  r.reject_unknown({"enabled", "snapshot_every", "snapshot_capacity", "check_state_every", "replay", "repair",
                    "rerun_lost_steps", "kept_batch_bytes", "max_rollbacks", "rollback_window", "max_incidents",
                    "max_consecutive_skips", "lr_factor", "lr_floor", "clip_norm", "policy", "monitor", "divergence"});
  GuardOptions g;
  bool flag = true;
  int64_t n = 0;
  double x = 0;
  if (table.contains("enabled")) r.read(std::string_view("enabled"), flag, "true or false"), g.enabled(flag);
  if (table.contains("replay")) r.read(std::string_view("replay"), flag, "true or false"), g.replay(flag);
  if (table.contains("repair")) r.read(std::string_view("repair"), flag, "true or false"), g.repair(flag);
  if (table.contains("rerun_lost_steps"))
    r.read(std::string_view("rerun_lost_steps"), flag, "true or false"), g.rerun_lost_steps(flag);
  auto read_count = [&](std::string_view key, int64_t min, auto set) {
    if (!table.contains(key)) return;
    r.read(key, n, "an integer");
    r.check(n >= min, key, fmt::format("must be >= {}", min));
    set(n);
  };
  read_count("snapshot_every", 0, [&](int64_t v) { g.snapshot_every(v); });
  read_count("snapshot_capacity", 1, [&](int64_t v) { g.snapshot_capacity(v); });
  read_count("check_state_every", 0, [&](int64_t v) { g.check_state_every(v); });
  read_count("kept_batch_bytes", 0, [&](int64_t v) { g.kept_batch_bytes(v); });
  RepairPolicy policy = RepairPolicy::automatic();
  read_count("max_rollbacks", 0, [&](int64_t v) { policy.budget.max_rollbacks = v; });
  read_count("rollback_window", 1, [&](int64_t v) { policy.budget.rollback_window = v; });
  read_count("max_incidents", 1, [&](int64_t v) { policy.budget.max_incidents = v; });
  read_count("max_consecutive_skips", 1, [&](int64_t v) { policy.budget.max_consecutive_skips = v; });
  auto read_positive = [&](std::string_view key, double max, double& out) {
    if (!table.contains(key)) return;
    r.read(key, x, "a positive number");
    r.check(x > 0 && x <= max, key, fmt::format("must be in (0, {}]", max));
    out = x;
  };
  read_positive("lr_factor", 1.0, policy.budget.lr_factor);
  read_positive("lr_floor", 1e9, policy.budget.lr_floor);
  read_positive("clip_norm", 1e30, policy.budget.clip_norm);
  if (const toml::node* node = table.get("policy")) {
    const toml::table* causes = node->as_table();
    if (causes == nullptr) throw ValueError(fmt::format("guard.policy must be a table ({})", r.where(*node)));
    for (const auto& [cause, actions] : *causes) {
      const toml::array* list = actions.as_array();
      if (list == nullptr) {
        throw ValueError(fmt::format("guard.policy.{}: expected an array of action names ({})", cause.str(),
                                     r.where(actions)));
      }
      std::vector<RepairAction> parsed;
      for (const auto& a : *list) {
        auto name = a.value<std::string>();
        if (!name) throw ValueError(fmt::format("guard.policy.{}: expected action names ({})", cause.str(), r.where(a)));
        try {
          parsed.push_back(repair_action_from_string(*name));
        } catch (const ValueError& e) {
          throw ValueError(fmt::format("guard.policy.{} ({}): {}", cause.str(), r.where(a), e.what()));
        }
      }
      policy.actions[std::string(cause.str())] = parsed;
    }
  }
  g.policy(policy);
  if (const toml::node* node = table.get("monitor")) {
    if (!node->is_table()) throw ValueError(fmt::format("guard.monitor must be a table ({})", r.where(*node)));
    g.monitor(parse_monitor(*node->as_table(), file));
  }
  if (const toml::node* node = table.get("divergence")) {
    if (!node->is_table()) throw ValueError(fmt::format("guard.divergence must be a table ({})", r.where(*node)));
    g.divergence(parse_divergence(*node->as_table(), file));
  }
  return g;
}

}  // namespace

c10::Device parse_device(const std::string& text) {
  const bool cuda_index = text.rfind("cuda:", 0) == 0 && text.size() > 5 &&
                          text.find_first_not_of("0123456789", 5) == std::string::npos && text.size() <= 8;
  if (text != "cpu" && text != "cuda" && !cuda_index) {
    throw ValueError(fmt::format("device: expected \"cpu\", \"cuda\" or \"cuda:N\", got \"{}\"", text));
  }
  return c10::Device(text);
}

RunConfig parse_run_config(const std::string& text, const fs::path& source_name) {
  const std::string file = source_name.string();
  toml::table root;
  try {
    root = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    throw ValueError(fmt::format("{}:{}:{}: invalid TOML: {}", file, e.source().begin.line, e.source().begin.column,
                                 e.description()));
  }
  TableReader r(root, "", file);
  r.reject_unknown({"name", "device", "data", "model", "loss", "optimizer", "metrics", "schedule", "fit", "guard"});

  RunConfig config;
  config.source = source_name;
  config.name = source_name.stem().string();
  r.read(std::string_view("name"), config.name, "a string");
  std::string device = "cpu";
  r.read(std::string_view("device"), device, "a string (cpu, cuda or cuda:N)");
  try {
    config.compile.device = parse_device(device);
  } catch (const ValueError& e) {
    throw ValueError(fmt::format("{} ({})", e.what(), r.where(*root.get("device"))));
  }
  const fs::path base = source_name.has_parent_path() ? source_name.parent_path() : fs::path(".");
  config.data = parse_data(require_table(root, "data", file), file, base);
  config.model = model_spec_from_toml(require_table(root, "model", file), file);

  const toml::node* loss = root.get("loss");
  if (loss == nullptr) throw ValueError(file + ": missing required key 'loss'");
  config.compile.loss = loss_spec_from_toml(*loss, file);
  const toml::node* optimizer = root.get("optimizer");
  if (optimizer == nullptr) throw ValueError(file + ": missing required key 'optimizer'");
  config.compile.optimizer = optimizer_spec_from_toml(*optimizer, file);
  if (const toml::node* metrics = root.get("metrics")) config.compile.metrics = metrics_from_toml(*metrics, file);
  if (const toml::node* schedule = root.get("schedule")) config.compile.schedule = schedule_spec_from_toml(*schedule, file);
  if (const toml::node* fit = root.get("fit")) {
    if (!fit->is_table()) throw ValueError(fmt::format("{}: 'fit' must be a table", file));
    config.fit = parse_fit(*fit->as_table(), file);
  }
  if (const toml::node* guard = root.get("guard")) {
    if (!guard->is_table()) throw ValueError(fmt::format("{}: 'guard' must be a table", file));
    config.compile.guard = parse_guard(*guard->as_table(), file);
  }
  config.data.seed = config.fit.seed;  // the validation split follows the run's seed
  return config;
}

RunConfig load_run_config(const fs::path& path) {
  if (!fs::exists(path)) throw IoError("config file " + path.string() + " does not exist");
  return parse_run_config(read_text_file(path), path);
}

}  // namespace nanguard
