// The zoo's harness: runs a scenario under nanguard or a baseline and measures the result from
// the run itself; the scenario's labels only judge it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <random>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/data/audit.h"
#include "nanguard/data/input_scale.h"
#include "nanguard/dist/data_parallel.h"
#include "nanguard/monitor/monitor.h"
#include "nanguard/guard/guard.h"
#include "nanguard/trace/scope.h"
#include "nanguard/zoo/scenario.h"
#include "zoo/judge.h"

namespace nanguard::zoo {
namespace {

using Clock = std::chrono::steady_clock;

bool all_finite(const std::vector<at::Tensor>& tensors) {
  for (const auto& t : tensors) {
    if (t.defined() && !torch::isfinite(t).all().item<bool>()) return false;
  }
  return true;
}

std::vector<at::Tensor> grads_of(torch::nn::Module& model) {
  std::vector<at::Tensor> out;
  for (const auto& p : model.parameters()) out.push_back(p.grad());
  return out;
}

std::string cache_key(const Scenario& s, const RunOptions& o) {
  return fmt::format("{}/{}/{}/{}/{}/{}", s.id, o.seed(), o.train_samples(), o.test_samples(), o.epochs(),
                     o.mnist_dir().string());
}

BuildContext context_for(const RunOptions& o, bool fault) {
  BuildContext ctx;
  ctx.seed = o.seed();
  ctx.inject_fault = fault;
  ctx.mnist_dir = o.mnist_dir();
  ctx.train_samples = o.train_samples();
  ctx.test_samples = o.test_samples();
  ctx.epochs = o.epochs();
  return ctx;
}

double evaluate(ScenarioRun& run, double input_scale) {
  torch::NoGradGuard no_grad;
  const auto n = run.test.size();
  if (n == 0) return 0;
  int64_t correct = 0;
  for (int64_t start = 0; start < n; start += 1000) {
    const int64_t len = std::min<int64_t>(1000, n - start);
    auto b = run.test.gather(torch::arange(start, start + len, torch::kLong));
    auto out = run.forward(input_scale == 1.0 ? b.x : b.x * input_scale);
    correct += static_cast<int64_t>(std::llround(accuracy(out, b.y) * static_cast<double>(len)));
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

bool is_guarded(const std::string& baseline) {
  return baseline == "nanguard" || baseline == "prevent" || baseline == "random";
}
GuardOptions guard_options_for(const std::string& baseline) {
  GuardOptions options;
  // Prevention: clip at the gradient norm's z-score bound and cut the learning rate when
  // growth forecasts an overflow, before anything goes non-finite.
  if (baseline == "prevent") options.monitor(monitor::MonitorOptions().adaptive_clip(true).lr_cut(true));
  return options;
}

// The actions the random baseline draws from (stop is not a repair).
const std::vector<RepairAction>& random_actions() {
  static const std::vector<RepairAction> a{RepairAction::skip_step,   RepairAction::quarantine_samples,
                                           RepairAction::rollback,    RepairAction::lr_backoff,
                                           RepairAction::enable_clipping, RepairAction::stable_loss,
                                           RepairAction::recompute};
  return a;
}

// One training run. Fills the result's measured fields. `group`: this process is one rank of a
// data-parallel run (null: one process).
void train(const Scenario& scenario, const RunOptions& options, bool fault, const std::string& baseline,
           ScenarioResult& r, dist::DataParallel* group = nullptr) {
  torch::manual_seed(options.seed());
  ScenarioRun run = scenario.build(context_for(options, fault));
  NANGUARD_CHECK(run.model && run.optimizer && run.forward && run.loss,
                 "zoo: scenario {}: build() must set model, optimizer, forward and loss", scenario.id);
  NANGUARD_CHECK(run.train.size() > 0 && run.epochs > 0 && run.batch_size > 0,
                 "zoo: scenario {}: build() gave no training data, epochs or batch size", scenario.id);
  const int world = group ? group->world_size() : 1;
  const int rank = group ? group->rank() : 0;
  if (group && fault && options.fault_rank() >= 0 && rank != options.fault_rank()) {
    // The fault lives on another rank: this one reads the clean twin's training set and runs
    // no fault hook. The model, loss and optimizer stay the faulty build's, one for all ranks.
    torch::manual_seed(options.seed());
    ScenarioRun clean = scenario.build(context_for(options, false));
    NANGUARD_CHECK(clean.train.size() == run.train.size(),
                   "zoo: scenario {}: its clean twin has {} training samples, the faulty run {}", scenario.id,
                   clean.train.size(), run.train.size());
    run.train = clean.train;
    run.after_backward = nullptr;
  }
  if (world > 1 && run.batch_size % world != 0) {
    throw ValueError(fmt::format("zoo: scenario {}: its batch of {} does not split evenly over {} processes",
                                 scenario.id, run.batch_size, world));
  }
  torch::manual_seed(options.seed() + 1);  // the same stream for every baseline from here on

  // Data parallelism: the scenario's batch is the global batch; rank r takes the r-th part.
  data::BatchLoader loader(run.train, run.batch_size / world, /*shuffle=*/true, options.seed());
  if (group) {
    loader.set_shard(rank, world);
    group->broadcast_state(run.model->parameters(), run.model->buffers());
  }
  int64_t step = 0;
  std::map<int64_t, int64_t> executions;  // per step: how often its closure ran
  // The guard's rescale_inputs repair scales the inputs at the model, as the trainer does.
  double input_scale = 1.0;
  BatchClosure closure = [&](const data::Batch& b) {
    run.model->train();
    auto out = run.forward(input_scale == 1.0 ? b.x : b.x * input_scale);
    at::Tensor loss;
    {
      NANGUARD_SCOPE("loss");
      loss = run.loss(out, b.y);
    }
    loss.backward();
    if (run.after_backward) run.after_backward(StepInfo{step, executions[step]++});
    return loss;
  };

  std::unique_ptr<Guard> guard;
  bool stable_loss = false;
  std::mt19937_64 rng(options.seed() * 7919 + 17);
  if (is_guarded(baseline)) {
    GuardHooks hooks;
    hooks.on_event = [](const GuardEvent&) {};  // the table reads events() after the run
    if (run.use_stable_loss) {
      // The loss is the scenario's own: unstable until the guard switches it.
      hooks.use_stable_loss = [&run, &stable_loss] { return stable_loss = run.use_stable_loss(); };
      hooks.loss_is_stable = [&stable_loss] { return stable_loss; };
    }
    hooks.quarantine = [&](const std::vector<int64_t>& ids) { loader.exclude_ids(ids); };
    // The data audit before training, as `nanguard fit` runs it: incidents then blame every
    // sample flagged for the property they saw.
    const data::QuickAudit audit = data::quick_audit(run.train.x(), run.train.y(), run.train.ids());
    AuditFlags flags(audit.flagged_ids);
    for (const auto& f : audit.flags) flags.add(f.kind, f.samples);
    hooks.audit_flagged_samples = [flags] { return flags; };
    hooks.rescale_inputs = [&]() -> std::string {
      const data::UnitRangeDivisor d = data::unit_range_divisor(run.train.x());
      if (input_scale != 1.0 || d.divisor == 1.0) return "";
      input_scale = 1.0 / d.divisor;
      return fmt::format("inputs divided by {:.4g} ({})", d.divisor, d.describe());
    };
    if (baseline == "random") {
      hooks.override_plan = [&](const Incident&, const std::vector<RepairAction>&) {
        const auto& all = random_actions();
        std::uniform_int_distribution<size_t> pick(0, all.size() - 1);
        return std::vector<RepairAction>{all[pick(rng)]};
      };
    }
    guard = std::make_unique<Guard>(*run.model, *run.optimizer, guard_options_for(baseline), hooks);
    if (group) guard->set_consensus(std::shared_ptr<Consensus>(group, [](Consensus*) {}));
  }
  NANGUARD_CHECK(!group || guard, "zoo: a data-parallel run needs a guarded baseline");

  bool stop = false;
  for (int64_t epoch = 0; epoch < run.epochs && !stop; ++epoch) {
    loader.start_epoch(epoch);
    for (int64_t i = 0; i < loader.num_batches() && !stop; ++i, ++step) {
      const data::Batch batch = loader.batch(i);
      if (group && rank == options.fault_rank() && step == options.kill_step()) std::raise(SIGKILL);
      // Ranks hold equal shards; the guard's vote handles a shard emptied by quarantine.
      if (batch.size() == 0 && !group) continue;
      if (guard) {
        auto verdict = guard->step(batch, closure);
        if (verdict.stopped()) stop = true;
        continue;
      }
      run.optimizer->zero_grad();
      at::Tensor loss = closure(batch);
      const bool loss_ok = std::isfinite(loss.item<double>());
      bool ok = loss_ok;
      // Only the measured runs pay for the gradient check.
      if (ok && (baseline == "skip" || r.first_nonfinite_step < 0)) ok = all_finite(grads_of(*run.model));
      if (!ok && r.first_nonfinite_step < 0) r.first_nonfinite_step = step;
      if (baseline == "terminate" && !loss_ok) {
        r.detected = true;
        r.detected_step = step;
        r.stopped = true;
        r.actions.push_back("stop");
        stop = true;
        continue;
      }
      if (baseline == "skip" && !ok) {
        if (!r.detected) r.detected_step = step;
        r.detected = true;
        r.skipped_steps++;
        if (r.actions.empty()) r.actions.push_back("skip_step");
        continue;
      }
      run.optimizer->step();
      if (r.first_nonfinite_step < 0 && !all_finite(run.model->parameters())) r.first_nonfinite_step = step;
    }
  }
  r.steps = step;
  r.final_accuracy = evaluate(run, input_scale);
  r.finite_at_end = all_finite(run.model->parameters());
  if (group) {
    r.world_size = world;
    r.fault_rank = options.fault_rank();
    const auto digests = group->all_gather_bytes(dist::digest(run.model->parameters()));
    r.weights_identical = std::all_of(digests.begin(), digests.end(), [&](const std::string& d) { return d == digests[0]; });
  }

  if (!guard) return;
  r.skipped_steps = guard->skipped_steps();
  r.stopped = guard->stopped();
  r.incidents = static_cast<int64_t>(guard->incidents().size());
  for (const auto& e : guard->events()) {
    // Prevention acts on a warning, outside any incident (e.g. a learning-rate cut).
    if (e.kind == "action" && e.detail.rfind("prevention", 0) == 0) r.actions.push_back(e.action);
    if (e.kind != "warning") continue;
    if (r.warnings++ == 0) r.first_warning_step = e.step;
  }
  for (const auto& inc : guard->incidents()) {
    for (const auto& a : inc->actions) r.actions.push_back(a);
    r.incident_ranks.push_back(inc->evidence.rank);
  }
  if (!r.incident_ranks.empty()) r.rank = r.incident_ranks.front();
  if (!guard->incidents().empty()) {
    const Incident& first = *guard->incidents().front();
    const Evidence& ev = first.evidence;
    r.birth_op = ev.birth_found ? ev.birth_op : "";
    r.phase = ev.birth_found ? ev.birth_phase : "";
    r.module = ev.birth_found ? ev.birth_module : "";
    r.diagnosis_seconds = first.seconds_to_diagnosis;
    r.failed_check = ev.failed_check;
    if (baseline_diagnoses(baseline)) {
      const CauseScore& top = first.diagnosis.top();
      r.top_cause = top.subkind.empty() ? top.cause : top.cause + "/" + top.subkind;
      r.confidence = top.confidence;
      r.explanation = top.explanation;
      r.suggestion = top.suggestion;
    }
    // Samples blamed over all incidents (a bad sample is found when its batch comes up).
    std::set<int64_t> blamed;
    for (const auto& inc : guard->incidents()) {
      const auto& top = inc->diagnosis.top();
      const auto& ids = top.samples.empty() ? inc->evidence.blamed_samples : top.samples;
      blamed.insert(ids.begin(), ids.end());
    }
    r.samples.assign(blamed.begin(), blamed.end());
  }
  // Without an incident (nothing went non-finite) the diagnosis is the first early warning
  // that names a cause of the taxonomy, e.g. vanishing gradients on a deep sigmoid net.
  if (guard->incidents().empty() && baseline_diagnoses(baseline) && guard->monitor() != nullptr) {
    for (const auto& w : guard->monitor()->warnings()) {
      if (w.cause.empty()) continue;
      r.top_cause = w.cause;
      r.explanation = w.message;
      r.suggestion = w.suggestion;
      break;
    }
  }
  const int64_t first_incident = r.incidents > 0 ? guard->incidents().front()->step : -1;
  r.detected = r.incidents > 0 || r.warnings > 0;
  if (r.detected) {
    r.detected_step = first_incident < 0 ? r.first_warning_step
                      : r.first_warning_step < 0 ? first_incident
                                                 : std::min(first_incident, r.first_warning_step);
  }
}

}  // namespace

namespace detail {
namespace {

bool same_ids(std::vector<int64_t> a, std::vector<int64_t> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

std::pair<std::string, std::string> split_cause(const std::string& s) {
  const auto slash = s.find('/');
  if (slash == std::string::npos) return {s, ""};
  return {s.substr(0, slash), s.substr(slash + 1)};
}

}  // namespace

bool cause_matches(const std::string& top_cause, const std::string& spec) {
  if (top_cause.empty() || spec.empty()) return false;
  const auto [cause, sub] = split_cause(top_cause);
  const auto [want, want_sub] = split_cause(spec);
  return cause == want && (want_sub.empty() || sub == want_sub);
}

void judge(const Scenario& s, ScenarioResult& r) {
  if (!r.top_cause.empty()) {
    const std::string truth = s.true_subkind.empty() ? s.true_cause : s.true_cause + "/" + s.true_subkind;
    r.cause_correct = cause_matches(r.top_cause, truth) ||
                      std::any_of(s.also_correct.begin(), s.also_correct.end(),
                                  [&](const std::string& spec) { return cause_matches(r.top_cause, spec); });
  } else {
    r.cause_correct = s.true_cause == "none" && baseline_diagnoses(r.baseline) && !r.detected;
  }
  if (!s.produces_nonfinite || r.incidents == 0) {
    r.localization_correct = false;
  } else if (s.expected_birth_op.empty() && s.expected_phase.empty() && s.expected_samples.empty()) {
    r.localization_correct = r.birth_op.empty() && r.samples.empty();
  } else {
    bool ok = true;
    if (!s.expected_birth_op.empty()) {
      ok = ok && r.birth_op == s.expected_birth_op && (s.expected_phase.empty() || r.phase == s.expected_phase);
    } else if (!s.expected_phase.empty()) {
      ok = ok && r.phase == s.expected_phase;
    }
    if (!s.expected_samples.empty()) ok = ok && same_ids(r.samples, s.expected_samples);
    r.localization_correct = ok;
  }
  r.repaired = r.clean_accuracy >= 0 && (std::abs(r.final_accuracy - r.clean_accuracy) <= 0.01 + 1e-9 ||
                                         r.final_accuracy > r.clean_accuracy);
}

}  // namespace detail

void Scenario::validate() const {
  NANGUARD_CHECK(!id.empty(), "zoo: a scenario needs an id");
  NANGUARD_CHECK(!true_cause.empty(), "zoo: scenario {} needs a true_cause (a cause identifier or \"none\")", id);
  NANGUARD_CHECK(static_cast<bool>(build), "zoo: scenario {} has no build function", id);
}

const std::vector<std::string>& baseline_names() {
  static const std::vector<std::string> names{"nanguard", "prevent", "none", "terminate", "skip", "random"};
  return names;
}

bool baseline_diagnoses(const std::string& name) { return name == "nanguard" || name == "prevent"; }

void check_baseline(const std::string& name) {
  const auto& names = baseline_names();
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  throw ValueError(fmt::format("zoo: unknown baseline '{}' (expected one of: {})", name, fmt::join(names, ", ")));
}

double accuracy(const at::Tensor& output, const at::Tensor& labels) {
  NANGUARD_CHECK(output.dim() == 2 && labels.dim() == 1 && output.size(0) == labels.size(0),
                 "zoo: accuracy needs scores [N, C] and labels [N], got {} and {} dimensions", output.dim(),
                 labels.dim());
  if (labels.size(0) == 0) return 0;
  // A non-finite row counts as wrong (argmax of NaN is arbitrary).
  auto finite_rows = torch::isfinite(output).all(1);
  auto hit = (output.argmax(1) == labels.to(torch::kLong)).logical_and(finite_rows);
  return hit.to(torch::kDouble).mean().item<double>();
}

ScenarioResult run_scenario(const Scenario& scenario, const RunOptions& options) {
  scenario.validate();
  check_baseline(options.baseline());
  ScenarioResult r;
  r.scenario = scenario.id;
  r.baseline = options.baseline();
  r.seed = options.seed();
  const std::string key = cache_key(scenario, options);
  dist::DataParallel* group = options.data_parallel().get();
  if (group) {
    if (!is_guarded(options.baseline())) {
      throw ValueError(fmt::format("zoo: a data-parallel run takes a guarded baseline (nanguard, prevent or random), not '{}'",
                                   options.baseline()));
    }
    if (options.fault_rank() < -1 || options.fault_rank() >= group->world_size()) {
      throw ValueError(fmt::format("zoo: fault rank {} is not a rank of {} processes (expected -1 for every rank, or 0-{})",
                                   options.fault_rank(), group->world_size(), group->world_size() - 1));
    }
  } else if (options.fault_rank() != -1) {
    throw ValueError(fmt::format("zoo: fault rank {} needs a data-parallel run", options.fault_rank()));
  }
  if (options.kill_step() >= 0 && (!group || options.fault_rank() < 0)) {
    throw ValueError("zoo: kill_step needs a data-parallel run and a fault rank to kill");
  }

  const auto start = Clock::now();
  train(scenario, options, true, options.baseline(), r, group);
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (group) {
    // The twins are one-process runs at the global batch; rank 0 alone runs the clean one
    // (the result is its to write), the unguarded twin is not measured.
    if (group->rank() == 0 && options.measure_clean()) {
      ScenarioResult clean;
      train(scenario, options, false, "none", clean);
      r.clean_accuracy = clean.final_accuracy;
    }
    detail::judge(scenario, r);
    return r;
  }
  if (options.baseline() == "none" && options.cache()) options.cache()->first_nonfinite_step[key] = r.first_nonfinite_step;

  if (options.measure_unguarded() && options.baseline() != "none" && options.baseline() != "terminate" &&
      options.baseline() != "skip") {
    auto* cache = options.cache().get();
    auto hit = cache ? cache->first_nonfinite_step.find(key) : decltype(cache->first_nonfinite_step.end()){};
    if (cache && hit != cache->first_nonfinite_step.end()) {
      r.first_nonfinite_step = hit->second;
    } else {
      ScenarioResult plain;
      train(scenario, options, true, "none", plain);
      r.first_nonfinite_step = plain.first_nonfinite_step;
      if (cache) cache->first_nonfinite_step[key] = plain.first_nonfinite_step;
    }
  }
  if (options.measure_clean()) {
    auto* cache = options.cache().get();
    auto hit = cache ? cache->clean_accuracy.find(key) : decltype(cache->clean_accuracy.end()){};
    if (cache && hit != cache->clean_accuracy.end()) {
      r.clean_accuracy = hit->second;
    } else {
      ScenarioResult clean;
      train(scenario, options, false, "none", clean);
      r.clean_accuracy = clean.final_accuracy;
      if (cache) cache->clean_accuracy[key] = clean.final_accuracy;
    }
  }
  detail::judge(scenario, r);
  return r;
}

std::string ScenarioResult::to_json() const {
  nlohmann::ordered_json j;
  j["scenario"] = scenario;
  j["baseline"] = baseline;
  j["seed"] = seed;
  j["detected"] = detected;
  j["detected_step"] = detected_step;
  j["birth_op"] = birth_op;
  j["phase"] = phase;
  j["failed_check"] = failed_check;
  j["module"] = module;
  j["samples"] = samples;
  j["top_cause"] = top_cause;
  j["confidence"] = confidence;
  j["explanation"] = explanation;
  j["suggestion"] = suggestion;
  j["localization_correct"] = localization_correct;
  j["cause_correct"] = cause_correct;
  j["actions"] = actions;
  j["final_accuracy"] = final_accuracy;
  j["clean_accuracy"] = clean_accuracy;
  j["repaired"] = repaired;
  j["finite_at_end"] = finite_at_end;
  j["incidents"] = incidents;
  j["warnings"] = warnings;
  j["first_warning_step"] = first_warning_step;
  j["first_nonfinite_step"] = first_nonfinite_step;
  j["steps"] = steps;
  j["skipped_steps"] = skipped_steps;
  j["stopped"] = stopped;
  j["seconds"] = seconds;
  j["diagnosis_seconds"] = diagnosis_seconds;
  j["world_size"] = world_size;
  j["fault_rank"] = fault_rank;
  j["rank"] = rank;
  j["incident_ranks"] = incident_ranks;
  j["weights_identical"] = weights_identical;
  return j.dump(2);
}

}  // namespace nanguard::zoo
