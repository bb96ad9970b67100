// The loss and gradient norm of the recent healthy steps: where a rollback should go (the start
// of the rise that led to an incident) and what an automatic clip should bound to.
#pragma once

#include <cstdint>
#include <vector>

namespace nanguard::detail {

class HealthyHistory {
 public:
  explicit HealthyHistory(size_t capacity) : capacity_(capacity) {}

  void push(int64_t step, double loss, double grad_norm);
  // Takes the newest entry out when it belongs to `step` (a step screened out of the trend).
  void drop_step(int64_t step);
  void clear();

  const std::vector<double>& losses() const { return losses_; }
  const std::vector<double>& grad_norms() const { return grad_norms_; }
  const std::vector<int64_t>& steps() const { return steps_; }

  // The step where the recent growth of loss or gradient norm began: walk back while the values
  // keep rising. With no history it is `failing_step`.
  int64_t trend_start(int64_t failing_step) const;
  // `factor` times the median gradient norm of the healthy steps before that trend (a fixed
  // threshold like 1.0 would shrink every ordinary update of a model whose healthy norm is in
  // the hundreds); the smallest norm when the trend began at the first step; 1.0 without history.
  double automatic_clip_norm(double factor, int64_t failing_step) const;

 private:
  size_t capacity_;
  std::vector<double> losses_, grad_norms_;
  std::vector<int64_t> steps_;
};

}  // namespace nanguard::detail
