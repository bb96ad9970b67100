#include "nanguard/monitor/signals.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <sstream>

#include <ATen/record_function.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/trace/scope.h"
#include "numerics/float_sums.h"
#include "numerics/plain_float.h"

namespace nanguard::monitor {
namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
}

std::string layer_of(const std::string& parameter_name) {
  const auto dot = parameter_name.rfind('.');
  return dot == std::string::npos ? parameter_name : parameter_name.substr(0, dot);
}

namespace {

// CPU float32 contiguous output: one pass in plain loops (no tensor ops to dispatch), so a
// sampled step stays cheap.
ActivationStats activation_stats_cpu(const at::Tensor& output, const std::string& kind, double margin) {
  ActivationStats s;
  s.kind = kind;
  const int64_t rows = output.dim() == 0 ? 1 : output.size(0);
  const int64_t n = output.numel();
  const int64_t units = n / std::max<int64_t>(rows, 1);
  s.units = units;
  const float* x = output.data_ptr<float>();
  double sum = 0, sq = 0;
  int64_t saturated = 0;
  // The kind is fixed per tensor: compare the string once, not per element.
  const bool relu = kind == "relu", sigmoid = kind == "sigmoid", tanh = kind == "tanh";
  std::vector<char> alive(relu ? static_cast<size_t>(units) : 0, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * units;
    for (int64_t j = 0; j < units; ++j) {
      const double v = row[j];
      sum += v;
      sq += v * v;
      if (relu) {
        if (v > 0) alive[static_cast<size_t>(j)] = 1;
      } else if (sigmoid) {
        saturated += (v <= margin || v >= 1 - margin) ? 1 : 0;
      } else if (tanh) {
        saturated += std::abs(v) >= 1 - 2 * margin ? 1 : 0;
      }
    }
  }
  const double count = static_cast<double>(n);
  s.mean = sum / count;
  s.std = n > 1 ? std::sqrt(std::max(0.0, (sq - count * s.mean * s.mean) / (count - 1))) : 0.0;
  if (relu) {
    int64_t dead = 0;
    for (char a : alive) dead += a ? 0 : 1;
    s.dead_fraction = units > 0 ? static_cast<double>(dead) / static_cast<double>(units) : 0.0;
  } else {
    s.saturated_fraction = static_cast<double>(saturated) / count;
  }
  return s;
}

}  // namespace

ActivationStats activation_stats(const at::Tensor& output, const std::string& kind, double saturation_margin) {
  torch::NoGradGuard no_grad;
  ActivationStats s;
  s.kind = kind;
  if (!output.defined() || output.numel() == 0) return s;
  if (detail::plain_cpu_float(output)) return activation_stats_cpu(output, kind, saturation_margin);
  auto x = output.detach().to(torch::kDouble);
  if (x.dim() == 0) x = x.reshape({1, 1});
  x = x.reshape({x.size(0), -1});
  s.units = x.size(1);
  s.mean = x.mean().item<double>();
  s.std = x.numel() > 1 ? x.std().item<double>() : 0.0;
  if (kind == "relu") {
    // A unit is dead on this batch when no sample activates it.
    s.dead_fraction = (x > 0).any(0).logical_not().to(torch::kDouble).mean().item<double>();
  } else if (kind == "sigmoid") {
    s.saturated_fraction =
        torch::logical_or(x <= saturation_margin, x >= 1 - saturation_margin).to(torch::kDouble).mean().item<double>();
  } else if (kind == "tanh") {
    s.saturated_fraction = (x.abs() >= 1 - 2 * saturation_margin).to(torch::kDouble).mean().item<double>();
  }
  return s;
}

namespace {

using detail::plain_cpu_float;

// CPU float32: the vectorised float loops, no tensor ops to dispatch (sampled steps stay cheap).
// A float sum past float32's range (a diverging run) is computed again in double.
double squared_norm(const at::Tensor& t) {
  if (plain_cpu_float(t)) {
    const float fast = detail::sum_of_squares(t.data_ptr<float>(), t.numel());
    if (std::isfinite(fast)) return fast;
  }
  return t.detach().to(torch::kDouble).pow(2).sum().item<double>();
}

double squared_distance(const at::Tensor& a, const at::Tensor& b) {
  if (plain_cpu_float(a) && plain_cpu_float(b) && a.numel() == b.numel()) {
    const float fast = detail::sum_of_squared_differences(a.data_ptr<float>(), b.data_ptr<float>(), a.numel());
    if (std::isfinite(fast)) return fast;
  }
  return (a.detach().to(torch::kDouble) - b.detach().to(torch::kDouble)).pow(2).sum().item<double>();
}

}  // namespace

std::vector<LayerSignals> layer_signals(const std::vector<std::string>& names, const std::vector<at::Tensor>& params,
                                        const std::vector<at::Tensor>& before) {
  torch::NoGradGuard no_grad;
  struct Sums {
    double grad = 0, weight = 0, weight_before = 0, update = 0;
    int64_t numel = 0;
    bool any_grad = false;
  };
  std::vector<std::string> order;
  std::vector<Sums> sums;
  for (size_t i = 0; i < params.size() && i < names.size(); ++i) {
    const std::string layer = layer_of(names[i]);
    auto it = std::find(order.begin(), order.end(), layer);
    size_t k = static_cast<size_t>(it - order.begin());
    if (it == order.end()) {
      order.push_back(layer);
      sums.emplace_back();
    }
    Sums& s = sums[k];
    const auto& p = params[i];
    s.weight += squared_norm(p);
    s.numel += p.numel();
    if (p.grad().defined()) {
      s.grad += squared_norm(p.grad());
      s.any_grad = true;
    }
    if (i < before.size() && before[i].defined()) {
      s.weight_before += squared_norm(before[i]);
      s.update += squared_distance(p, before[i]);
    }
  }
  std::vector<LayerSignals> out;
  for (size_t k = 0; k < order.size(); ++k) {
    if (!sums[k].any_grad) continue;
    LayerSignals l;
    l.layer = order[k];
    l.grad_norm = std::sqrt(sums[k].grad);
    l.weight_norm = std::sqrt(sums[k].weight);
    l.numel = sums[k].numel;
    l.update_ratio = before.empty() ? kNaN
                     : sums[k].weight_before > 0 ? std::sqrt(sums[k].update / sums[k].weight_before)
                                                 : kNaN;
    out.push_back(std::move(l));
  }
  return out;
}

OptimizerStateStats optimizer_state_stats(const std::vector<at::Tensor>& second_moments) {
  torch::NoGradGuard no_grad;
  double max = -1, sum = 0;
  int64_t count = 0;
  for (const auto& t : second_moments) {
    if (!t.defined() || t.numel() == 0) continue;
    count += t.numel();
    if (plain_cpu_float(t)) {
      const detail::SumMax s = detail::sum_and_max(t.data_ptr<float>(), t.numel());
      if (std::isfinite(s.sum)) {
        max = std::max(max, static_cast<double>(s.max));
        sum += s.sum;
        continue;
      }
    }
    const auto d = t.detach().to(torch::kDouble);
    max = std::max(max, d.max().item<double>());
    sum += d.sum().item<double>();
  }
  if (count == 0) return {kNaN, kNaN};
  return {max, sum / static_cast<double>(count)};
}

// ---- Activation recorder ----

struct ActivationRecorder::State {
  ActivationSource source = ActivationSource::op_callbacks;
  std::mutex mutex;
  std::vector<std::tuple<std::string, std::string, at::Tensor>> outputs;  // layer, kind, output
};

namespace {

thread_local ActivationRecorder::State* t_state = nullptr;

const char* activation_kind(const char* name) {
  // In-place and out-of-place forms; backward ops have other names (threshold_backward, ...).
  if (std::strcmp(name, "aten::relu") == 0 || std::strcmp(name, "aten::relu_") == 0) return "relu";
  if (std::strcmp(name, "aten::sigmoid") == 0 || std::strcmp(name, "aten::sigmoid_") == 0) return "sigmoid";
  if (std::strcmp(name, "aten::tanh") == 0 || std::strcmp(name, "aten::tanh_") == 0) return "tanh";
  return nullptr;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) { return nullptr; }

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (t_state == nullptr || t_state->source != ActivationSource::op_callbacks) return;
  const char* kind = activation_kind(fn.name());
  if (kind == nullptr) return;
  std::string layer = trace::Scope::current();
  if (layer.rfind("loss", 0) == 0) return;
  for (const auto& value : fn.outputs()) {
    if (!value.isTensor()) continue;
    std::lock_guard<std::mutex> lock(t_state->mutex);
    // Detached alias: the stats are computed after the step's forward, not inside the op.
    t_state->outputs.emplace_back(layer, kind, value.toTensor().detach());
    break;
  }
}

}  // namespace

void report_activation(const at::Tensor& output, const char* kind) {
  const bool known = kind != nullptr && (std::strcmp(kind, "relu") == 0 || std::strcmp(kind, "sigmoid") == 0 ||
                                         std::strcmp(kind, "tanh") == 0);
  NANGUARD_CHECK(known, "report_activation: kind must be \"relu\", \"sigmoid\" or \"tanh\", got {}",
                 kind == nullptr ? std::string("null") : fmt::format("\"{}\"", kind));
  if (t_state == nullptr || t_state->source != ActivationSource::model_reports) return;
  std::lock_guard<std::mutex> lock(t_state->mutex);
  t_state->outputs.emplace_back(trace::Scope::current(), kind, output.detach());
}

ActivationRecorder::ActivationRecorder(double saturation_margin, ActivationSource source)
    : state_(std::make_shared<State>()), margin_(saturation_margin) {
  state_->source = source;
  // Register first: if that throws, the thread-local pointer is left as it was.
  if (source == ActivationSource::op_callbacks) {
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(on_start, on_end).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
  }
  // A recorder started inside another takes over until it stops, then hands back.
  previous_ = t_state;
  t_state = state_.get();
  running_ = true;
}

ActivationRecorder::~ActivationRecorder() { stop(); }

void ActivationRecorder::stop() {
  if (!running_) return;
  if (state_->source == ActivationSource::op_callbacks) at::removeCallback(handle_);
  if (t_state == state_.get()) t_state = previous_;
  running_ = false;
}

std::vector<ActivationStats> ActivationRecorder::finish() {
  stop();
  std::vector<ActivationStats> out;
  for (const auto& [layer, kind, tensor] : state_->outputs) {
    ActivationStats s = activation_stats(tensor, kind, margin_);
    s.layer = layer;
    out.push_back(std::move(s));
  }
  state_->outputs.clear();
  return out;
}

// ---- CSV ----

void write_signals_csv(const std::filesystem::path& path, const std::vector<StepSignals>& history) {
  std::ostringstream out;
  out << "step,signal,layer,value\n";
  auto row = [&](int64_t step, const char* signal, const std::string& layer, double value) {
    if (!std::isfinite(value)) return;  // unmeasured (NaN) numbers are left out
    out << step << ',' << signal << ',' << layer << ',' << fmt::format("{:.9g}", value) << '\n';
  };
  for (const auto& s : history) {
    row(s.step, "loss", "", s.loss);
    row(s.step, "grad_norm", "", s.grad_norm);
    row(s.step, "lr", "", s.learning_rate);
    if (!s.sampled) continue;
    for (const auto& l : s.layers) {
      row(s.step, "layer_grad_norm", l.layer, l.grad_norm);
      row(s.step, "weight_norm", l.layer, l.weight_norm);
      row(s.step, "update_ratio", l.layer, l.update_ratio);
    }
    for (const auto& a : s.activations) {
      row(s.step, "act_mean", a.layer, a.mean);
      row(s.step, "act_std", a.layer, a.std);
      if (a.kind == "relu") row(s.step, "dead_fraction", a.layer, a.dead_fraction);
      else row(s.step, "saturated_fraction", a.layer, a.saturated_fraction);
    }
    row(s.step, "opt_state_max", "", s.optimizer_state.max);
    row(s.step, "opt_state_mean", "", s.optimizer_state.mean);
  }
  write_text_atomic(path, out.str());
}

}  // namespace nanguard::monitor
