// The NaN zoo: small seeded training runs that each go wrong in one known way, and a harness
// that runs one of them under nanguard or a baseline and measures what happened.
//
// A scenario describes itself (true cause, expected birth op, repairable or not) and builds
// the objects of one run: data, model, loss, optimizer and its fault. The harness computes
// every result field from the run itself (detection, localization, diagnosis, accuracy), never
// from the scenario's labels; the labels are only used to judge the result.
//
//   nanguard::zoo::Scenario s = ...;                 // or builtin_scenario("Z3")
//   auto r = nanguard::zoo::run_scenario(s, nanguard::zoo::RunOptions().baseline("nanguard"));
//   std::cout << r.to_json();
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "nanguard/data/dataset.h"

namespace nanguard::dist {
class DataParallel;
}

namespace nanguard::zoo {

// What a scenario is built with for one run.
struct BuildContext {
  uint64_t seed = 0;
  // false builds the clean twin of the scenario (same data, model and schedule, no fault);
  // its accuracy is the bar a repair must reach.
  bool inject_fault = true;
  // Folder with the four MNIST IDX files (scenarios that need MNIST).
  std::filesystem::path mnist_dir;
  // Training / test samples (0: the scenario's default). Smaller values make quick tests.
  int64_t train_samples = 0;
  int64_t test_samples = 0;
  // Epochs (0: the scenario's default).
  int64_t epochs = 0;
};

// Where a step is when a fault hook runs.
struct StepInfo {
  int64_t step = 0;       // global training step, counted from 0
  int64_t execution = 0;  // how often this step's loss closure ran before (0: first time)
};

// The objects of one run, built fresh by Scenario::build.
struct ScenarioRun {
  data::TensorDataset train;
  data::TensorDataset test;
  // The model; its parameters are what the guard watches and the optimizer updates.
  std::shared_ptr<torch::nn::Module> model;
  // Model output for a batch of inputs: class scores [N, C] (accuracy takes the argmax).
  std::function<at::Tensor(const at::Tensor& x)> forward;
  // Scalar loss of the model output against the targets (the harness runs backward).
  std::function<at::Tensor(const at::Tensor& output, const at::Tensor& y)> loss;
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  int64_t epochs = 3;
  int64_t batch_size = 64;
  // Optional: switches the loss to its stable form (the guard's stable_loss repair); returns
  // false when it cannot.
  std::function<bool()> use_stable_loss;
  // Optional fault hook, called after backward on every execution of a step's loss closure
  // (replays and recomputes included), e.g. to corrupt a gradient once.
  std::function<void(const StepInfo&)> after_backward;
};

// A scenario of the zoo: its description, the truth used to judge a result, and a builder.
struct Scenario {
  std::string id;       // "Z3"
  std::string title;    // one line
  std::string trigger;  // what goes wrong and with which numbers
  // True cause (a taxonomy identifier, e.g. "unsafe_loss") and sub-kind ("log_of_zero" or "").
  std::string true_cause;
  std::string true_subkind;
  // Further top causes that also count as correct (e.g. bad_initialization beside
  // vanishing_gradients): "cause" accepts any sub-kind, "cause/subkind" only that one.
  std::vector<std::string> also_correct;
  // The run produces a non-finite value when unguarded (false: only a warning can detect it).
  bool produces_nonfinite = true;
  // A repair can bring the run to the clean run's accuracy.
  bool repairable = true;
  // Expected birth op ("aten::log") and phase ("forward"); "" where none is expected (the
  // non-finite value is in the data, or the fault does not reproduce).
  std::string expected_birth_op;
  std::string expected_phase;
  // Dataset ids a correct diagnosis blames (bad or extreme samples); empty when none. Where a
  // birth op is expected too, both must be right.
  std::vector<int64_t> expected_samples;
  // Whether build() reads MNIST from BuildContext::mnist_dir.
  bool needs_mnist = true;
  // Builds the objects of one run. The harness seeds torch's generator with ctx.seed first.
  std::function<ScenarioRun(const BuildContext& ctx)> build;

  // Throws ValueError when id, true_cause or build is missing.
  void validate() const;
};

// The built-in scenarios Z0-Z15, in order.
const std::vector<Scenario>& builtin_scenarios();
// A built-in scenario by id (case-insensitive); throws ValueError listing the ids.
const Scenario& builtin_scenario(const std::string& id);

// The baselines a scenario can run under.
//   nanguard:  the Guard with its own diagnosis and repair;
//   prevent:   the same with the monitor's prevention on (adaptive clipping from the gradient
//              norm's z-score, a learning-rate cut when growth forecasts an overflow);
//   none:      plain training;
//   terminate: stop at the first non-finite loss (Keras TerminateOnNaN);
//   skip:      skip every step whose loss or gradients are non-finite (a dynamic loss scaler);
//   random:    the Guard, but each incident gets one repair action drawn at random (seeded).
const std::vector<std::string>& baseline_names();
// Throws ValueError naming the valid baselines when `name` is not one of them.
void check_baseline(const std::string& name);
// Whether a baseline's results carry nanguard's diagnosis (nanguard, prevent).
bool baseline_diagnoses(const std::string& name);

// Results of earlier runs reused within one table: the clean accuracy and the unguarded run's
// first non-finite step per scenario, seed and size.
struct RunCache {
  std::map<std::string, double> clean_accuracy;
  std::map<std::string, int64_t> first_nonfinite_step;
};

struct RunOptions {
  // One of baseline_names().
  TORCH_ARG(std::string, baseline) = "nanguard";
  TORCH_ARG(uint64_t, seed) = 0;
  // Folder with the MNIST IDX files.
  TORCH_ARG(std::filesystem::path, mnist_dir) = "data/mnist";
  // Size overrides passed to the scenario (0: its defaults).
  TORCH_ARG(int64_t, train_samples) = 0;
  TORCH_ARG(int64_t, test_samples) = 0;
  TORCH_ARG(int64_t, epochs) = 0;
  // Also run the clean twin for clean_accuracy and `repaired`.
  TORCH_ARG(bool, measure_clean) = true;
  // Also run unguarded (when the baseline is not `none`) for first_nonfinite_step.
  TORCH_ARG(bool, measure_unguarded) = true;
  // Shared between runs of one table; null: nothing is reused.
  TORCH_ARG(std::shared_ptr<RunCache>, cache) = nullptr;

  // Data parallelism: this process is one rank of `data_parallel` (null: one process). The
  // scenario's batch is the global batch, split evenly over the ranks, so the run is
  // comparable with the one-process run and its clean twin. Guarded baselines only.
  TORCH_ARG(std::shared_ptr<dist::DataParallel>, data_parallel) = nullptr;
  // The rank the fault lives on (-1: every rank). Data faults (bad, blank or unscaled samples)
  // are in that rank's copy of the training set only, the other ranks read the clean twin's;
  // a fault hook (a transient NaN in a gradient) runs on that rank only. Faults of the model,
  // loss or optimizer (a learning rate too high, an unsafe loss) are on every rank: the ranks
  // hold one model.
  TORCH_ARG(int, fault_rank) = -1;
  // The fault rank kills itself (SIGKILL) at this global step (-1: never): a rank that dies
  // mid-epoch. The others must end with an error naming it.
  TORCH_ARG(int64_t, kill_step) = -1;
};

struct ScenarioResult {
  std::string scenario;
  std::string baseline;
  uint64_t seed = 0;
  // Something fired: an incident or a warning (nanguard, random), a non-finite loss
  // (terminate) or non-finite gradients (skip). `none` never detects.
  bool detected = false;
  int64_t detected_step = -1;
  // Localization and diagnosis of the first incident ("" when none).
  std::string birth_op;
  std::string phase;
  std::string module;
  // What the guard's check caught: "loss", "gradients", "gradient_norm" (finite gradients
  // whose norm overflows float32, before anything is non-finite), "parameters", ...
  std::string failed_check;
  std::vector<int64_t> samples;   // dataset ids blamed (union over incidents)
  std::string top_cause;          // "unsafe_loss/log_of_zero"
  double confidence = 0;
  std::string explanation;
  std::string suggestion;
  // Judged against the scenario's truth: every localization it expects holds (birth op and
  // phase, or the phase alone; the blamed samples); top cause one of the true ones.
  bool localization_correct = false;
  bool cause_correct = false;
  std::vector<std::string> actions;  // repair actions applied, over all incidents
  double final_accuracy = 0;         // test accuracy at the end, in [0, 1]
  double clean_accuracy = -1;        // the clean twin's (-1: not measured)
  bool repaired = false;             // final within 1 point of clean
  bool finite_at_end = true;         // parameters finite at the end
  int64_t incidents = 0;
  int64_t warnings = 0;
  int64_t first_warning_step = -1;
  // First step at which the unguarded run went non-finite (-1: never or not measured).
  int64_t first_nonfinite_step = -1;
  int64_t steps = 0;          // steps run
  int64_t skipped_steps = 0;  // steps whose update was dropped
  bool stopped = false;       // training stopped early
  double seconds = 0;         // wall time of this run (without the clean and unguarded twins)
  double diagnosis_seconds = -1;  // detection to diagnosis, first incident (-1: none)
  // Data parallelism (world_size 1: one process).
  int world_size = 1;
  int fault_rank = -1;                // the rank the fault lived on (-1: every rank)
  int rank = -1;                      // the rank the first incident happened on (-1: none)
  std::vector<int> incident_ranks;    // per incident, the rank it happened on
  bool weights_identical = true;      // every rank ended with the same weights (digests equal)

  // One JSON object with every field above.
  std::string to_json() const;
};

// Runs one scenario under one baseline. Throws ValueError for an unknown baseline or a scenario
// that fails validate(); IoError when MNIST is needed and missing.
ScenarioResult run_scenario(const Scenario& scenario, const RunOptions& options = {});

// Accuracy of a model output ([N, C] scores) against integer labels, in [0, 1].
double accuracy(const at::Tensor& output, const at::Tensor& labels);

}  // namespace nanguard::zoo
