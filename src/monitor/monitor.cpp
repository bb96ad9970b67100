#include "nanguard/monitor/monitor.h"

#include <cmath>

#include <torch/torch.h>

#include "core/check.h"

namespace nanguard::monitor {
namespace {

const MonitorOptions& validated(const MonitorOptions& options) {
  options.validate();
  return options;
}

}  // namespace

Monitor::Monitor(std::vector<std::string> names, std::vector<at::Tensor> params, MonitorOptions options)
    : names_(std::move(names)),
      params_(std::move(params)),
      options_(validated(options)),
      loss_spike_("loss", options_.loss_spike_z(), options_.loss_spike_ratio(), options_.window(), options_.warmup(),
                  options_.cooldown()),
      grad_spike_("grad_norm", options_.grad_spike_z(), 0.0, options_.window(), options_.warmup(), options_.cooldown()),
      loss_growth_("loss", options_.growth_steps(), options_.growth_factor(), kFloat32Max, options_.cooldown(),
                   options_.window(), options_.warmup(), options_.growth_z()),
      grad_growth_("grad_norm", options_.growth_steps(), options_.growth_factor(), kGradNormOverflow,
                   options_.cooldown(), options_.window(), options_.warmup(), options_.growth_z()),
      oscillation_(options_.oscillation_window(), options_.oscillation_amplitude(), options_.warmup(),
                   options_.cooldown()),
      stall_(options_.stall_steps(), options_.stall_tolerance(), options_.warmup(), options_.stall_steps()),
      vanishing_(options_.vanishing_ratio(), options_.cooldown()),
      dying_relu_(ActivationDetector::Mode::dying_relu, options_.dead_relu_fraction(), options_.activation_patience(),
                  options_.cooldown()),
      saturation_(ActivationDetector::Mode::saturation, options_.saturation_fraction(),
                  options_.activation_patience(), options_.cooldown()) {
  NANGUARD_CHECK(names_.size() == params_.size(), "monitor: {} parameter names for {} parameters", names_.size(),
                 params_.size());
}

namespace {
std::pair<std::vector<std::string>, std::vector<at::Tensor>> trainable(torch::nn::Module& module) {
  std::pair<std::vector<std::string>, std::vector<at::Tensor>> out;
  for (const auto& item : module.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    out.first.push_back(item.key());
    out.second.push_back(item.value());
  }
  return out;
}
}  // namespace

Monitor::Monitor(torch::nn::Module& module, MonitorOptions options)
    : Monitor(trainable(module).first, trainable(module).second, std::move(options)) {}

bool Monitor::sample_due(int64_t step) const { return options_.enabled() && step % options_.sample_every() == 0; }

std::vector<Warning> Monitor::keep(std::vector<Warning> found) {
  warnings_.insert(warnings_.end(), found.begin(), found.end());
  return found;
}

std::vector<Warning> Monitor::observe_step(int64_t step, double loss, double grad_norm, double learning_rate) {
  if (!options_.enabled()) return {};
  StepSignals s;
  s.step = step;
  s.loss = loss;
  s.grad_norm = grad_norm;
  s.learning_rate = learning_rate;
  history_.push_back(std::move(s));
  if (static_cast<int64_t>(history_.size()) > options_.max_history())
    history_.erase(history_.begin(), history_.begin() + static_cast<std::ptrdiff_t>(history_.size() / 2));
  std::vector<Warning> found;
  auto add = [&](std::optional<Warning> w) {
    if (w) found.push_back(std::move(*w));
  };
  add(loss_growth_.update(step, loss));
  add(grad_growth_.update(step, grad_norm));
  add(loss_spike_.update(step, loss));
  add(grad_spike_.update(step, grad_norm));
  add(oscillation_.update(step, loss));
  add(stall_.update(step, loss));
  return keep(std::move(found));
}

void Monitor::set_learning_rate(int64_t step, double learning_rate) {
  if (!history_.empty() && history_.back().step == step) history_.back().learning_rate = learning_rate;
}

double Monitor::adaptive_clip_norm(double grad_norm) const {
  if (!options_.enabled() || !options_.adaptive_clip() || !grad_spike_.warm()) return 0;
  if (grad_spike_.z(grad_norm) < options_.clip_z()) return 0;
  const LogEma& w = grad_spike_.window();
  return std::exp(w.mean() + options_.clip_z() * w.std());
}

bool Monitor::wants_lr_cut(const Warning& warning) {
  const bool due = options_.enabled() && options_.lr_cut() && warning.forecast_steps >= 0 &&
                   warning.forecast_steps <= static_cast<double>(options_.lr_cut_horizon());
  if (!due || (last_lr_cut_ >= 0 && warning.step - last_lr_cut_ < options_.growth_steps())) return false;
  last_lr_cut_ = warning.step;
  return true;
}

void Monitor::begin_update() {
  torch::NoGradGuard no_grad;
  // Buffers allocated on the first sampled step and reused.
  if (before_.size() != params_.size()) {
    before_.clear();
    for (const auto& p : params_) before_.push_back(torch::empty_like(p, at::MemoryFormat::Contiguous));
  }
  for (size_t i = 0; i < params_.size(); ++i) before_[i].copy_(params_[i].detach());
  have_before_ = true;
}

std::vector<Warning> Monitor::end_update(int64_t step, const std::vector<at::Tensor>& second_moments,
                                         std::vector<ActivationStats> activations) {
  if (!options_.enabled()) return {};
  auto layers = layer_signals(names_, params_, have_before_ ? before_ : std::vector<at::Tensor>{});
  have_before_ = false;
  std::vector<Warning> found;
  if (models_.empty()) {
    if (auto w = vanishing_.update(step, layers)) found.push_back(std::move(*w));
  }
  for (const auto& model : models_) {
    std::vector<LayerSignals> own;
    for (const auto& l : layers) {
      if (l.layer.rfind(model + ".", 0) == 0) own.push_back(l);
    }
    if (auto w = vanishing_.update(step, own)) found.push_back(std::move(*w));
  }
  for (auto& w : dying_relu_.update(step, activations)) found.push_back(std::move(w));
  for (auto& w : saturation_.update(step, activations)) found.push_back(std::move(w));
  if (!history_.empty() && history_.back().step == step) {
    StepSignals& s = history_.back();
    s.sampled = true;
    s.layers = std::move(layers);
    s.activations = std::move(activations);
    s.optimizer_state = optimizer_state_stats(second_moments);
  }
  return keep(std::move(found));
}

void Monitor::reset_trends() {
  loss_spike_.reset();
  grad_spike_.reset();
  loss_growth_.reset();
  grad_growth_.reset();
}

void Monitor::write_csv(const std::filesystem::path& path) const { write_signals_csv(path, history_); }

}  // namespace nanguard::monitor
