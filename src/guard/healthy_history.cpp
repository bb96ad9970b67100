#include "guard/healthy_history.h"

#include <algorithm>
#include <cmath>

namespace nanguard::detail {

void HealthyHistory::push(int64_t step, double loss, double grad_norm) {
  losses_.push_back(loss);
  grad_norms_.push_back(grad_norm);
  steps_.push_back(step);
  if (steps_.size() > capacity_) {
    losses_.erase(losses_.begin());
    grad_norms_.erase(grad_norms_.begin());
    steps_.erase(steps_.begin());
  }
}

void HealthyHistory::drop_step(int64_t step) {
  if (steps_.empty() || steps_.back() != step) return;
  steps_.pop_back();
  losses_.pop_back();
  grad_norms_.pop_back();
}

void HealthyHistory::clear() {
  losses_.clear();
  grad_norms_.clear();
  steps_.clear();
}

int64_t HealthyHistory::trend_start(int64_t failing_step) const {
  if (steps_.empty()) return failing_step;
  auto start_of_rise = [](const std::vector<double>& v) {
    size_t i = v.size() - 1;
    while (i > 0 && v[i] > v[i - 1] * 1.05) --i;
    return i;
  };
  const size_t i = std::min(start_of_rise(losses_), start_of_rise(grad_norms_));
  return steps_[std::min(i, steps_.size() - 1)];
}

double HealthyHistory::automatic_clip_norm(double factor, int64_t failing_step) const {
  const int64_t trend = trend_start(failing_step);
  std::vector<double> healthy;
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (steps_[i] < trend && std::isfinite(grad_norms_[i])) healthy.push_back(grad_norms_[i]);
  }
  if (healthy.empty()) {
    for (double g : grad_norms_) {
      if (std::isfinite(g)) healthy.push_back(g);
    }
    if (healthy.empty()) return 1.0;
    return factor * *std::min_element(healthy.begin(), healthy.end());
  }
  std::nth_element(healthy.begin(), healthy.begin() + static_cast<std::ptrdiff_t>(healthy.size() / 2), healthy.end());
  const double median = healthy[healthy.size() / 2];
  return median > 0 ? factor * median : 1.0;
}

}  // namespace nanguard::detail
