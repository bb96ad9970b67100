#include "nanguard/monitor/options.h"

#include <cmath>

#include "core/check.h"

namespace nanguard::monitor {

void MonitorOptions::validate() const {
  auto at_least = [](const char* name, int64_t v, int64_t min) {
    NANGUARD_CHECK(v >= min, "monitor option {} must be >= {}, got {}", name, min, v);
  };
  auto positive = [](const char* name, double v) {
    NANGUARD_CHECK(std::isfinite(v) && v > 0, "monitor option {} must be a positive number, got {}", name, v);
  };
  auto fraction = [](const char* name, double v) {
    NANGUARD_CHECK(std::isfinite(v) && v > 0 && v <= 1, "monitor option {} must be in (0, 1], got {}", name, v);
  };
  at_least("sample_every", sample_every(), 1);
  at_least("window", window(), 2);
  at_least("warmup", warmup(), 0);
  at_least("cooldown", cooldown(), 0);
  positive("loss_spike_z", loss_spike_z());
  NANGUARD_CHECK(std::isfinite(loss_spike_ratio()) && (loss_spike_ratio() == 0 || loss_spike_ratio() > 1),
                 "monitor option loss_spike_ratio must be 0 (off) or > 1, got {}", loss_spike_ratio());
  positive("grad_spike_z", grad_spike_z());
  at_least("growth_steps", growth_steps(), 2);
  positive("growth_z", growth_z());
  NANGUARD_CHECK(std::isfinite(growth_factor()) && growth_factor() > 1,
                 "monitor option growth_factor must be > 1, got {}", growth_factor());
  fraction("vanishing_ratio", vanishing_ratio());
  fraction("dead_relu_fraction", dead_relu_fraction());
  fraction("saturation_fraction", saturation_fraction());
  NANGUARD_CHECK(std::isfinite(saturation_margin()) && saturation_margin() > 0 && saturation_margin() < 0.5,
                 "monitor option saturation_margin must be in (0, 0.5), got {}", saturation_margin());
  at_least("activation_patience", activation_patience(), 1);
  at_least("oscillation_window", oscillation_window(), 4);
  positive("oscillation_amplitude", oscillation_amplitude());
  at_least("stall_steps", stall_steps(), 2);
  NANGUARD_CHECK(std::isfinite(stall_tolerance()) && stall_tolerance() >= 0 && stall_tolerance() < 1,
                 "monitor option stall_tolerance must be in [0, 1), got {}", stall_tolerance());
  positive("clip_z", clip_z());
  NANGUARD_CHECK(std::isfinite(lr_cut_factor()) && lr_cut_factor() > 0 && lr_cut_factor() < 1,
                 "monitor option lr_cut_factor must be in (0, 1), got {}", lr_cut_factor());
  at_least("lr_cut_horizon", lr_cut_horizon(), 1);
  at_least("max_history", max_history(), 1);
}

}  // namespace nanguard::monitor
