// Finite divergence: a run that leaves its healthy regime while every value stays finite (a
// learning rate too high kills every unit and flat-lines at chance without one NaN). The watch
// judges each healthy step against the run's own healthy history and reports an excursion:
//   loss_excursion:    the loss above `loss_factor` times the run's healthy level: the median
//                      of its first healthy losses, or of the recent ones when that is higher,
//                      and above the noise of its batch losses (3 robust standard deviations of
//                      the step-to-step change of the log-loss around its median change, once
//                      11 recent healthy losses are in; before that, a run the guard joined
//                      under way is not judged by ratio);
//   overflow_forecast: the monitor's growth detector forecasts float32 overflow within
//                      `forecast_steps` steps;
//   collapse:          every unit of a ReLU layer dead on two sampled steps in a row (a
//                      constant output);
//   dead_start:        within the first `initial_steps` steps, the first layer receives exactly
//                      zero gradient while the last one does not (the monitor's vanishing-gradient
//                      signal): nothing can ever move it. The guard keeps it only where that
//                      layer's parameters are out of scale (init_inspection.h);
//   vanishing_start:   the same with a gradient that is not zero but below the monitor's
//                      vanishing ratio of the last layer's (the whole depth damps it), or a
//                      layer whose sigmoid/tanh outputs the monitor found saturated. The guard
//                      keeps it only where weights of the network are out of scale (for a
//                      saturated layer, its own among them).
// The thresholds and the measurements that chose them are in docs/guard.md.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nanguard/diagnose/evidence.h"
#include "nanguard/guard/options.h"

namespace nanguard {
namespace monitor {
struct ActivationStats;
struct Warning;
}  // namespace monitor

namespace detail {

struct DivergenceFinding {
  std::string kind;          // "loss_excursion", "overflow_forecast", "collapse", "dead_start",
                             // "vanishing_start"
  int64_t step = 0;          // the step whose check found it
  double value = 0;          // the loss, the forecast steps, or the dead fraction
  double threshold = 0;      // what it passed
  double reference = 0;      // the healthy loss level the threshold came from
  int64_t excursion_start = -1;  // the first step outside the healthy regime
  std::string layer;         // collapse, dead_start: the dead layer; vanishing_start: the first or saturated one
  std::string signal;        // dead_start, vanishing_start: the monitor's detector ("saturation", ...)
  std::string message;       // one sentence with the numbers
  // dead_start, vanishing_start: the out-of-scale parameters behind it (set by the guard).
  std::vector<InitFinding> init_findings;
};

// A start with a layer the gradient does not reach: what a re-initialisation repairs.
inline bool is_dead_start(const std::string& kind) { return kind == "dead_start" || kind == "vanishing_start"; }

class DivergenceWatch {
 public:
  explicit DivergenceWatch(DivergenceOptions options) : options_(options) {}

  // The finite loss of a step whose values all passed the check: an excursion, or nullopt (the
  // loss then joins the healthy history). parameters_moved, asked only of a loss above the
  // bare ceiling before the run's noise is known: how far the parameters have moved since the
  // oldest snapshot, relative to their norm (NaN: not known, and the loss is judged as before).
  std::optional<DivergenceFinding> check_loss(int64_t step, double loss,
                                              const std::function<double()>& parameters_moved = {});
  // A monitor warning of this step: an overflow forecast within the horizon is an excursion, a
  // first layer without any gradient in the first steps a dead start, with one far below the
  // last layer's a vanishing start.
  std::optional<DivergenceFinding> check_warning(const monitor::Warning& warning);
  // Activation statistics of a sampled step (after its update): a layer with every unit dead.
  std::optional<DivergenceFinding> check_activations(int64_t step, const std::vector<monitor::ActivationStats>& stats);
  // After a rollback to the snapshot of `step`: the healthy losses recorded after it are gone.
  void rolled_back_to(int64_t step);
  // The model's inputs changed (rescaled): the loss level is learnt again from the next steps.
  void restart_level();

  // The healthy loss level the ceiling is built on (0 before the first healthy step): the
  // larger of the medians of the first and of the recent healthy losses.
  double reference() const;
  // The batch-to-batch noise of the recent healthy losses: a robust standard deviation of one
  // log-loss, from the step-to-step changes around their median (0 while not known: fewer than
  // 10 of them).
  double loss_noise() const;
  bool noise_known() const;
  // The guard joined a run already under way (its optimizer had state): the first losses are
  // not judged by ratio until the noise is known.
  void set_run_under_way(bool under_way) { under_way_ = under_way; }
  const DivergenceOptions& options() const { return options_; }

 private:
  DivergenceOptions options_;
  std::vector<double> initial_;                  // the first healthy losses of the run (its initial level)
  double initial_median_ = -1;                   // their median once all are in (-1 before)
  std::deque<std::pair<int64_t, double>> recent_;  // (step, loss) of the recent healthy steps
  bool nonpositive_seen_ = false;                // a loss <= 0: ratios of the loss mean nothing
  bool under_way_ = false;                       // see set_run_under_way
  int64_t last_alive_ = -1;                      // the last sampled step with no dead ReLU layer
  std::vector<std::string> dead_before_;         // ReLU layers dead at the previous sampled step
};

}  // namespace detail
}  // namespace nanguard
