// Options of the training monitor, with chainable setters like torch::nn::LinearOptions.
#pragma once

#include <cstdint>

#include <torch/arg.h>

namespace nanguard::monitor {

struct MonitorOptions {
  // Watch the training signals at all.
  TORCH_ARG(bool, enabled) = true;
  // Compute the per-layer signals (gradient/weight norms, update ratios, optimizer state) every S steps.
  TORCH_ARG(int64_t, sample_every) = 200;
  // Also record activation statistics (ReLU/sigmoid/tanh outputs) on the sampled steps.
  TORCH_ARG(bool, activations) = true;
  // Length in steps of the exponential moving window of the spike z-scores and the recent maximum.
  TORCH_ARG(int64_t, window) = 100;
  // Steps before the spike, oscillation and stall detectors may fire.
  TORCH_ARG(int64_t, warmup) = 50;
  // Steps between two warnings of one detector on one layer.
  TORCH_ARG(int64_t, cooldown) = 500;
  // Loss spike: z-score of log(loss) against its moving window.
  TORCH_ARG(double, loss_spike_z) = 8.0;
  // Loss spike: the loss exceeds this multiple of the recent maximum.
  TORCH_ARG(double, loss_spike_ratio) = 10.0;
  // Gradient-norm spike: z-score of log(gradient norm) against its moving window.
  TORCH_ARG(double, grad_spike_z) = 8.0;
  // Geometric growth: consecutive rising steps needed.
  TORCH_ARG(int64_t, growth_steps) = 4;
  // Geometric growth: least growth factor per step (geometric mean over the rising steps).
  TORCH_ARG(double, growth_factor) = 1.5;
  // Geometric growth after warm-up: least z-score of the last value's log against its window.
  TORCH_ARG(double, growth_z) = 6.0;
  // Vanishing gradients: first-to-last layer ratio of RMS gradients (norm / sqrt(size)) at or below this.
  TORCH_ARG(double, vanishing_ratio) = 1e-2;
  // Dying ReLU: fraction of a layer's units that output zero for the whole batch.
  TORCH_ARG(double, dead_relu_fraction) = 0.5;
  // Saturation: fraction of a layer's sigmoid/tanh outputs within saturation_margin of a bound.
  TORCH_ARG(double, saturation_fraction) = 0.25;
  // Saturation: distance to the bound (0/1 for sigmoid, -1/1 for tanh) that counts as saturated.
  TORCH_ARG(double, saturation_margin) = 0.01;
  // Sampled steps in a row an activation condition must hold before it warns.
  TORCH_ARG(int64_t, activation_patience) = 1;
  // Oscillation: steps over which every loss difference must alternate in sign.
  TORCH_ARG(int64_t, oscillation_window) = 40;
  // Oscillation: least mean |loss difference| relative to the loss level.
  TORCH_ARG(double, oscillation_amplitude) = 0.5;
  // Stalled loss: steps over which the smoothed loss must improve.
  TORCH_ARG(int64_t, stall_steps) = 3000;
  // Stalled loss: least relative improvement of the smoothed loss over stall_steps.
  TORCH_ARG(double, stall_tolerance) = 0.0;
  // Prevention: clip the gradient norm to exp(mean + clip_z * std) of its log window on a spike.
  TORCH_ARG(bool, adaptive_clip) = false;
  // Prevention: z-score above which the adaptive clip applies.
  TORCH_ARG(double, clip_z) = 4.0;
  // Prevention: multiply the learning rate by lr_cut_factor when growth forecasts overflow.
  TORCH_ARG(bool, lr_cut) = false;
  // Prevention: the factor of that cut.
  TORCH_ARG(double, lr_cut_factor) = 0.1;
  // Prevention: cut when the forecast overflow is at most this many steps away.
  TORCH_ARG(int64_t, lr_cut_horizon) = 100;
  // Steps of signal history kept for the run folder (older steps are dropped).
  TORCH_ARG(int64_t, max_history) = 200'000;

 public:
  // Throws ValueError naming the first option out of range.
  void validate() const;
};

}  // namespace nanguard::monitor
