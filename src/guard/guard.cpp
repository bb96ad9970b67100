// The Guard's state machine over its parts. Per step:
//   begin_step -> closure -> check: Sentinel -> consensus -> update | investigate -> plan -> consensus
//   apply: the update | the repair executor
#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "guard/guard_impl.h"
#include "guard/incident_wire.h"
#include "guard/init_inspection.h"
#include "nanguard/guard/consensus.h"
#include "nanguard/numerics/health.h"
#include "numerics/plain_float.h"

namespace nanguard {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

Guard::Impl::Impl(detail::Named named, std::vector<std::shared_ptr<OptimizerAdapter>> optimizers, GuardOptions opts,
                  GuardHooks h)
    : named_models(named.models),
      options(std::move(opts)),
      hooks(std::move(h)),
      state(std::move(named.names), std::move(named.params), std::move(named.buffers), std::move(optimizers)),
      log(hooks.on_event),
      ledger((options.policy().validate(), options.policy().budget)),
      sentinel(state),
      memory(detail::BatchMemoryOptions{options.snapshot_every() > 0, options.kept_batch_bytes(), hooks.gather_batch,
                                        hooks.can_gather_batch},
             log),
      history(static_cast<size_t>(std::max<int64_t>(options.history(), 2))),
      divergence((options.divergence().validate(), options.divergence())) {
  NANGUARD_CHECK(options.snapshot_every() >= 0, "snapshot_every must be >= 0, got {}", options.snapshot_every());
  NANGUARD_CHECK(options.check_state_every() >= 0, "check_state_every must be >= 0");
  NANGUARD_CHECK(options.snapshot_capacity() >= 1, "snapshot_capacity must be >= 1, got {}", options.snapshot_capacity());
  NANGUARD_CHECK(options.history() > 1, "history must be > 1, got {}", options.history());
  NANGUARD_CHECK(options.kept_batch_bytes() >= 0, "kept_batch_bytes must be >= 0, got {}", options.kept_batch_bytes());
  state.set_user_clip(hooks.clip_gradients);
  if (!options.enabled()) return;  // a plain optimizer step: no snapshots, no copies
  // An optimizer with state has taken steps already: the guard joins a run under way (resumed,
  // fine-tuned), whose first losses are not an untrained model's.
  divergence.set_run_under_way(!state.optimizer_state_tensors().empty());
  last_learning_rate = state.first_learning_rate(state.learning_rates());
  TrainingStateRefs refs = state.snapshot_refs();
  // The guard's learning-rate scale travels with each snapshot so a restore can re-apply any
  // backoff decided after it; the caller's own state follows.
  refs.save_extra = [this] {
    std::vector<double> extra{executor->state().lr_scale};
    if (hooks.save_extra) {
      auto more = hooks.save_extra();
      extra.insert(extra.end(), more.begin(), more.end());
    }
    return extra;
  };
  refs.load_extra = [this](const std::vector<double>& extra) {
    const double saved_scale = extra.empty() ? 1.0 : extra.front();
    if (hooks.load_extra) hooks.load_extra(std::vector<double>(extra.begin() + (extra.empty() ? 0 : 1), extra.end()));
    // The restored optimizer holds the learning rate of the snapshot: re-apply later backoffs.
    const double scale = executor->state().lr_scale;
    if (saved_scale > 0 && scale != saved_scale) state.scale_learning_rates(scale / saved_scale);
  };
  detail::InvestigatorHooks ih;
  ih.save_extra = refs.save_extra;
  ih.load_extra = refs.load_extra;
  ring = std::make_unique<SnapshotRing>(std::move(refs), options.snapshot_capacity(), options.keep_initial_snapshot());
  if (options.monitor().enabled()) {
    monitor = std::make_unique<monitor::Monitor>(state.names(), state.params(), options.monitor());
    monitor->set_models(named_models);
  }
  ih.run_evidence = [this](Evidence& ev) { run_evidence(ev); };
  ih.dump_incident = hooks.dump_incident;
  investigator = std::make_unique<detail::Investigator>(state, *ring, memory, rng_before_step, options.replay(), ih);
  executor = std::make_unique<detail::RepairExecutor>(
      detail::RepairParts{state, *ring, memory, history, log, ledger, sentinel, rng_before_step, monitor.get(), &divergence},
      options,
      hooks);
}

// What the run looked like before this step: histories, learning rate, clipping, the loss's
// form, audit flags and earlier warnings.
void Guard::Impl::run_evidence(Evidence& ev) const {
  ev.loss_history = history.losses();
  ev.grad_norm_history = history.grad_norms();
  ev.learning_rate = state.learning_rate();
  ev.clipping_enabled = executor->state().clip_norm > 0;
  ev.loss_owned_by_trainer = static_cast<bool>(hooks.use_stable_loss);
  ev.loss_is_stable = hooks.loss_is_stable ? hooks.loss_is_stable() : true;
  if (hooks.audit_flagged_samples) ev.audit_flagged_samples = hooks.audit_flagged_samples();
  ev.prior_warnings = log.warning_causes();
  if (monitor) ev.monitor_warnings = monitor->warnings();
}

data::Batch Guard::Impl::begin_step(const data::Batch& input, StepClosure closure) {
  open.close();
  open.step = steps++;
  open.closure = std::move(closure);
  state.zero_grad();
  if (!options.enabled() || executor->state().stopped) return open.batch = input;
  open.batch = memory.filter(input);
  if (open.batch.size() == 0) return open.batch;
  const int64_t t = open.step;
  if (snapshot_due) {
    ring->take(t);
    executor->state().last_snapshot_step = t;
    snapshot_due = false;
  }
  memory.remember(t, open.batch, executor->state().last_snapshot_step);
  rng_before_step.capture();
  // Sampled steps also feed the monitor per-layer signals and activation statistics.
  open.sampled = monitor && monitor->sample_due(t);
  if (open.sampled && monitor->options().activations()) {
    open.recorder.emplace(monitor->options().saturation_margin(), hooks.model_reports_activations
                                                                       ? monitor::ActivationSource::model_reports
                                                                       : monitor::ActivationSource::op_callbacks);
  }
  return open.batch;
}

Decision Guard::Impl::check(const at::Tensor& loss) {
  NANGUARD_CHECK(open.step >= 0, "check() without begin_step()");
  NANGUARD_CHECK(!open.checked, "check() runs once per begin_step()");
  open.checked = true;
  Decision d;
  d.step = open.step;
  if (open.recorder) {
    open.activations = open.recorder->finish();
    open.recorder.reset();
    std::vector<std::pair<std::string, std::string>> seen;
    for (const auto& a : open.activations) seen.emplace_back(a.layer, a.kind);
    detail::learn_activation_kinds(activation_kinds, state.names(), state.params(), seen, &activation_owners);
  }
  if (!options.enabled()) {
    d.loss = loss.numel() == 1 ? detail::scalar_value(loss) : loss.sum().item<double>();
    return d;
  }
  const bool empty = open.batch.size() == 0;
  if (executor->state().stopped || (empty && !state.distributed())) {
    d.kind = Decision::Kind::skip;
    d.loss = kNaN;
    return d;
  }
  detail::CheckResult r;
  at::Tensor total;
  if (!empty) {
    NANGUARD_CHECK(loss.defined() && loss.numel() >= 1, "the guard's closure must return the loss");
    total = loss.numel() == 1 ? loss : loss.sum();
    r = sentinel.check(total);
  }
  const Vote vote = state.distributed() ? cast_vote(r, empty) : Vote{};
  if (vote.any_empty) {
    // A rank whose whole batch was quarantined has no gradient to give: every rank skips.
    d.kind = Decision::Kind::skip;
    d.loss = kNaN;
    return d;
  }
  d.loss = r.loss;
  d.grad_norm = r.grad_norm;
  if (r.healthy()) {
    // Ranks agree on steps whose outcome can rest on what only one rank sees: its batch (the
    // screen), its per-layer signals (sampled steps, and the warnings of the update after one).
    const bool must_agree = state.distributed() && (open.sampled || agree_next_check || executor->state().outlier_watch ||
                                                    !screen_trigger.empty() || pending_divergence.has_value());
    agree_next_check = false;
    Outcome o = healthy_outcome(r, total);
    // Without must_agree an incident comes from values every rank shares (the voted loss), so
    // every rank has one and agrees on whose it is.
    if (state.distributed() && (must_agree || o.incident)) {
      o = agree(std::move(o));
      if (o.incident) {
        // As the rank that found it did: the step leaves the histories and the trends restart.
        history.drop_step(open.step);
        if (monitor) monitor->reset_trends();
      }
    }
    if (o.incident) return incident_decision(std::move(o.incident), o.caught_before_update);
    return d;
  }
  if (r.state_failed && executor->state().last_snapshot_step == open.step) {
    // The snapshot taken at the start of this step holds the poisoned state: drop it.
    ring->discard_after(open.step - 1);
    executor->state().last_snapshot_step = ring->steps().empty() ? -1 : ring->steps().back();
  }
  // The lowest failing rank replays and diagnoses; the others wait for its incident (they do
  // not replay: their own step was healthy, or another rank speaks for it).
  const int root = vote.failed_ranks.empty() ? 0 : vote.failed_ranks.front();
  std::shared_ptr<Incident> incident;
  if (!state.distributed() || state.consensus()->rank() == root) {
    // The pre-step state, before any replay touches it: parameters, batch and RNG. When the
    // state is already poisoned the optimizer replay dumps the state before the failing step.
    const bool state_poisoned = r.state_failed || !all_finite(state.params());
    if (hooks.dump_incident && !state_poisoned) hooks.dump_incident(open.step, open.batch, rng_before_step.to_tensor());
    detail::FailedStep failed{open.step, open.batch, closure(), total, r.state_failed, overflow_streak, {}};
    incident = investigator->investigate(failed);
  }
  if (state.distributed()) incident = share_incident(std::move(incident), root, vote.failed_ranks);
  return incident_decision(std::move(incident), /*caught_before_update=*/false);
}

// What a healthy check leads to on this rank: nothing, or an incident of a finite kind (a loss
// excursion, a forecast overflow, a collapse, a screened batch of extreme samples).
Guard::Impl::Outcome Guard::Impl::healthy_outcome(const detail::CheckResult& r, const at::Tensor& total) {
  const int64_t t = open.step;
  open.norm_overflow = r.norm_overflow;
  // A loss far above the run's healthy level stays out of its histories.
  const auto moved = [this] { return ring->parameters_moved_since_oldest(); };
  if (auto excursion = divergence.check_loss(t, r.loss, moved)) return divergence_outcome(*excursion, total);
  after_healthy_check(r);
  if (!pending_divergence && options.divergence().collapse())
    pending_divergence = divergence.check_activations(t, open.activations);
  if (pending_divergence) {
    const detail::DivergenceFinding found = *pending_divergence;
    pending_divergence.reset();
    history.drop_step(t);
    return divergence_outcome(found, total);
  }
  if (monitor && (!screen_trigger.empty() || executor->state().outlier_watch)) {
    const std::string trigger = screen_trigger.empty() ? std::string("sample_screen") : screen_trigger;
    screen_trigger.clear();
    if (auto incident = investigator->screen(t, open.batch, trigger)) {
      // The extreme step is not part of the run's trend: keep it out of the histories and the
      // monitor's windows.
      history.drop_step(t);
      if (monitor) monitor->reset_trends();
      return Outcome{std::move(incident), /*caught_before_update=*/true};
    }
  }
  return Outcome{};
}

// The run left its healthy regime with every value finite. A loss excursion on a batch of
// extreme samples is theirs (the screen), anything else a divergence: its pre-step state is
// the excursion's, so the plan rolls back.
Guard::Impl::Outcome Guard::Impl::divergence_outcome(const detail::DivergenceFinding& found, const at::Tensor& loss) {
  const int64_t t = open.step;
  if (found.kind == "loss_excursion") {
    if (auto incident = investigator->screen(t, open.batch, "loss_excursion")) {
      if (monitor) monitor->reset_trends();
      return Outcome{std::move(incident), /*caught_before_update=*/true};
    }
  }
  detail::FailedStep failed{t, open.batch, closure(), loss, false, overflow_streak, {}};
  const detail::RepairState& repairs = executor->state();
  const detail::InputRepairs inputs{static_cast<bool>(hooks.rescale_inputs), repairs.unscaled_input_backoffs,
                                    repairs.rate_before_unscaled_backoffs};
  auto incident = investigator->investigate_divergence(failed, found, inputs);
  if (monitor) monitor->reset_trends();
  return Outcome{std::move(incident), /*caught_before_update=*/false};
}

// Slots of the vote, per rank.
namespace {
enum VoteSlot { kLossFailed, kGradsFailed, kStateFailed, kNormOverflow, kEmpty, kLoss, kGradNorm, kVoteSlots };
}  // namespace

// Every rank writes its check into its own slots, so every rank learns which ranks failed; the
// loss and gradient norm the histories and detectors see are the ranks' mean loss and the root
// mean square of their gradient norms, the same numbers on every rank. The slots ride the
// gradient all-reduce (one round trip per step, as without the guard): the gradients are
// averaged here, after this rank's check saw its own, and the update applies them as they are.
// A failing rank's NaN then reaches every rank's gradients, but no step applies them: the
// repairs re-run, skip or roll back the step, and every rank knows whose NaN it was.
Guard::Impl::Vote Guard::Impl::cast_vote(detail::CheckResult& r, bool empty) {
  const int w = state.consensus()->world_size();
  const int me = state.consensus()->rank();
  std::vector<double> slots(static_cast<size_t>(w) * kVoteSlots, 0.0);
  double* mine = &slots[static_cast<size_t>(me) * kVoteSlots];
  mine[kLossFailed] = r.loss_finite ? 0 : 1;
  mine[kGradsFailed] = r.grads_finite ? 0 : 1;
  mine[kStateFailed] = r.state_failed ? 1 : 0;
  mine[kNormOverflow] = r.norm_overflow ? 1 : 0;
  mine[kEmpty] = empty ? 1 : 0;
  mine[kLoss] = r.loss_finite && std::isfinite(r.loss) ? r.loss : 0;
  mine[kGradNorm] = r.grads_finite && std::isfinite(r.grad_norm) ? r.grad_norm : 0;
  state.vote_and_average(slots);
  open.gradients_averaged = true;
  Vote v;
  double loss = 0, square = 0;
  bool state_failed = false, overflow = false;
  for (int k = 0; k < w; ++k) {
    const double* s = &slots[static_cast<size_t>(k) * kVoteSlots];
    if (s[kLossFailed] > 0 || s[kGradsFailed] > 0) v.failed_ranks.push_back(k);
    state_failed = state_failed || s[kStateFailed] > 0;
    overflow = overflow || s[kNormOverflow] > 0;
    v.any_empty = v.any_empty || s[kEmpty] > 0;
    loss += s[kLoss];
    square += s[kGradNorm] * s[kGradNorm];
  }
  const bool failed = !v.failed_ranks.empty();
  r.loss_finite = r.loss_finite && !failed;
  r.grads_finite = r.grads_finite && !failed;
  r.state_failed = state_failed;  // the weights are the same everywhere: so is their check
  r.norm_overflow = overflow;
  if (!failed) {
    r.loss = loss / w;
    r.grad_norm = std::sqrt(square / w);
  }
  return v;
}

// The incident of `root` on every rank: the root sends its own (with the rank and host that
// found it), the others receive it.
std::shared_ptr<Incident> Guard::Impl::share_incident(std::shared_ptr<Incident> mine, int root,
                                                      const std::vector<int>& failed_ranks) {
  Consensus& c = *state.consensus();
  std::string bytes;
  if (c.rank() == root) {
    NANGUARD_INTERNAL_ASSERT(mine != nullptr, "rank {} speaks for step {} without an incident", root, open.step);
    mine->evidence.rank = root;
    mine->evidence.host = c.host();
    mine->evidence.failed_ranks = failed_ranks;
    bytes = detail::encode_incident(*mine);
  }
  c.broadcast_bytes(bytes, root);
  return c.rank() == root ? mine : detail::decode_incident(bytes);
}

// Ranks whose healthy checks led to different outcomes take the strongest: a screened batch
// (its samples are named) over any other incident over none; among equals the lowest rank.
Guard::Impl::Outcome Guard::Impl::agree(Outcome mine) {
  Consensus& c = *state.consensus();
  const int w = c.world_size();
  std::vector<double> strength(static_cast<size_t>(w), 0.0);
  strength[static_cast<size_t>(c.rank())] = !mine.incident ? 0 : mine.caught_before_update ? 2 : 1;
  c.all_sum(strength);
  int root = 0;
  for (int k = 1; k < w; ++k)
    if (strength[static_cast<size_t>(k)] > strength[static_cast<size_t>(root)]) root = k;
  if (strength[static_cast<size_t>(root)] == 0) return Outcome{};
  std::vector<int> found;
  for (int k = 0; k < w; ++k)
    if (strength[static_cast<size_t>(k)] > 0) found.push_back(k);
  const bool caught = strength[static_cast<size_t>(root)] == 2;
  return Outcome{share_incident(std::move(mine.incident), root, found), caught};
}

// A healthy check: snapshot validation, the overflow warning, histories and the monitor.
void Guard::Impl::after_healthy_check(const detail::CheckResult& r) {
  const int64_t t = open.step;
  if (executor->state().last_snapshot_step == t) {
    // This step's snapshot passed the state check: older batches are no longer needed to
    // replay from it. Ids are cheap: with a gather hook they are kept back to the oldest
    // snapshot, so a rollback to any of them can re-run the steps it loses.
    // The kept first snapshot does not hold ids back: a rollback to it re-runs the lost steps
    // only while the ring has not moved past it.
    const auto held = ring->ring_steps();
    memory.drop_before(memory.has_gather() && !held.empty() ? held.front() : t);
  }
  if (r.norm_overflow && !overflow_streak) {
    log.warn_about(t, "gradient_norm_overflow",
                   fmt::format("the gradient norm {:.3g} is beyond float32's range for its square (every gradient is "
                               "still finite); the parameters are checked after each update until it comes back",
                               r.grad_norm),
                   "lower the learning rate or clip the gradient norm");
  }
  overflow_streak = r.norm_overflow;
  history.push(t, r.loss, r.grad_norm);
  // The monitor's row gets the rate of the last update; update() puts this step's there once it
  // has read it.
  if (monitor) emit_warnings(monitor->observe_step(t, r.loss, r.grad_norm, last_learning_rate));
}

// Monitor warnings as events; a spike arms the screen of this step's batch; prevention, when on,
// is an explicit action of the executor.
void Guard::Impl::emit_warnings(const std::vector<monitor::Warning>& warnings) {
  for (const auto& w : warnings) {
    GuardEvent e;
    e.step = w.step;
    e.cause = w.detector;
    e.module = w.layer;
    e.explanation = w.message;
    e.detail = fmt::format("value {:.4g}, threshold {:.4g}{}; suggestion: {}", w.value, w.threshold,
                           w.forecast_steps >= 0 ? fmt::format(", overflow in ~{:.0f} steps", w.forecast_steps) : "",
                           w.suggestion);
    log.warn(e);
    // A spike can be one batch of extreme samples: screen this step's batch before its update.
    if (w.detector == "loss_spike" || w.detector == "grad_norm_spike") screen_trigger = w.detector;
    executor->prevent_overflow(w);
    if (!pending_divergence) {
      auto found = divergence.check_warning(w);
      // A layer without gradient at the start is a dead start the guard can repair only where
      // its parameters are out of scale; otherwise it stays a warning (depth, structure). A
      // gradient that fades over the depth (a vanishing start) is the whole network's: every
      // out-of-scale weight is re-initialised to fit its activation.
      if (found && detail::is_dead_start(found->kind)) {
        // A saturated activation module's own scope ("1") stands for the layer it follows ("0").
        const auto owner = activation_owners.find(found->layer);
        const std::string layer = (owner == activation_owners.end() ? found->layer : owner->second) + ".";
        found->init_findings = detail::inspect_initialisation(
            state.names(), state.params(), found->kind == "dead_start" ? layer : std::string(), false, activation_kinds);
        // Saturated units whose own weights are in scale are saturated by their inputs.
        const bool own = std::any_of(found->init_findings.begin(), found->init_findings.end(),
                                     [&](const InitFinding& f) { return f.parameter.rfind(layer, 0) == 0; });
        if (found->init_findings.empty() || (found->signal == "saturation" && !own)) found.reset();
      }
      pending_divergence = found;
    }
  }
}

Decision Guard::Impl::incident_decision(std::shared_ptr<Incident> incident, bool caught_before_update) {
  Decision d;
  d.kind = Decision::Kind::incident;
  d.step = open.step;
  d.loss = kNaN;
  const Evidence& ev = incident->evidence;
  const CauseScore& top = incident->diagnosis.top();
  GuardEvent inc;
  inc.step = open.step;
  inc.kind = "incident";
  inc.cause = top.subkind.empty() ? top.cause : top.cause + "/" + top.subkind;
  inc.confidence = top.confidence;
  inc.phase = ev.birth_phase;
  inc.op = ev.birth_op;
  inc.module = ev.birth_module;
  inc.samples = top.samples.empty() ? ev.blamed_samples : top.samples;
  inc.explanation = top.explanation;
  inc.detail = ev.failed_check;
  inc.rank = ev.rank;
  log.emit(inc);
  ledger.record_incident();
  std::vector<RepairAction> plan = options.repair() ? plan_repair(incident->diagnosis, ev, options.policy(), ledger)
                                                    : std::vector<RepairAction>{RepairAction::skip_step};
  if (hooks.override_plan && options.repair()) plan = hooks.override_plan(*incident, plan);
  d.plan = adapt_plan(std::move(plan), ev, caught_before_update, ledger);
  if (consensus && consensus->world_size() > 1) {
    // Every process carries out the plan of rank 0.
    std::vector<double> codes;
    for (RepairAction a : d.plan) codes.push_back(static_cast<double>(a));
    consensus->broadcast(codes, 0);
    d.plan.clear();
    for (double c : codes) d.plan.push_back(static_cast<RepairAction>(static_cast<int>(c)));
  }
  open.caught_before_update = caught_before_update;
  open.incident = incident;
  d.incident = std::move(incident);
  return d;
}

Decision Guard::Impl::check_exception(std::exception_ptr error) {
  NANGUARD_CHECK(open.step >= 0, "check_exception() without begin_step()");
  NANGUARD_CHECK(!open.checked, "check_exception() runs once per begin_step(), instead of check()");
  open.checked = true;
  open.recorder.reset();
  // An exception that is not an incident closes the step and reaches the caller unchanged.
  auto propagate = [&]() -> Decision {
    open.close();
    std::rethrow_exception(error);
  };
  std::string message;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    return propagate();  // not an op's error
  }
  state.zero_grad();
  if (!options.enabled() || executor->state().stopped || open.batch.size() == 0) return propagate();
  std::vector<int> failed_ranks;
  if (state.distributed()) {
    // The other ranks are in this step's vote: this rank's loss is as good as non-finite.
    detail::CheckResult r;
    r.loss_finite = false;
    r.loss = kNaN;
    failed_ranks = cast_vote(r, false).failed_ranks;
  }
  const int root = failed_ranks.empty() ? 0 : failed_ranks.front();
  std::shared_ptr<Incident> incident;
  if (!state.distributed() || state.consensus()->rank() == root) {
    detail::FailedStep failed{open.step, open.batch, closure(), at::Tensor(), false, overflow_streak, message};
    incident = investigator->investigate_exception(failed);
    if (!incident) return propagate();  // in a data-parallel run the other ranks then fail on this one
  }
  if (state.distributed()) incident = share_incident(std::move(incident), root, failed_ranks);
  return incident_decision(std::move(incident), /*caught_before_update=*/false);
}

StepVerdict Guard::Impl::apply(const Decision& d) {
  NANGUARD_CHECK(d.step == open.step && open.step >= 0, "apply() takes the decision of the step begin_step() opened");
  StepVerdict v;
  if (!options.enabled()) {
    state.apply_update(0, 0);
    v = StepVerdict{StepVerdict::Outcome::applied, d.loss, nullptr};
  } else if (d.kind == Decision::Kind::skip) {
    v = StepVerdict{executor->state().stopped ? StepVerdict::Outcome::stopped : StepVerdict::Outcome::skipped, kNaN,
                    nullptr};
    if (!executor->state().stopped) ++executor->state().skipped;
  } else if (d.kind == Decision::Kind::update) {
    v = update(d);
  } else {
    v = repair(d);
  }
  open.close();  // the next check needs a new begin_step
  return v;
}

StepVerdict Guard::Impl::update(const Decision& d) {
  const int64_t t = d.step;
  detail::RepairState& rs = executor->state();
  // The repair's clip (per tensor after exploding gradients) and the monitor's adaptive clip of
  // the total norm both apply.
  double global_clip = rs.global_clip();
  if (monitor) {
    const double adaptive = monitor->adaptive_clip_norm(d.grad_norm);
    if (adaptive > 0 && (global_clip <= 0 || adaptive < global_clip)) global_clip = adaptive;
    if (open.sampled) monitor->begin_update();
  }
  // The vote averaged the gradients already (data parallelism); the norm the clip needs is then
  // theirs, not the voted one.
  const bool averaged = open.gradients_averaged;
  state.apply_update(rs.per_tensor_clip(), global_clip, averaged ? -1 : d.grad_norm, /*averaged=*/!averaged);
  // The rates this update ran with, read right after it: with any cut prevention made at the
  // check, and any change the loop's own code made between check() and apply(). A warning below
  // may cut them for the next update.
  std::vector<double> rates = state.learning_rates();
  last_learning_rate = state.first_learning_rate(rates);
  if (monitor) monitor->set_learning_rate(t, last_learning_rate);
  if (open.sampled) emit_warnings(monitor->end_update(t, state.second_moments(), std::move(open.activations)));
  // Those warnings rest on this rank's own gradients: the next check is agreed on.
  agree_next_check = open.sampled;
  executor->record_update(t, std::move(rates), global_clip, rs.per_tensor_clip());
  const bool snapshot_next = options.snapshot_every() > 0 && rs.applied % options.snapshot_every() == 0;
  const bool check_now =
      open.norm_overflow || (options.check_state_every() > 0 && rs.applied % options.check_state_every() == 0);
  // A snapshot is only kept if this check passes.
  if (snapshot_next || check_now) sentinel.queue_state_check();
  snapshot_due = snapshot_next;
  return StepVerdict{StepVerdict::Outcome::applied, d.loss, nullptr};
}

StepVerdict Guard::Impl::repair(const Decision& d) {
  NANGUARD_CHECK(open.incident != nullptr && d.incident == open.incident, "apply() takes the decision check() gave");
  StepVerdict v = executor->execute(open.incident, d.plan, open.batch, closure(), d.step);
  // A streak of overflowing gradient norms ends with its incident: later evidence must not
  // inherit it.
  overflow_streak = false;
  incidents.push_back(open.incident);
  return v;
}

}  // namespace nanguard
