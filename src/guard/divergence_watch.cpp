#include "guard/divergence_watch.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/check.h"
#include "nanguard/monitor/signals.h"
#include "nanguard/monitor/warning.h"

namespace nanguard {

void DivergenceOptions::validate() const {
  NANGUARD_CHECK(std::isfinite(loss_factor()) && loss_factor() > 1.0,
                 "divergence.loss_factor must be a finite number > 1, got {}", loss_factor());
  NANGUARD_CHECK(initial_steps() >= 1, "divergence.initial_steps must be >= 1, got {}", initial_steps());
  NANGUARD_CHECK(window() >= 1, "divergence.window must be >= 1, got {}", window());
  NANGUARD_CHECK(forecast_steps() >= 0, "divergence.forecast_steps must be >= 0, got {}", forecast_steps());
}

namespace detail {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The ceiling stands this many robust standard deviations of the healthy steps' batch-to-batch
// noise above `loss_factor` times the level (in logarithms): the conventional outlier bound.
constexpr double kNoiseSigmas = 3.0;
// 1.4826 x the median absolute value estimates a normal's standard deviation; a difference of
// two independent values has sqrt(2) times the spread of each.
constexpr double kMadToSigma = 1.4826;
// The fewest step-to-step changes a noise estimate is made of. Below it (a run's first steps)
// a fresh run has the bare factor as its ceiling: its losses start at the untrained model's and
// stay below them, and its divergences at steps 1-2 pass 4x. A run under way is not judged by
// ratio until then: its batch losses may scatter by 8x from one step to the next.
constexpr int64_t kMinNoiseChanges = 10;
// Before the noise is known, a loss above the bare ceiling is a divergence only where the
// parameters have moved this far (the norm of their change over their norm, all parameters
// together) since the oldest snapshot (the guard's first, which is kept by default). The
// fresh runs that overshot had moved them by 44-53% at their excursion (zoo Z1), 128-243% (Z9,
// SGD lr 3), 275-303% (Z10, lr 30) and 376-441% (Z11, 0-255 pixels), seeds 0-2; a healthy update
// moves them by about 1e-3 of their norm (the usual rule of thumb), and a run resumed from a
// trained model at SGD lr 0.1 had moved them by 0.23% at step 1 and 1.06% at step 9, where its
// batch losses were 5.8x and 5.4x its first ones. A run that has barely moved met a batch harder
// than its first ones: with plain SGD there is no optimizer state to say the run is under way,
// and that run was rolled back three times (bench/python_resumed.py with SGD lr 0.1, seed 2).
constexpr double kMinMoveForYoungDivergence = 0.05;

bool barely_moved(const std::function<double()>& parameters_moved) {
  if (!parameters_moved) return false;
  const double moved = parameters_moved();
  return std::isfinite(moved) && moved < kMinMoveForYoungDivergence;
}

}  // namespace

bool DivergenceWatch::noise_known() const {
  return static_cast<int64_t>(recent_.size()) > kMinNoiseChanges;
}

double DivergenceWatch::loss_noise() const {
  std::vector<double> changes;
  changes.reserve(recent_.size());
  for (size_t i = 1; i < recent_.size(); ++i) {
    const double a = recent_[i - 1].second, b = recent_[i].second;
    if (a > 0 && b > 0) changes.push_back(std::log(b) - std::log(a));
  }
  if (!noise_known()) return 0;
  // Around the median change: a steady trend (a loss falling, or growing x2.5 per step) is not
  // noise, and must not widen the ceiling it is to pass.
  const double trend = median(changes);
  for (double& c : changes) c = std::abs(c - trend);
  return kMadToSigma * median(std::move(changes)) / std::sqrt(2.0);
}

// Medians, not maxima: a loss growing a few times per step would drag a maximum up with it
// and never leave a ceiling built on it; a median lags behind the growth.
double DivergenceWatch::reference() const {
  std::vector<double> recent;
  recent.reserve(recent_.size());
  for (const auto& [step, l] : recent_) recent.push_back(l);
  return std::max(median(initial_), median(std::move(recent)));
}

std::optional<DivergenceFinding> DivergenceWatch::check_loss(int64_t step, double loss,
                                                              const std::function<double()>& parameters_moved) {
  if (!options_.enabled() || !std::isfinite(loss)) return std::nullopt;
  // A loss that can be negative (a log-likelihood of densities, a critic's score) has no
  // level to be a multiple of.
  if (loss <= 0) nonpositive_seen_ = true;
  // The level is at least the initial median: a loss within the ceiling of that one needs no
  // median of the recent losses (a sort of up to `window` values, on nearly every step).
  const bool initial_full = static_cast<int64_t>(initial_.size()) >= options_.initial_steps();
  if (initial_full && initial_median_ < 0) initial_median_ = median(initial_);
  const bool below_initial_ceiling = initial_full && loss <= options_.loss_factor() * initial_median_;
  const double level = below_initial_ceiling ? 0.0 : reference();
  if (!nonpositive_seen_ && level > 0 && loss > options_.loss_factor() * level) {
    // Batch losses late in a run, or in a run resumed from a trained model, scatter over a
    // decade around a small level: the ceiling makes room for the run's own noise (computed
    // only here, on the rare step above the bare factor).
    const double noise = loss_noise();
    const double ceiling = options_.loss_factor() * level * std::exp(kNoiseSigmas * noise);
    if (loss > ceiling && (noise_known() || (!under_way_ && !barely_moved(parameters_moved)))) {
      DivergenceFinding f;
      f.kind = "loss_excursion";
      f.step = step;
      f.value = loss;
      f.reference = level;
      f.threshold = ceiling;
      f.excursion_start = step;
      f.message = fmt::format(
          "the loss {:.4g} at step {} is {:.3g}x the run's healthy level ({:.4g}; the ceiling is {:g}x{})", loss, step,
          loss / level, level, options_.loss_factor(),
          noise > 0 ? fmt::format(", {:.3g}x with the healthy steps' batch-to-batch noise", ceiling / level)
                    : std::string());
      return f;
    }
  }
  if (static_cast<int64_t>(initial_.size()) < options_.initial_steps()) initial_.push_back(loss);
  recent_.emplace_back(step, loss);
  while (static_cast<int64_t>(recent_.size()) > options_.window()) recent_.pop_front();
  return std::nullopt;
}

std::optional<DivergenceFinding> DivergenceWatch::check_warning(const monitor::Warning& w) {
  if (options_.enabled() && options_.dead_start() &&
      (w.detector == "vanishing_gradients" || w.detector == "saturation") && w.step < options_.initial_steps()) {
    const bool dead = w.detector == "vanishing_gradients" && w.value == 0;
    DivergenceFinding f;
    f.signal = w.detector;
    f.kind = dead ? "dead_start" : "vanishing_start";
    f.step = w.step;
    f.value = w.value;
    f.threshold = dead ? 0 : w.threshold;
    f.reference = reference();
    f.layer = w.layer;
    f.excursion_start = 0;  // the state was dead from the start
    f.message = fmt::format("a {}: {} (step {}, within the run's first {} steps)", dead ? "dead start" : "vanishing start",
                            w.message, w.step, options_.initial_steps());
    return f;
  }
  if (!options_.enabled() || w.forecast_steps < 0 ||
      w.forecast_steps > static_cast<double>(options_.forecast_steps())) {
    return std::nullopt;
  }
  DivergenceFinding f;
  f.kind = "overflow_forecast";
  f.step = w.step;
  f.value = w.forecast_steps;
  f.threshold = static_cast<double>(options_.forecast_steps());
  f.reference = reference();
  // The growth the detector saw began before the rise it measured: the rollback goes back to
  // the healthy history's trend start (RepairExecutor), so no earlier guess is needed here.
  f.excursion_start = w.step;
  f.message = fmt::format("{}; the overflow is at most {} steps away", w.message, options_.forecast_steps());
  return f;
}

std::optional<DivergenceFinding> DivergenceWatch::check_activations(
    int64_t step, const std::vector<monitor::ActivationStats>& stats) {
  if (!options_.enabled() || !options_.collapse() || stats.empty()) return std::nullopt;
  std::vector<const monitor::ActivationStats*> dead;
  for (const auto& a : stats)
    if (a.kind == "relu" && a.units > 0 && a.dead_fraction >= 1.0) dead.push_back(&a);
  if (dead.empty()) {
    last_alive_ = step;
    dead_before_.clear();
    return std::nullopt;
  }
  // Dead from the first sampled step on is a dead start (the initialisation), not a
  // divergence: there is no healthy state to go back to.
  if (last_alive_ < 0) return std::nullopt;
  // A dead unit gets no gradient and cannot come back, so a real collapse is still there at the
  // next sampled step; one batch on which a small layer happens to output zeros is not.
  std::vector<std::string> now;
  for (const auto* a : dead) {
    now.push_back(a->layer);
    if (std::find(dead_before_.begin(), dead_before_.end(), a->layer) == dead_before_.end()) continue;
    DivergenceFinding f;
    f.kind = "collapse";
    f.step = step;
    f.value = a->dead_fraction;
    f.threshold = 1.0;
    f.reference = reference();
    f.layer = a->layer;
    f.excursion_start = last_alive_ + 1;
    f.message = fmt::format(
        "every one of the {} units of {} output zero for the whole batch on two sampled steps in a row, up to step {} "
        "(they were alive at step {}): the layer is dead and the model's output no longer depends on its input",
        a->units, a->layer.empty() ? std::string("a ReLU layer") : a->layer, step, last_alive_);
    return f;
  }
  dead_before_ = std::move(now);
  return std::nullopt;
}

void DivergenceWatch::restart_level() {
  initial_.clear();
  initial_median_ = -1;
  recent_.clear();
}

void DivergenceWatch::rolled_back_to(int64_t step) {
  while (!recent_.empty() && recent_.back().first >= step) recent_.pop_back();
  // The snapshot rolled back to precedes (or is) the last step seen alive.
  last_alive_ = std::min(last_alive_, step);
  dead_before_.clear();
}

}  // namespace detail
}  // namespace nanguard
