// Training signals the monitor records: per step (loss, gradient norm, learning rate) and on
// sampled steps per layer (gradient and weight norms, update-to-weight ratio, activation
// statistics) plus optimizer-state statistics. Layer names follow the module attribution of
// the op tracer: parameter "layers.0.dense.weight" belongs to layer "layers.0.dense".
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace nanguard::monitor {

// The layer of a parameter name: everything before the last dot ("bias" -> "bias").
std::string layer_of(const std::string& parameter_name);

struct LayerSignals {
  std::string layer;
  double grad_norm = 0;     // L2 norm over the layer's parameter gradients
  double weight_norm = 0;   // L2 norm over its parameters (after the step)
  double update_ratio = 0;  // ||w_after - w_before|| / ||w_before||; NaN when not measured
  int64_t numel = 0;        // elements of the layer's parameters (0: unknown)
};

struct ActivationStats {
  std::string layer;              // scope the activation ran in ("layers.1.dense")
  std::string kind;               // "relu", "sigmoid" or "tanh"
  double mean = 0, std = 0;       // over every element of the output
  double dead_fraction = 0;       // relu: units (features) that are zero for the whole batch
  double saturated_fraction = 0;  // sigmoid/tanh: elements within the margin of a bound
  int64_t units = 0;              // features per sample
};

// Second-moment statistics of the optimizer state (Adam/AdamW exp_avg_sq, RMSprop square_avg,
// Adagrad sum); NaN when the optimizer keeps none.
struct OptimizerStateStats {
  double max = 0, mean = 0;
};

struct StepSignals {
  int64_t step = 0;
  double loss = 0, grad_norm = 0, learning_rate = 0;
  bool sampled = false;  // the fields below are set only on sampled steps
  std::vector<LayerSignals> layers;
  std::vector<ActivationStats> activations;
  OptimizerStateStats optimizer_state;
};

// Statistics of one activation output; kind is "relu", "sigmoid" or "tanh". Dim 0 is the batch.
ActivationStats activation_stats(const at::Tensor& output, const std::string& kind, double saturation_margin);

// Per-layer signals, layers in the order they first appear in names. `before` holds the
// parameters before the optimizer step (same order) or is empty (update_ratio NaN).
std::vector<LayerSignals> layer_signals(const std::vector<std::string>& names, const std::vector<at::Tensor>& params,
                                        const std::vector<at::Tensor>& before);

OptimizerStateStats optimizer_state_stats(const std::vector<at::Tensor>& second_moments);

// Where a recorder gets activations from: op callbacks see every ReLU, sigmoid and tanh op of
// any model, but make every op of the step pay for the callback; a model that reports its own
// activation outputs (report_activation) costs nothing per op. The trainer's models report.
enum class ActivationSource { op_callbacks, model_reports };

// Records the outputs of ReLU, sigmoid and tanh activations run on this thread while alive
// (meant for sampled steps only), attributed to the NANGUARD_SCOPE they ran in. With op
// callbacks, ops in scopes starting with "loss" are left out.
class ActivationRecorder {
 public:
  explicit ActivationRecorder(double saturation_margin = 0.01,
                              ActivationSource source = ActivationSource::op_callbacks);
  ~ActivationRecorder();
  ActivationRecorder(const ActivationRecorder&) = delete;
  ActivationRecorder& operator=(const ActivationRecorder&) = delete;
  // Stops recording and returns the statistics, one per recorded op in run order.
  std::vector<ActivationStats> finish();

  struct State;

 private:
  void stop();

  std::shared_ptr<State> state_;
  State* previous_ = nullptr;  // the recorder this one took over from, if any
  uint64_t handle_ = 0;
  bool running_ = false;
  double margin_ = 0.01;
};

// Called by a layer with the output of its activation (kind "relu", "sigmoid" or "tanh"):
// recorded when a recorder reading model reports is active on this thread, else one
// thread-local read. Throws ValueError for any other kind.
void report_activation(const at::Tensor& output, const char* kind);

// Writes the history as CSV with the header step,signal,layer,value (one row per number;
// signals: loss, grad_norm, lr, layer_grad_norm, weight_norm, update_ratio, act_mean, act_std,
// dead_fraction, saturated_fraction, opt_state_max, opt_state_mean). Throws IoError.
void write_signals_csv(const std::filesystem::path& path, const std::vector<StepSignals>& history);

}  // namespace nanguard::monitor
