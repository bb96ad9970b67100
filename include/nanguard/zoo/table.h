// The zoo's table: every scenario under every baseline over a few seeds, side by side, plus
// PyTorch's anomaly mode and nanguard from Python on the scenarios that have a Python equivalent.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "nanguard/zoo/scenario.h"

namespace nanguard::zoo {

// One run of PyTorch's anomaly mode on a Python equivalent of a scenario.
struct AnomalyResult {
  std::string scenario;
  uint64_t seed = 0;
  bool detected = false;      // anomaly mode raised an error
  int64_t detected_step = -1;
  std::string op;             // the backward function it named, e.g. "LogBackward0"
  bool op_correct = false;    // it names the scenario's birth op (LogBackward0 for aten::log)
  double seconds = 0;         // wall time of the run until the error (or the end)
  std::string error;          // why the script could not run ("" when it ran)
};

// One run of nanguard from Python (zoo/python/nanguard_zoo.py) on a Python equivalent.
struct PythonGuardResult {
  std::string scenario;
  uint64_t seed = 0;
  bool detected = false;      // an incident or a warning
  int64_t detected_step = -1;
  std::string birth_op;       // of the first incident ("" when none)
  std::string phase;
  std::string cause;          // the first incident's top cause, e.g. "unsafe_loss/log_of_zero"
  std::vector<int64_t> samples;  // ids blamed over all incidents
  double final_accuracy = -1;    // on the scenario's test images, in [0, 1]
  double clean_accuracy = -1;    // of the Python clean twin, unguarded, same seed (-1: not run)
  bool finite = false;           // parameters finite at the end
  double seconds = 0;            // wall time of the guarded training
  std::string error;             // why the script could not run ("" when it ran)
};

// One data-parallel run of a scenario (`nanguard zoo run ID --nproc N --fault-rank R`), run as
// its own command so that its workers are fresh processes.
struct DataParallelResult {
  std::string scenario;
  uint64_t seed = 0;
  int world_size = 0;
  int fault_rank = -1;         // -1: the fault is on every rank
  int64_t kill_step = -1;      // the fault rank killed itself at this step (-1: no kill)
  std::string fault;           // what went wrong, in words
  int exit_code = -1;          // of the command (7: a peer died)
  std::string error;           // the command's error line ("" when it ended with 0)
  double seconds = 0;          // wall time of the command (the clean twin included)
  // From its result.json (when it ended with 0).
  std::vector<int> incident_ranks;
  std::string top_cause;
  bool cause_correct = false;
  std::vector<int64_t> samples;
  std::vector<std::string> actions;
  double final_accuracy = -1;
  double clean_accuracy = -1;
  bool repaired = false;
  bool weights_identical = false;
};

// The data-parallel cases of the table, as (scenario, fault rank, kill step, fault in words).
struct DataParallelCase {
  std::string scenario;
  int fault_rank = -1;
  int64_t kill_step = -1;
  std::string fault;
};
const std::vector<DataParallelCase>& data_parallel_cases();

struct TableOptions {
  // Throws ValueError for an unknown scenario or baseline or seeds < 1 (run_table calls it;
  // call it first to reject bad options before anything is written).
  void validate() const;

  // Scenario ids to run (empty: all built-in ones).
  TORCH_ARG(std::vector<std::string>, only);
  // Seeds 0..seeds-1 for every baseline.
  TORCH_ARG(int64_t, seeds) = 3;
  // Baselines to run (each one of baseline_names()).
  TORCH_ARG(std::vector<std::string>, baselines) = baseline_names();
  TORCH_ARG(std::filesystem::path, mnist_dir) = "data/mnist";
  // Size overrides for every scenario (0: the scenario's defaults).
  TORCH_ARG(int64_t, train_samples) = 0;
  TORCH_ARG(int64_t, test_samples) = 0;
  TORCH_ARG(int64_t, epochs) = 0;
  // Python with torch for the anomaly-mode column, and the folder of zoo/python scripts;
  // the column is left out when either is empty or the interpreter lacks torch.
  TORCH_ARG(std::string, python) = "/usr/bin/python3";
  TORCH_ARG(std::filesystem::path, python_dir);
  // The nanguard program and the processes per data-parallel run for the table's
  // data-parallel section; the section is left out when the program is empty or nproc < 2.
  TORCH_ARG(std::filesystem::path, nanguard);
  TORCH_ARG(int, nproc) = 2;
  // Called after every run (progress output).
  TORCH_ARG(std::function<void(const ScenarioResult&)>, on_result);
  TORCH_ARG(std::function<void(const DataParallelResult&)>, on_data_parallel);
};

struct Table {
  std::vector<ScenarioResult> results;
  std::vector<AnomalyResult> anomaly;
  bool anomaly_available = false;
  std::string anomaly_note;  // why the anomaly-mode column is missing, if it is
  // nanguard from Python beside anomaly mode (run when anomaly mode is).
  std::vector<PythonGuardResult> python_guard;
  // The data-parallel section.
  std::vector<DataParallelResult> data_parallel;
  int64_t seeds = 0;
  double seconds = 0;

  // The table as Markdown: per-scenario rows, the baselines side by side, totals.
  std::string to_markdown() const;
  // Every result and the totals as one JSON document.
  std::string to_json() const;
};

// Runs the table. Throws ValueError for an unknown scenario or baseline or seeds < 1.
Table run_table(const TableOptions& options);

// Creates `dir` if needed and checks it can be written; throws IoError naming it otherwise.
// Call it before a long run so that a bad --out fails at once.
void prepare_output_dir(const std::filesystem::path& dir);
// Writes dir/result.json (IoError when it cannot).
void write_result(const ScenarioResult& result, const std::filesystem::path& dir);
// Writes dir/table.md and dir/table.json (IoError when it cannot).
void write_table(const Table& table, const std::filesystem::path& dir);

// Runs the Python equivalent of one scenario under nanguard from Python (import nanguard); the
// result's error says why it could not run (no script, no nanguard package, a failed run).
PythonGuardResult run_python_guard(const std::string& python, const std::filesystem::path& python_dir,
                                   const std::string& scenario, uint64_t seed, const std::filesystem::path& mnist_dir);

// Runs one data-parallel case with `nanguard zoo run` (as `program`) in N processes; the
// result's error is the command's own when it failed. `extra` is appended to its command line.
DataParallelResult run_data_parallel(const std::filesystem::path& program, const DataParallelCase& c, int nproc,
                                     uint64_t seed, const std::filesystem::path& mnist_dir,
                                     const std::vector<std::string>& extra = {});

// Runs the Python equivalent of one scenario under anomaly mode; the result's error says why
// it could not run (no script for the scenario, no torch, a failed run).
AnomalyResult run_anomaly_mode(const std::string& python, const std::filesystem::path& python_dir,
                               const std::string& scenario, uint64_t seed, const std::filesystem::path& mnist_dir);

}  // namespace nanguard::zoo
