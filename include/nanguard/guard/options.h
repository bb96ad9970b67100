// Options of the Guard, with chainable setters like torch::nn::LinearOptions.
#pragma once

#include <cstdint>
#include <string>

#include <torch/arg.h>

#include "nanguard/monitor/options.h"
#include "nanguard/repair/policy.h"

namespace nanguard {

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
};

}  // namespace nanguard
