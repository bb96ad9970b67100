#include "nanguard/monitor/detectors.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include <limits>

namespace nanguard::monitor {
namespace {

// Causes are the taxonomy identifiers of diagnose/ (spelled out: monitor sits below it).
// Compact numbers for messages: 0.0123, 4.56e+07.
std::string num(double x) {
  if (!std::isfinite(x)) return fmt::format("{}", x);
  const double a = std::abs(x);
  if (a != 0 && (a < 1e-3 || a >= 1e5)) return fmt::format("{:.3g}", x);
  return fmt::format("{:.4g}", x);
}

// Values a spike detector needs before its ratio rule may fire: from the second step on.
constexpr int64_t kRatioMinValues = 1;

const char* signal_text(const std::string& signal) {
  return signal == "loss" ? "the loss" : signal == "grad_norm" ? "the gradient norm" : "the signal";
}

}  // namespace

bool Cooldown::allow(int64_t step, const std::string& layer) {
  auto it = last_.find(layer);
  if (it != last_.end() && step - it->second < steps_ && step >= it->second) return false;
  last_[layer] = step;
  return true;
}

void LogEma::add(double value) {
  const double x = std::log(value);
  if (count_ == 0) {
    mean_ = x;
    var_ = 0;
  } else {
    // West's exponentially weighted mean and variance.
    const double d = x - mean_;
    const double incr = alpha_ * d;
    mean_ += incr;
    var_ = (1 - alpha_) * (var_ + d * incr);
  }
  ++count_;
}

double LogEma::std() const { return std::max(std::sqrt(var_), 0.05); }

double LogEma::z(double value) const { return (std::log(value) - mean_) / std(); }

SpikeDetector::SpikeDetector(std::string signal, double z_threshold, double ratio, int64_t window, int64_t warmup,
                             int64_t cooldown)
    : signal_(std::move(signal)),
      z_threshold_(z_threshold),
      ratio_(ratio),
      window_(window),
      warmup_(std::max<int64_t>(warmup, 2)),
      ema_(window),
      cooldown_(cooldown),
      cooldown_steps_(cooldown) {}

double SpikeDetector::z(double value) const {
  if (!warm() || !(value > 0) || !std::isfinite(value)) return 0;
  return ema_.z(value);
}

void SpikeDetector::reset() {
  ema_ = LogEma(window_);
  maxima_.clear();
  seen_ = 0;
}

std::optional<Warning> SpikeDetector::update(int64_t step, double value) {
  // The z-score lives in log space: losses and norms are positive and spike by factors.
  if (!(value > 0) || !std::isfinite(value)) return std::nullopt;
  std::optional<Warning> out;
  // The ratio rule needs no warm-up: a loss 10x the largest seen so far is rare in a healthy run
  // even at its start (where the loss is at its maximum), and an extreme sample can arrive in
  // the second batch.
  const int64_t recent = std::min(seen_, window_);  // values in the window
  const bool ratio_ready = ratio_ > 0 && recent >= kRatioMinValues;
  if (warm() || ratio_ready) {
    const double z = warm() ? ema_.z(value) : 0.0;
    const double recent_max = maxima_.empty() ? 0 : maxima_.front().second;
    const bool z_fires = warm() && z >= z_threshold_;
    const bool ratio_fires = ratio_ready && recent_max > 0 && value >= ratio_ * recent_max;
    if ((z_fires || ratio_fires) && cooldown_.allow(step)) {
      Warning w;
      w.detector = signal_ + "_spike";
      w.step = step;
      // Before warm-up only the ratio rule can fire: report its numbers.
      w.value = warm() ? z : value / recent_max;
      w.threshold = warm() ? z_threshold_ : ratio_;
      w.cause = signal_ == "grad_norm" ? "exploding_gradients" : "lr_too_high";
      const double typical = std::exp(ema_.mean());
      w.message = warm() ? fmt::format("{} spiked to {} at step {} (z-score {} of its log over the last ~{} steps, typical {}",
                                       signal_text(signal_), num(value), step, num(z), window_, num(typical))
                         : fmt::format("{} spiked to {} at step {} (within the first {} steps, typical {}",
                                       signal_text(signal_), num(value), step, recent + 1, num(typical));
      if (recent_max > 0)
        w.message += fmt::format("; {}x the recent maximum {}", num(value / recent_max), num(recent_max));
      w.message += ")";
      w.suggestion = signal_ == "grad_norm"
                         ? "clip the gradient norm (e.g. to a few times its typical value) or lower the learning rate"
                         : "check the batch of this step for outliers, lower the learning rate or clip gradients";
      out = w;
    }
  }
  ema_.add(value);
  while (!maxima_.empty() && maxima_.back().second <= value) maxima_.pop_back();
  maxima_.emplace_back(seen_, value);
  ++seen_;
  if (maxima_.front().first <= seen_ - 1 - window_) maxima_.pop_front();
  return out;
}

GrowthDetector::GrowthDetector(std::string signal, int64_t steps, double factor, double limit, int64_t cooldown,
                               int64_t window, int64_t warmup, double z_gate)
    : signal_(std::move(signal)),
      steps_(steps),
      factor_(factor),
      limit_(limit),
      window_(window),
      warmup_(warmup),
      z_gate_(z_gate),
      ema_(window),
      cooldown_(cooldown) {}

void GrowthDetector::reset() {
  recent_.clear();
  ema_ = LogEma(window_);
}

std::optional<Warning> GrowthDetector::update(int64_t step, double value) {
  if (!(value > 0) || !std::isfinite(value)) {
    recent_.clear();
    return std::nullopt;
  }
  // Only the current run of rises matters: a fall restarts it.
  if (!recent_.empty() && value <= recent_.back()) recent_.clear();
  recent_.push_back(value);
  const bool gated = ema_.count() >= warmup_ && ema_.z(value) < z_gate_;
  // The window learns only from values outside long rises, so a divergence is measured
  // against the range before it rather than against itself.
  if (recent_.size() <= 2) ema_.add(value);
  if (static_cast<int64_t>(recent_.size()) > steps_ + 1) recent_.pop_front();
  if (static_cast<int64_t>(recent_.size()) < steps_ + 1 || gated) return std::nullopt;
  const double first = recent_.front(), last = recent_.back();
  const double per_step = std::pow(last / first, 1.0 / static_cast<double>(steps_));
  if (per_step < factor_ || !cooldown_.allow(step)) return std::nullopt;
  Warning w;
  w.detector = signal_ + "_growth";
  w.step = step;
  w.value = per_step;
  w.threshold = factor_;
  w.forecast_steps = std::max(0.0, std::ceil(std::log(limit_ / last) / std::log(per_step)));
  w.cause = signal_ == "grad_norm" ? "exploding_gradients" : "lr_too_high";
  w.message = fmt::format(
      "{} grew geometrically over the last {} steps (x{} per step, from {} to {}); at this rate it passes the "
      "float32 limit {} in about {} steps",
      signal_text(signal_), steps_, num(per_step), num(first), num(last), num(limit_), num(w.forecast_steps));
  w.suggestion = "lower the learning rate (e.g. by 10x) or clip the gradient norm before the run diverges";
  return w;
}

std::optional<Warning> VanishingDetector::update(int64_t step, const std::vector<LayerSignals>& layers) {
  if (layers.size() < 2) return std::nullopt;
  const LayerSignals& first = layers.front();
  const LayerSignals& last = layers.back();
  if (!(last.grad_norm > 0) || !std::isfinite(last.grad_norm) || !std::isfinite(first.grad_norm)) return std::nullopt;
  // RMS per element, so a wide first layer (784 x 128 against 128 x 10) is not mistaken for a
  // vanishing one just because its norm sums more elements.
  auto rms = [](const LayerSignals& l) { return l.grad_norm / std::sqrt(static_cast<double>(std::max<int64_t>(l.numel, 1))); };
  const double ratio = rms(first) / rms(last);
  if (ratio > ratio_ || !cooldown_.allow(step, first.layer)) return std::nullopt;
  Warning w;
  w.detector = "vanishing_gradients";
  w.step = step;
  w.layer = first.layer;
  w.value = ratio;
  w.threshold = ratio_;
  w.cause = "vanishing_gradients";
  if (first.grad_norm == 0) {
    w.message = fmt::format(
        "vanishing gradients at step {}: the first layer {} receives no gradient at all (the last layer {} has "
        "norm {}); dead units or saturated activations block the signal",
        step, first.layer, last.layer, num(last.grad_norm));
  } else {
    w.message = fmt::format(
        "vanishing gradients at step {}: the gradient of the first layer {} (norm {}, RMS {}) is {}x that of the last "
        "layer {} (norm {}, RMS {}) per element, {} orders of magnitude smaller",
        step, first.layer, num(first.grad_norm), num(rms(first)), num(ratio), last.layer, num(last.grad_norm),
        num(rms(last)), num(-std::log10(ratio)));
  }
  w.suggestion = "use relu-family activations with He initialisation, add normalisation layers or residual "
                 "connections, or make the network shallower";
  return w;
}

ActivationDetector::ActivationDetector(Mode mode, double fraction, int64_t patience, int64_t cooldown)
    : mode_(mode), fraction_(fraction), patience_(patience), cooldown_(cooldown) {}

std::vector<Warning> ActivationDetector::update(int64_t step, const std::vector<ActivationStats>& stats) {
  std::vector<Warning> out;
  for (const auto& s : stats) {
    const bool relu = s.kind == "relu";
    if (relu != (mode_ == Mode::dying_relu)) continue;
    const double f = relu ? s.dead_fraction : s.saturated_fraction;
    int64_t& streak = streak_[s.layer];
    streak = f >= fraction_ ? streak + 1 : 0;
    if (streak < patience_ || !cooldown_.allow(step, s.layer)) continue;
    Warning w;
    w.step = step;
    w.layer = s.layer;
    w.value = f;
    w.threshold = fraction_;
    if (relu) {
      w.detector = "dying_relu";
      w.cause = "bad_initialization";
      w.message = fmt::format(
          "dying ReLU in {} at step {}: {}% of its {} units output zero for the whole batch (mean {}, std {})", s.layer,
          step, num(100 * f), s.units, num(s.mean), num(s.std));
      w.suggestion = "lower the learning rate, use He initialisation, or a leaky relu / elu activation";
    } else {
      w.detector = "saturation";
      w.cause = "bad_initialization";
      w.message = fmt::format(
          "saturated {} in {} at step {}: {}% of its outputs are within the margin of a bound (mean {}, std {}); "
          "their gradients are nearly zero",
          s.kind, s.layer, step, num(100 * f), num(s.mean), num(s.std));
      w.suggestion = "scale the initialisation down (Glorot/Xavier), normalise the inputs, add normalisation "
                     "layers or use relu-family activations";
    }
    out.push_back(std::move(w));
  }
  return out;
}

OscillationDetector::OscillationDetector(int64_t window, double amplitude, int64_t warmup, int64_t cooldown)
    : window_(window), amplitude_(amplitude), warmup_(warmup), cooldown_(cooldown) {}

std::optional<Warning> OscillationDetector::update(int64_t step, double loss) {
  if (!std::isfinite(loss)) return std::nullopt;
  ++seen_;
  recent_.push_back(loss);
  if (static_cast<int64_t>(recent_.size()) > window_ + 1) recent_.pop_front();
  if (seen_ < warmup_ || static_cast<int64_t>(recent_.size()) < window_ + 1) return std::nullopt;
  // Every difference alternates in sign (noise alone almost never does over tens of steps).
  double sum_abs = 0, prev = 0;
  for (size_t i = 1; i < recent_.size(); ++i) {
    const double d = recent_[i] - recent_[i - 1];
    if (d == 0 || (i > 1 && (d > 0) == (prev > 0))) return std::nullopt;
    sum_abs += std::abs(d);
    prev = d;
  }
  const double mean_abs_diff = sum_abs / static_cast<double>(window_);
  const double level =
      std::accumulate(recent_.begin(), recent_.end(), 0.0, [](double a, double b) { return a + std::abs(b); }) /
      static_cast<double>(recent_.size());
  const double rel = level > 0 ? mean_abs_diff / level : 0;
  if (rel < amplitude_ || !cooldown_.allow(step)) return std::nullopt;
  Warning w;
  w.detector = "loss_oscillation";
  w.step = step;
  w.value = rel;
  w.threshold = amplitude_;
  w.cause = "lr_too_high";
  w.message = fmt::format(
      "the loss oscillates: over the last {} steps every change reversed the previous one, by {} on average ({}% of "
      "the loss level {})",
      window_, num(mean_abs_diff), num(100 * rel), num(level));
  w.suggestion = "lower the learning rate or the momentum";
  return w;
}

StallDetector::StallDetector(int64_t steps, double tolerance, int64_t warmup, int64_t cooldown)
    : steps_(steps),
      tolerance_(tolerance),
      warmup_(warmup),
      alpha_(2.0 / (static_cast<double>(steps) / 2.0 + 1.0)),
      cooldown_(cooldown) {}

std::optional<Warning> StallDetector::update(int64_t step, double loss) {
  if (!std::isfinite(loss)) return std::nullopt;
  ema_ = seen_ == 0 ? loss : ema_ + alpha_ * (loss - ema_);
  ++seen_;
  past_.emplace_back(step, ema_);
  // The smoothed loss needs a few of its own windows before it means anything.
  if (seen_ < warmup_ + steps_) {
    if (static_cast<int64_t>(past_.size()) > steps_ + 1) past_.pop_front();
    return std::nullopt;
  }
  while (past_.size() > 1 && step - past_.front().first > steps_) past_.pop_front();
  const auto [then_step, then] = past_.front();
  if (step - then_step < steps_) return std::nullopt;
  const double needed = std::abs(then) * tolerance_;
  const double improvement = then - ema_;
  if (improvement > needed || !cooldown_.allow(step)) return std::nullopt;
  Warning w;
  w.detector = "loss_stall";
  w.step = step;
  w.value = then != 0 ? improvement / std::abs(then) : 0;
  w.threshold = tolerance_;
  w.message = fmt::format(
      "the loss has stalled: its moving average went from {} at step {} to {} at step {} ({}% change over {} steps)",
      num(then), then_step, num(ema_), step, num(-100 * w.value), step - then_step);
  w.suggestion = "raise or schedule the learning rate, check the labels and the loss, or stop early";
  return w;
}

}  // namespace nanguard::monitor
