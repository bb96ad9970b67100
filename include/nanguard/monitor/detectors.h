// Detectors of the training monitor: each reads one signal and returns a Warning when it
// crosses its threshold. They are plain state machines, testable on synthetic series.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nanguard/monitor/signals.h"
#include "nanguard/monitor/warning.h"

namespace nanguard::monitor {

// Largest finite float32 (the overflow limit of the loss) and the gradient norm at which the
// guard's float32 squared norm overflows.
inline constexpr double kFloat32Max = 3.4028234663852886e38;
inline constexpr double kGradNormOverflow = 1.8446742974197924e19;

// Remembers when a detector last fired per layer, so a condition that persists warns once per
// cooldown.
class Cooldown {
 public:
  explicit Cooldown(int64_t steps) : steps_(steps) {}
  // True (and remembers the step) when the layer may warn at this step.
  bool allow(int64_t step, const std::string& layer = "");

 private:
  int64_t steps_;
  std::map<std::string, int64_t> last_;
};

// Exponential moving mean and variance of log(value) (values must be > 0).
class LogEma {
 public:
  explicit LogEma(int64_t window) : alpha_(2.0 / (static_cast<double>(window) + 1.0)) {}
  void add(double value);
  int64_t count() const { return count_; }
  double mean() const { return mean_; }
  // Standard deviation, floored at 5% relative spread so a flat series cannot turn noise into
  // huge z-scores.
  double std() const;
  double z(double value) const;

 private:
  double alpha_;
  double mean_ = 0, var_ = 0;
  int64_t count_ = 0;
};

// Spike of a positive signal: z-score of its log against the moving window above z_threshold,
// or (ratio > 0) the value above `ratio` times the maximum of the last `window` values.
// signal is "loss" or "grad_norm"; the detector is named "<signal>_spike".
class SpikeDetector {
 public:
  SpikeDetector(std::string signal, double z_threshold, double ratio, int64_t window, int64_t warmup, int64_t cooldown);
  std::optional<Warning> update(int64_t step, double value);
  // The z-score the value would have against the window (0 before warm-up).
  double z(double value) const;
  bool warm() const { return ema_.count() >= warmup_; }
  const LogEma& window() const { return ema_; }
  void reset();

 private:
  std::string signal_;
  double z_threshold_, ratio_;
  int64_t window_, warmup_;
  LogEma ema_;
  // The maximum of the last `window` values, kept as a falling run of (index, value): each value
  // enters and leaves once, so a step reads two ends instead of the whole window.
  std::deque<std::pair<int64_t, double>> maxima_;
  int64_t seen_ = 0;  // values since the last reset
  Cooldown cooldown_;
  int64_t cooldown_steps_;
};

// Geometric growth of a positive signal: `steps` consecutive rises whose geometric mean is at
// least `factor` per step. Forecasts the steps left before the signal reaches `limit`.
// After `warmup` values the last value must also stand z_gate standard deviations above the
// log moving window (of `window` steps): heavy-tailed noise (late mini-batch losses) often
// rises a few steps in a row, a divergence leaves its range. Named "<signal>_growth".
class GrowthDetector {
 public:
  GrowthDetector(std::string signal, int64_t steps, double factor, double limit, int64_t cooldown,
                 int64_t window = 100, int64_t warmup = 50, double z_gate = 4.0);
  std::optional<Warning> update(int64_t step, double value);
  void reset();

 private:
  std::string signal_;
  int64_t steps_;
  double factor_, limit_;
  int64_t window_, warmup_;
  double z_gate_;
  LogEma ema_;
  std::deque<double> recent_;
  Cooldown cooldown_;
};

// Vanishing gradients: the first layer's gradient norm at most `ratio` times the last layer's.
class VanishingDetector {
 public:
  VanishingDetector(double ratio, int64_t cooldown) : ratio_(ratio), cooldown_(cooldown) {}
  std::optional<Warning> update(int64_t step, const std::vector<LayerSignals>& layers);

 private:
  double ratio_;
  Cooldown cooldown_;
};

// Dying ReLU (kind "relu", field dead_fraction) or saturation (kinds "sigmoid"/"tanh", field
// saturated_fraction): the fraction at or above `fraction` on `patience` sampled steps in a row.
class ActivationDetector {
 public:
  enum class Mode { dying_relu, saturation };
  ActivationDetector(Mode mode, double fraction, int64_t patience, int64_t cooldown);
  std::vector<Warning> update(int64_t step, const std::vector<ActivationStats>& stats);

 private:
  Mode mode_;
  double fraction_;
  int64_t patience_;
  std::map<std::string, int64_t> streak_;
  Cooldown cooldown_;
};

// Oscillating loss: over the last `window` steps every loss difference alternates in sign and
// their mean magnitude is at least `amplitude` times the mean loss.
class OscillationDetector {
 public:
  OscillationDetector(int64_t window, double amplitude, int64_t warmup, int64_t cooldown);
  std::optional<Warning> update(int64_t step, double loss);

 private:
  int64_t window_;
  double amplitude_;
  int64_t warmup_, seen_ = 0;
  std::deque<double> recent_;
  Cooldown cooldown_;
};

// Stalled loss: a slow moving average of the loss (window steps/2) has not improved by
// `tolerance` (relative) over `steps` steps.
class StallDetector {
 public:
  StallDetector(int64_t steps, double tolerance, int64_t warmup, int64_t cooldown);
  std::optional<Warning> update(int64_t step, double loss);

 private:
  int64_t steps_;
  double tolerance_;
  int64_t warmup_, seen_ = 0;
  double alpha_, ema_ = 0;
  std::deque<std::pair<int64_t, double>> past_;  // (step, smoothed loss), oldest first
  Cooldown cooldown_;
};

}  // namespace nanguard::monitor
