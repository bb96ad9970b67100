#include "guard/investigator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>

#include <torch/torch.h>

#include "guard/batch_memory.h"
#include "guard/divergence_watch.h"
#include "guard/init_inspection.h"
#include "guard/rng_state.h"
#include "guard/training_state.h"
#include "nanguard/data/input_scale.h"
#include "nanguard/env/self_test.h"
#include "nanguard/guard/snapshot.h"
#include "nanguard/numerics/health.h"
#include "nanguard/trace/birth.h"
#include "nanguard/trace/tracer.h"

namespace nanguard::detail {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxFeaturesListed = 5;

// Dataset ids of a batch's rows; -1 for each row of a batch without ids.
std::vector<int64_t> sample_ids(const data::Batch& batch) {
  if (batch.ids.defined()) return to_vector(batch.ids);
  return std::vector<int64_t>(static_cast<size_t>(std::max<int64_t>(batch.size(), 0)), -1);
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The denominator of a birth op that divides: its zeros and the ops that wrote it.
void fill_denominator(const std::vector<trace::OpRecord>& records, const trace::OpRecord& op, Evidence& ev) {
  const trace::Denominator d = trace::find_denominator(records, op);
  ev.birth_is_division = d.division;
  ev.birth_denominator_zeros = d.zeros;
  ev.birth_denominator_numel = d.numel;
  ev.birth_denominator_ops = d.made_by;
  ev.birth_denominator_sqrt_add = d.sqrt_then_add;
}

// Copies what the birth finder found into the evidence.
void fill_birth(const std::vector<trace::OpRecord>& records, const trace::Birth& birth, const data::Batch& batch,
                Evidence& ev) {
  for (const auto& r : records) ev.replay_ops.push_back(r.name);
  std::sort(ev.replay_ops.begin(), ev.replay_ops.end());
  ev.replay_ops.erase(std::unique(ev.replay_ops.begin(), ev.replay_ops.end()), ev.replay_ops.end());
  if (!birth.found) return;
  ev.birth_found = true;
  ev.birth_op = birth.op.name;
  ev.birth_phase = trace::to_string(birth.op.phase);
  ev.birth_module = birth.op.module;
  ev.birth_backward_node = birth.op.backward_node;
  ev.birth_reason = birth.reason;
  ev.birth_inf_source = birth.inf_source;
  fill_denominator(records, birth.op, ev);
  for (const auto& in : birth.op.inputs) {
    ev.birth_input_nan += in.nan_count;
    ev.birth_input_posinf += in.posinf_count;
    ev.birth_input_neginf += in.neginf_count;
    ev.birth_input_zeros += in.zero_count;
    ev.birth_input_negatives += in.negative_count;
    if (std::isfinite(in.absmax)) ev.birth_input_absmax = std::max(ev.birth_input_absmax, in.absmax);
    if (std::isfinite(in.max)) ev.birth_input_max = std::max(ev.birth_input_max, in.max);
    ev.exp_overflow_threshold = exp_overflow_threshold(in.dtype);
  }
  for (const auto& op : birth.preceding) {
    double absmax = 0;
    for (const auto& out : op.outputs) {
      if (std::isfinite(out.absmax)) absmax = std::max(absmax, out.absmax);
    }
    ev.preceding_ops.push_back(OpSummary{op.name, trace::to_string(op.phase), op.module, absmax});
  }
  // A NaN made from Inf (a birth whose inputs were not finite): the rows it made NaN are the
  // ones to blame, not the rows that only carried the Inf on.
  ev.blamed_rows = birth.op.inputs_finite() ? birth.op.nonfinite_rows : birth.op.nan_rows;
  // Every row of the batch went non-finite at once (e.g. a gradient overflow in backward): no
  // sample stands out, so none is blamed.
  if (static_cast<int64_t>(ev.blamed_rows.size()) >= batch.size() && batch.size() > 1) {
    ev.blamed_rows.clear();
    return;
  }
  const auto ids = sample_ids(batch);
  for (int64_t row : ev.blamed_rows) {
    if (row >= 0 && row < static_cast<int64_t>(ids.size()) && ids[static_cast<size_t>(row)] >= 0)
      ev.blamed_samples.push_back(ids[static_cast<size_t>(row)]);
  }
}

// Blamed rows whose sample the data audit did not flag, looked at in the failing batch: a
// blank (every value 0) or constant row is what a per-sample statistic divides by zero on, in a
// loop that has no audit of its dataset.
void flag_degenerate_rows(const data::Batch& batch, Evidence& ev) {
  if (ev.blamed_rows.empty() || !batch.x.defined() || batch.x.dim() < 1 || !batch.x.is_floating_point()) return;
  const auto ids = sample_ids(batch);
  std::vector<int64_t> blank, constant;
  for (int64_t row : ev.blamed_rows) {
    if (row < 0 || row >= batch.x.size(0) || row >= static_cast<int64_t>(ids.size())) continue;
    const int64_t id = ids[static_cast<size_t>(row)];
    if (id < 0 || ev.audit_flagged_samples.contains(id)) continue;
    const at::Tensor values = batch.x[row].detach().reshape({-1}).to(at::kCPU, at::kDouble);
    if (values.numel() < 2 || !values.isfinite().all().item<bool>()) continue;
    const double lo = values.min().item<double>(), hi = values.max().item<double>();
    if (lo == 0 && hi == 0) {
      blank.push_back(id);
    } else if (lo == hi) {
      constant.push_back(id);
    }
  }
  if (!blank.empty()) ev.batch_flagged_samples.add("blank", std::move(blank));
  if (!constant.empty()) ev.batch_flagged_samples.add("constant", std::move(constant));
}

// The parameter an optimizer-step op wrote or read: the parameter itself (an in-place update)
// or one of its state tensors (a momentum buffer); "" when none matches.
std::string parameter_of(const TrainingState& state, const trace::OpRecord& op) {
  std::map<uintptr_t, std::string> names;
  const auto& params = state.params();
  for (size_t i = 0; i < params.size(); ++i) names[trace::tensor_id(params[i])] = state.names()[i];
  for (OptimizerAdapter* opt : state.optimizers()) {
    const std::vector<at::Tensor> own = opt->parameters();
    for (const auto& view : opt->state()) {
      if (view.param < 0 || static_cast<size_t>(view.param) >= own.size()) continue;
      auto name = names.find(trace::tensor_id(own[static_cast<size_t>(view.param)]));
      if (name == names.end()) continue;
      const std::string param_name = name->second;
      for (const auto& t : view.tensors)
        if (t.defined()) names.emplace(trace::tensor_id(t), param_name);
    }
  }
  for (const auto* ids : {&op.output_ids, &op.input_ids})
    for (uintptr_t id : *ids) {
      auto it = names.find(id);
      if (id != 0 && it != names.end()) return it->second;
    }
  return "";
}

// The optimizer's name, its smallest epsilon over every group, the parameters' dtype.
void fill_optimizer(const TrainingState& state, Evidence& ev) {
  for (OptimizerAdapter* opt : state.optimizers()) {
    if (ev.optimizer_name.empty()) ev.optimizer_name = opt->name();
    for (size_t g = 0; g < opt->num_groups(); ++g) {
      const double eps = opt->epsilon(g);
      if (!std::isnan(eps) && !(eps >= ev.optimizer_epsilon)) ev.optimizer_epsilon = eps;
    }
  }
  if (!state.params().empty()) ev.parameter_dtype = dtype_name(state.params().front().scalar_type());
}

// Non-finite values that were in the input batch were born before any op: the phase says so
// (no op is the birth, and "unknown" would suggest the tracer missed one).
void mark_input_birth(Evidence& ev) {
  if (!ev.birth_found && ev.birth_phase.empty() && !ev.nonfinite_samples.empty()) ev.birth_phase = "input";
}

// The first parameter or optimizer-state tensor that is non-finite.
std::optional<uintptr_t> failing_state_tensor(const TrainingState& state) {
  for (const auto& t : state.state_tensors()) {
    if (!all_finite({t})) return trace::tensor_id(t);
  }
  return std::nullopt;
}

std::shared_ptr<Incident> new_incident(int64_t step) {
  auto incident = std::make_shared<Incident>();
  incident->step = step;
  incident->evidence.step = step;
  return incident;
}

}  // namespace

Investigator::Investigator(TrainingState& state, SnapshotRing& ring, const BatchMemory& memory,
                           CpuRngState& rng_before_step, bool replay, InvestigatorHooks hooks)
    : state_(state), ring_(ring), memory_(memory), rng_(rng_before_step), replay_(replay), hooks_(std::move(hooks)) {}

Investigator::~Investigator() = default;

void Investigator::collect_batch_evidence(const data::Batch& batch, Evidence& ev) const {
  torch::NoGradGuard no_grad;
  ev.batch_size = batch.size();
  ev.batch_has_ids = batch.ids.defined();
  if (!batch.x.defined() || !batch.x.is_floating_point() || batch.size() == 0) return;
  auto x = batch.x.reshape({batch.size(), -1}).to(torch::kCPU);
  auto bad = x.isfinite().logical_not();
  auto bad_per_row = bad.sum(1);
  const auto ids = sample_ids(batch);
  auto finite_abs = torch::where(bad, torch::zeros_like(x), x.abs());
  auto absmax = std::get<0>(finite_abs.max(1)).to(torch::kDouble);
  for (int64_t row : to_vector(bad_per_row.nonzero().flatten())) {
    SampleEvidence s;
    s.id = ids[static_cast<size_t>(row)];
    s.row = row;
    s.nonfinite = bad_per_row[row].item<int64_t>();
    auto features = to_vector(bad[row].nonzero().flatten());
    if (features.size() > kMaxFeaturesListed) features.resize(kMaxFeaturesListed);
    s.features = features;
    s.absmax = absmax[row].item<double>();
    ev.nonfinite_samples.push_back(s);
  }
  // Finite but extreme samples: robust z-score of each row's L2 norm against the batch (median
  // and MAD), so one huge sample cannot hide itself by inflating the spread. Norms rather than
  // the largest |x|: that is often the same for every row (1.0 for scaled images), leaving no
  // spread to measure against.
  if (batch.size() >= 4) {
    const auto norms = finite_abs.to(torch::kDouble).pow(2).sum(1).sqrt();
    const double median = norms.median().item<double>();
    const double mad = (norms - median).abs().median().item<double>();
    const double scale = 1.4826 * mad + 1e-12 + 1e-6 * std::abs(median);
    const auto z = (norms - median) / scale;
    const auto rows = to_vector((z > 6.0).logical_and(norms > 10.0 * std::max(median, 1e-12)).nonzero().flatten());
    for (int64_t row : rows) {
      SampleEvidence s;
      s.id = ids[static_cast<size_t>(row)];
      s.row = row;
      s.absmax = absmax[row].item<double>();
      s.zscore = z[row].item<double>();
      ev.outlier_samples.push_back(s);
    }
  }
}

void Investigator::collect_tensor_evidence(const at::Tensor& loss, Evidence& ev) const {
  torch::NoGradGuard no_grad;
  if (loss.defined() && !torch::isfinite(loss.detach()).all().item<bool>()) ev.nonfinite_tensors.push_back("loss");
  double weight_absmax = 0;
  const auto& params = state_.params();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    if (!all_finite({p})) {
      ev.nonfinite_tensors.push_back(state_.names()[i]);
      ev.params_nonfinite_before_step = true;
    } else {
      weight_absmax = std::max(weight_absmax, p.abs().max().item<double>());
    }
    if (p.grad().defined()) {
      if (!all_finite({p.grad()})) {
        ev.nonfinite_tensors.push_back(state_.names()[i] + ".grad");
      } else {
        // In double: a finite gradient's float32 norm overflows beyond ~1.8e19.
        ev.layer_grad_norms.emplace_back(state_.names()[i], p.grad().to(torch::kDouble).norm().item<double>());
      }
    }
  }
  ev.weight_absmax = weight_absmax;
  auto opt_state = state_.optimizer_state_tensors();
  ev.optimizer_state_nonfinite = !opt_state.empty() && !all_finite(opt_state);
}

// Runs the closure again under the op tracer and records where the first non-finite value
// was born. The optimizer has not stepped, so parameters are the pre-step ones; the RNG is
// rewound so dropout masks repeat. A closure that throws here leaves the state as it was (the
// gradients dropped) and the exception propagates.
void Investigator::replay(const FailedStep& failed, Evidence& ev) {
  const data::Batch& batch = failed.batch;
  for (int attempt = 0; attempt < 2; ++attempt) {
    rng_.restore();
    state_.zero_grad();
    std::vector<trace::OpRecord> records;
    at::Tensor loss;
    {
      trace::OpTracer tracer(trace::TracerOptions().batch_size(batch.size()));
      try {
        loss = (*failed.closure)(batch, step_context(StepContext::Run::replay, failed.step, true));
      } catch (...) {
        state_.zero_grad();
        throw;
      }
      tracer.stop();
      records = tracer.records();
    }
    ++ev.replays;
    ev.replayed = true;
    std::optional<uintptr_t> failing;
    if (!all_finite({loss.detach()})) {
      failing = trace::tensor_id(loss);
    } else {
      for (const auto& p : state_.params()) {
        if (p.grad().defined() && !all_finite({p.grad()})) {
          failing = trace::tensor_id(p.grad());
          break;
        }
      }
    }
    if (!failing && ev.gradient_norm_overflow && state_.gradient_norm_overflows()) {
      ev.reproduced = true;  // finite but overflowing again: deterministic, and no op made a NaN
      return;
    }
    if (!failing) continue;  // finite this time: try once more before calling it transient
    ev.reproduced = true;
    fill_birth(records, trace::find_birth(records, failing), batch, ev);
    return;
  }
}

// The parameters or the optimizer state went non-finite in an earlier optimizer step: restore
// the newest snapshot, re-run the steps since to find the update that failed, and trace that
// one (forward, backward and optimizer). Whatever the replay did, the state is left at the
// snapshot it started from: consistent and finite even when no rollback follows (a spent
// budget stops the run). If the closure throws, the state before the replay is put back.
void Investigator::replay_optimizer_step(const FailedStep& failed, Evidence& ev) {
  if (ring_.steps().empty()) return;
  if (!before_replay_) {
    TrainingStateRefs refs = state_.snapshot_refs();
    refs.save_extra = hooks_.save_extra;  // the caller's counters and schedule come back too
    refs.load_extra = hooks_.load_extra;
    before_replay_ = std::make_unique<SnapshotRing>(std::move(refs), 1);
  }
  before_replay_->take(failed.step);
  try {
    trace_failed_update(failed, ev);
  } catch (...) {
    before_replay_->restore_newest();
    state_.zero_grad();
    throw;
  }
  ring_.restore_newest();
  state_.zero_grad();
}

void Investigator::trace_failed_update(const FailedStep& failed, Evidence& ev) {
  auto restored = ring_.restore_newest();
  if (!restored || !failed.closure) return;
  // The steps from the snapshot up to the one whose optimizer step failed (the failing step's
  // own batch is not part of it); replaying needs every batch since the snapshot.
  if (!memory_.covers(*restored)) return;
  const std::vector<RecentBatch> steps = memory_.applied_between(*restored, failed.step);
  if (steps.empty()) return;
  const StepClosure& closure = *failed.closure;
  ev.replayed = true;
  ++ev.replays;
  // Applies the gradients of step i as the run did: its learning rates and its clipping.
  auto update_as_recorded = [&](size_t i) {
    state_.set_learning_rates(steps[i].learning_rates);
    state_.apply_update(steps[i].per_tensor_clip, steps[i].global_clip, -1, /*averaged=*/false);
  };
  // Runs step i of the replay; false when its loss is already non-finite (a failure the
  // optimizer did not cause).
  auto run_step = [&](size_t i) {
    state_.zero_grad();
    at::Tensor loss = closure(memory_.stored(steps[i]), step_context(StepContext::Run::replay, steps[i].step, false));
    if (!all_finite({loss.detach()})) return false;
    update_as_recorded(i);
    return true;
  };
  // The deferred state check can come several steps after the update that failed: find that
  // update first (the state is checked after each replayed one), then trace it.
  size_t target = steps.size() - 1;
  for (size_t i = 0; i < target; ++i) {
    if (!run_step(i)) return;
    if (failing_state_tensor(state_)) {
      target = i;
      ring_.restore_newest();  // the snapshot replayed from: run up to the failing update again
      for (size_t j = 0; j < target; ++j) {
        if (!run_step(j)) return;
      }
      break;
    }
  }
  const data::Batch b = memory_.stored(steps[target]);
  // The state before the failing optimizer step (with its learning rates): what an offline
  // replay needs. Filed under the incident's step, like every dump.
  state_.set_learning_rates(steps[target].learning_rates);
  if (hooks_.dump_incident) {
    CpuRngState now;
    now.capture();
    hooks_.dump_incident(failed.step, b, now.to_tensor());
  }
  std::vector<trace::OpRecord> records;
  {
    trace::OpTracer tracer(trace::TracerOptions().batch_size(b.size()));
    state_.zero_grad();
    at::Tensor loss = closure(b, step_context(StepContext::Run::replay, steps[target].step, true));
    update_as_recorded(target);
    tracer.stop();
    records = tracer.records();
  }
  const std::optional<uintptr_t> failing = failing_state_tensor(state_);
  if (!failing) return;
  ev.reproduced = true;
  const trace::Birth birth = trace::find_birth(records, *failing);
  fill_birth(records, birth, b, ev);
  if (birth.found && birth.op.phase == trace::Phase::optimizer) ev.birth_parameter = parameter_of(state_, birth.op);
}

// A fault that did not reproduce: ask the numerics self-test whether the machine is sound.
void Investigator::check_environment(Evidence& ev) const {
  if (!ev.replayed || ev.reproduced || ev.environment_suspect) return;
  const auto device = state_.params().front().device().str();
  const env::SelfTestReport st = env::run_self_test(env::SelfTestOptions().set_quick(true).set_device(device));
  ev.environment_suspect = !st.passed();
  ev.environment_finding = st.first_failure();
}

std::shared_ptr<Incident> Investigator::investigate(const FailedStep& failed) {
  const auto detected = Clock::now();
  auto incident = new_incident(failed.step);
  Evidence& ev = incident->evidence;
  if (hooks_.run_evidence) hooks_.run_evidence(ev);
  fill_optimizer(state_, ev);
  collect_batch_evidence(failed.batch, ev);
  collect_tensor_evidence(failed.loss, ev);
  // Recurrent gains above every standard init (an exploding recurrent gradient's usual origin),
  // on the pre-step weights: an SVD per recurrent matrix, on an incident only.
  ev.init_findings = inspect_initialisation(state_.names(), state_.params(), "", /*recurrent_only=*/true);
  // The gradient norm was beyond float32's range on the steps just before (or is now).
  ev.gradient_norm_overflow =
      failed.overflow_streak || (ev.nonfinite_tensors.empty() && state_.gradient_norm_overflows());
  const bool can_replay = replay_ && failed.closure != nullptr && *failed.closure;
  if (failed.state_failed || ev.params_nonfinite_before_step) {
    // The state went bad in an earlier optimizer step: that is where to look.
    ev.failed_check = ev.params_nonfinite_before_step ? "parameters" : "optimizer_state";
    if (can_replay) replay_optimizer_step(failed, ev);
  } else {
    const auto& bad = ev.nonfinite_tensors;
    const bool loss_failed = std::find(bad.begin(), bad.end(), "loss") != bad.end();
    const bool grads_failed = std::any_of(bad.begin(), bad.end(), [](const std::string& n) {
      return n.size() > 5 && n.compare(n.size() - 5, 5, ".grad") == 0;
    });
    ev.failed_check = loss_failed ? "loss" : !grads_failed && ev.gradient_norm_overflow ? "gradient_norm" : "gradients";
    // Non-finite inputs explain the incident before any op runs; otherwise replay.
    if (can_replay && ev.nonfinite_samples.empty()) replay(failed, ev);
  }
  flag_degenerate_rows(failed.batch, ev);
  mark_input_birth(ev);
  check_environment(ev);
  incident->diagnosis = diagnose(ev);
  incident->seconds_to_diagnosis = seconds_since(detected);
  return incident;
}

std::shared_ptr<Incident> Investigator::investigate_exception(const FailedStep& failed) {
  const auto detected = Clock::now();
  auto incident = new_incident(failed.step);
  Evidence& ev = incident->evidence;
  ev.failed_check = "exception";
  ev.exception_message = failed.exception;
  collect_batch_evidence(failed.batch, ev);
  const bool bad_batch = !ev.nonfinite_samples.empty();
  const bool can_replay = failed.closure != nullptr && *failed.closure;
  // Without non-finite inputs, only a replay can tell a NaN reaching the op from a plain bug.
  if (!bad_batch && !can_replay) return nullptr;
  if (!bad_batch) {
    rng_.restore();
    state_.zero_grad();
    std::vector<trace::OpRecord> records;
    bool threw = false;
    {
      trace::OpTracer tracer(trace::TracerOptions().batch_size(failed.batch.size()));
      try {
        (*failed.closure)(failed.batch, step_context(StepContext::Run::replay, failed.step, true));
      } catch (const std::exception&) {
        threw = true;
      }
      tracer.stop();
      records = tracer.records();
    }
    state_.zero_grad();
    ++ev.replays;
    ev.replayed = true;
    // An exception that does not come back is no NaN of this step's: the caller's to see.
    if (!threw || records.empty()) return nullptr;
    // The ops still open when the exception left are the last one started and its enclosing
    // ops (the ops it started itself, like the allocation of its output, ended with outputs).
    // The innermost of them without outputs that read a non-finite value refused it.
    std::map<int64_t, size_t> at_index;
    for (size_t k = 0; k < records.size(); ++k) at_index[records[k].index] = k;
    const trace::OpRecord* thrower = nullptr;
    for (int64_t i = records.back().index; i >= 0;) {
      auto found = at_index.find(i);
      if (found == at_index.end()) break;
      const trace::OpRecord& op = records[found->second];
      if (op.outputs.empty() && !op.inputs_finite()) {
        thrower = &op;
        break;
      }
      i = op.parent;
    }
    if (thrower == nullptr) return nullptr;  // finite inputs: a bug or a shape error
    ev.reproduced = true;
    ev.exception_op = thrower->name;
    std::optional<uintptr_t> failing;
    for (size_t k = 0; k < thrower->inputs.size() && k < thrower->input_ids.size(); ++k) {
      if (!thrower->inputs[k].finite()) {
        failing = thrower->input_ids[k];
        break;
      }
    }
    fill_birth(records, trace::find_birth(records, failing), failed.batch, ev);
  }
  if (hooks_.run_evidence) hooks_.run_evidence(ev);
  fill_optimizer(state_, ev);
  collect_tensor_evidence(at::Tensor(), ev);
  mark_input_birth(ev);
  check_environment(ev);
  incident->diagnosis = diagnose(ev);
  incident->seconds_to_diagnosis = seconds_since(detected);
  return incident;
}

std::shared_ptr<Incident> Investigator::screen(int64_t step, const data::Batch& batch, const std::string& trigger) {
  const auto detected = Clock::now();
  auto incident = std::make_shared<Incident>();
  Evidence& ev = incident->evidence;
  collect_batch_evidence(batch, ev);
  if (ev.outlier_samples.empty()) return nullptr;
  incident->step = step;
  ev.step = step;
  ev.failed_check = trigger;
  if (hooks_.run_evidence) hooks_.run_evidence(ev);
  collect_tensor_evidence(at::Tensor(), ev);
  incident->diagnosis = diagnose(ev);
  if (incident->diagnosis.top().cause != cause::data_outlier) return nullptr;
  incident->seconds_to_diagnosis = seconds_since(detected);
  return incident;
}

namespace {

// RMS, largest |x| and integrality of the batch's finite inputs.
void collect_input_scale(const data::Batch& batch, Evidence& ev) {
  const data::InputScale s = data::input_scale_of(batch.x);
  if (s.finite == 0) return;
  ev.input_rms = s.rms;
  ev.input_absmax = s.absmax;
  ev.inputs_integer = s.integer && s.absmax >= 2;
}

}  // namespace

std::shared_ptr<Incident> Investigator::investigate_divergence(const FailedStep& failed,
                                                               const DivergenceFinding& finding,
                                                               const InputRepairs& inputs) {
  const auto detected = Clock::now();
  auto incident = new_incident(failed.step);
  Evidence& ev = incident->evidence;
  if (hooks_.run_evidence) hooks_.run_evidence(ev);
  collect_batch_evidence(failed.batch, ev);
  collect_tensor_evidence(failed.loss, ev);
  collect_input_scale(failed.batch, ev);
  ev.failed_check = "divergence";
  ev.diverged = true;
  ev.divergence_kind = finding.kind;
  ev.divergence_finding = finding.message;
  ev.divergence_value = finding.value;
  ev.divergence_threshold = finding.threshold;
  ev.divergence_reference = finding.reference;
  ev.excursion_start = finding.excursion_start;
  ev.divergence_layer = finding.layer;
  ev.birth_module = finding.layer;
  ev.inputs_rescalable = inputs.rescalable;
  ev.unscaled_input_backoffs = inputs.backoffs;
  ev.rate_before_unscaled_backoffs = inputs.rate_before_backoffs;
  if (is_dead_start(finding.kind)) ev.init_findings = finding.init_findings;
  incident->diagnosis = diagnose(ev);
  incident->seconds_to_diagnosis = seconds_since(detected);
  return incident;
}

}  // namespace nanguard::detail
