// Learning-rate schedules with Keras formulas. A schedule is a function of the number of
// optimizer steps applied so far (Keras optimizer.iterations), so skipped steps do not shift
// it; reduce_on_plateau (Keras's ReduceLROnPlateau callback) reacts to epoch ends instead and
// carries state that snapshots save and restore bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>

namespace nanguard {

enum class ScheduleType { constant, exponential_decay, piecewise_constant, cosine_decay, reduce_on_plateau };

// "cosine_decay" -> ScheduleType::cosine_decay. Throws ValueError listing the valid names.
ScheduleType parse_schedule_type(const std::string& name);
const char* to_string(ScheduleType type);

struct ScheduleSpec {
  ScheduleSpec() = default;
  /* implicit */ ScheduleSpec(ScheduleType type) : type_(type) {}

  // Which schedule.
  TORCH_ARG(ScheduleType, type) = ScheduleType::constant;
  // The starting rate; unset = the optimizer's learning rate (all types but piecewise_constant).
  TORCH_ARG(std::optional<double>, initial_learning_rate);
  // exponential_decay: the step scale of the exponent; cosine_decay: the length of the decay.
  TORCH_ARG(int64_t, decay_steps) = 0;
  // exponential_decay: the factor per decay_steps steps.
  TORCH_ARG(double, decay_rate) = 0.0;
  // exponential_decay: decay in whole intervals (floor of the exponent).
  TORCH_ARG(bool, staircase) = false;
  // piecewise_constant: strictly increasing step boundaries.
  TORCH_ARG(std::vector<int64_t>, boundaries);
  // piecewise_constant: boundaries.size() + 1 rates; values[i] applies while
  // boundaries[i-1] < step <= boundaries[i].
  TORCH_ARG(std::vector<double>, values);
  // cosine_decay: the final rate as a fraction of the rate decayed from.
  TORCH_ARG(double, alpha) = 0.0;
  // cosine_decay: steps of linear warmup from initial_learning_rate to warmup_target.
  TORCH_ARG(int64_t, warmup_steps) = 0;
  // cosine_decay: the rate reached after warmup; unset = no warmup.
  TORCH_ARG(std::optional<double>, warmup_target);
  // reduce_on_plateau: the history value watched at each epoch end.
  TORCH_ARG(std::string, monitor) = "val_loss";
  // reduce_on_plateau: new rate = rate * factor (< 1).
  TORCH_ARG(double, factor) = 0.1;
  // reduce_on_plateau: epochs without improvement before a reduction.
  TORCH_ARG(int64_t, patience) = 10;
  // reduce_on_plateau: the smallest change that counts as an improvement.
  TORCH_ARG(double, min_delta) = 1e-4;
  // reduce_on_plateau: epochs to wait after a reduction before counting again.
  TORCH_ARG(int64_t, cooldown) = 0;
  // reduce_on_plateau: the rate never goes below this.
  TORCH_ARG(double, min_lr) = 0.0;
  // reduce_on_plateau: "min" (lower is better), "max", or "auto" (max if monitor names an
  // accuracy, else min).
  TORCH_ARG(std::string, mode) = "min";

 public:
  // Throws ValueError naming the first option out of range or missing for the type.
  void validate() const;
};

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;

  // The rate for the next optimizer step, given the number of steps applied so far (>= 0).
  virtual double learning_rate(int64_t step) const = 0;
  // Called at the end of every epoch with the spec's monitor value; only reduce_on_plateau
  // reacts. epoch counts from 0.
  virtual void on_epoch_end(int64_t epoch, double monitored_value) {}
  // The mutable state (empty for schedules that are pure functions of the step).
  virtual std::vector<double> state() const { return {}; }
  // Restores state(); throws ValueError when the size or a value does not fit.
  virtual void load_state(const std::vector<double>& state);

  const ScheduleSpec& spec() const { return spec_; }

 protected:
  explicit LrSchedule(ScheduleSpec spec) : spec_(std::move(spec)) {}
  ScheduleSpec spec_;  // with initial_learning_rate resolved
};

// Builds the schedule; initial_learning_rate falls back to optimizer_learning_rate.
// Throws ValueError for an invalid spec.
std::unique_ptr<LrSchedule> make_schedule(const ScheduleSpec& spec, double optimizer_learning_rate);

}  // namespace nanguard
