// Evidence and replays for an incident, from explicit inputs: the failing step, its batch and
// closure, what the check saw, and what the run looked like before it. It leaves the training
// state as it found it (or, after an optimizer-step replay, at the snapshot it replayed from).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nanguard/guard/guard.h"

namespace nanguard::detail {

class BatchMemory;
class CpuRngState;
struct DivergenceFinding;
class TrainingState;

struct FailedStep {
  int64_t step = 0;
  data::Batch batch;
  const StepClosure* closure = nullptr;  // null: no replay possible
  at::Tensor loss;                        // undefined after an exception
  bool state_failed = false;              // the deferred state check failed
  bool overflow_streak = false;           // the gradient norm was beyond float32 before
  std::string exception;                  // the closure's exception message, if it threw
};

struct InvestigatorHooks {
  // Fills the run's evidence (histories, learning rate, clipping, warnings, audit flags).
  std::function<void(Evidence&)> run_evidence;
  std::function<void(int64_t step, const data::Batch& batch, const at::Tensor& rng_state)> dump_incident;
  // The extra state snapshots carry (the caller's counters and schedule, the lr scale).
  std::function<std::vector<double>()> save_extra;
  std::function<void(const std::vector<double>&)> load_extra;
};

// What the loop can do about inputs far from unit range, and what the repairs already did.
struct InputRepairs {
  bool rescalable = false;          // GuardHooks::rescale_inputs is set
  int64_t backoffs = 0;             // learning-rate backoffs already made for unscaled inputs
  double rate_before_backoffs = 0;  // the learning rate before the first of them
};

class Investigator {
 public:
  Investigator(TrainingState& state, SnapshotRing& ring, const BatchMemory& memory, CpuRngState& rng_before_step,
               bool replay, InvestigatorHooks hooks);
  ~Investigator();

  // A failed check: evidence, replays, diagnosis.
  std::shared_ptr<Incident> investigate(const FailedStep& failed);
  // The closure threw: an incident when the op that threw read non-finite values (or the batch
  // holds them), else null (the exception is the caller's to rethrow).
  std::shared_ptr<Incident> investigate_exception(const FailedStep& failed);
  // A healthy step whose batch may hold finite but extreme samples: an incident when the
  // diagnosis is data_outlier, else null.
  std::shared_ptr<Incident> screen(int64_t step, const data::Batch& batch, const std::string& trigger);
  // A healthy step on which the run left its healthy regime (the divergence watch's finding):
  // evidence of the state, the batch's input scale and the run's history, and the diagnosis.
  std::shared_ptr<Incident> investigate_divergence(const FailedStep& failed, const DivergenceFinding& finding,
                                                   const InputRepairs& inputs);

 private:
  void collect_batch_evidence(const data::Batch& batch, Evidence& ev) const;
  void collect_tensor_evidence(const at::Tensor& loss, Evidence& ev) const;
  void replay(const FailedStep& failed, Evidence& ev);
  void replay_optimizer_step(const FailedStep& failed, Evidence& ev);
  void trace_failed_update(const FailedStep& failed, Evidence& ev);
  void check_environment(Evidence& ev) const;

  TrainingState& state_;
  SnapshotRing& ring_;
  const BatchMemory& memory_;
  CpuRngState& rng_;
  bool replay_;
  InvestigatorHooks hooks_;
  // The state before an optimizer-step replay, put back if the closure throws during it;
  // allocated at the first such replay.
  std::unique_ptr<SnapshotRing> before_replay_;
};

}  // namespace nanguard::detail
