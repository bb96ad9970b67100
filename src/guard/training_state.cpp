#include "guard/training_state.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/numerics/health.h"
#include "numerics/plain_float.h"

namespace nanguard::detail {

TrainingState::TrainingState(std::vector<std::string> names, std::vector<at::Tensor> params,
                             std::vector<at::Tensor> buffers, std::vector<std::shared_ptr<OptimizerAdapter>> optimizers)
    : names_(std::move(names)), params_(std::move(params)), buffers_(std::move(buffers)), optimizers_(std::move(optimizers)) {
  NANGUARD_CHECK(!params_.empty(), "the guard needs at least one parameter that requires grad");
  NANGUARD_CHECK(names_.size() == params_.size(), "{} parameter names for {} parameters", names_.size(), params_.size());
  NANGUARD_CHECK(!optimizers_.empty(), "the guard needs at least one optimizer");
  for (const auto& o : optimizers_) {
    NANGUARD_CHECK(o != nullptr, "an optimizer adapter is null");
    std::vector<size_t> mine;
    for (const auto& p : o->parameters()) {
      for (size_t i = 0; i < params_.size(); ++i) {
        if (params_[i].unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) mine.push_back(i);
      }
    }
    params_of_.push_back(std::move(mine));
  }
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  auto c = t.to(torch::kCPU).to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

StepContext step_context(StepContext::Run run, int64_t step, bool traced) {
  StepContext c;
  c.run = run;
  c.step = step;
  c.traced = traced;
  return c;
}

TrainingStateRefs TrainingState::snapshot_refs() const {
  TrainingStateRefs refs;
  refs.parameters = params_;
  refs.buffers = buffers_;
  refs.optimizers = optimizers();
  return refs;
}

std::vector<OptimizerAdapter*> TrainingState::optimizers() const {
  std::vector<OptimizerAdapter*> out;
  for (const auto& o : optimizers_) out.push_back(o.get());
  return out;
}

void TrainingState::zero_grad() {
  for (auto& p : params_) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

std::vector<at::Tensor> TrainingState::optimizer_state_tensors() const {
  std::vector<at::Tensor> out;
  for (const auto& o : optimizers_) {
    for (auto& t : o->state_tensors()) out.push_back(std::move(t));
  }
  return out;
}

std::vector<at::Tensor> TrainingState::state_tensors() const {
  std::vector<at::Tensor> state = params_;
  for (auto& t : optimizer_state_tensors()) state.push_back(std::move(t));
  return state;
}

std::vector<at::Tensor> TrainingState::second_moments() const {
  std::vector<at::Tensor> out;
  for (const auto& o : optimizers_) {
    for (auto& t : o->second_moments()) out.push_back(std::move(t));
  }
  return out;
}

std::vector<double> TrainingState::learning_rates() const {
  std::vector<double> out;
  for (const auto& o : optimizers_) {
    for (double lr : o->learning_rates()) out.push_back(lr);
  }
  return out;
}

void TrainingState::set_learning_rates(const std::vector<double>& rates) {
  size_t k = 0;
  for (const auto& o : optimizers_) {
    for (size_t g = 0; g < o->num_groups() && k < rates.size(); ++g) o->set_learning_rate(g, rates[k++]);
  }
}

void TrainingState::scale_learning_rates(double factor) {
  for (const auto& o : optimizers_) o->scale_learning_rates(factor);
}

double TrainingState::learning_rate() const {
  const auto& o = optimizers_.front();
  return o->num_groups() == 0 ? 0.0 : o->learning_rate(0);
}

double TrainingState::first_learning_rate(const std::vector<double>& rates) const {
  // The first optimizer's groups come first; without any its rate is 0, as learning_rate() says
  // (asked only with several optimizers: it runs Python for a Python optimizer).
  if (rates.empty() || (optimizers_.size() > 1 && optimizers_.front()->num_groups() == 0)) return 0.0;
  return rates.front();
}

bool TrainingState::loss_and_gradients_finite(const at::Tensor& loss) const {
  std::vector<at::Tensor> check{loss.detach()};
  for (const auto& p : params_) check.push_back(p.grad());
  return all_finite(check);
}

bool TrainingState::cpu_fast_path(const at::Tensor& loss) const {
  if (!loss.is_cpu()) return false;
  for (const auto& p : params_) {
    const auto& g = p.grad();
    if (g.defined() && !plain_cpu_float(g)) return false;
  }
  return true;
}

double TrainingState::gradient_norm_in_double() const {
  torch::NoGradGuard no_grad;
  double squared = 0;
  for (const auto& p : params_) {
    if (p.grad().defined()) squared += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(squared);
}

bool TrainingState::gradient_norm_overflows() const {
  const double norm = gradient_norm_in_double();
  return std::isfinite(norm) && norm * norm > static_cast<double>(std::numeric_limits<float>::max());
}

// Each gradient bounded on its own, so a layer whose gradient explodes does not shrink the
// others'. Norms in double (an exploding gradient's float32 norm can overflow), read at once.
void TrainingState::clip_per_tensor(double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> grads, norms;
  for (auto& p : params_) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    auto norm = at::linalg_vector_norm(p.grad(), 2, c10::nullopt, false, at::kDouble);
    norms.push_back(norms.empty() ? norm : norm.to(norms.front().device()));  // a model on several devices
  }
  if (grads.empty()) return;
  const auto values = torch::stack(norms).to(torch::kCPU);
  const double* v = values.data_ptr<double>();
  for (size_t i = 0; i < grads.size(); ++i) {
    if (v[i] > max_norm) grads[i].mul_(max_norm / (v[i] + 1e-6));
  }
}

void TrainingState::clip_global(double max_norm, double grad_norm) {
  torch::NoGradGuard no_grad;
  // One optimizer: the norm of all gradients, which the check usually has already.
  if (optimizers_.size() == 1) {
    if (grad_norm < 0) grad_norm = gradient_norm_in_double();
    if (grad_norm <= max_norm) return;
    const double scale = max_norm / (grad_norm + 1e-6);
    for (auto& p : params_) {
      if (p.grad().defined()) p.grad().mul_(scale);
    }
    return;
  }
  for (const auto& mine : params_of_) {
    double squared = 0;
    for (size_t i : mine) {
      const auto& g = params_[i].grad();
      if (g.defined()) squared += g.to(torch::kDouble).pow(2).sum().item<double>();
    }
    const double norm = std::sqrt(squared);
    if (norm <= max_norm) continue;
    const double scale = max_norm / (norm + 1e-6);
    for (size_t i : mine) {
      if (params_[i].grad().defined()) params_[i].grad().mul_(scale);
    }
  }
}

void TrainingState::vote_and_average(std::vector<double>& votes) {
  NANGUARD_INTERNAL_ASSERT(consensus_ != nullptr, "a vote without a consensus");
  consensus_->average_gradients_and_sum(params_, votes);
}

bool TrainingState::distributed() const { return consensus_ != nullptr && consensus_->world_size() > 1; }

void TrainingState::apply_update(double per_tensor_clip, double global_clip, double grad_norm, bool averaged) {
  if (averaged && distributed()) {
    consensus_->average_gradients(params_);
    grad_norm = -1;  // the caller's norm was of this rank's gradients
  }
  if (user_clip_) {
    torch::NoGradGuard no_grad;
    user_clip_();
    grad_norm = -1;
  }
  if (per_tensor_clip > 0) {
    clip_per_tensor(per_tensor_clip);
    grad_norm = -1;
  }
  if (global_clip > 0) clip_global(global_clip, grad_norm);
  for (const auto& o : optimizers_) o->step();
}

}  // namespace nanguard::detail
