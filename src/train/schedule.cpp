#include "nanguard/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "core/check.h"

namespace nanguard {

ScheduleType parse_schedule_type(const std::string& name) {
  for (auto type : {ScheduleType::constant, ScheduleType::exponential_decay,
                    ScheduleType::piecewise_constant, ScheduleType::cosine_decay,
                    ScheduleType::reduce_on_plateau}) {
    if (name == to_string(type)) return type;
  }
  throw ValueError(fmt::format(
      "unknown schedule \"{}\"; valid schedules: constant, exponential_decay, piecewise_constant, "
      "cosine_decay, reduce_on_plateau",
      name));
}

const char* to_string(ScheduleType type) {
  switch (type) {
    case ScheduleType::constant: return "constant";
    case ScheduleType::exponential_decay: return "exponential_decay";
    case ScheduleType::piecewise_constant: return "piecewise_constant";
    case ScheduleType::cosine_decay: return "cosine_decay";
    case ScheduleType::reduce_on_plateau: return "reduce_on_plateau";
  }
  return "unknown";
}

void ScheduleSpec::validate() const {
  const char* name = to_string(type_);
  if (initial_learning_rate_) {
    NANGUARD_CHECK(std::isfinite(*initial_learning_rate_) && *initial_learning_rate_ >= 0,
                   "{}: initial_learning_rate must be a finite number >= 0, got {}", name,
                   *initial_learning_rate_);
  }
  switch (type_) {
    case ScheduleType::constant:
      break;
    case ScheduleType::exponential_decay:
      NANGUARD_CHECK(decay_steps_ > 0, "{}: decay_steps must be a positive integer, got {}", name,
                     decay_steps_);
      NANGUARD_CHECK(std::isfinite(decay_rate_) && decay_rate_ > 0,
                     "{}: decay_rate must be a positive number, got {}", name, decay_rate_);
      break;
    case ScheduleType::piecewise_constant:
      NANGUARD_CHECK(values_.size() == boundaries_.size() + 1,
                     "{}: values needs one more entry than boundaries, got {} values for {} "
                     "boundaries",
                     name, values_.size(), boundaries_.size());
      for (size_t i = 0; i < boundaries_.size(); ++i) {
        NANGUARD_CHECK(boundaries_[i] >= 0, "{}: boundaries[{}] must be >= 0, got {}", name, i,
                       boundaries_[i]);
        NANGUARD_CHECK(i == 0 || boundaries_[i] > boundaries_[i - 1],
                       "{}: boundaries must be strictly increasing, but boundaries[{}] = {} follows "
                       "{}",
                       name, i, boundaries_[i], boundaries_[i - 1]);
      }
      for (size_t i = 0; i < values_.size(); ++i) {
        NANGUARD_CHECK(std::isfinite(values_[i]) && values_[i] >= 0,
                       "{}: values[{}] must be a finite number >= 0, got {}", name, i, values_[i]);
      }
      break;
    case ScheduleType::cosine_decay:
      NANGUARD_CHECK(decay_steps_ > 0, "{}: decay_steps must be a positive integer, got {}", name,
                     decay_steps_);
      NANGUARD_CHECK(alpha_ >= 0 && alpha_ <= 1, "{}: alpha must be in [0, 1], got {}", name, alpha_);
      NANGUARD_CHECK(warmup_steps_ >= 0, "{}: warmup_steps must be >= 0, got {}", name,
                     warmup_steps_);
      NANGUARD_CHECK(warmup_steps_ == 0 || warmup_target_,
                     "{}: warmup_steps needs warmup_target (the rate reached after warmup)", name);
      if (warmup_target_) {
        NANGUARD_CHECK(std::isfinite(*warmup_target_) && *warmup_target_ >= 0,
                       "{}: warmup_target must be a finite number >= 0, got {}", name,
                       *warmup_target_);
      }
      break;
    case ScheduleType::reduce_on_plateau:
      NANGUARD_CHECK(!monitor_.empty(), "{}: monitor must name a history value such as val_loss",
                     name);
      NANGUARD_CHECK(factor_ > 0 && factor_ < 1, "{}: factor must be in (0, 1), got {}", name,
                     factor_);
      NANGUARD_CHECK(patience_ >= 0, "{}: patience must be >= 0, got {}", name, patience_);
      NANGUARD_CHECK(std::isfinite(min_delta_) && min_delta_ >= 0,
                     "{}: min_delta must be >= 0, got {}", name, min_delta_);
      NANGUARD_CHECK(cooldown_ >= 0, "{}: cooldown must be >= 0, got {}", name, cooldown_);
      NANGUARD_CHECK(std::isfinite(min_lr_) && min_lr_ >= 0, "{}: min_lr must be >= 0, got {}",
                     name, min_lr_);
      NANGUARD_CHECK(mode_ == "min" || mode_ == "max" || mode_ == "auto",
                     "{}: mode must be \"min\", \"max\" or \"auto\", got \"{}\"", name, mode_);
      break;
  }
}

void LrSchedule::load_state(const std::vector<double>& state) {
  NANGUARD_CHECK(state.empty(), "{}: schedule state must be empty, got {} values",
                 to_string(spec_.type()), state.size());
}

namespace {

constexpr double kPi = 3.14159265358979323846;

void check_step(int64_t step) {
  NANGUARD_CHECK(step >= 0, "learning_rate: step must be >= 0, got {}", step);
}

class ConstantSchedule : public LrSchedule {
 public:
  explicit ConstantSchedule(ScheduleSpec spec) : LrSchedule(std::move(spec)) {}
  double learning_rate(int64_t step) const override {
    check_step(step);
    return *spec_.initial_learning_rate();
  }
};

// Keras ExponentialDecay: lr0 * rate^(step / decay_steps), the exponent floored if staircase.
class ExponentialDecay : public LrSchedule {
 public:
  explicit ExponentialDecay(ScheduleSpec spec) : LrSchedule(std::move(spec)) {}
  double learning_rate(int64_t step) const override {
    check_step(step);
    double p = static_cast<double>(step) / static_cast<double>(spec_.decay_steps());
    if (spec_.staircase()) p = std::floor(p);
    return *spec_.initial_learning_rate() * std::pow(spec_.decay_rate(), p);
  }
};

// Keras PiecewiseConstantDecay: values[i] while boundaries[i-1] < step <= boundaries[i].
class PiecewiseConstant : public LrSchedule {
 public:
  explicit PiecewiseConstant(ScheduleSpec spec) : LrSchedule(std::move(spec)) {}
  double learning_rate(int64_t step) const override {
    check_step(step);
    const auto& b = spec_.boundaries();
    size_t i = std::lower_bound(b.begin(), b.end(), step) - b.begin();
    return spec_.values()[i];
  }
};

// Keras CosineDecay (with optional linear warmup).
class CosineDecay : public LrSchedule {
 public:
  explicit CosineDecay(ScheduleSpec spec) : LrSchedule(std::move(spec)) {}
  double learning_rate(int64_t step) const override {
    check_step(step);
    const double initial = *spec_.initial_learning_rate();
    const double decay_steps = static_cast<double>(spec_.decay_steps());
    double s = static_cast<double>(step);
    if (!spec_.warmup_target()) return decay(std::min(s, decay_steps), decay_steps, initial);
    const double target = *spec_.warmup_target();
    const double warmup = static_cast<double>(spec_.warmup_steps());
    s = std::min(s, decay_steps + warmup);
    if (s < warmup) return (target - initial) * (s / warmup) + initial;
    return decay(s - warmup, decay_steps, target);
  }

 private:
  double decay(double s, double decay_steps, double from) const {
    const double cosine = 0.5 * (1.0 + std::cos(kPi * (s / decay_steps)));
    return from * ((1.0 - spec_.alpha()) * cosine + spec_.alpha());
  }
};

// Keras ReduceLROnPlateau, step for step: the same counters, comparisons and order.
class ReduceOnPlateau : public LrSchedule {
 public:
  explicit ReduceOnPlateau(ScheduleSpec spec) : LrSchedule(std::move(spec)) {
    maximize_ = spec_.mode() == "max" ||
                (spec_.mode() == "auto" && spec_.monitor().find("acc") != std::string::npos);
    lr_ = *spec_.initial_learning_rate();
    best_ = maximize_ ? -std::numeric_limits<double>::infinity()
                      : std::numeric_limits<double>::infinity();
  }

  double learning_rate(int64_t step) const override {
    check_step(step);
    return lr_;
  }

  void on_epoch_end(int64_t epoch, double current) override {
    if (cooldown_counter_ > 0) {
      cooldown_counter_ -= 1;
      wait_ = 0;
    }
    bool improved = maximize_ ? current > best_ + spec_.min_delta()
                              : current < best_ - spec_.min_delta();
    if (improved) {
      best_ = current;
      wait_ = 0;
    } else if (cooldown_counter_ <= 0) {
      wait_ += 1;
      if (wait_ >= spec_.patience() && lr_ > spec_.min_lr()) {
        lr_ = std::max(lr_ * spec_.factor(), spec_.min_lr());
        cooldown_counter_ = spec_.cooldown();
        wait_ = 0;
      }
    }
  }

  std::vector<double> state() const override {
    return {lr_, best_, static_cast<double>(wait_), static_cast<double>(cooldown_counter_)};
  }

  void load_state(const std::vector<double>& state) override {
    NANGUARD_CHECK(state.size() == 4,
                   "reduce_on_plateau: state must hold 4 values (lr, best, wait, cooldown), got {}",
                   state.size());
    NANGUARD_CHECK(std::isfinite(state[0]) && state[0] >= 0,
                   "reduce_on_plateau: state lr must be a finite number >= 0, got {}", state[0]);
    NANGUARD_CHECK(!std::isnan(state[1]), "reduce_on_plateau: state best must not be NaN");
    for (int i : {2, 3}) {
      NANGUARD_CHECK(state[i] >= 0 && state[i] == std::floor(state[i]) && state[i] < 1e15,
                     "reduce_on_plateau: state {} must be a whole number >= 0, got {}",
                     i == 2 ? "wait" : "cooldown", state[i]);
    }
    lr_ = state[0];
    best_ = state[1];
    wait_ = static_cast<int64_t>(state[2]);
    cooldown_counter_ = static_cast<int64_t>(state[3]);
  }

 private:
  bool maximize_ = false;
  double lr_ = 0;
  double best_ = 0;
  int64_t wait_ = 0;
  int64_t cooldown_counter_ = 0;
};

}  // namespace

std::unique_ptr<LrSchedule> make_schedule(const ScheduleSpec& spec, double optimizer_learning_rate) {
  ScheduleSpec resolved = spec;
  if (!resolved.initial_learning_rate()) resolved.initial_learning_rate(optimizer_learning_rate);
  resolved.validate();
  switch (resolved.type()) {
    case ScheduleType::constant: return std::make_unique<ConstantSchedule>(std::move(resolved));
    case ScheduleType::exponential_decay: return std::make_unique<ExponentialDecay>(std::move(resolved));
    case ScheduleType::piecewise_constant: return std::make_unique<PiecewiseConstant>(std::move(resolved));
    case ScheduleType::cosine_decay: return std::make_unique<CosineDecay>(std::move(resolved));
    case ScheduleType::reduce_on_plateau: return std::make_unique<ReduceOnPlateau>(std::move(resolved));
  }
  NANGUARD_INTERNAL_ASSERT(false, "unhandled schedule type {}", static_cast<int>(spec.type()));
  return nullptr;
}

}  // namespace nanguard
