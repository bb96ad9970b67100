#include "guard/repair_executor.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "guard/divergence_watch.h"
#include "guard/event_log.h"
#include "guard/healthy_history.h"
#include "guard/init_inspection.h"
#include "guard/rng_state.h"
#include "guard/sentinel.h"
#include "guard/training_state.h"
#include "nanguard/guard/snapshot.h"
#include "nanguard/monitor/monitor.h"
#include "nanguard/numerics/health.h"

namespace nanguard::detail {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// An epsilon that keeps sqrt(v) + eps away from zero in the parameters' dtype: PyTorch's 1e-8
// is 0 in float16 (its smallest subnormal is 6e-8), where 1e-4 is the usual choice.
double safe_epsilon_for(c10::ScalarType dtype) { return dtype == c10::ScalarType::Half ? 1e-4 : 1e-8; }


}  // namespace

void RepairExecutor::record_update(int64_t step, std::vector<double> learning_rates, double global_clip,
                                   double per_tensor_clip) {
  ++s_.applied;
  p_.memory.mark_applied(step, std::move(learning_rates), global_clip, per_tensor_clip);
  p_.ledger.record_applied_step();
}

void RepairExecutor::event(Run& r, RepairAction action, const std::string& detail) {
  GuardEvent e;
  e.step = r.step;
  e.kind = "action";
  e.cause = r.cause;
  e.confidence = r.incident->diagnosis.top().confidence;
  e.action = to_string(action);
  e.detail = detail;
  e.rank = r.incident->evidence.rank;
  if (action == RepairAction::quarantine_samples) e.samples = r.incident->diagnosis.top().samples;
  p_.log.emit(e);
  r.incident->actions.push_back(e.action);
}

void RepairExecutor::stop(Run& r, const std::string& why) {
  event(r, RepairAction::stop, why);
  s_.stopped = true;
}

void RepairExecutor::skip_step(Run& r) { event(r, RepairAction::skip_step, fmt::format("update of step {} dropped", r.step)); }

void RepairExecutor::quarantine(Run& r) {
  const std::vector<int64_t>& ids = r.incident->diagnosis.top().samples;
  p_.memory.quarantine(ids);
  if (hooks_.quarantine) hooks_.quarantine(ids);
  event(r, RepairAction::quarantine_samples, fmt::format("{} samples excluded for the rest of the run", ids.size()));
}

void RepairExecutor::rollback(Run& r) {
  if (!p_.ledger.can_rollback(r.step)) return stop(r, "rollback budget spent");
  int64_t target = std::min(p_.history.trend_start(r.step), r.step);
  // A finite divergence: the snapshot must hold a state from before the excursion began (one
  // taken at that step already holds the state whose loss left the healthy range).
  const Evidence& ev = r.incident->evidence;
  if (ev.diverged && ev.excursion_start >= 0) target = std::min(target, ev.excursion_start - 1);
  // A dead start goes back to the initial state itself (the re-initialisation after the
  // rollback replaces what was wrong with it).
  if (ev.diverged && detail::is_dead_start(ev.divergence_kind)) target = 0;
  // The kept first snapshot is for divergences (a run that leaves its regime at the start);
  // other rollbacks go to the ring, whose lost steps the batch memory can re-run.
  auto restored = p_.ring.restore_at_or_before(target, /*include_first=*/ev.diverged);
  // Without one that old: the newest, unless the run diverged (every newer state is the
  // excursion's; stopping says so instead of training on from it).
  if (!restored && !ev.diverged) restored = p_.ring.restore_newest();
  if (!restored) return stop(r, "no snapshot to roll back to");
  p_.ring.discard_after(*restored);
  s_.last_snapshot_step = *restored;
  if (r.verdict.outcome == StepVerdict::Outcome::recomputed) --s_.applied;  // undone with the rest
  p_.sentinel.drop_state_check();  // it was queued for a state that is gone
  // The steps applied since the snapshot are lost unless re-run (after every action, so with
  // the repaired settings); that needs the batch of each of them.
  r.lost_steps = p_.memory.covers(*restored) ? p_.memory.applied_between(*restored, r.step) : std::vector<RecentBatch>{};
  p_.memory.unmark_all();
  r.rolled_back_to = *restored;
  p_.history.clear();
  if (p_.monitor) p_.monitor->reset_trends();
  if (p_.divergence) p_.divergence->rolled_back_to(*restored);
  p_.ledger.record_rollback(r.step);
  r.verdict.outcome = StepVerdict::Outcome::rolled_back;
  event(r, RepairAction::rollback, fmt::format("rolled back to the snapshot of step {}", *restored));
}

void RepairExecutor::lr_backoff(Run& r) {
  const double before = p_.state.learning_rate();
  const double floor = options_.policy().budget.lr_floor;
  double factor = options_.policy().budget.lr_factor;
  if (before * factor < floor) factor = before > 0 ? floor / before : 1.0;
  if (factor >= 1.0) return stop(r, fmt::format("learning rate {:.3g} is at its floor {:.3g}", before, floor));
  s_.lr_scale *= factor;
  p_.state.scale_learning_rates(factor);
  if (r.incident->diagnosis.top().cause == cause::unscaled_inputs) {
    if (s_.unscaled_input_backoffs++ == 0) s_.rate_before_unscaled_backoffs = before;
    s_.unscaled_backoff_factor *= factor;
  }
  event(r, RepairAction::lr_backoff, fmt::format("learning rate {:.3g} -> {:.3g}", before, before * factor));
}

void RepairExecutor::enable_clipping(Run& r) {
  const double before = s_.clip_norm;
  const double configured = options_.policy().budget.clip_norm;
  s_.clip_norm = s_.clip_norm > 0 ? s_.clip_norm / 2 : configured > 0 ? configured : r.automatic_clip;
  // Exploding gradients: the spikes recur in the same layers while their weights stay, and a
  // global clip would shrink every other layer's update with them (measured on Z2: 52-68% test
  // accuracy with a global clip at 4x the healthy norm, 82-84% per tensor).
  if (r.incident->diagnosis.top().cause == cause::exploding_gradients) s_.clip_per_tensor = true;
  const char* scope = s_.clip_per_tensor ? " per tensor" : "";
  event(r, RepairAction::enable_clipping,
        before > 0 ? fmt::format("gradient-norm clipping{} tightened {:.3g} -> {:.3g}", scope, before, s_.clip_norm)
                   : fmt::format("gradient-norm clipping{} at {:.3g}", scope, s_.clip_norm));
}

void RepairExecutor::stable_loss(Run& r) {
  const bool switched = hooks_.use_stable_loss && hooks_.use_stable_loss();
  event(r, RepairAction::stable_loss, switched ? "loss switched to its stable form" : "the loss cannot be switched");
  if (switched && !r.rerun_planned(options_.rerun_lost_steps()) && recompute(r)) {
    r.verdict.outcome = StepVerdict::Outcome::recomputed;
    event(r, RepairAction::recompute, "step recomputed with the stable loss");
  }
}

void RepairExecutor::rescale_inputs(Run& r) {
  const std::string done = hooks_.rescale_inputs ? hooks_.rescale_inputs() : std::string();
  if (done.empty()) {
    event(r, RepairAction::rescale_inputs, "the inputs cannot be rescaled");
    return lr_backoff(r);  // the next best thing for a first layer that overshoots
  }
  if (p_.divergence) p_.divergence->restart_level();  // the loss level of raw inputs no longer applies
  // A backoff made for these inputs did not hold; the rescale replaces it, at the rate the run
  // was configured with (a lower one on top would correct the same overshoot twice).
  std::string withdrawn;
  if (s_.unscaled_backoff_factor < 1.0) {
    const double before = p_.state.learning_rate();
    p_.state.scale_learning_rates(1.0 / s_.unscaled_backoff_factor);
    s_.lr_scale /= s_.unscaled_backoff_factor;
    s_.unscaled_backoff_factor = 1.0;
    withdrawn = fmt::format("; learning rate {:.3g} -> {:.3g}: the backoff made for the unscaled inputs is "
                            "withdrawn, the rescale replaces it",
                            before, p_.state.learning_rate());
  }
  event(r, RepairAction::rescale_inputs, done + withdrawn);
}

// Raises every epsilon that is 0 or below the safe value; groups without one (SGD) are left.
void RepairExecutor::safe_epsilon(Run& r) {
  const auto& params = p_.state.params();
  const double safe = safe_epsilon_for(params.empty() ? c10::ScalarType::Float : params.front().scalar_type());
  std::string changed;
  for (OptimizerAdapter* opt : p_.state.optimizers()) {
    for (size_t g = 0; g < opt->num_groups(); ++g) {
      const double eps = opt->epsilon(g);
      if (std::isnan(eps) || eps >= safe) continue;
      opt->set_epsilon(g, safe);
      changed += fmt::format("{}{} group {}: {:.3g} -> {:.3g}", changed.empty() ? "" : "; ", opt->name(), g, eps, safe);
    }
  }
  event(r, RepairAction::safe_epsilon, changed.empty() ? "no epsilon below " + fmt::format("{:.3g}", safe) : "epsilon " + changed);
}

// Re-initialises the parameters the evidence measured out of scale. Their optimizer state
// describes the old values, so it is erased; and the snapshot rolled back to gets the new
// values, so that a later rollback to it does not bring the bad initialisation back.
void RepairExecutor::reinitialize(Run& r) {
  const auto& names = p_.state.names();
  const auto& params = p_.state.params();
  std::vector<at::Tensor> changed;
  std::string done;
  for (const InitFinding& f : r.incident->evidence.init_findings) {
    const auto it = std::find(names.begin(), names.end(), f.parameter);
    if (it == names.end()) continue;
    const at::Tensor& p = params[static_cast<size_t>(it - names.begin())];
    const auto bias = std::find(names.begin(), names.end(), detail::sibling_bias(f.parameter));
    const at::Tensor b = bias == names.end() ? at::Tensor() : params[static_cast<size_t>(bias - names.begin())];
    done += (done.empty() ? "" : "; ") + detail::reinitialize(p, f, b);
    changed.push_back(p);
    if (b.defined() && f.input_mean != 0) changed.push_back(b);
  }
  for (OptimizerAdapter* opt : p_.state.optimizers()) {
    const std::vector<at::Tensor> own = opt->parameters();
    auto kept = opt->state();
    const auto before = kept.size();
    kept.erase(std::remove_if(kept.begin(), kept.end(),
                              [&](const OptimizerParamStateView& v) {
                                if (v.param < 0 || v.param >= static_cast<int64_t>(own.size())) return false;
                                const at::Tensor& p = own[static_cast<size_t>(v.param)];
                                return std::any_of(changed.begin(), changed.end(),
                                                   [&](const at::Tensor& c) { return c.is_same(p); });
                              }),
               kept.end());
    if (kept.size() != before) opt->load_state(kept);
  }
  if (r.rolled_back_to && !changed.empty()) p_.ring.retake(*r.rolled_back_to);
  event(r, RepairAction::reinitialize, done.empty() ? "no parameter to re-initialise" : "re-initialised " + done);
}

void RepairExecutor::recompute_action(Run& r) {
  if (r.rerun_planned(options_.rerun_lost_steps())) return;  // it runs after the re-run
  const bool ok = recompute(r);
  if (ok) r.verdict.outcome = StepVerdict::Outcome::recomputed;
  event(r, RepairAction::recompute,
        r.closure == nullptr ? "no closure to recompute the step with: dropped"
        : ok                 ? "step recomputed from the same state: finite, applied"
                             : "step recomputed from the same state: still non-finite, dropped");
}

// Data parallelism: what every rank's run of a closure gave, so that all apply the update or
// none does (an update is a collective). kRunOk < kRunEmpty < kRunFailed: the worst wins.
enum RunCode { kRunOk = 0, kRunEmpty = 1, kRunFailed = 2 };
int RepairExecutor::agreed(int code) const {
  if (!p_.state.distributed()) return code;
  std::vector<double> v{static_cast<double>(code)};
  p_.state.consensus()->all_max(v);
  return static_cast<int>(v.front());
}

bool RepairExecutor::recompute(Run& r) {
  if (r.closure == nullptr) return false;  // the same on every rank: the loop gave none
  const data::Batch kept = p_.memory.filter(r.batch);
  int code = kRunEmpty;
  at::Tensor again;
  if (kept.size() > 0) {
    p_.rng_before_step.restore();
    p_.state.zero_grad();
    try {
      again = (*r.closure)(kept, step_context(StepContext::Run::recompute, r.step));
      code = p_.state.loss_and_gradients_finite(again) ? kRunOk : kRunFailed;
    } catch (const std::exception&) {
      code = kRunFailed;  // as good as non-finite again (an op refused a NaN): the step is dropped
    }
  }
  if (agreed(code) != kRunOk) return false;
  p_.state.apply_update(s_.per_tensor_clip(), s_.global_clip());
  ++s_.applied;
  p_.memory.mark_applied(r.step, p_.state.learning_rates(), s_.global_clip(), s_.per_tensor_clip());
  p_.sentinel.queue_state_check();  // the state after a repaired update is checked with the next step's sync
  r.verdict.loss = again.sum().item<double>();
  return true;
}

int64_t RepairExecutor::rerun_lost_steps(Run& r) {
  int64_t rerun = 0;
  bool finite = true;
  for (const RecentBatch& rb : r.lost_steps) {
    const data::Batch b = p_.memory.stored(rb);
    int code = kRunEmpty;
    if (b.size() > 0) {
      p_.state.zero_grad();
      try {
        code = p_.state.loss_and_gradients_finite((*r.closure)(b, step_context(StepContext::Run::rerun, rb.step)))
                   ? kRunOk
                   : kRunFailed;
      } catch (const std::exception&) {
        code = kRunFailed;  // an op refused a non-finite value: the re-run failed like a NaN
      }
    }
    code = agreed(code);
    if (code == kRunEmpty) continue;
    if (code == kRunFailed) {
      finite = false;
      break;
    }
    p_.state.apply_update(s_.per_tensor_clip(), s_.global_clip());
    ++rerun;
    p_.memory.mark_applied(rb.step, p_.state.learning_rates(), s_.global_clip(), s_.per_tensor_clip());
    if (hooks_.rerun_step_applied) hooks_.rerun_step_applied();
  }
  p_.state.zero_grad();
  // The last update is checked here: the next step must not start from a poisoned state.
  if (finite) finite = all_finite(p_.state.state_tensors());
  if (!finite) {
    p_.ring.restore_newest();  // the snapshot rolled back to: newer ones were discarded
    p_.memory.unmark_all();
    return -1;
  }
  s_.applied += rerun;
  s_.rerun += rerun;
  return rerun;
}

// Re-runs the lost steps from the snapshot, then this step, so the rollback costs no data.
void RepairExecutor::rerun_lost(Run& r) {
  GuardEvent e;
  e.step = r.step;
  e.kind = "action";
  e.cause = r.cause;
  e.confidence = r.incident->diagnosis.top().confidence;
  e.action = "rerun_lost_steps";
  e.rank = r.incident->evidence.rank;
  const int64_t rerun = rerun_lost_steps(r);
  if (rerun >= 0) {
    const bool ok = recompute(r);
    if (ok) r.verdict.outcome = StepVerdict::Outcome::recomputed;
    e.detail = fmt::format("re-ran the {} steps applied since the snapshot of step {} with the repaired settings, "
                           "then this step ({})",
                           rerun, *r.rolled_back_to, ok ? "applied" : "still non-finite, dropped");
  } else {
    e.detail = fmt::format("re-running the {} steps since the snapshot of step {} went non-finite again: the run "
                           "stays at the snapshot",
                           r.lost_steps.size(), *r.rolled_back_to);
  }
  p_.log.emit(e);
  r.incident->actions.push_back(e.action);
}

StepVerdict RepairExecutor::execute(const std::shared_ptr<Incident>& incident, const std::vector<RepairAction>& plan,
                                    const data::Batch& batch, const StepClosure* closure, int64_t step) {
  const CauseScore& top = incident->diagnosis.top();
  Run r{incident, batch, closure, step, top.subkind.empty() ? top.cause : top.cause + "/" + top.subkind,
        StepVerdict{StepVerdict::Outcome::skipped, kNaN, incident}, std::nullopt, {}, 0};
  // Once extreme samples were seen, every later batch is screened before its update.
  if (top.cause == cause::data_outlier) s_.outlier_watch = true;
  // Read before a rollback clears the history it comes from: twice the typical healthy norm
  // (the average-norm heuristic of Pascanu et al. 2013, with room for ordinary updates). On Z2,
  // per-tensor clipping at 1x / 2x / 4x / 8x of it ended at 82.9 / 83.5 / 83.7 / 83.7% mean test
  // accuracy (clean 84.7%); from 8x on the spikes came back as new incidents.
  r.automatic_clip = p_.history.automatic_clip_norm(2.0, step);
  // Samples named by row only (a batch without dataset ids) cannot be kept out of later batches.
  const Evidence& ev = incident->evidence;
  const bool samples_to_blame = !ev.nonfinite_samples.empty() || !ev.outlier_samples.empty() || !ev.blamed_rows.empty();
  if (!ev.batch_has_ids && samples_to_blame && top.samples.empty() &&
      (top.cause == cause::bad_input_data || top.cause == cause::data_outlier)) {
    event(r, RepairAction::quarantine_samples,
          "could not act: the batch carries no dataset ids (pass Batch::ids to quarantine samples)");
    r.incident->actions.pop_back();  // nothing was quarantined
  }
  for (RepairAction a : plan) {
    switch (a) {
      case RepairAction::skip_step: skip_step(r); break;
      case RepairAction::quarantine_samples: quarantine(r); break;
      case RepairAction::rollback: rollback(r); break;
      case RepairAction::lr_backoff: lr_backoff(r); break;
      case RepairAction::enable_clipping: enable_clipping(r); break;
      case RepairAction::stable_loss: stable_loss(r); break;
      case RepairAction::recompute: recompute_action(r); break;
      case RepairAction::stop: stop(r, "training stopped"); break;
      case RepairAction::rescale_inputs: rescale_inputs(r); break;
      case RepairAction::safe_epsilon: safe_epsilon(r); break;
      case RepairAction::reinitialize: reinitialize(r); break;
    }
    if (s_.stopped) break;
  }
  if (!s_.stopped && r.rerun_planned(options_.rerun_lost_steps())) rerun_lost(r);
  finish(r);
  return r.verdict;
}

// Budgets, counters and the outcome.
void RepairExecutor::finish(Run& r) {
  if (p_.ledger.incidents_exhausted() && !s_.stopped) stop(r, "incident budget spent");
  const bool applied_now = r.verdict.applied();  // a stop after a recompute keeps its update
  if (s_.stopped) r.verdict.outcome = StepVerdict::Outcome::stopped;
  if (!applied_now) {
    ++s_.skipped;
    p_.ledger.record_skip();
    if (p_.ledger.skips_exhausted() && !s_.stopped) {
      stop(r, "too many consecutive skipped steps");
      r.verdict.outcome = StepVerdict::Outcome::stopped;
    }
  } else {
    p_.ledger.record_applied_step();
  }
  p_.state.zero_grad();
  r.incident->outcome = to_string(r.verdict.outcome);
}

void RepairExecutor::prevent_overflow(const monitor::Warning& w) {
  if (p_.monitor == nullptr || !p_.monitor->wants_lr_cut(w)) return;
  const double before = p_.state.learning_rate();
  double factor = p_.monitor->options().lr_cut_factor();
  const double floor = options_.policy().budget.lr_floor;
  if (before * factor < floor) factor = before > 0 ? floor / before : 1.0;
  if (factor >= 1.0) return;
  s_.lr_scale *= factor;
  p_.state.scale_learning_rates(factor);
  GuardEvent a;
  a.step = w.step;
  a.kind = "action";
  a.cause = w.detector;
  a.action = to_string(RepairAction::lr_backoff);
  a.detail = fmt::format("prevention: learning rate {:.3g} -> {:.3g}", before, before * factor);
  p_.log.emit(a);
}

}  // namespace nanguard::detail
