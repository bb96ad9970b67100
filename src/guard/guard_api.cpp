// The Guard's construction, its public API (built on the state machine of guard.cpp), offline
// examination and the plain-language summaries.
#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "guard/guard_impl.h"
#include "nanguard/guard/optimizer_adapter.h"
#include "nanguard/numerics/health.h"

namespace nanguard {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<std::shared_ptr<OptimizerAdapter>> adapt(const std::vector<torch::optim::Optimizer*>& optimizers) {
  std::vector<std::shared_ptr<OptimizerAdapter>> out;
  for (auto* o : optimizers) out.push_back(make_optimizer_adapter(*o));
  return out;
}

void add_module(detail::Named& n, torch::nn::Module& module, const std::string& prefix) {
  for (const auto& item : module.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    n.params.push_back(item.value());
    n.names.push_back(prefix.empty() ? item.key() : prefix + "." + item.key());
  }
  for (const auto& b : module.buffers()) n.buffers.push_back(b);
}

}  // namespace

const char* to_string(StepVerdict::Outcome outcome) {
  switch (outcome) {
    case StepVerdict::Outcome::applied: return "applied";
    case StepVerdict::Outcome::skipped: return "skipped";
    case StepVerdict::Outcome::rolled_back: return "rolled_back";
    case StepVerdict::Outcome::recomputed: return "recomputed";
    case StepVerdict::Outcome::stopped: return "stopped";
  }
  return "?";
}

const char* to_string(StepContext::Run run) {
  switch (run) {
    case StepContext::Run::first: return "first";
    case StepContext::Run::replay: return "replay";
    case StepContext::Run::recompute: return "recompute";
    case StepContext::Run::rerun: return "rerun";
  }
  return "?";
}

// ---- Guard: construction and the public API ----

Guard::Guard(torch::nn::Module& module, torch::optim::Optimizer& optimizer, GuardOptions options, GuardHooks hooks)
    : Guard(std::vector<GuardedModel>{GuardedModel(module, optimizer)}, std::move(options), std::move(hooks)) {}

Guard::Guard(const std::vector<GuardedModel>& models, GuardOptions options, GuardHooks hooks) {
  NANGUARD_CHECK(!models.empty(), "the guard needs at least one model");
  detail::Named named;
  std::vector<torch::optim::Optimizer*> optimizers;
  for (const auto& m : models) {
    NANGUARD_CHECK(m.module != nullptr && m.optimizer != nullptr, "a guarded model needs its module and optimizer");
    // One optimizer over two models would step twice per update.
    NANGUARD_CHECK(std::find(optimizers.begin(), optimizers.end(), m.optimizer) == optimizers.end(),
                   "guarded model '{}' shares its optimizer with another one: give each model its own, or guard "
                   "them as one module",
                   m.name);
    const std::string prefix =
        models.size() > 1 && m.name.empty() ? fmt::format("model{}", optimizers.size()) : m.name;
    add_module(named, *m.module, prefix);
    if (models.size() > 1) named.models.push_back(prefix);
    optimizers.push_back(m.optimizer);
  }
  impl_ = std::make_unique<Impl>(std::move(named), adapt(optimizers), std::move(options), std::move(hooks));
}

Guard::Guard(std::vector<at::Tensor> parameters, std::vector<at::Tensor> buffers, torch::optim::Optimizer& optimizer,
             GuardOptions options, GuardHooks hooks) {
  detail::Named named;
  for (size_t i = 0; i < parameters.size(); ++i) named.names.push_back(fmt::format("param{}", i));
  named.params = std::move(parameters);
  named.buffers = std::move(buffers);
  impl_ = std::make_unique<Impl>(std::move(named), adapt({&optimizer}), std::move(options), std::move(hooks));
}

Guard::Guard(std::vector<std::string> names, std::vector<at::Tensor> parameters, std::vector<at::Tensor> buffers,
             std::vector<std::shared_ptr<OptimizerAdapter>> optimizers, GuardOptions options, GuardHooks hooks) {
  impl_ = std::make_unique<Impl>(detail::Named{std::move(names), std::move(parameters), std::move(buffers)},
                                 std::move(optimizers), std::move(options), std::move(hooks));
}

Guard::~Guard() = default;

data::Batch Guard::begin_step(const data::Batch& batch, StepClosure closure) {
  return impl_->begin_step(batch, std::move(closure));
}
Decision Guard::check(const at::Tensor& loss) { return impl_->check(loss); }
Decision Guard::check_exception(std::exception_ptr error) { return impl_->check_exception(std::move(error)); }
StepVerdict Guard::apply(const Decision& decision) { return impl_->apply(decision); }

StepVerdict Guard::step(const data::Batch& batch, const StepClosure& closure) {
  if (stopped()) {
    ++impl_->steps;
    return StepVerdict{StepVerdict::Outcome::stopped, kNaN, nullptr};
  }
  const data::Batch b = begin_step(batch, closure);
  // Whatever leaves this step by an exception (the closure's own, or one the guard's replays
  // and repairs rethrow) closes it: no step stays open holding the caller's closure.
  try {
    if (b.size() == 0 && impl_->options.enabled()) return apply(check(at::Tensor()));
    at::Tensor loss;
    try {
      loss = closure(b, detail::step_context(StepContext::Run::first, impl_->open.step));
    } catch (const std::exception&) {
      return apply(check_exception(std::current_exception()));
    }
    const Decision d = check(loss);
    // A plain loop has let go of its loss (and the graph behind it) before the update; so does
    // the guard, whose update needs only the decision.
    loss = at::Tensor();
    return impl_->apply(d);
  } catch (...) {
    impl_->open.close();
    throw;
  }
}

StepVerdict Guard::step(const data::Batch& batch, const BatchClosure& closure) {
  NANGUARD_CHECK(static_cast<bool>(closure), "the guard's closure is empty");
  return step(batch, StepClosure([&closure](const data::Batch& b, const StepContext&) { return closure(b); }));
}

std::shared_ptr<const Incident> Guard::examine(const data::Batch& batch, const BatchClosure& closure) {
  NANGUARD_CHECK(impl_->options.enabled(), "examine needs an enabled guard");
  Impl& g = *impl_;
  const StepClosure step_closure = [&closure](const data::Batch& b, const StepContext&) { return closure(b); };
  g.rng_before_step.capture();
  g.state.zero_grad();
  at::Tensor loss = closure(batch);
  const int64_t t = g.steps;
  std::shared_ptr<Incident> incident;
  if (!g.state.loss_and_gradients_finite(loss) || !all_finite(g.state.params())) {
    incident = g.investigator->investigate(detail::FailedStep{t, batch, &step_closure, loss, false, false, {}});
    g.state.zero_grad();
    return incident;
  }
  // Forward and backward are finite: the failure may be born in the optimizer step (dumps of
  // optimizer-phase incidents hold the state before it). Take the step from a scratch snapshot
  // and remembered batch, look at the new state, and put the state back whatever happened.
  SnapshotRing scratch(g.state.snapshot_refs(), 1);
  scratch.take(t);
  g.state.apply_update(g.executor->state().per_tensor_clip(), g.executor->state().global_clip(), -1,
                       /*averaged=*/false);  // an offline look at one rank's step
  if (!all_finite(g.state.state_tensors())) {
    detail::EventLog quiet([](const GuardEvent&) {});
    detail::BatchMemory one(detail::BatchMemoryOptions{true, std::numeric_limits<int64_t>::max(), nullptr}, quiet);
    one.remember(t, batch, t);
    one.mark_applied(t, g.state.learning_rates(), g.executor->state().global_clip(), g.executor->state().per_tensor_clip());
    detail::InvestigatorHooks hooks;
    hooks.run_evidence = [&g](Evidence& ev) { g.run_evidence(ev); };
    detail::Investigator offline(g.state, scratch, one, g.rng_before_step, g.options.replay(), hooks);
    // Seen as the next step's deferred state check would see it; the replay runs the step again.
    g.rng_before_step.restore();
    incident = offline.investigate(detail::FailedStep{t + 1, batch, &step_closure, loss, true, false, {}});
  }
  scratch.restore_newest();
  g.state.zero_grad();
  return incident;
}

void Guard::set_consensus(std::shared_ptr<Consensus> consensus) {
  impl_->consensus = std::move(consensus);
  impl_->state.set_consensus(impl_->consensus.get());
}

double Guard::lr_scale() const { return impl_->executor ? impl_->executor->state().lr_scale : 1.0; }
double Guard::clip_norm() const { return impl_->executor ? impl_->executor->state().clip_norm : 0.0; }
bool Guard::clip_per_tensor() const { return impl_->executor && impl_->executor->state().clip_per_tensor; }
int64_t Guard::steps() const { return impl_->steps; }
int64_t Guard::oldest_remembered_step() const { return impl_->memory.oldest_step(); }
int64_t Guard::applied_steps() const {
  return impl_->executor ? impl_->executor->state().applied : impl_->steps;
}
int64_t Guard::skipped_steps() const { return impl_->executor ? impl_->executor->state().skipped : 0; }
int64_t Guard::rerun_steps() const { return impl_->executor ? impl_->executor->state().rerun : 0; }
bool Guard::stopped() const { return impl_->executor && impl_->executor->state().stopped; }
const std::vector<std::shared_ptr<const Incident>>& Guard::incidents() const { return impl_->incidents; }
const std::vector<GuardEvent>& Guard::events() const { return impl_->log.events(); }
const std::vector<int64_t>& Guard::quarantined() const { return impl_->memory.quarantined(); }
const SnapshotRing& Guard::snapshots() const {
  NANGUARD_CHECK(impl_->ring != nullptr, "a disabled guard takes no snapshots");
  return *impl_->ring;
}
const GuardOptions& Guard::options() const { return impl_->options; }
const monitor::Monitor* Guard::monitor() const { return impl_->monitor.get(); }

std::string Guard::summary() const {
  std::string s = fmt::format("guard: {} steps, {} applied, {} skipped, {} incidents", steps(), applied_steps(),
                              skipped_steps(), incidents().size());
  if (!quarantined().empty()) s += fmt::format(", {} samples quarantined", quarantined().size());
  if (rerun_steps() > 0) s += fmt::format(", {} steps re-run after rollbacks", rerun_steps());
  if (lr_scale() != 1.0) s += fmt::format(", learning rate scaled by {:.3g}", lr_scale());
  if (clip_norm() > 0) s += fmt::format(", gradient clipping at {:.3g}{}", clip_norm(), clip_per_tensor() ? " per tensor" : "");
  if (stopped()) s += ", stopped";
  return s + "\n";
}

std::string Incident::summary() const {
  const CauseScore& top = diagnosis.top();
  // Divergences and screened batches of extreme samples are incidents with every value finite.
  const bool finite = evidence.diverged || evidence.failed_check == "loss_spike" ||
                      evidence.failed_check == "grad_norm_spike" || evidence.failed_check == "sample_screen" ||
                      evidence.failed_check == "loss_excursion";
  const std::string what = evidence.failed_check == "gradient_norm" ? "gradient norm beyond float32 range"
                           : evidence.failed_check == "exception"
                               ? "an exception" + (evidence.exception_op.empty() ? "" : " in " + evidence.exception_op)
                           : evidence.diverged ? "divergence (all values finite)"
                           : finite            ? "extreme samples after a " + evidence.failed_check + " (all values finite)"
                           : evidence.failed_check.empty() ? "non-finite values"
                                                           : "non-finite " + evidence.failed_check;
  std::string s = fmt::format("incident at step {}: {} ({} confidence {:.0f}%)\n", step, what,
                              top.subkind.empty() ? top.cause : top.cause + "/" + top.subkind, top.confidence * 100);
  if (!evidence.exception_message.empty()) {
    const std::string first_line = evidence.exception_message.substr(0, evidence.exception_message.find('\n'));
    s += "  the closure threw: " + first_line + "\n";
  }
  if (evidence.birth_found) {
    s += fmt::format("  born in {} ({}{}{})\n", evidence.birth_op, evidence.birth_phase,
                     evidence.birth_module.empty() ? "" : ", ", evidence.birth_module);
  } else if (evidence.birth_phase == "input") {
    s += "  born in the input batch, before any op\n";
  }
  s += "  " + top.explanation + "\n";
  if (!top.suggestion.empty()) s += "  suggestion: " + top.suggestion + "\n";
  if (!actions.empty()) {
    std::string list;
    for (const auto& a : actions) list += (list.empty() ? "" : ", ") + a;
    s += "  repair: " + list + " -> " + outcome + "\n";
  }
  return s;
}

}  // namespace nanguard
