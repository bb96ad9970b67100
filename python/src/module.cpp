// nanguard._nanguard: the C++ guard for Python loops. The pure-Python package (python/nanguard)
// wraps it: it turns Python batches into the guard's data::Batch, closures into StepClosures,
// forward hooks into trace scopes, and the dicts built here into Python objects.
//
// Errors: nanguard::ValueError (std::invalid_argument) reaches Python as ValueError; IoError,
// NonFiniteError, InternalError and every other C++ exception as RuntimeError; TrainingStopped as
// nanguard.TrainingStopped (a RuntimeError). Python exceptions raised by a closure or an
// optimizer pass through the guard unchanged.
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/stl.h>
#include <torch/csrc/autograd/python_variable.h>  // THPVariable_Check
#include <torch/csrc/utils/pybind.h>            // at::Tensor <-> torch.Tensor
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "nanguard/guard/guard.h"
#include "nanguard/guard/snapshot.h"
#include "nanguard/monitor/monitor.h"
#include "nanguard/report/events.h"
#include "nanguard/report/history_files.h"
#include "nanguard/report/html_report.h"
#include "nanguard/report/run_record.h"
#include "nanguard/trace/scope.h"
#include "py_optimizer.h"

#ifndef NANGUARD_VERSION
#define NANGUARD_VERSION "0.0.0"
#endif

namespace py = pybind11;

namespace nanguard::python {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string type_name(py::handle h) { return py::str(py::type::of(h).attr("__name__")); }

// ---- options ----

bool as_bool(const std::string& key, py::handle v) {
  if (!py::isinstance<py::bool_>(v)) {
    throw ValueError("nanguard.Guard: option " + key + " must be a bool, got " + type_name(v));
  }
  return v.cast<bool>();
}

int64_t as_int(const std::string& key, py::handle v) {
  if (py::isinstance<py::bool_>(v) || !py::isinstance<py::int_>(v)) {
    throw ValueError("nanguard.Guard: option " + key + " must be an int, got " + type_name(v));
  }
  return v.cast<int64_t>();
}

double as_float(const std::string& key, py::handle v) {
  if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v))) {
    throw ValueError("nanguard.Guard: option " + key + " must be a number, got " + type_name(v));
  }
  return v.cast<double>();
}

const char* const kOptionNames =
    "enabled, snapshot_every, snapshot_capacity, check_state_every, rerun_lost_steps, kept_batch_bytes, replay, "
    "repair, history, keep_initial_snapshot, monitor, monitor_sample_every, monitor_activations, divergence, "
    "max_rollbacks, rollback_window, max_incidents, max_consecutive_skips, lr_factor, lr_floor, clip_norm";

GuardOptions parse_options(const py::dict& options) {
  GuardOptions o;
  RepairPolicy policy = RepairPolicy::automatic();
  for (auto item : options) {
    if (!py::isinstance<py::str>(item.first)) throw ValueError("nanguard.Guard: option names must be strings");
    const std::string k = py::str(item.first);
    py::handle v = item.second;
    if (k == "enabled") o.enabled(as_bool(k, v));
    else if (k == "snapshot_every") o.snapshot_every(as_int(k, v));
    else if (k == "snapshot_capacity") o.snapshot_capacity(as_int(k, v));
    else if (k == "check_state_every") o.check_state_every(as_int(k, v));
    else if (k == "rerun_lost_steps") o.rerun_lost_steps(as_bool(k, v));
    else if (k == "kept_batch_bytes") o.kept_batch_bytes(as_int(k, v));
    else if (k == "replay") o.replay(as_bool(k, v));
    else if (k == "repair") o.repair(as_bool(k, v));
    else if (k == "history") o.history(as_int(k, v));
    else if (k == "keep_initial_snapshot") o.keep_initial_snapshot(as_bool(k, v));
    else if (k == "monitor") o.monitor().enabled(as_bool(k, v));
    else if (k == "monitor_sample_every") o.monitor().sample_every(as_int(k, v));
    else if (k == "monitor_activations") o.monitor().activations(as_bool(k, v));
    else if (k == "divergence") o.divergence().enabled(as_bool(k, v));
    else if (k == "max_rollbacks") policy.budget.max_rollbacks = as_int(k, v);
    else if (k == "rollback_window") policy.budget.rollback_window = as_int(k, v);
    else if (k == "max_incidents") policy.budget.max_incidents = as_int(k, v);
    else if (k == "max_consecutive_skips") policy.budget.max_consecutive_skips = as_int(k, v);
    else if (k == "lr_factor") policy.budget.lr_factor = as_float(k, v);
    else if (k == "lr_floor") policy.budget.lr_floor = as_float(k, v);
    else if (k == "clip_norm") policy.budget.clip_norm = as_float(k, v);
    else throw ValueError("nanguard.Guard: unknown option '" + k + "' (options: " + kOptionNames + ")");
  }
  o.policy(policy);
  return o;
}

// ---- records as dicts ----

py::dict event_dict(const GuardEvent& e) {
  py::dict d;
  d["step"] = e.step;
  d["kind"] = e.kind;
  d["cause"] = e.cause;
  d["confidence"] = e.confidence;
  d["phase"] = e.phase;
  d["op"] = e.op;
  d["module"] = e.module;
  d["samples"] = e.samples;
  d["explanation"] = e.explanation;
  d["action"] = e.action;
  d["detail"] = e.detail;
  return d;
}

py::dict cause_dict(const CauseScore& c) {
  py::dict d;
  d["cause"] = c.subkind.empty() ? c.cause : c.cause + "/" + c.subkind;
  d["confidence"] = c.confidence;
  d["explanation"] = c.explanation;
  d["suggestion"] = c.suggestion;
  d["samples"] = c.samples;
  return d;
}

py::dict incident_dict(const Incident& incident) {
  const Evidence& ev = incident.evidence;
  const CauseScore& top = incident.diagnosis.top();
  py::dict d;
  d["step"] = incident.step;
  d["failed_check"] = ev.failed_check;
  d["birth_op"] = ev.birth_op;
  d["phase"] = ev.birth_phase;
  d["birth_module"] = ev.birth_module;
  d["backward_node"] = ev.birth_backward_node;
  d["birth_reason"] = ev.birth_reason;
  d["replayed"] = ev.replayed;
  py::list preceding;
  for (const auto& op : ev.preceding_ops) {
    py::dict p;
    p["op"] = op.name;
    p["phase"] = op.phase;
    p["module"] = op.module;
    p["absmax"] = op.absmax;
    preceding.append(p);
  }
  d["preceding_ops"] = preceding;
  d["samples"] = top.samples.empty() ? ev.blamed_samples : top.samples;
  d["cause"] = top.subkind.empty() ? top.cause : top.cause + "/" + top.subkind;
  d["confidence"] = top.confidence;
  d["explanation"] = top.explanation;
  d["suggestion"] = top.suggestion;
  py::list causes;
  for (const auto& c : incident.diagnosis.ranked) causes.append(cause_dict(c));
  d["causes"] = causes;
  d["actions"] = incident.actions;
  d["outcome"] = incident.outcome;
  d["exception"] = ev.exception_message;
  d["nonfinite_tensors"] = ev.nonfinite_tensors;
  d["seconds_to_diagnosis"] = incident.seconds_to_diagnosis;
  d["summary"] = incident.summary();
  return d;
}

py::object incident_or_none(const std::shared_ptr<const Incident>& incident) {
  if (!incident) return py::none();
  return incident_dict(*incident);
}

py::tuple verdict_tuple(const StepVerdict& v) {
  return py::make_tuple(to_string(v.outcome), v.loss, incident_or_none(v.incident));
}

const char* to_string(Decision::Kind kind) {
  switch (kind) {
    case Decision::Kind::update: return "update";
    case Decision::Kind::incident: return "incident";
    case Decision::Kind::skip: return "skip";
  }
  return "?";
}

// ---- scopes driven by module hooks ----

// One scope open per thread at a time: the hooks give it the full module path, so a module
// called outside its parent's forward is still named by its own path.
thread_local std::unique_ptr<trace::Scope> held_scope;

void set_scope(const std::optional<std::string>& name) {
  held_scope.reset();
  if (name && !name->empty()) held_scope = std::make_unique<trace::Scope>(*name);
}

// ---- the guard ----

// Raised by check_exception for an exception the guard's rethrow hands back: not an incident.
struct NotAnIncident : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class PyGuard {
 public:
  PyGuard(std::vector<std::string> names, std::vector<at::Tensor> params, std::vector<at::Tensor> buffers,
          py::object optimizer, const py::dict& options, py::object host, bool stable_loss) {
    auto adapter = std::make_shared<PyOptimizer>(std::move(optimizer));
    GuardOptions o = parse_options(options);
    // A weak reference: the Python Guard owns this object; a strong one would be a cycle that
    // the garbage collector cannot see through a C++ object.
    host_ = py::weakref(host);
    GuardHooks hooks;
    hooks.on_event = [this](const GuardEvent& e) { call_host("_on_event", event_dict(e)); };
    hooks.quarantine = [this](const std::vector<int64_t>& ids) { call_host("_on_quarantine", py::cast(ids)); };
    hooks.save_extra = [this]() -> std::vector<double> {
      py::object r = call_host("_save_extra");
      return r.is_none() ? std::vector<double>{} : r.cast<std::vector<double>>();
    };
    hooks.load_extra = [this](const std::vector<double>& extra) { call_host("_load_extra", py::cast(extra)); };
    hooks.rerun_step_applied = [this] { call_host("_on_rerun_step_applied"); };
    if (stable_loss) {
      // The loop's loss has a stable form the guard may switch to (the stable_loss repair).
      hooks.use_stable_loss = [this] { return call_host("_use_stable_loss").cast<bool>(); };
      hooks.loss_is_stable = [this] { return call_host("_loss_is_stable").cast<bool>(); };
    }
    guard_ = std::make_unique<Guard>(std::move(names), std::move(params), std::move(buffers),
                                     std::vector<std::shared_ptr<OptimizerAdapter>>{adapter}, o, std::move(hooks));
  }

  py::tuple step(const at::Tensor& x, const at::Tensor& rows, const std::optional<at::Tensor>& ids, py::object fn) {
    return verdict_tuple(guard_->step(batch_of(x, rows, ids), closure_of(std::move(fn))));
  }

  py::tuple begin_step(const at::Tensor& x, const at::Tensor& rows, const std::optional<at::Tensor>& ids,
                       py::object fn) {
    const data::Batch b = guard_->begin_step(batch_of(x, rows, ids), fn.is_none() ? StepClosure() : closure_of(fn));
    return py::make_tuple(b.x, b.y, b.ids.defined() ? py::cast(b.ids) : py::none());
  }

  Decision check(const at::Tensor& loss) { return guard_->check(loss); }

  // An exception from the loop's forward or backward: a Decision when it is an incident, None
  // when it is not (the caller re-raises the original exception).
  py::object check_exception(const std::string& message) {
    try {
      return py::cast(guard_->check_exception(std::make_exception_ptr(NotAnIncident(message))));
    } catch (const NotAnIncident&) {
      return py::none();
    }
  }

  py::tuple apply(const Decision& d) { return verdict_tuple(guard_->apply(d)); }

  Guard& guard() { return *guard_; }

  // The oldest step whose batch the guard may still replay or re-run: the front end's batches
  // of earlier steps can go.
  int64_t oldest_needed_step() const {
    const int64_t oldest = guard_->options().enabled() ? guard_->oldest_remembered_step() : -1;
    return oldest < 0 ? guard_->steps() : oldest;
  }

  py::list incidents() const {
    py::list out;
    for (const auto& i : guard_->incidents()) out.append(incident_dict(*i));
    return out;
  }

  py::list events() const {
    py::list out;
    for (const auto& e : guard_->events()) out.append(event_dict(e));
    return out;
  }

  // The run folder the CLI writes (events.jsonl, history files, monitor.csv, summary.json) and
  // report.html rendered from it. epochs: the named numbers of each epoch, in order.
  std::string write_report(const std::string& dir, const std::vector<std::vector<std::pair<std::string, double>>>& epochs,
                           const std::string& summary_json) {
    namespace fs = std::filesystem;
    const fs::path out(dir);
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec) throw IoError("nanguard: cannot create the run folder " + out.string() + ": " + ec.message());
    {
      report::EventLog log(out / report::RunFiles::events);
      for (const auto& e : guard_->events()) log.write(e);
    }
    History history;
    for (size_t i = 0; i < epochs.size(); ++i) {
      Logs logs;
      for (const auto& [key, value] : epochs[i]) logs.set(key, value);
      history.append(static_cast<int64_t>(i + 1), std::move(logs));
    }
    if (history.size() > 0) {
      const double steps_per_epoch = static_cast<double>(guard_->steps()) / static_cast<double>(history.size());
      report::write_history_files(out, history, report::event_markers(guard_->events(), steps_per_epoch));
    }
    if (guard_->monitor()) guard_->monitor()->write_csv(out / report::RunFiles::signals);
    nlohmann::json summary = nlohmann::json::parse(summary_json, nullptr, false);
    if (summary.is_discarded() || !summary.is_object()) throw ValueError("nanguard: write_report's summary is not a JSON object");
    summary["epochs"] = static_cast<int64_t>(history.size());
    summary["steps"] = guard_->steps();
    summary["guard"] = {{"steps", guard_->steps()},
                        {"applied_steps", guard_->applied_steps()},
                        {"skipped_steps", guard_->skipped_steps()},
                        {"rerun_steps", guard_->rerun_steps()},
                        {"incidents", static_cast<int64_t>(guard_->incidents().size())},
                        {"quarantined", guard_->quarantined()},
                        {"lr_scale", guard_->lr_scale()},
                        {"clip_norm", guard_->clip_norm()},
                        {"clip_per_tensor", guard_->clip_per_tensor()},
                        {"stopped", guard_->stopped()}};
    if (guard_->options().enabled()) summary["guard"]["snapshot_bytes"] = guard_->snapshots().memory_bytes();
    write_text_atomic(out / report::RunFiles::summary, summary.dump(2) + "\n");
    const report::RunRecord record = report::read_run(out);
    const fs::path html = out / "report.html";
    write_text_atomic(html, report::render_html(record));
    return html.string();
  }

 private:
  py::object call_host(const char* method, py::object arg = py::object()) {
    py::object host = host_();
    if (host.is_none()) return py::none();
    return arg ? host.attr(method)(arg) : host.attr(method)();
  }

  static data::Batch batch_of(const at::Tensor& x, const at::Tensor& rows, const std::optional<at::Tensor>& ids) {
    data::Batch b;
    b.x = x;
    b.y = rows;
    if (ids) b.ids = *ids;
    return b;
  }

  // The Python closure receives (x, rows, ids, run, step, traced) and rebuilds its batch.
  static StepClosure closure_of(py::object fn) {
    if (!PyCallable_Check(fn.ptr())) throw ValueError("nanguard: the closure must be callable, got " + type_name(fn));
    auto held = std::make_shared<py::object>(std::move(fn));
    return [held](const data::Batch& b, const StepContext& c) -> at::Tensor {
      py::object loss = (*held)(b.x, b.y, b.ids.defined() ? py::cast(b.ids) : py::none(), to_string(c.run), c.step,
                                c.traced);
      if (!THPVariable_Check(loss.ptr())) {
        throw ValueError("nanguard: the closure must return the loss as a tensor, got " + type_name(loss));
      }
      return loss.cast<at::Tensor>();
    };
  }

  py::weakref host_;
  std::unique_ptr<Guard> guard_;
};

}  // namespace
}  // namespace nanguard::python

PYBIND11_MODULE(_nanguard, m) {
  using namespace nanguard;
  using namespace nanguard::python;
  m.doc() = "The C++ core of nanguard; use the nanguard package, which wraps it.";
  m.attr("__version__") = NANGUARD_VERSION;
  m.attr("libtorch_version") = TORCH_VERSION;

  static py::exception<TrainingStopped> stopped(m, "TrainingStopped", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TrainingStopped& e) {
      PyErr_SetString(stopped.ptr(), e.what());
    }
  });

  m.def("set_scope", &set_scope, py::arg("name"),
        "Attributes the ops that run next on this thread to the named module (None: to none).");
  m.def("current_scope", &trace::Scope::current, "The module the op tracer attributes ops to now.");

  py::class_<Decision>(m, "Decision", "What the guard decided about a step after check(); apply() carries it out.")
      .def_property_readonly("kind", [](const Decision& d) { return std::string(to_string(d.kind)); },
                             "'update' (healthy), 'incident' (repair with plan) or 'skip'")
      .def_readonly("step", &Decision::step)
      .def_readonly("loss", &Decision::loss, "the step's loss (NaN when non-finite)")
      .def_readonly("grad_norm", &Decision::grad_norm, "the total gradient norm")
      .def_property_readonly("incident", [](const Decision& d) { return incident_or_none(d.incident); })
      .def_property_readonly("plan",
                             [](const Decision& d) {
                               std::vector<std::string> names;
                               for (auto a : d.plan) names.emplace_back(to_string(a));
                               return names;
                             },
                             "the repair actions apply() takes");

  py::class_<PyGuard>(m, "Guard")
      .def(py::init<std::vector<std::string>, std::vector<at::Tensor>, std::vector<at::Tensor>, py::object,
                    const py::dict&, py::object, bool>(),
           py::arg("names"), py::arg("parameters"), py::arg("buffers"), py::arg("optimizer"), py::arg("options"),
           py::arg("host"), py::arg("stable_loss"))
      .def("step", &PyGuard::step)
      .def("begin_step", &PyGuard::begin_step)
      .def("check", &PyGuard::check)
      .def("check_exception", &PyGuard::check_exception)
      .def("apply", &PyGuard::apply)
      .def("oldest_needed_step", &PyGuard::oldest_needed_step)
      .def("incidents", &PyGuard::incidents)
      .def("events", &PyGuard::events)
      .def("write_report", &PyGuard::write_report)
      .def("steps", [](PyGuard& g) { return g.guard().steps(); })
      .def("applied_steps", [](PyGuard& g) { return g.guard().applied_steps(); })
      .def("skipped_steps", [](PyGuard& g) { return g.guard().skipped_steps(); })
      .def("rerun_steps", [](PyGuard& g) { return g.guard().rerun_steps(); })
      .def("stopped", [](PyGuard& g) { return g.guard().stopped(); })
      .def("lr_scale", [](PyGuard& g) { return g.guard().lr_scale(); })
      .def("clip_norm", [](PyGuard& g) { return g.guard().clip_norm(); })
      .def("quarantined", [](PyGuard& g) { return g.guard().quarantined(); })
      .def("summary", [](PyGuard& g) { return g.guard().summary(); })
      .def("snapshot_steps", [](PyGuard& g) { return g.guard().snapshots().steps(); })
      .def("snapshot_every", [](PyGuard& g) { return g.guard().options().snapshot_every(); })
      .def("activation_sample_every",
           [](PyGuard& g) -> int64_t {
             // The steps whose first run records activations for the monitor (named by module).
             const auto* m = g.guard().monitor();
             return m && m->options().activations() ? m->options().sample_every() : 0;
           });
}
