#include "guard/sentinel.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "guard/training_state.h"
#include "nanguard/numerics/health.h"
#include "numerics/float_sums.h"
#include "numerics/plain_float.h"

namespace nanguard::detail {
namespace {

// One pass per tensor, no temporaries; CPU float32 state is summed by a vectorised loop
// without tensor ops (each op's dispatch costs more than summing a small tensor).
at::Tensor state_sum(const std::vector<at::Tensor>& state) {
  const bool plain = std::all_of(state.begin(), state.end(), plain_cpu_float);
  if (plain) {
    float total = 0;
    for (const auto& t : state) total += sum(t.data_ptr<float>(), t.numel());
    return at::scalar_tensor(total, at::kFloat);
  }
  std::vector<at::Tensor> sums;
  sums.reserve(state.size());
  for (const auto& t : state) sums.push_back(t.sum().to(torch::kFloat));
  return torch::stack(sums).sum();
}

}  // namespace

void Sentinel::queue_state_check() { pending_ = state_sum(state_.state_tensors()); }

CheckResult Sentinel::check(const at::Tensor& loss) {
  const auto& params = state_.params();
  double loss_value = 0;
  float grad_sq = 0;  // float on both paths: both overflow at the same norm
  bool state_failed = false;
  if (state_.cpu_fast_path(loss)) {
    // CPU float32: a vectorised loop over the gradient memory, no tensor ops to dispatch.
    loss_value = scalar_value(loss);
    if (pending_.defined()) state_failed = !std::isfinite(pending_.item<double>());
    for (const auto& p : params) {
      const auto& g = p.grad();
      if (g.defined()) grad_sq += sum_of_squares(g.data_ptr<float>(), g.numel());
    }
  } else {
    std::vector<at::Tensor> parts;
    parts.reserve(params.size() + 2);
    parts.push_back(loss.detach().reshape({}).to(torch::kFloat));
    if (pending_.defined()) parts.push_back(pending_.to(loss.device(), torch::kFloat));
    const size_t first_grad = parts.size();
    // One fused kernel for the norms of all gradients (multi-tensor apply on GPUs) instead of
    // a kernel per tensor: on a small model the launches are most of the cost. Half-precision
    // norms would come back in half and overflow above 65504: those go through float one by one.
    std::vector<at::Tensor> grads;
    grads.reserve(params.size());
    for (const auto& p : params) {
      const auto& g = p.grad();
      if (!g.defined()) continue;
      if (g.scalar_type() == torch::kFloat || g.scalar_type() == torch::kDouble) {
        grads.push_back(g);
      } else {
        parts.push_back(g.reshape({-1}).to(torch::kFloat).pow(2).sum().sqrt());
      }
    }
    if (!grads.empty()) {
      for (auto& n : at::_foreach_norm(grads, 2)) parts.push_back(n.to(torch::kFloat));
    }
    const auto values = torch::stack(parts).to(torch::kCPU, torch::kDouble);
    const double* v = values.data_ptr<double>();
    loss_value = v[0];
    state_failed = first_grad == 2 && !std::isfinite(v[1]);
    for (size_t i = first_grad; i < parts.size(); ++i) {
      const float norm = static_cast<float>(v[i]);
      grad_sq += norm * norm;
    }
  }
  pending_ = at::Tensor();
  // Rare path: confirm with an exact check (a sum can overflow on large finite values).
  if (state_failed) state_failed = !all_finite(state_.state_tensors());

  CheckResult r;
  r.loss = loss_value;
  r.loss_finite = std::isfinite(loss_value);
  r.grads_finite = std::isfinite(grad_sq);
  r.state_failed = state_failed;
  r.grad_norm = std::sqrt(static_cast<double>(grad_sq));
  // Rare path: float32's squared norm overflowed although every gradient may be finite.
  // Nothing is non-finite yet, so the step goes on with the norm in double.
  if (r.loss_finite && !r.grads_finite && !state_failed) {
    std::vector<at::Tensor> grads;
    for (const auto& p : params) {
      if (p.grad().defined()) grads.push_back(p.grad());
    }
    if (all_finite(grads)) {
      r.norm_overflow = true;
      r.grads_finite = true;
      r.grad_norm = state_.gradient_norm_in_double();
    }
  }
  return r;
}

}  // namespace nanguard::detail
