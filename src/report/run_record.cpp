#include "nanguard/report/run_record.h"

#include <map>
#include <set>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "nanguard/core/error.h"

namespace nanguard::report {
namespace {

using nlohmann::json;

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> cells;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    cells.push_back(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return cells;
}

// A CSV cell: a number, nan/inf/-inf, or empty (returns false: no value).
bool parse_cell(const std::string& cell, double* out, const std::string& file, size_t line, size_t column,
                const std::string& name) {
  if (cell.empty()) return false;
  const char* begin = cell.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  NANGUARD_CHECK(end != begin && *end == '\0', "{} line {} column {} ({}): expected a number, found '{}'", file, line,
                 column, name, cell);
  *out = v;
  return true;
}

// Reads a text file that may be absent; returns false when absent.
bool read_optional(const std::filesystem::path& path, std::string* text) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  *text = s.str();
  return true;
}

std::string str_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string IncidentRecord::outcome() const {
  if (actions.empty()) return "no repair recorded";
  const GuardEvent& last = actions.back();
  return last.action + (last.detail.empty() ? "" : ": " + last.detail);
}

std::vector<IncidentRecord> RunRecord::incidents() const {
  std::vector<IncidentRecord> out;
  for (const auto& e : events) {
    if (e.kind == "incident") {
      out.push_back({e, {}});
    } else if (e.kind == "action" && !out.empty() && out.back().incident.step == e.step) {
      out.back().actions.push_back(e);
    }
  }
  return out;
}

size_t RunRecord::count(const std::string& kind) const {
  return static_cast<size_t>(std::count_if(events.begin(), events.end(), [&](const GuardEvent& e) { return e.kind == kind; }));
}

double RunRecord::steps_per_epoch() const {
  if (summary_json.empty()) return 0;
  const json j = json::parse(summary_json, nullptr, false);
  if (!j.is_object() || !j.contains("steps") || !j.contains("epochs")) return 0;
  if (!j["steps"].is_number() || !j["epochs"].is_number()) return 0;
  const double epochs = j["epochs"].get<double>();
  return epochs > 0 ? j["steps"].get<double>() / epochs : 0;
}

RunVerdictRecord RunRecord::verdict() const {
  RunVerdictRecord v;
  if (summary_json.empty()) return v;
  const json j = json::parse(summary_json, nullptr, false);
  if (!j.is_object() || !j.contains("verdict") || !j["verdict"].is_object()) return v;
  const json& o = j["verdict"];
  if (!o.contains("learned") || !o["learned"].is_boolean()) return v;
  v.known = true;
  v.learned = o["learned"].get<bool>();
  v.headline = str_field(o, "headline");
  return v;
}

History parse_history_csv(const std::string& text, const std::string& file) {
  const auto lines = split_lines(text);
  NANGUARD_CHECK(!lines.empty() && !lines[0].empty(), "{} is empty (expected a header line starting with 'epoch')", file);
  const auto header = split_commas(lines[0]);
  NANGUARD_CHECK(header[0] == "epoch", "{} line 1: expected the header to start with 'epoch', found '{}'", file,
                 header[0]);
  History history;
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const auto cells = split_commas(lines[i]);
    NANGUARD_CHECK(cells.size() == header.size(), "{} line {}: expected {} values (as in the header), found {}", file,
                   i + 1, header.size(), cells.size());
    double epoch = 0;
    NANGUARD_CHECK(parse_cell(cells[0], &epoch, file, i + 1, 1, "epoch") && std::isfinite(epoch),
                   "{} line {} column 1 (epoch): expected an epoch number", file, i + 1);
    Logs logs;
    for (size_t c = 1; c < cells.size(); ++c) {
      double v = 0;
      if (parse_cell(cells[c], &v, file, i + 1, c + 1, header[c])) logs.set(header[c], v);
    }
    history.append(static_cast<int64_t>(epoch), logs);
  }
  return history;
}

namespace {

// The monitor writes one row per value (`step,signal,layer,value`): per-layer signals are
// sampled every few hundred steps, so a wide table would be mostly empty. Pivot it into
// columns named `signal` or `signal/layer` (the per-layer gradient norm is `grad_norm/layer`).
SignalTable pivot_long_signals(const std::vector<std::string>& lines, const std::string& file) {
  std::map<std::string, std::map<double, double>> by_column;
  std::set<double> steps;
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const auto cells = split_commas(lines[i]);
    NANGUARD_CHECK(cells.size() == 4, "{} line {}: expected 4 values (step,signal,layer,value), found {}", file, i + 1,
                   cells.size());
    double step = 0, value = std::nan("");
    NANGUARD_CHECK(parse_cell(cells[0], &step, file, i + 1, 1, "step") && std::isfinite(step),
                   "{} line {} column 1 (step): expected a step number", file, i + 1);
    NANGUARD_CHECK(!cells[1].empty(), "{} line {} column 2 (signal): expected a signal name", file, i + 1);
    parse_cell(cells[3], &value, file, i + 1, 4, "value");
    const std::string signal = cells[1] == "layer_grad_norm" ? "grad_norm" : cells[1];
    const std::string column = cells[2].empty() ? signal : signal + "/" + cells[2];
    by_column[column][step] = value;
    steps.insert(step);
  }
  SignalTable table;
  table.steps.assign(steps.begin(), steps.end());
  for (const auto& [name, values] : by_column) {
    std::vector<double> column;
    column.reserve(table.steps.size());
    for (double s : table.steps) {
      auto it = values.find(s);
      column.push_back(it == values.end() ? std::nan("") : it->second);
    }
    table.columns.emplace_back(name, std::move(column));
  }
  return table;
}

}  // namespace

SignalTable parse_signals_csv(const std::string& text, const std::string& file) {
  const auto lines = split_lines(text);
  NANGUARD_CHECK(!lines.empty() && !lines[0].empty(), "{} is empty (expected a header line starting with 'step')", file);
  const auto header = split_commas(lines[0]);
  NANGUARD_CHECK(header[0] == "step", "{} line 1: expected the header to start with 'step', found '{}'", file,
                 header[0]);
  if (header == std::vector<std::string>{"step", "signal", "layer", "value"}) return pivot_long_signals(lines, file);
  SignalTable table;
  for (size_t c = 1; c < header.size(); ++c) table.columns.push_back({header[c], {}});
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const auto cells = split_commas(lines[i]);
    NANGUARD_CHECK(cells.size() == header.size(), "{} line {}: expected {} values (as in the header), found {}", file,
                   i + 1, header.size(), cells.size());
    double step = 0;
    NANGUARD_CHECK(parse_cell(cells[0], &step, file, i + 1, 1, "step") && std::isfinite(step),
                   "{} line {} column 1 (step): expected a step number", file, i + 1);
    table.steps.push_back(step);
    for (size_t c = 1; c < cells.size(); ++c) {
      double v = std::nan("");
      parse_cell(cells[c], &v, file, i + 1, c + 1, header[c]);
      table.columns[c - 1].second.push_back(v);
    }
  }
  return table;
}

std::vector<GuardEvent> parse_events_jsonl(const std::string& text, const std::string& file,
                                           std::vector<FileProblem>* problems) {
  std::vector<GuardEvent> events;
  const auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    auto problem = [&](const std::string& what) {
      if (problems) problems->push_back({file, fmt::format("line {} {}", i + 1, what)});
    };
    json j = json::parse(lines[i], nullptr, false);
    if (j.is_discarded()) {
      problem("is not JSON (expected one JSON object per line); skipped");
      continue;
    }
    if (!j.is_object()) {
      problem(fmt::format("is JSON but not an object (found {}); skipped", j.type_name()));
      continue;
    }
    if (!j.contains("step") || !j["step"].is_number_integer() || !j.contains("kind") || !j["kind"].is_string()) {
      problem("lacks an integer \"step\" or a string \"kind\"; skipped");
      continue;
    }
    GuardEvent e;
    e.step = j["step"].get<int64_t>();
    e.kind = j["kind"].get<std::string>();
    e.cause = str_field(j, "cause");
    e.confidence = j.contains("confidence") && j["confidence"].is_number() ? j["confidence"].get<double>() : std::nan("");
    e.phase = str_field(j, "phase");
    e.op = str_field(j, "op");
    e.module = str_field(j, "module");
    e.explanation = str_field(j, "explanation");
    e.action = str_field(j, "action");
    e.detail = str_field(j, "detail");
    if (j.contains("rank") && j["rank"].is_number_integer()) e.rank = j["rank"].get<int>();
    if (j.contains("samples") && j["samples"].is_array()) {
      for (const auto& s : j["samples"]) {
        if (s.is_number_integer()) e.samples.push_back(s.get<int64_t>());
      }
    }
    events.push_back(std::move(e));
  }
  return events;
}

RunRecord read_run(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw IoError(dir.string() + " is not a run folder (not a directory)");
  RunRecord run;
  run.dir = dir;
  run.name = std::filesystem::absolute(dir).lexically_normal().filename().string();
  if (run.name.empty()) run.name = std::filesystem::absolute(dir).parent_path().filename().string();

  // Reads one file; absent -> `missing`, unreadable/corrupt -> `problems`.
  auto load = [&](const char* name, auto&& parse) {
    std::string text;
    try {
      if (!read_optional(dir / name, &text)) {
        run.missing.push_back(name);
        return;
      }
      parse(text);
    } catch (const std::exception& e) {
      // Parser messages start with the file name; the problem already carries it.
      std::string what = e.what();
      const std::string prefix = std::string(name) + " ";
      if (what.rfind(prefix, 0) == 0) what = what.substr(prefix.size());
      run.problems.push_back({name, what});
    }
  };
  auto json_object = [&](const char* name, std::string* out) {
    return [name, out](const std::string& text) {
      json j = json::parse(text, nullptr, false);
      NANGUARD_CHECK(!j.is_discarded(), "{} is not valid JSON (expected one JSON object)", name);
      NANGUARD_CHECK(j.is_object(), "{} holds JSON {} (expected an object)", name, j.type_name());
      *out = text;
    };
  };

  load(RunFiles::history, [&](const std::string& t) { run.history = parse_history_csv(t, RunFiles::history); });
  load(RunFiles::summary, json_object(RunFiles::summary, &run.summary_json));
  load(RunFiles::config, [&](const std::string& t) { run.config_toml = t; });
  load(RunFiles::events, [&](const std::string& t) { run.events = parse_events_jsonl(t, RunFiles::events, &run.problems); });
  load(RunFiles::signals, [&](const std::string& t) { run.signals = parse_signals_csv(t, RunFiles::signals); });
  load(RunFiles::audit, json_object(RunFiles::audit, &run.audit_json));
  load(RunFiles::environment, json_object(RunFiles::environment, &run.environment_json));

  if (!run.summary_json.empty()) {
    const json j = json::parse(run.summary_json, nullptr, false);
    if (j.contains("name") && j["name"].is_string()) run.name = j["name"].get<std::string>();
  }
  const auto images = dir / RunFiles::audit_images;
  if (std::filesystem::is_directory(images, ec)) {
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(images, ec)) {
      if (entry.path().extension() == ".svg") files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      const std::string rel = std::string(RunFiles::audit_images) + "/" + f.filename().string();
      std::string text;
      try {
        read_optional(f, &text);
      } catch (const std::exception& e) {
        run.problems.push_back({rel, e.what()});
        continue;
      }
      if (text.find("<svg") == std::string::npos) {
        run.problems.push_back({rel, "is not an SVG image (no <svg> element); not shown"});
        continue;
      }
      run.audit_images.push_back({f.filename().string(), text});
    }
  }
  return run;
}

}  // namespace nanguard::report
