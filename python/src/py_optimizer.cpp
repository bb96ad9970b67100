#include "py_optimizer.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include <torch/csrc/autograd/python_variable.h>  // THPVariable_Check
#include <torch/csrc/utils/pybind.h>            // at::Tensor <-> torch.Tensor
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/trace/tracer.h"

namespace py = pybind11;

namespace nanguard::python {
namespace {

bool is_tensor(py::handle h) { return THPVariable_Check(h.ptr()); }

std::string type_name(py::handle h) { return py::str(py::type::of(h).attr("__name__")); }

}  // namespace

PyOptimizer::PyOptimizer(py::object optimizer) : optimizer_(std::move(optimizer)) {
  py::object base = py::module_::import("torch.optim").attr("Optimizer");
  if (!py::isinstance(optimizer_, base)) {
    throw ValueError("nanguard.Guard: optimizer must be a torch.optim.Optimizer, got " + type_name(optimizer_));
  }
  name_ = type_name(optimizer_);
  std::transform(name_.begin(), name_.end(), name_.begin(), [](unsigned char c) { return std::tolower(c); });
  for (py::handle g : optimizer_.attr("param_groups")) {
    for (py::handle p : g["params"]) {
      py_params_.push_back(py::reinterpret_borrow<py::object>(p));
      params_.push_back(p.cast<at::Tensor>());
    }
  }
  if (params_.empty()) throw ValueError("nanguard.Guard: the optimizer holds no parameters");
  keys_.resize(params_.size());
  numeric_step_.assign(params_.size(), 0);
}

void PyOptimizer::step() {
  trace::PhaseScope phase(trace::Phase::optimizer);
  optimizer_.attr("step")();
}

py::object PyOptimizer::group(size_t g) const {
  return py::reinterpret_borrow<py::list>(optimizer_.attr(param_groups_key_))[g];
}

size_t PyOptimizer::num_groups() const { return py::len(optimizer_.attr(param_groups_key_)); }

double PyOptimizer::learning_rate(size_t g) const { return py::float_(group(g)[lr_key_]); }

// Read once per step: plain CPython calls on a list of dicts holding floats (pybind's accessors
// took 2 us here, most of it in code and data the training step had pushed out of the cache);
// anything else (a tensor learning rate, a sequence that is not a list) goes the general way.
std::vector<double> PyOptimizer::learning_rates() const {
  std::vector<double> out;
  PyObject* groups = PyObject_GetAttr(optimizer_.ptr(), param_groups_key_.ptr());
  if (groups == nullptr) throw py::error_already_set();
  const py::object hold = py::reinterpret_steal<py::object>(groups);
  if (PyList_CheckExact(groups)) {
    out.reserve(static_cast<size_t>(PyList_GET_SIZE(groups)));
    // The size is read each time: the fallback below runs Python code, which may change the list.
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(groups); ++i) {
      PyObject* g = PyList_GET_ITEM(groups, i);
      PyObject* lr = PyDict_CheckExact(g) ? PyDict_GetItemWithError(g, lr_key_.ptr()) : nullptr;  // borrowed
      if (lr != nullptr && PyFloat_CheckExact(lr)) {
        out.push_back(PyFloat_AS_DOUBLE(lr));
      } else {
        if (PyErr_Occurred()) throw py::error_already_set();
        out.push_back(py::float_(py::handle(g)[lr_key_]));
      }
    }
    return out;
  }
  for (py::handle g : hold) out.push_back(py::float_(g[lr_key_]));
  return out;
}

void PyOptimizer::set_learning_rate(size_t g, double lr) {
  py::object grp = group(g);
  py::object current = grp["lr"];
  // PyTorch 2's optimizers accept a tensor learning rate: write into it, not over it.
  if (is_tensor(current)) {
    torch::NoGradGuard no_grad;
    current.cast<at::Tensor>().fill_(lr);
  } else {
    grp["lr"] = py::float_(lr);
  }
}

double PyOptimizer::epsilon(size_t g) const {
  py::dict grp = group(g);
  if (!grp.contains("eps") || grp["eps"].is_none()) return std::numeric_limits<double>::quiet_NaN();
  return py::float_(grp["eps"]);
}

void PyOptimizer::set_epsilon(size_t g, double eps) {
  py::dict grp = group(g);
  if (grp.contains("eps")) grp["eps"] = py::float_(eps);
}

std::vector<OptimizerParamStateView> PyOptimizer::state() {
  std::vector<OptimizerParamStateView> out;
  py::dict live = optimizer_.attr("state");  // a defaultdict: contains() does not create entries
  if (py::len(live) == 0) return out;
  for (size_t i = 0; i < py_params_.size(); ++i) {
    if (!live.contains(py_params_[i])) continue;
    py::object entry_obj = live[py_params_[i]];
    if (!py::isinstance<py::dict>(entry_obj)) continue;
    py::dict entry = entry_obj;
    std::vector<std::string> keys;
    for (auto item : entry) keys.push_back(py::str(item.first));
    std::sort(keys.begin(), keys.end());  // one order whatever order the entries were made in
    OptimizerParamStateView v;
    v.param = static_cast<int64_t>(i);
    std::vector<std::string> tensor_keys;
    int numeric = 0;
    for (const auto& k : keys) {
      py::object value = entry[py::str(k)];
      if (is_tensor(value)) {
        tensor_keys.push_back(k);
        v.tensors.push_back(value.cast<at::Tensor>());
      } else if (k == "step" && (py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value))) {
        numeric = py::isinstance<py::int_>(value) ? 1 : 2;
        v.step = static_cast<int64_t>(value.cast<double>());
      }
    }
    keys_[i] = std::move(tensor_keys);
    numeric_step_[i] = numeric;
    out.push_back(std::move(v));
  }
  return out;
}

void PyOptimizer::load_state(const std::vector<OptimizerParamStateView>& saved) {
  torch::NoGradGuard no_grad;
  py::dict live = optimizer_.attr("state");
  std::vector<bool> keep(py_params_.size(), false);
  for (const auto& s : saved) {
    if (s.param < 0 || s.param >= static_cast<int64_t>(py_params_.size())) continue;
    const size_t i = static_cast<size_t>(s.param);
    keep[i] = true;
    if (!live.contains(py_params_[i])) live[py_params_[i]] = py::dict();  // state dropped since
    py::dict entry = live[py_params_[i]];
    const auto& keys = keys_[i];
    for (size_t k = 0; k < keys.size() && k < s.tensors.size(); ++k) {
      const at::Tensor& src = s.tensors[k];
      if (!src.defined()) continue;
      py::str key(keys[k]);
      if (entry.contains(key) && is_tensor(entry[key])) {
        at::Tensor dst = entry[key].cast<at::Tensor>();
        if (dst.sizes() == src.sizes() && dst.dtype() == src.dtype() && dst.device() == src.device()) {
          dst.copy_(src);
          continue;
        }
      }
      entry[key] = py::cast(src.clone());
    }
    if (numeric_step_[i] == 1) entry["step"] = py::int_(s.step);
    if (numeric_step_[i] == 2) entry["step"] = py::float_(static_cast<double>(s.step));
  }
  // State made after the snapshot (before the first step, say) must go, so the optimizer
  // behaves exactly as it did then.
  for (size_t i = 0; i < py_params_.size(); ++i) {
    if (keep[i] || !live.contains(py_params_[i])) continue;
    if (PyObject_DelItem(live.ptr(), py_params_[i].ptr()) != 0) throw py::error_already_set();
  }
}

std::vector<at::Tensor> PyOptimizer::second_moments() {
  std::vector<at::Tensor> out;
  py::dict live = optimizer_.attr("state");
  if (py::len(live) == 0) return out;
  static const char* const kSecondMoments[] = {"exp_avg_sq", "square_avg", "sum"};
  for (const auto& p : py_params_) {
    if (!live.contains(p)) continue;
    py::object entry_obj = live[p];
    if (!py::isinstance<py::dict>(entry_obj)) continue;
    py::dict entry = entry_obj;
    for (const char* k : kSecondMoments) {
      if (entry.contains(k) && is_tensor(entry[k])) {
        out.push_back(entry[k].cast<at::Tensor>());
        break;
      }
    }
  }
  return out;
}

}  // namespace nanguard::python
