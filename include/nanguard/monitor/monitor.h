// The training monitor: watches the signals of a healthy run and warns before it goes
// non-finite (loss and gradient-norm spikes, geometric growth with a forecast of the steps
// left before float32 overflow, vanishing gradients, dying ReLUs, saturated activations,
// oscillating and stalled loss). The Guard feeds it after each healthy step; it can also be
// used alone in any loop:
//
//   nanguard::monitor::Monitor mon(names, params);
//   ... loss.backward(); grad_norm = ...;
//   for (auto& w : mon.observe_step(step, loss, grad_norm, lr)) std::cout << w.message;
//   if (mon.sample_due(step)) mon.begin_update();
//   optimizer.step();
//   if (mon.sample_due(step)) for (auto& w : mon.end_update(step, second_moments)) ...;
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "nanguard/monitor/detectors.h"
#include "nanguard/monitor/options.h"
#include "nanguard/monitor/signals.h"
#include "nanguard/monitor/warning.h"

namespace nanguard::monitor {

class Monitor {
 public:
  // Parameters and their names ("layers.0.dense.weight"); throws ValueError on bad options or
  // when the two lists differ in length.
  Monitor(std::vector<std::string> names, std::vector<at::Tensor> params, MonitorOptions options = {});
  // The trainable parameters of a module, named as the module names them.
  explicit Monitor(torch::nn::Module& module, MonitorOptions options = {});

  // Whether the per-layer signals are due at this step (every sample_every steps, from step 0).
  bool sample_due(int64_t step) const;
  // Scalar signals of a healthy step, before its optimizer step; runs the spike, growth,
  // oscillation and stall detectors and returns their warnings.
  std::vector<Warning> observe_step(int64_t step, double loss, double grad_norm, double learning_rate);
  // The learning rate the step's update ran with, when it is known only after observe_step.
  void set_learning_rate(int64_t step, double learning_rate);
  // Adaptive clipping (option adaptive_clip): the norm to clip this gradient norm to, or 0 to
  // leave it (no spike, option off or not warmed up).
  double adaptive_clip_norm(double grad_norm) const;
  // Whether a warning asks for the learning-rate cut (option lr_cut, growth forecast within
  // lr_cut_horizon steps); at most one cut per growth_steps steps, so the loss and the
  // gradient norm warning together cut once.
  bool wants_lr_cut(const Warning& warning);
  // Sampled steps, before the optimizer step: keeps a copy of the parameters for the update ratio.
  void begin_update();
  // Sampled steps, after the optimizer step (gradients still in place): per-layer signals,
  // optimizer-state statistics, activation statistics recorded for this step; runs the
  // vanishing-gradient, dying-ReLU and saturation detectors and returns their warnings.
  std::vector<Warning> end_update(int64_t step, const std::vector<at::Tensor>& second_moments,
                                  std::vector<ActivationStats> activations = {});
  // Several models trained together (a GAN's generator and discriminator): the prefixes of
  // their layer names ("generator", "discriminator"). Vanishing gradients then compare the first
  // and last layer of each model, not one model's first layer with another's last.
  void set_models(std::vector<std::string> prefixes) { models_ = std::move(prefixes); }
  // After a rollback: the spike windows and growth runs restart (the history stays).
  void reset_trends();

  const MonitorOptions& options() const { return options_; }
  // One entry per observed step, oldest first (at most max_history).
  const std::vector<StepSignals>& history() const { return history_; }
  // Every warning so far.
  const std::vector<Warning>& warnings() const { return warnings_; }
  // write_signals_csv of the history.
  void write_csv(const std::filesystem::path& path) const;

 private:
  std::vector<Warning> keep(std::vector<Warning> found);

  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  MonitorOptions options_;
  std::vector<at::Tensor> before_;  // parameters before the sampled step's update
  bool have_before_ = false;
  int64_t last_lr_cut_ = -1;
  SpikeDetector loss_spike_, grad_spike_;
  GrowthDetector loss_growth_, grad_growth_;
  OscillationDetector oscillation_;
  StallDetector stall_;
  VanishingDetector vanishing_;
  ActivationDetector dying_relu_, saturation_;
  std::vector<StepSignals> history_;
  std::vector<Warning> warnings_;
  std::vector<std::string> models_;
};

}  // namespace nanguard::monitor
