// Everything a report shows, read back from a run folder. Reading is tolerant: a missing or
// corrupt file leaves its part empty and adds a FileProblem that names the file and what was
// expected, so the report still renders what it can.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "nanguard/guard/incident.h"
#include "nanguard/train/history.h"

namespace nanguard::report {

// The file names a run folder may hold (relative to the folder).
struct RunFiles {
  static constexpr const char* history = "history.csv";
  static constexpr const char* summary = "summary.json";
  static constexpr const char* config = "config.toml";
  static constexpr const char* events = "events.jsonl";
  // Per-step monitor signals: CSV with a "step" column first; "grad_norm" is the total gradient
  // norm, "grad_norm/<layer>" the per-layer norms, "lr" the learning rate, others are signals.
  static constexpr const char* signals = "monitor.csv";
  static constexpr const char* audit = "audit.json";
  static constexpr const char* audit_images = "audit";  // folder of histogram SVGs
  static constexpr const char* environment = "env.json";
};

struct FileProblem {
  std::string file;     // relative to the run folder, e.g. "events.jsonl"
  std::string message;  // e.g. "line 3 is not JSON (expected one object per line): ..."
};

// Per-step signals: one row per step, named columns.
struct SignalTable {
  std::vector<double> steps;
  std::vector<std::pair<std::string, std::vector<double>>> columns;
  bool empty() const { return steps.empty(); }
};

// An incident with the repairs that followed it (action events of the same step).
struct IncidentRecord {
  GuardEvent incident;
  std::vector<GuardEvent> actions;
  // The last action's result in words, e.g. "rollback: rolled back to step 100".
  std::string outcome() const;
};

// summary.json's verdict: did the run learn (report/verdict.h).
struct RunVerdictRecord {
  bool known = false;  // summary.json holds a verdict
  bool learned = true;
  std::string headline;
};

struct RunRecord {
  std::filesystem::path dir;
  std::string name;  // the run's name (summary.json "name", else the folder name)
  History history;
  std::vector<GuardEvent> events;  // every event, in file order
  SignalTable signals;
  std::string summary_json;      // raw JSON text of summary.json ("" when absent or corrupt)
  std::string config_toml;       // raw text of config.toml
  std::string audit_json;        // raw JSON text of audit.json
  std::string environment_json;  // raw JSON text of env.json
  std::vector<std::pair<std::string, std::string>> audit_images;  // file name, SVG text
  std::vector<std::string> missing;     // optional files that are absent
  std::vector<FileProblem> problems;    // files present but wrong (or required and absent)

  std::vector<IncidentRecord> incidents() const;
  size_t count(const std::string& kind) const;  // events of one kind
  // Training steps per epoch from summary.json (steps / epochs); 0 when unknown.
  double steps_per_epoch() const;
  // The verdict in summary.json (known false when absent or malformed).
  RunVerdictRecord verdict() const;
};

// Reads a run folder; never throws for a bad file (see problems), throws IoError only when
// dir is not a folder.
RunRecord read_run(const std::filesystem::path& dir);

// Parsers used by read_run, public for tests and other tools. Each throws ValueError naming
// `file_name` and the line/column with what was expected.
History parse_history_csv(const std::string& text, const std::string& file_name);
SignalTable parse_signals_csv(const std::string& text, const std::string& file_name);
// Every valid line of events.jsonl; each bad line adds one problem and is skipped.
std::vector<GuardEvent> parse_events_jsonl(const std::string& text, const std::string& file_name,
                                           std::vector<FileProblem>* problems);

}  // namespace nanguard::report
