// The Guard's private state: its parts, and the step begin_step() opened. guard.cpp is the
// state machine over them; guard_api.cpp builds a Guard and answers its public accessors.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "guard/batch_memory.h"
#include "guard/divergence_watch.h"
#include "guard/event_log.h"
#include "guard/healthy_history.h"
#include "guard/init_inspection.h"
#include "guard/investigator.h"
#include "guard/repair_executor.h"
#include "guard/rng_state.h"
#include "guard/sentinel.h"
#include "guard/training_state.h"
#include "nanguard/guard/guard.h"
#include "nanguard/guard/snapshot.h"
#include "nanguard/monitor/monitor.h"

namespace nanguard {

namespace detail {

// Parameters with their names, and buffers: what the guard trains.
struct Named {
  std::vector<std::string> names;
  std::vector<at::Tensor> params, buffers;
  std::vector<std::string> models;  // name prefixes of several guarded models (none for one)
};

// The step begin_step opened, until apply closes it.
struct OpenStep {
  int64_t step = -1;
  data::Batch batch;
  StepClosure closure;
  bool sampled = false;  // the monitor's per-layer signals are due
  std::optional<monitor::ActivationRecorder> recorder;
  std::vector<monitor::ActivationStats> activations;
  bool norm_overflow = false;
  bool caught_before_update = false;  // the incident is a screened batch
  bool checked = false;               // check() or check_exception() ran
  bool gradients_averaged = false;    // the vote averaged them over the ranks
  std::shared_ptr<Incident> incident;

  void close() {
    step = -1;
    batch = data::Batch{};
    closure = nullptr;
    sampled = norm_overflow = caught_before_update = checked = gradients_averaged = false;
    recorder.reset();
    activations.clear();
    incident.reset();
  }
};

}  // namespace detail

struct Guard::Impl {
  Impl(detail::Named named, std::vector<std::shared_ptr<OptimizerAdapter>> optimizers, GuardOptions options, GuardHooks hooks);

  data::Batch begin_step(const data::Batch& batch, StepClosure closure);
  Decision check(const at::Tensor& loss);
  Decision check_exception(std::exception_ptr error);
  StepVerdict apply(const Decision& decision);
  StepVerdict update(const Decision& decision);
  StepVerdict repair(const Decision& decision);
  Decision incident_decision(std::shared_ptr<Incident> incident, bool caught_before_update);
  void after_healthy_check(const detail::CheckResult& r);
  // What a healthy check led to on this rank: an incident of a finite kind, or none.
  struct Outcome {
    std::shared_ptr<Incident> incident;
    bool caught_before_update = false;  // a screened batch
  };
  Outcome healthy_outcome(const detail::CheckResult& r, const at::Tensor& total);
  Outcome divergence_outcome(const detail::DivergenceFinding& found, const at::Tensor& loss);
  // Data parallelism: the vote on every rank's check, the incident of one rank on every rank,
  // and the agreement on outcomes that rest on one rank's own data.
  struct Vote {
    std::vector<int> failed_ranks;  // ascending
    bool any_empty = false;         // a rank's whole batch was quarantined
  };
  Vote cast_vote(detail::CheckResult& r, bool empty);
  std::shared_ptr<Incident> share_incident(std::shared_ptr<Incident> mine, int root, const std::vector<int>& failed_ranks);
  Outcome agree(Outcome mine);
  void emit_warnings(const std::vector<monitor::Warning>& warnings);
  void run_evidence(Evidence& ev) const;
  const StepClosure* closure() const { return open.closure ? &open.closure : nullptr; }

  std::vector<std::string> named_models;
  GuardOptions options;
  GuardHooks hooks;
  detail::TrainingState state;
  detail::EventLog log;
  detail::CpuRngState rng_before_step;
  std::unique_ptr<SnapshotRing> ring;
  RepairLedger ledger;
  std::unique_ptr<monitor::Monitor> monitor;
  detail::Sentinel sentinel;
  detail::BatchMemory memory;
  detail::HealthyHistory history;
  detail::DivergenceWatch divergence;
  // An overflow forecast or a collapse found while this step was checked: its incident.
  std::optional<detail::DivergenceFinding> pending_divergence;
  // Each layer's activation kind, from the sampled steps' statistics: what a re-initialisation
  // fits its scheme to.
  detail::ActivationKinds activation_kinds;
  std::map<std::string, std::string> activation_owners;  // an activation module's scope -> its layer
  std::unique_ptr<detail::Investigator> investigator;
  std::unique_ptr<detail::RepairExecutor> executor;
  std::shared_ptr<Consensus> consensus;

  int64_t steps = 0;
  bool snapshot_due = true;
  bool overflow_streak = false;   // the gradient norm is beyond float32's range (warned once)
  bool agree_next_check = false;  // the last update was on a sampled step (data parallelism)
  double last_learning_rate = 0;  // the first group's rate in the last update (the monitor's rows)
  std::string screen_trigger;   // a spike warning of this step: screen its batch for extreme samples
  detail::OpenStep open;
  std::vector<std::shared_ptr<const Incident>> incidents;
};

}  // namespace nanguard
