#include "nanguard/monitor/options.h"

#include <cmath>
#include <functional>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"

#include "support/test_support.h"

namespace nanguard::monitor {
namespace {

using testing::throws_with;

TEST(MonitorOptions, DefaultsAreValidAndSettersChain) {
  MonitorOptions o;
  EXPECT_NO_THROW(o.validate());
  EXPECT_TRUE(o.enabled());
  EXPECT_FALSE(o.adaptive_clip());
  EXPECT_FALSE(o.lr_cut());
  o.sample_every(10).warmup(0).growth_factor(2.0).lr_cut(true);
  EXPECT_EQ(o.sample_every(), 10);
  EXPECT_EQ(o.growth_factor(), 2.0);
  EXPECT_NO_THROW(o.validate());
}

TEST(MonitorOptions, BadValuesNameTheOption) {
  const std::vector<std::pair<std::function<void(MonitorOptions&)>, std::string>> cases = {
      {[](MonitorOptions& o) { o.sample_every(0); }, "sample_every"},
      {[](MonitorOptions& o) { o.window(1); }, "window"},
      {[](MonitorOptions& o) { o.warmup(-1); }, "warmup"},
      {[](MonitorOptions& o) { o.cooldown(-5); }, "cooldown"},
      {[](MonitorOptions& o) { o.loss_spike_z(-1); }, "loss_spike_z"},
      {[](MonitorOptions& o) { o.loss_spike_ratio(0.5); }, "loss_spike_ratio"},
      {[](MonitorOptions& o) { o.grad_spike_z(std::nan("")); }, "grad_spike_z"},
      {[](MonitorOptions& o) { o.growth_steps(1); }, "growth_steps"},
      {[](MonitorOptions& o) { o.growth_factor(1.0); }, "growth_factor"},
      {[](MonitorOptions& o) { o.growth_z(-2); }, "growth_z"},
      {[](MonitorOptions& o) { o.vanishing_ratio(0); }, "vanishing_ratio"},
      {[](MonitorOptions& o) { o.dead_relu_fraction(1.5); }, "dead_relu_fraction"},
      {[](MonitorOptions& o) { o.saturation_fraction(-0.1); }, "saturation_fraction"},
      {[](MonitorOptions& o) { o.saturation_margin(0.5); }, "saturation_margin"},
      {[](MonitorOptions& o) { o.activation_patience(0); }, "activation_patience"},
      {[](MonitorOptions& o) { o.oscillation_window(2); }, "oscillation_window"},
      {[](MonitorOptions& o) { o.oscillation_amplitude(0); }, "oscillation_amplitude"},
      {[](MonitorOptions& o) { o.stall_steps(0); }, "stall_steps"},
      {[](MonitorOptions& o) { o.stall_tolerance(-0.1); }, "stall_tolerance"},
      {[](MonitorOptions& o) { o.clip_z(0); }, "clip_z"},
      {[](MonitorOptions& o) { o.lr_cut_factor(1.0); }, "lr_cut_factor"},
      {[](MonitorOptions& o) { o.lr_cut_horizon(0); }, "lr_cut_horizon"},
      {[](MonitorOptions& o) { o.max_history(0); }, "max_history"},
  };
  for (const auto& [set, name] : cases) {
    MonitorOptions o;
    set(o);
    EXPECT_TRUE(throws_with<ValueError>([&] { o.validate(); }, {"monitor option " + name})) << name;
  }
}

}  // namespace
}  // namespace nanguard::monitor
