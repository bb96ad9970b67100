// The zoo's table: runs, totals and their Markdown / JSON forms.
#include "nanguard/zoo/table.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"

namespace nanguard::zoo {
namespace {

using json = nlohmann::ordered_json;

const Scenario* find_scenario(const std::string& id) {
  for (const auto& s : builtin_scenarios()) {
    if (s.id == id) return &s;
  }
  return nullptr;
}

std::vector<const ScenarioResult*> select(const Table& t, const std::string& scenario, const std::string& baseline) {
  std::vector<const ScenarioResult*> out;
  for (const auto& r : t.results) {
    if ((scenario.empty() || r.scenario == scenario) && r.baseline == baseline) out.push_back(&r);
  }
  return out;
}

std::vector<std::string> baselines_in(const Table& t) {
  std::vector<std::string> out;
  for (const auto& name : baseline_names()) {
    if (!select(t, "", name).empty()) out.push_back(name);
  }
  return out;
}

std::vector<std::string> scenarios_in(const Table& t) {
  std::vector<std::string> out;
  for (const auto& r : t.results) {
    if (std::find(out.begin(), out.end(), r.scenario) == out.end()) out.push_back(r.scenario);
  }
  return out;
}

struct Rate {
  int64_t hit = 0, of = 0;
  std::string str() const { return of == 0 ? "-" : fmt::format("{}/{}", hit, of); }
  json to_json() const { return of == 0 ? json(nullptr) : json{{"hit", hit}, {"of", of}}; }
};

struct Totals {
  Rate detection, localization, cause, repair, false_positives;
  double diagnosis_seconds = -1;  // mean over runs with a diagnosis
  double z0_seconds = -1;         // mean seconds on Z0
};

bool diagnoses(const std::string& baseline) { return baseline_diagnoses(baseline); }
bool localizes(const std::string& baseline) { return baseline_diagnoses(baseline) || baseline == "random"; }

Totals totals(const Table& t, const std::string& baseline) {
  Totals out;
  double diag = 0, z0 = 0;
  int64_t n_diag = 0, n_z0 = 0;
  for (const ScenarioResult* r : select(t, "", baseline)) {
    const Scenario* s = find_scenario(r->scenario);
    const bool healthy = s ? s->true_cause == "none" : false;
    const bool nonfinite = s ? s->produces_nonfinite : true;
    const bool repairable = s ? s->repairable && !healthy : false;
    if (healthy) {
      out.false_positives.of++;
      out.false_positives.hit += r->detected ? 1 : 0;
      z0 += r->seconds;
      ++n_z0;
    } else {
      out.detection.of++;
      out.detection.hit += r->detected ? 1 : 0;
      if (diagnoses(baseline)) {
        out.cause.of++;
        out.cause.hit += r->cause_correct ? 1 : 0;
      }
    }
    if (nonfinite && !healthy && localizes(baseline)) {
      out.localization.of++;
      out.localization.hit += r->localization_correct ? 1 : 0;
    }
    if (repairable && r->clean_accuracy >= 0) {
      out.repair.of++;
      out.repair.hit += r->repaired ? 1 : 0;
    }
    if (r->diagnosis_seconds >= 0 && diagnoses(baseline)) {
      diag += r->diagnosis_seconds;
      ++n_diag;
    }
  }
  if (n_diag > 0) out.diagnosis_seconds = diag / static_cast<double>(n_diag);
  if (n_z0 > 0) out.z0_seconds = z0 / static_cast<double>(n_z0);
  return out;
}

double mean_of(const std::vector<const ScenarioResult*>& rs, double ScenarioResult::*field) {
  if (rs.empty()) return -1;
  double sum = 0;
  for (const auto* r : rs) sum += r->*field;
  return sum / static_cast<double>(rs.size());
}

std::string pct(double v) { return v < 0 ? "-" : fmt::format("{:.1f}", v * 100); }

std::string cell(std::string s) {
  std::replace(s.begin(), s.end(), '|', '/');
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s.empty() ? "-" : s;
}

template <class Pred>
Rate count(const std::vector<const ScenarioResult*>& rs, Pred pred) {
  Rate r;
  for (const auto* x : rs) {
    r.of++;
    r.hit += pred(*x) ? 1 : 0;
  }
  return r;
}

std::string ids_str(const std::vector<int64_t>& ids) {
  if (ids.empty()) return "-";
  std::vector<int64_t> shown(ids.begin(), ids.begin() + std::min<size_t>(ids.size(), 8));
  return fmt::format("{}{}", fmt::join(shown, ","), ids.size() > 8 ? ",..." : "");
}

std::string actions_str(const std::vector<std::string>& actions) {
  if (actions.empty()) return "-";
  // Collapsed: "quarantine_samples x5, skip_step x5".
  std::vector<std::pair<std::string, int>> counts;
  for (const auto& a : actions) {
    auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == a; });
    if (it == counts.end()) counts.emplace_back(a, 1);
    else ++it->second;
  }
  std::string s;
  for (const auto& [a, n] : counts) s += (s.empty() ? "" : ", ") + (n > 1 ? fmt::format("{} x{}", a, n) : a);
  return s;
}

std::string read_command(const std::string& command, int& status) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) {
    status = -1;
    return out;
  }
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  status = pclose(pipe);
  return out;
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The nanguard-from-Python cells of a scenario's anomaly-mode row: birth op, cause, repaired,
// seconds. Judged like the C++ runs: the birth op and phase (or the phase, or the blamed
// samples) the scenario expects, its true cause (or one also counted correct).
std::string python_guard_cells(const Table& table, const std::string& id, const ScenarioResult* cpp) {
  const auto it = std::find_if(table.python_guard.begin(), table.python_guard.end(),
                               [&](const PythonGuardResult& p) { return p.scenario == id; });
  if (it == table.python_guard.end()) return "- | - | - | -";
  const PythonGuardResult& p = *it;
  if (!p.error.empty()) return "not run: " + cell(p.error) + " | - | - | -";
  const Scenario* s = find_scenario(id);
  const auto cause_is = [&](const std::string& spec) {
    const auto slash = spec.find('/');
    const std::string want = spec.substr(0, slash);
    const std::string got = p.cause.substr(0, p.cause.find('/'));
    return !p.cause.empty() && got == want && (slash == std::string::npos || p.cause == spec);
  };
  bool localized = true;
  std::vector<std::string> where;
  if (!p.birth_op.empty()) where.push_back(p.birth_op);
  if (s && !s->expected_birth_op.empty()) {
    localized = p.birth_op == s->expected_birth_op && (s->expected_phase.empty() || p.phase == s->expected_phase);
  } else if (s && !s->expected_phase.empty()) {
    localized = p.phase == s->expected_phase;
    if (!p.phase.empty()) where.push_back("(" + p.phase + ")");
  }
  if (s && !s->expected_samples.empty()) {
    std::vector<int64_t> want = s->expected_samples, got = p.samples;
    std::sort(want.begin(), want.end());
    std::sort(got.begin(), got.end());
    localized = localized && want == got;
    where.push_back(got == want ? "the corrupted samples" : fmt::format("{} other samples", got.size()));
  }
  if (where.empty()) where.push_back("-");
  bool cause_ok = false;
  if (s) {
    cause_ok = cause_is(s->true_subkind.empty() ? s->true_cause : s->true_cause + "/" + s->true_subkind) ||
               std::any_of(s->also_correct.begin(), s->also_correct.end(), cause_is);
  }
  // The bar is the Python clean twin's (same seed, same initialiser); the C++ twin's otherwise.
  const double clean = p.clean_accuracy >= 0 ? p.clean_accuracy : cpp ? cpp->clean_accuracy : -1;
  const bool repairable = s && s->repairable;
  const std::string repaired =
      !repairable ? "n/a"
      : clean < 0 ? fmt::format("{:.1f}% (no clean twin)", 100 * p.final_accuracy)
                  : fmt::format("{} ({:.1f}% vs {:.1f}%)",
                                p.finite && p.final_accuracy >= clean - 0.01 - 1e-9 ? "yes" : "no",
                                100 * p.final_accuracy, 100 * clean);
  return fmt::format("{} {} | {} {} | {} | {:.2f}", cell(fmt::format("{}", fmt::join(where, " "))),
                     localized ? "(correct)" : "(wrong)",
                     p.cause.empty() ? "-" : cell(p.cause), cause_ok ? "(correct)" : "(wrong)", repaired, p.seconds);
}

// Runs zoo/python/<script> on one scenario and returns the JSON object of its last line, or
// sets `error` to why there is none (no script, a failed run, no JSON, the script's own error).
json run_zoo_script(const std::string& python, const std::filesystem::path& python_dir, const std::string& script_name,
                    const std::string& scenario, uint64_t seed, const std::filesystem::path& mnist_dir,
                    std::string& error) {
  const auto script = python_dir / script_name;
  if (!std::filesystem::exists(script)) {
    error = "no script " + script.string();
    return json();
  }
  int status = 0;
  const std::string out = read_command(fmt::format("{} {} --scenario {} --seed {} --mnist {} 2>/dev/null", quote(python),
                                                   quote(script.string()), quote(scenario), seed,
                                                   quote(mnist_dir.string())),
                                       status);
  const auto line_start = out.rfind('{');
  if (status != 0 || line_start == std::string::npos) {
    error = fmt::format("the script failed (status {})", status);
    return json();
  }
  json j = json::parse(out.substr(line_start), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    error = "the script printed no JSON result";
    return json();
  }
  if (j.contains("error")) {
    error = j["error"].is_string() ? j["error"].get<std::string>() : j["error"].dump();
    return json();
  }
  return j;
}

}  // namespace

AnomalyResult run_anomaly_mode(const std::string& python, const std::filesystem::path& python_dir,
                               const std::string& scenario, uint64_t seed, const std::filesystem::path& mnist_dir) {
  AnomalyResult r;
  r.scenario = scenario;
  r.seed = seed;
  const json j = run_zoo_script(python, python_dir, "anomaly_zoo.py", scenario, seed, mnist_dir, r.error);
  if (!r.error.empty()) return r;
  r.detected = j.value("detected", false);
  r.detected_step = j.value("detected_step", int64_t{-1});
  r.op = j.value("op", std::string());
  r.seconds = j.value("seconds", 0.0);
  const Scenario* s = find_scenario(scenario);
  if (s && !s->expected_birth_op.empty() && !r.op.empty()) {
    // "LogBackward0" names the node of aten::log.
    std::string fwd = s->expected_birth_op.substr(s->expected_birth_op.find("::") + 2);
    fwd.erase(0, fwd.find_first_not_of('_'));  // aten::_softmax's node is SoftmaxBackward0
    std::string op = r.op.substr(0, r.op.find("Backward"));
    std::transform(op.begin(), op.end(), op.begin(), [](unsigned char c) { return std::tolower(c); });
    r.op_correct = op == fwd;
  }
  return r;
}

PythonGuardResult run_python_guard(const std::string& python, const std::filesystem::path& python_dir,
                                   const std::string& scenario, uint64_t seed, const std::filesystem::path& mnist_dir) {
  PythonGuardResult r;
  r.scenario = scenario;
  r.seed = seed;
  const json j = run_zoo_script(python, python_dir, "nanguard_zoo.py", scenario, seed, mnist_dir, r.error);
  if (!r.error.empty()) return r;
  r.detected = j.value("detected", false);
  r.detected_step = j.value("detected_step", int64_t{-1});
  r.birth_op = j.value("birth_op", std::string());
  r.phase = j.value("phase", std::string());
  r.cause = j.value("cause", std::string());
  if (j.contains("samples") && j["samples"].is_array()) r.samples = j["samples"].get<std::vector<int64_t>>();
  r.final_accuracy = j.value("final_accuracy", -1.0);
  r.clean_accuracy = j.value("clean_accuracy", -1.0);
  r.finite = j.value("finite", false);
  r.seconds = j.value("seconds", 0.0);
  return r;
}

const std::vector<DataParallelCase>& data_parallel_cases() {
  static const std::vector<DataParallelCase> cases{
      {"Z5", 1, -1, "NaN and Inf in 5 samples of rank 1's copy of the data"},
      {"Z6", 1, -1, "one NaN in rank 1's gradient at step 40, first execution"},
      {"Z9", -1, -1, "SGD lr 3 on every rank (finite divergence)"},
      {"Z0", 1, 50, "rank 1 killed (SIGKILL) at step 50 of the healthy run"},
  };
  return cases;
}

DataParallelResult run_data_parallel(const std::filesystem::path& program, const DataParallelCase& c, int nproc,
                                     uint64_t seed, const std::filesystem::path& mnist_dir,
                                     const std::vector<std::string>& extra) {
  DataParallelResult r;
  r.scenario = c.scenario;
  r.seed = seed;
  r.world_size = nproc;
  r.fault_rank = c.fault_rank;
  r.kill_step = c.kill_step;
  r.fault = c.fault;
  std::string dir_template = (std::filesystem::temp_directory_path() / "nanguard-zoo-dp-XXXXXX").string();
  if (mkdtemp(dir_template.data()) == nullptr) throw IoError("zoo: cannot create a temporary folder for a data-parallel run");
  const std::filesystem::path dir = dir_template;
  std::string command = fmt::format("{} zoo run {} --nproc {} --seed {} --mnist {} --out {}", quote(program.string()),
                                    quote(c.scenario), nproc, seed, quote(mnist_dir.string()), quote(dir.string()));
  if (c.fault_rank >= 0) command += fmt::format(" --fault-rank {}", c.fault_rank);
  if (c.kill_step >= 0) command += fmt::format(" --kill-step {}", c.kill_step);
  for (const auto& e : extra) command += " " + quote(e);
  int status = 0;
  const auto start = std::chrono::steady_clock::now();
  const std::string err = read_command(command + " 2>&1 >/dev/null", status);  // stderr only
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.exit_code = status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (r.exit_code != 0) {
    // The launcher's line names the rank that failed; else the command's last line.
    std::istringstream lines(err);
    std::string line, last;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      last = line;
      if (line.find("data-parallel run failed") != std::string::npos) r.error = line;
    }
    if (r.error.empty()) r.error = last.empty() ? fmt::format("exit code {}", r.exit_code) : last;
  } else {
    std::ifstream in(dir / "result.json");
    const json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      r.error = "the run wrote no readable result.json";
    } else {
      r.incident_ranks = j.value("incident_ranks", std::vector<int>());
      r.top_cause = j.value("top_cause", std::string());
      r.cause_correct = j.value("cause_correct", false);
      r.samples = j.value("samples", std::vector<int64_t>());
      r.actions = j.value("actions", std::vector<std::string>());
      r.final_accuracy = j.value("final_accuracy", -1.0);
      r.clean_accuracy = j.value("clean_accuracy", -1.0);
      r.repaired = j.value("repaired", false);
      r.weights_identical = j.value("weights_identical", false);
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return r;
}

void TableOptions::validate() const {
  NANGUARD_CHECK(seeds() >= 1, "zoo table: --seeds must be at least 1, got {}", seeds());
  for (const auto& b : baselines()) check_baseline(b);
  for (const auto& id : only()) builtin_scenario(id);
}

Table run_table(const TableOptions& options) {
  options.validate();
  std::vector<const Scenario*> scenarios;
  if (options.only().empty()) {
    for (const auto& s : builtin_scenarios()) scenarios.push_back(&s);
  } else {
    for (const auto& id : options.only()) scenarios.push_back(&builtin_scenario(id));
  }
  const auto start = std::chrono::steady_clock::now();
  Table table;
  table.seeds = options.seeds();
  auto cache = std::make_shared<RunCache>();
  // `none` first: its first non-finite step is reused by the guarded runs.
  std::vector<std::string> order = options.baselines();
  std::stable_partition(order.begin(), order.end(), [](const std::string& b) { return b == "none"; });
  for (const Scenario* s : scenarios) {
    for (int64_t seed = 0; seed < options.seeds(); ++seed) {
      for (const auto& b : order) {
        RunOptions o;
        o.baseline(b).seed(static_cast<uint64_t>(seed)).mnist_dir(options.mnist_dir()).cache(cache);
        o.train_samples(options.train_samples()).test_samples(options.test_samples()).epochs(options.epochs());
        table.results.push_back(run_scenario(*s, o));
        if (options.on_result()) options.on_result()(table.results.back());
      }
    }
  }
  // Data parallelism: each case in its own command, its workers fresh processes.
  if (!options.nanguard().empty() && options.nproc() >= 2) {
    std::vector<std::string> extra;
    if (options.train_samples() > 0) extra.insert(extra.end(), {"--train-samples", std::to_string(options.train_samples())});
    if (options.epochs() > 0) extra.insert(extra.end(), {"--epochs", std::to_string(options.epochs())});
    for (const auto& c : data_parallel_cases()) {
      const bool selected = std::any_of(scenarios.begin(), scenarios.end(), [&](const Scenario* s) { return s->id == c.scenario; });
      if (!selected) continue;
      for (int64_t seed = 0; seed < options.seeds(); ++seed) {
        table.data_parallel.push_back(
            run_data_parallel(options.nanguard(), c, options.nproc(), static_cast<uint64_t>(seed), options.mnist_dir(), extra));
        if (options.on_data_parallel()) options.on_data_parallel()(table.data_parallel.back());
      }
    }
  }
  // Anomaly mode: one seed per scenario that has a Python equivalent.
  if (options.python().empty() || options.python_dir().empty()) {
    table.anomaly_note = "no Python interpreter or script folder given";
  } else {
    int status = 0;
    read_command(quote(options.python()) + " -c 'import torch' >/dev/null 2>&1", status);
    if (status != 0) {
      table.anomaly_note = options.python() + " cannot import torch";
    } else {
      table.anomaly_available = true;
      for (const Scenario* s : scenarios) {
        auto r = run_anomaly_mode(options.python(), options.python_dir(), s->id, 0, options.mnist_dir());
        if (r.error.rfind("no equivalent", 0) == 0) continue;
        table.anomaly.push_back(r);
        table.python_guard.push_back(
            run_python_guard(options.python(), options.python_dir(), s->id, 0, options.mnist_dir()));
      }
    }
  }
  table.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return table;
}

std::string Table::to_markdown() const {
  std::ostringstream md;
  const auto baselines = baselines_in(*this);
  const auto ids = scenarios_in(*this);

  md << "### Totals per baseline\n\n";
  md << "| baseline | detected | birth op + phase (or samples) correct | top cause correct | repaired | "
        "false positives on Z0 | detection to diagnosis (mean s) | Z0 mean run time (s) |\n";
  md << "|---|---|---|---|---|---|---|---|\n";
  for (const auto& b : baselines) {
    const Totals t = totals(*this, b);
    md << fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", b, t.detection.str(), t.localization.str(),
                      t.cause.str(), t.repair.str(), t.false_positives.str(),
                      t.diagnosis_seconds < 0 ? "-" : fmt::format("{:.3f}", t.diagnosis_seconds),
                      t.z0_seconds < 0 ? "-" : fmt::format("{:.2f}", t.z0_seconds));
  }

  md << "\n### nanguard per scenario (details from seed 0; counts over " << seeds << " seeds)\n\n";
  md << "| id | detected (step) | birth op | phase | module | samples blamed | top cause | cause correct | "
        "actions | final acc % | clean acc % | repaired | unguarded non-finite at step | warnings | warned N steps ahead |\n";
  md << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& id : ids) {
    auto rs = select(*this, id, "nanguard");
    if (rs.empty()) continue;
    const ScenarioResult& r = *rs.front();
    const Scenario* s = find_scenario(id);
    const bool repairable = s && s->repairable && s->true_cause != "none";
    // How long before the unguarded run's first non-finite value the first warning came.
    const std::string ahead =
        r.first_warning_step < 0 ? "-"
        : r.first_nonfinite_step < 0 ? "no NaN"
                                     : std::to_string(r.first_nonfinite_step - r.first_warning_step);
    md << fmt::format("| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", id,
                      count(rs, [](const auto& x) { return x.detected; }).str(),
                      r.detected_step < 0 ? "-" : std::to_string(r.detected_step), cell(r.birth_op), cell(r.phase),
                      cell(r.module), ids_str(r.samples), cell(r.top_cause),
                      count(rs, [](const auto& x) { return x.cause_correct; }).str(), cell(actions_str(r.actions)),
                      pct(mean_of(rs, &ScenarioResult::final_accuracy)),
                      pct(mean_of(rs, &ScenarioResult::clean_accuracy)),
                      repairable ? count(rs, [](const auto& x) { return x.repaired; }).str() : std::string("n/a"),
                      r.first_nonfinite_step < 0 ? "never" : std::to_string(r.first_nonfinite_step),
                      count(rs, [](const auto& x) { return x.warnings > 0; }).str(), ahead);
  }

  md << "\n### Baselines side by side (mean final test accuracy %; repaired runs / seeds)\n\n";
  md << "| id | clean |";
  for (const auto& b : baselines) md << " " << b << " |";
  md << "\n|---|---|";
  for (size_t i = 0; i < baselines.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& id : ids) {
    double clean = -1;
    std::string row;
    for (const auto& b : baselines) {
      auto rs = select(*this, id, b);
      if (rs.empty()) {
        row += " - |";
        continue;
      }
      if (clean < 0) clean = mean_of(rs, &ScenarioResult::clean_accuracy);
      std::string extra;
      if (b == "none") {
        const auto first = rs.front()->first_nonfinite_step;
        extra = first < 0 ? ", finite" : fmt::format(", NaN at {}", first);
      } else if (b == "terminate" || b == "skip") {
        extra = fmt::format(", {} fired", count(rs, [](const auto& x) { return x.detected; }).str());
      }
      row += fmt::format(" {} ({} repaired{}) |", pct(mean_of(rs, &ScenarioResult::final_accuracy)),
                         count(rs, [](const auto& x) { return x.repaired; }).str(), extra);
    }
    md << "| " << id << " | " << pct(clean) << " |" << row << "\n";
  }

  md << "\n### PyTorch anomaly mode (Python equivalents, seed 0)\n\n";
  if (!anomaly_available) {
    md << "Not run: " << anomaly_note << ".\n";
  } else {
    md << "| id | anomaly mode names | names the birth op | error at step | seconds | nanguard birth op | "
          "nanguard detection to diagnosis (s) | nanguard from Python: birth op | cause | repaired | seconds |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& a : anomaly) {
      auto rs = select(*this, a.scenario, "nanguard");
      const ScenarioResult* g = rs.empty() ? nullptr : rs.front();
      const std::string py = python_guard_cells(*this, a.scenario, g);
      if (!a.error.empty()) {
        md << fmt::format("| {} | not run: {} | - | - | - | - | - | {} |\n", a.scenario, cell(a.error), py);
        continue;
      }
      const Scenario* s = find_scenario(a.scenario);
      const bool has_op = s && !s->expected_birth_op.empty();
      // Scenarios judged by phase only (an overflow inside a backward node) have no op to compare.
      const std::string judged = s && !has_op && !s->expected_phase.empty()
                                     ? "n/a (judged by phase: " + s->expected_phase + ")"
                                     : "n/a (no birth op: data or optimizer)";
      md << fmt::format("| {} | {} | {} | {} | {:.2f} | {} | {} | {} |\n", a.scenario,
                        a.detected ? cell(a.op) : "nothing (no error)",
                        !has_op ? judged : a.op_correct ? "yes" : "no",
                        a.detected_step < 0 ? "-" : std::to_string(a.detected_step), a.seconds,
                        g ? cell(g->birth_op) : "-",
                        g && g->diagnosis_seconds >= 0 ? fmt::format("{:.3f}", g->diagnosis_seconds) : "-", py);
    }
  }
  if (anomaly_available) {
    md << "\nnanguard from Python: `zoo/python/nanguard_zoo.py` (the same Python equivalents in a plain "
          "PyTorch loop under `nanguard.Guard`); its birth op (or the samples blamed, for data faults) and "
          "cause are marked correct as the C++ runs are judged; repaired: final accuracy within 1 point "
          "of (or above) the Python clean twin's (the same script with the fault removed, unguarded, same "
          "seed), with finite parameters.\n";
  }
  if (!data_parallel.empty()) {
    md << fmt::format("\n### Data parallel ({} processes, gloo on loopback; the scenario's batch split over them)\n\n",
                      data_parallel.front().world_size);
    md << "| id | seed | fault | ended | incidents on rank | cause | actions | final % | clean % | repaired | "
          "weights identical | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& d : data_parallel) {
      const std::string ended = d.exit_code == 0 ? "exit 0" : fmt::format("exit {}: {}", d.exit_code, cell(d.error));
      std::string ranks = "-";
      if (!d.incident_ranks.empty()) {
        std::map<int, int> per_rank;
        for (int rk : d.incident_ranks) per_rank[rk]++;
        ranks.clear();
        for (const auto& [rk, n] : per_rank) ranks += (ranks.empty() ? "" : ", ") + (n > 1 ? fmt::format("{} (x{})", rk, n) : std::to_string(rk));
      }
      const std::string cause = d.exit_code != 0 ? "-" : d.top_cause.empty() ? "none" : d.top_cause;
      md << fmt::format("| {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {:.1f} |\n", d.scenario, d.seed,
                        cell(d.fault), ended, ranks, cell(cause),
                        d.exit_code != 0 ? "" : d.cause_correct ? " (correct)" : " (wrong)",
                        d.actions.empty() ? "-" : cell(actions_str(d.actions)), pct(d.final_accuracy), pct(d.clean_accuracy),
                        d.exit_code != 0 ? "-" : d.repaired ? "yes" : "no",
                        d.exit_code != 0 ? "-" : d.weights_identical ? "yes" : "no", d.seconds);
    }
    md << "\nEach row is `nanguard zoo run ID --nproc N --fault-rank R [--kill-step K]`. A data fault lives in "
          "the fault rank's copy of the training set only; a fault hook runs on that rank only; a fault of the "
          "model, loss or optimizer is on every rank. Clean: the clean twin in one process at the same global "
          "batch. Seconds include the clean twin.\n";
  }
  md << fmt::format("\nTotal wall time of the table: {:.0f} s.\n", seconds);
  return md.str();
}

std::string Table::to_json() const {
  json j;
  j["seeds"] = seeds;
  j["seconds"] = seconds;
  json results = json::array();
  for (const auto& r : this->results) results.push_back(json::parse(r.to_json()));
  j["results"] = results;
  json tot = json::object();
  for (const auto& b : baselines_in(*this)) {
    const Totals t = totals(*this, b);
    tot[b] = {{"detection", t.detection.to_json()},
              {"localization", t.localization.to_json()},
              {"cause", t.cause.to_json()},
              {"repair", t.repair.to_json()},
              {"false_positives_z0", t.false_positives.to_json()},
              {"diagnosis_seconds", t.diagnosis_seconds < 0 ? json(nullptr) : json(t.diagnosis_seconds)},
              {"z0_seconds", t.z0_seconds < 0 ? json(nullptr) : json(t.z0_seconds)}};
  }
  j["totals"] = tot;
  json an = json::array();
  for (const auto& a : anomaly) {
    an.push_back({{"scenario", a.scenario},
                  {"seed", a.seed},
                  {"detected", a.detected},
                  {"detected_step", a.detected_step},
                  {"op", a.op},
                  {"op_correct", a.op_correct},
                  {"seconds", a.seconds},
                  {"error", a.error}});
  }
  j["anomaly_mode"] = an;
  json pg = json::array();
  for (const auto& p : python_guard) {
    pg.push_back({{"scenario", p.scenario},
                  {"seed", p.seed},
                  {"detected", p.detected},
                  {"detected_step", p.detected_step},
                  {"birth_op", p.birth_op},
                  {"phase", p.phase},
                  {"cause", p.cause},
                  {"samples", p.samples},
                  {"final_accuracy", p.final_accuracy},
                  {"clean_accuracy", p.clean_accuracy},
                  {"finite", p.finite},
                  {"seconds", p.seconds},
                  {"error", p.error}});
  }
  j["python_guard"] = pg;
  json dp = json::array();
  for (const auto& d : data_parallel) {
    dp.push_back({{"scenario", d.scenario},
                  {"seed", d.seed},
                  {"world_size", d.world_size},
                  {"fault_rank", d.fault_rank},
                  {"kill_step", d.kill_step},
                  {"fault", d.fault},
                  {"exit_code", d.exit_code},
                  {"error", d.error},
                  {"seconds", d.seconds},
                  {"incident_ranks", d.incident_ranks},
                  {"top_cause", d.top_cause},
                  {"cause_correct", d.cause_correct},
                  {"samples", d.samples},
                  {"actions", d.actions},
                  {"final_accuracy", d.final_accuracy},
                  {"clean_accuracy", d.clean_accuracy},
                  {"repaired", d.repaired},
                  {"weights_identical", d.weights_identical}});
  }
  j["data_parallel"] = dp;
  j["anomaly_available"] = anomaly_available;
  if (!anomaly_note.empty()) j["anomaly_note"] = anomaly_note;
  return j.dump(2);
}

void prepare_output_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir) || access(dir.c_str(), W_OK) != 0) {
    throw IoError(fmt::format("zoo: cannot write to the output folder '{}'{}", dir.string(),
                              ec ? ": " + ec.message() : std::string(" (not a writable folder)")));
  }
}

void write_result(const ScenarioResult& result, const std::filesystem::path& dir) {
  prepare_output_dir(dir);
  write_text_atomic(dir / "result.json", result.to_json() + "\n");
}

void write_table(const Table& table, const std::filesystem::path& dir) {
  prepare_output_dir(dir);
  write_text_atomic(dir / "table.md", table.to_markdown());
  write_text_atomic(dir / "table.json", table.to_json() + "\n");
}

}  // namespace nanguard::zoo
