// Options of the Guard, with chainable setters like torch::nn::LinearOptions.
#pragma once

#include <cstdint>
#include <string>

#include <torch/arg.h>

#include "nanguard/monitor/options.h"
#include "nanguard/repair/policy.h"

namespace nanguard {

// Finite divergence: when a run whose values are all finite has left its healthy regime (see
// docs/guard.md for the rule and the measurements behind each default).
struct DivergenceOptions {
  // Watch for finite divergence at all.
  TORCH_ARG(bool, enabled) = true;
  // Loss excursion: a loss above this multiple of the run's healthy level (the median loss of
  // its first healthy steps, or of the recent ones when that is higher).
  TORCH_ARG(double, loss_factor) = 4.0;
  // The initial level is the median loss of this many first healthy steps.
  TORCH_ARG(int64_t, initial_steps) = 10;
  // Recent healthy steps whose median loss can raise the level.
  TORCH_ARG(int64_t, window) = 100;
  // Overflow forecast: the growth detector forecasting float32 overflow within this many steps.
  TORCH_ARG(int64_t, forecast_steps) = 20;
  // Collapse: a ReLU layer with every unit dead on a sampled step (needs monitor activations).
  TORCH_ARG(bool, collapse) = true;
  // Dead start: within the first `initial_steps` steps a layer receives exactly zero gradient
  // and some of its parameters are out of every standard initialisation's scale (the monitor's
  // vanishing-gradient signal, needs the monitor). Repaired by re-initialising them. Also the
  // vanishing start: the first layer's gradient below the monitor's vanishing_ratio of the
  // last one's while weights of the network are out of scale (re-initialised to fit their
  // activations, init_inspection.h).
  TORCH_ARG(bool, dead_start) = true;

 public:
  // Throws ValueError naming the first option out of range.
  void validate() const;
};

struct GuardOptions {
  // Watch the run at all (false turns the Guard into a plain optimizer step).
  TORCH_ARG(bool, enabled) = true;
  // Take a snapshot every N applied steps (0: only the initial one).
  TORCH_ARG(int64_t, snapshot_every) = 100;
  // How many snapshots the ring keeps.
  TORCH_ARG(int64_t, snapshot_capacity) = 3;
  // Check parameters and optimizer state every M steps (folded into the next step's check).
  TORCH_ARG(int64_t, check_state_every) = 50;
  // After a rollback, re-run the steps lost since the snapshot with the repaired settings
  // (lower learning rate, clipping, quarantined samples dropped), so the rollback drops no data
  // from the run. Needs every batch since the snapshot: kept as ids with a gather hook
  // (GuardHooks::gather_batch), else as tensors since the newest snapshot.
  TORCH_ARG(bool, rerun_lost_steps) = true;
  // Without a gather hook the batches since the newest snapshot are kept as tensors (for
  // replays and re-runs) up to this many bytes; past it none are kept until the next snapshot
  // (a warning says so once), and replays and re-runs from that snapshot are off.
  TORCH_ARG(int64_t, kept_batch_bytes) = int64_t{256} << 20;
  // Replay a failed step with the op tracer to find the birth op.
  TORCH_ARG(bool, replay) = true;
  // Repair automatically; false only detects, localizes, diagnoses and skips the step.
  TORCH_ARG(bool, repair) = true;
  // Cause -> actions, and the budgets that stop loops.
  TORCH_ARG(RepairPolicy, policy) = RepairPolicy::automatic();
  // Steps of loss / gradient-norm history kept for the diagnosis.
  TORCH_ARG(int64_t, history) = 64;
  // Early warnings before a run goes non-finite (spikes, growth, vanishing gradients, ...).
  TORCH_ARG(monitor::MonitorOptions, monitor) = {};
  // Finite divergence as an incident (loss excursion, overflow forecast, collapse).
  TORCH_ARG(DivergenceOptions, divergence) = {};
  // Keep the run's first snapshot besides the ring (a divergence at the start rolls back to it).
  TORCH_ARG(bool, keep_initial_snapshot) = true;
};

}  // namespace nanguard
