// The Guard keeps a training loop finite. Use it in any LibTorch loop:
//
//   nanguard::Guard guard(*model, optimizer);
//   for (auto& batch : batches) {
//     auto verdict = guard.step(batch, [&](const nanguard::data::Batch& b) {
//       auto loss = torch::nll_loss(model->forward(b.x), b.y);
//       loss.backward();
//       return loss;
//     });
//     if (verdict.stopped()) break;
//   }
//
// The closure runs forward, loss and backward (no zero_grad, no optimizer step: the guard
// does both). It may run more than once for one batch (a replay under the op tracer, a
// recompute, the re-run of a step a rollback lost), so it must compute from its batch alone:
// nothing carried over from an earlier run (a graph, generated samples, a counter). A closure
// that takes a StepContext is told which run it is.
//
// Loops that own their optimizer step use the lower API that step() is built on, in the
// spirit of GradScaler's scale / step / update:
//
//   auto b = guard.begin_step(batch, closure);   // closure optional: it enables replays
//   auto loss = ...; loss.backward();
//   nanguard::Decision d = guard.check(loss);    // one host sync
//   guard.apply(d);                              // the update, or the repair of an incident
//
// Per step the cheap path costs one read of the gradients and one host sync; on a failed
// check the guard replays the step with the op tracer to find the op that created the first
// non-finite value, diagnoses the cause and repairs the run.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanguard/data/dataset.h"
#include "nanguard/guard/incident.h"
#include "nanguard/guard/options.h"
#include "nanguard/repair/policy.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace nanguard {

class Consensus;
class OptimizerAdapter;
class SnapshotRing;
namespace monitor {
class Monitor;
}

// Which run of a step's closure this is.
struct StepContext {
  enum class Run {
    first,      // the step as the loop gives it
    replay,     // re-run under the op tracer to localize an incident (its update is not kept)
    recompute,  // re-run from the pre-step state as a repair (transient fault, quarantine)
    rerun,      // a step a rollback lost, re-run with the repaired settings
  };
  Run run = Run::first;
  int64_t step = 0;     // the guard's step the batch belongs to
  bool traced = false;  // the op tracer records this run
};
const char* to_string(StepContext::Run run);

// Computes the loss of a batch and runs backward; returns the loss (a scalar, or one loss per
// model for several models: their sum is checked and reported).
using StepClosure = std::function<at::Tensor(const data::Batch&, const StepContext&)>;
// The same without the context.
using BatchClosure = std::function<at::Tensor(const data::Batch&)>;

struct StepVerdict {
  enum class Outcome { applied, skipped, rolled_back, recomputed, stopped };
  Outcome outcome = Outcome::applied;
  double loss = 0;                              // the loss of the applied step (NaN if none)
  std::shared_ptr<const Incident> incident;     // set when a check failed
  bool applied() const { return outcome == Outcome::applied || outcome == Outcome::recomputed; }
  bool stopped() const { return outcome == Outcome::stopped; }
};
const char* to_string(StepVerdict::Outcome outcome);

// What the guard decided about a step after its check; apply() carries it out.
struct Decision {
  enum class Kind {
    update,    // healthy: apply the update
    incident,  // the check failed (or the screen found extreme samples): repair with `plan`
    skip,      // nothing to train on (every sample quarantined) or the guard has stopped
  };
  Kind kind = Kind::update;
  int64_t step = -1;
  double loss = 0;       // the step's loss (NaN when non-finite)
  double grad_norm = 0;  // the total gradient norm
  std::shared_ptr<const Incident> incident;  // kind incident: investigated and diagnosed
  std::vector<RepairAction> plan;            // kind incident: the actions apply() takes
};

// What a trainer lets the guard change besides parameters and optimizer state. All optional.
struct GuardHooks {
  // Swap the loss for its stable form; returns false when it cannot.
  std::function<bool()> use_stable_loss;
  // Whether the loss is owned by the trainer and already stable.
  std::function<bool()> loss_is_stable;
  // Samples to exclude from future epochs (the guard also drops them from every batch).
  std::function<void(const std::vector<int64_t>&)> quarantine;
  // Extra state saved in snapshots (schedule state, counters).
  std::function<std::vector<double>()> save_extra;
  std::function<void(const std::vector<double>&)> load_extra;
  // Rebuilds a batch from its sample ids. With it the guard remembers only the ids of the
  // batches since the last snapshot (for replaying an optimizer step), not their tensors.
  std::function<data::Batch(const at::Tensor& ids)> gather_batch;
  // Whether gather_batch can rebuild the batch of the step beginning now (unset: always). A
  // trainer that knows its dataset only inside fit says no outside it, and the guard keeps
  // that step's tensors instead (within kept_batch_bytes).
  std::function<bool()> can_gather_batch;
  // The caller's own gradient clipping (e.g. Keras clipnorm / clipvalue), run by the guard
  // before every update, after the check: a clip inside the closure would turn a +Inf
  // gradient finite before the check sees it.
  std::function<void()> clip_gradients;
  // Called after each step that a rollback re-ran was applied (GuardOptions::rerun_lost_steps),
  // so the caller's step counter and schedule advance as they did the first time (set the
  // learning rate of the next step here). Epoch-level schedule events are not replayed.
  std::function<void()> rerun_step_applied;
  // Called on each incident with the pre-step state still in place (parameters, the batch and
  // the CPU RNG state before the step), to dump it for an offline replay.
  std::function<void(int64_t step, const data::Batch& batch, const at::Tensor& rng_state)> dump_incident;
  // Called with every event as it happens (events.jsonl, console). Without it every event is
  // printed through the library's log sink (set_log_sink).
  std::function<void(const GuardEvent&)> on_event;
  // Replaces the repair actions planned for an incident (to compare repair policies); an empty
  // result means skip_step. Non-finite parameters still force a rollback or a stop.
  std::function<std::vector<RepairAction>(const Incident&, const std::vector<RepairAction>& planned)> override_plan;
  // Samples the data audit flagged before training, with their properties (for the evidence:
  // an incident blames every sample flagged for the property it saw). A function returning a
  // plain id list still fits (ids without properties).
  std::function<AuditFlags()> audit_flagged_samples;
  // Scales the inputs of every later batch, replay and re-run (and of evaluation) to unit
  // range, for inputs far from it; returns a sentence saying what it did, or "" when it cannot
  // (then the repair backs off the learning rate instead).
  std::function<std::string()> rescale_inputs;
  // The model reports its activation outputs itself (monitor::report_activation), so sampled
  // steps need no op callbacks.
  bool model_reports_activations = false;
};

// One model and its optimizer, for a guard over several (a GAN's generator and
// discriminator): one snapshot, one decision and one rollback for all of them.
struct GuardedModel {
  GuardedModel(torch::nn::Module& module, torch::optim::Optimizer& optimizer, std::string name = "")
      : module(&module), optimizer(&optimizer), name(std::move(name)) {}
  torch::nn::Module* module;
  torch::optim::Optimizer* optimizer;
  std::string name;  // prefix of its parameter names in reports ("generator.0.weight")
};

class Guard {
 public:
  Guard(torch::nn::Module& module, torch::optim::Optimizer& optimizer, GuardOptions options = {},
        GuardHooks hooks = {});
  // Several models, each with its own optimizer. A step's closure computes every model's
  // gradients from the pre-step state; after one check the guard steps every optimizer.
  explicit Guard(const std::vector<GuardedModel>& models, GuardOptions options = {}, GuardHooks hooks = {});
  Guard(std::vector<at::Tensor> parameters, std::vector<at::Tensor> buffers, torch::optim::Optimizer& optimizer,
        GuardOptions options = {}, GuardHooks hooks = {});
  // Any optimizer behind its adapter (the seam for optimizers of other front ends).
  Guard(std::vector<std::string> names, std::vector<at::Tensor> parameters, std::vector<at::Tensor> buffers,
        std::vector<std::shared_ptr<OptimizerAdapter>> optimizers, GuardOptions options = {}, GuardHooks hooks = {});
  ~Guard();
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

  // Runs one guarded training step on the batch: begin_step, the closure, check, apply.
  // An exception from the closure whose failing op read non-finite values is an incident like
  // a non-finite loss; any other exception propagates unchanged.
  StepVerdict step(const data::Batch& batch, const StepClosure& closure);
  StepVerdict step(const data::Batch& batch, const BatchClosure& closure);

  // The lower API. begin_step prepares a step (snapshot when due, batch memory, RNG state)
  // and returns the batch to train on: quarantined samples dropped; empty when none are left
  // (check then decides skip). The closure, when given, lets the guard replay and repair the
  // step; without it incidents are diagnosed from their evidence only.
  data::Batch begin_step(const data::Batch& batch, StepClosure closure = {});
  // After backward: the cheap check; on a failure the incident is investigated and a repair
  // planned. Call once per begin_step.
  Decision check(const at::Tensor& loss);
  // After an exception from the step's forward or backward: an incident when the failing op
  // read non-finite values (rethrows the exception otherwise).
  Decision check_exception(std::exception_ptr error);
  // Carries the decision out: the update (clipping, optimizer step, bookkeeping) or the repair.
  StepVerdict apply(const Decision& decision);

  // Runs the closure once on the batch from the current state and, if the check fails,
  // replays and diagnoses it without repairing anything or counting a step (offline replay).
  // Returns null when the step is healthy. The state is left as it was.
  std::shared_ptr<const Incident> examine(const data::Batch& batch, const BatchClosure& closure);

  // The consensus of a data-parallel run (none: local). Every rank then takes the same decision:
  // each step's check is voted on (one small all-reduce: every rank learns which ranks failed),
  // the lowest failing rank replays and diagnoses while the others wait, its incident is
  // broadcast and every rank carries out the same plan; the gradients are averaged through it
  // before every update the guard applies (so the closure runs forward and backward only, and
  // a NaN never crosses ranks). Set before the first step (dist::DataParallel is one).
  void set_consensus(std::shared_ptr<Consensus> consensus);

  // Multiplier the guard applied to the learning rate (1 until an lr backoff).
  double lr_scale() const;
  // Gradient-norm clipping the guard enabled (0 = off), and whether it bounds each parameter's
  // gradient on its own (after exploding gradients) rather than their total norm.
  double clip_norm() const;
  bool clip_per_tensor() const;
  // Steps seen, updates applied (as they happened: updates a rollback undid stay counted, steps
  // it re-ran count again) and steps skipped.
  int64_t steps() const;
  int64_t applied_steps() const;
  int64_t skipped_steps() const;
  // Steps re-run after rollbacks (counted in applied_steps too).
  int64_t rerun_steps() const;
  bool stopped() const;
  const std::vector<std::shared_ptr<const Incident>>& incidents() const;
  const std::vector<GuardEvent>& events() const;
  // Quarantined dataset ids, ascending.
  const std::vector<int64_t>& quarantined() const;
  const SnapshotRing& snapshots() const;
  // The oldest step whose batch the guard may still replay or re-run (-1 when none): a front end
  // that keeps its own copy of each batch can let go of older ones.
  int64_t oldest_remembered_step() const;
  const GuardOptions& options() const;
  // Plain-language summary of the run so far.
  std::string summary() const;
  // The training monitor (null when GuardOptions::monitor is disabled).
  const monitor::Monitor* monitor() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace nanguard
