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
#include <map>
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
          py::object optimizer, const py::dict& options, py::object host, bool stable_loss, bool has_scheduler)
      : has_scheduler_(has_scheduler) {
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
    const auto* m = guard_->monitor();
    sample_every_ = m && m->options().activations() ? m->options().sample_every() : 0;
  }

  // Guard.step(batch, closure, ids): one guarded step of the loop's batch. The common path (a
  // tuple or list whose first item is a floating tensor, a closure seen before) stays in C++: in
  // Python the same bookkeeping measured about as much as the guard's checks.
  py::tuple step(py::object batch, py::object closure, py::object ids) {
    if (!PyCallable_Check(closure.ptr())) {
      throw ValueError("nanguard.Guard.step: the closure must be callable, got " + type_name(closure));
    }
    Prepared p = prepare(std::move(batch), ids);
    const int64_t step = guard_->steps();
    kept_[step] = KeptBatch{std::move(p.batch), p.rows, p.n};
    set_closure(std::move(closure));
    StepVerdict v;
    try {
      v = guard_->step(batch_of(p.x, p.rows, p.ids), runner());
    } catch (...) {
      closure_ = py::object();
      throw;
    }
    closure_ = py::object();
    after_step(step);
    return verdict_tuple(v);
  }

  // The lower API's begin: the batch to train on (quarantined samples dropped) and the step.
  py::tuple begin_step(py::object batch, py::object closure, py::object ids) {
    if (!closure.is_none() && !PyCallable_Check(closure.ptr())) {
      throw ValueError("nanguard.Guard.begin_step: the closure must be callable or None, got " + type_name(closure));
    }
    Prepared p = prepare(std::move(batch), ids);
    const int64_t step = guard_->steps();
    const KeptBatch& kept = kept_[step] = KeptBatch{std::move(p.batch), p.rows, p.n};
    const bool has_closure = !closure.is_none();
    set_closure(std::move(closure));
    const data::Batch b = guard_->begin_step(batch_of(p.x, p.rows, p.ids), has_closure ? runner() : StepClosure());
    // The front end drops the quarantined rows (rows: None when none was dropped) once its step is open.
    return py::make_tuple(kept.batch, same_tensor(b.y, kept.rows) ? py::none() : py::cast(b.y), kept.n, step);
  }

  // The end of a step of the lower API (applied, or left by an exception).
  void finish_step(int64_t step) {
    closure_ = py::object();
    after_step(step);
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
  template <class... Args>
  py::object call_host(const char* method, Args&&... args) {
    py::object host = host_();
    if (host.is_none()) return py::none();
    return host.attr(method)(std::forward<Args>(args)...);
  }

  static data::Batch batch_of(const at::Tensor& x, const at::Tensor& rows, const std::optional<at::Tensor>& ids) {
    data::Batch b;
    b.x = x;
    b.y = rows;
    if (ids) b.ids = *ids;
    return b;
  }

  // The loop's batch of a step as the guard runs it: the loop's own object, the guard's row
  // positions 0..n-1 (the guard drops quarantined rows from them) and the number of samples.
  struct KeptBatch {
    py::object batch;
    at::Tensor rows;
    int64_t n = 0;
  };
  struct Prepared {
    py::object batch;  // without its ids wrapper (nanguard.with_ids)
    at::Tensor x;      // the tensor the guard screens
    at::Tensor rows;
    std::optional<at::Tensor> ids;
    int64_t n = 0;
  };

  static bool same_tensor(const at::Tensor& a, const at::Tensor& b) {
    return a.unsafeGetTensorImpl() == b.unsafeGetTensorImpl();
  }

  const at::Tensor& rows_of(int64_t n) {
    auto it = rows_.find(n);
    if (it == rows_.end()) it = rows_.emplace(n, torch::arange(n, torch::kLong)).first;
    return it->second;
  }

  // (x, y, ...) with x a floating tensor and no ids: here; anything else: the front end's
  // _prepare, which also checks it.
  Prepared prepare(py::object batch, const py::object& ids) {
    Prepared p;
    PyObject* b = batch.ptr();
    const bool sequence = PyTuple_CheckExact(b) || PyList_CheckExact(b);
    if (ids.is_none() && sequence && PySequence_Fast_GET_SIZE(b) > 0) {
      PyObject* head = PySequence_Fast_GET_ITEM(b, 0);
      if (THPVariable_CheckExact(head)) {
        const at::Tensor& x = THPVariable_Unpack(head);
        if (x.dim() > 0 && x.is_floating_point()) {
          p.x = x;
          p.n = x.size(0);
          p.rows = rows_of(p.n);
          p.batch = std::move(batch);
          return p;
        }
      }
    }
    py::tuple r = call_host("_prepare", std::move(batch), ids);
    p.batch = r[0];
    p.x = r[1].cast<at::Tensor>();
    if (!r[2].is_none()) p.ids = r[2].cast<at::Tensor>();
    p.n = r[3].cast<int64_t>();
    p.rows = rows_of(p.n);
    return p;
  }

  // Whether the closure takes a StepContext, asked of the front end once per closure code: it
  // depends only on the code, how many parameters have defaults, and whether it is a method.
  // Only the code object is kept (it refers to no live object): keeping the closure or its
  // defaults could keep the guard alive through a cycle the garbage collector cannot see.
  void set_closure(py::object closure) {
    closure_ = std::move(closure);
    if (closure_.is_none()) return;
    PyObject* c = closure_.ptr();
    // A function's (or a bound method's) code and defaults, read from the objects: two attribute
    // lookups cost 1.8 us a step. Other callables have no code here and are always asked about.
    PyObject* f = PyMethod_Check(c) ? PyMethod_GET_FUNCTION(c) : c;
    PyObject* code = PyFunction_Check(f) ? PyFunction_GET_CODE(f) : nullptr;
    PyObject* defaults = code != nullptr ? PyFunction_GET_DEFAULTS(f) : nullptr;
    const Py_ssize_t n_defaults = defaults != nullptr && PyTuple_Check(defaults) ? PyTuple_GET_SIZE(defaults) : 0;
    if (code != nullptr && code == last_code_.ptr() && n_defaults == last_defaults_ && Py_TYPE(c) == last_type_) return;
    wants_context_ = call_host("_closure_wants_context", closure_).cast<bool>();
    last_code_ = code != nullptr ? py::reinterpret_borrow<py::object>(code) : py::object();
    last_defaults_ = n_defaults;
    last_type_ = code != nullptr ? Py_TYPE(c) : nullptr;
  }

  py::object take(const py::object& batch, const at::Tensor& rows, int64_t n) {
    return call_host("_take_rows", batch, py::cast(rows), py::int_(n));
  }


  // The guard's closure: the loop's closure on the step's batch (without the rows the guard
  // dropped). Runs that name modules (traced replays, the monitor's sampled steps) and closures
  // that take a StepContext go through the front end's _call_closure.
  StepClosure runner() {
    return [this](const data::Batch& b, const StepContext& c) -> at::Tensor {
      auto it = kept_.find(c.step);
      if (it == kept_.end()) throw InternalError("no batch remembered for step " + std::to_string(c.step));
      if (closure_.is_none()) throw InternalError("the step's closure is gone");
      const KeptBatch& kept = it->second;
      py::object batch = same_tensor(b.y, kept.rows) ? kept.batch : take(kept.batch, b.y, kept.n);
      const bool named =
          c.traced || (c.run == StepContext::Run::first && sample_every_ > 0 && c.step % sample_every_ == 0);
      py::object loss = named || wants_context_
                            ? call_host("_call_closure", closure_, batch, py::bool_(named), to_string(c.run),
                                        py::int_(c.step), py::bool_(c.traced))
                            : closure_(batch);
      if (!THPVariable_Check(loss.ptr())) {
        throw ValueError("nanguard: the closure must return the loss as a tensor, got " + type_name(loss));
      }
      return loss.cast<at::Tensor>();
    };
  }

  // After each step: the scheduler's step, and every 16 steps the batches no replay can reach go.
  void after_step(int64_t step) {
    if (has_scheduler_) call_host("_step_scheduler");
    if ((step & 15) != 0) return;
    const int64_t oldest = oldest_needed_step();
    kept_.erase(kept_.begin(), kept_.lower_bound(oldest));
  }

  py::weakref host_;
  std::unique_ptr<Guard> guard_;
  const bool has_scheduler_;
  int64_t sample_every_ = 0;  // the steps whose first run records activations (named by module)
  std::map<int64_t, KeptBatch> kept_;     // by the guard's step
  std::map<int64_t, at::Tensor> rows_;    // 0..n-1 by n
  py::object closure_;                    // the closure of the step under way
  bool wants_context_ = false;
  py::object last_code_;                  // the closure code wants_context_ was asked for,
  Py_ssize_t last_defaults_ = 0;          // its number of defaults
  PyTypeObject* last_type_ = nullptr;
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
                    const py::dict&, py::object, bool, bool>(),
           py::arg("names"), py::arg("parameters"), py::arg("buffers"), py::arg("optimizer"), py::arg("options"),
           py::arg("host"), py::arg("stable_loss"), py::arg("has_scheduler"))
      .def("step", &PyGuard::step)
      .def("begin_step", &PyGuard::begin_step)
      .def("finish_step", &PyGuard::finish_step)
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
