// A warning of the training monitor: plain data, rendered by the guard as an event of kind
// "warning" in events.jsonl.
#pragma once

#include <cstdint>
#include <string>

namespace nanguard::monitor {

struct Warning {
  std::string detector;        // "loss_spike", "grad_norm_growth", "vanishing_gradients", ...
  int64_t step = 0;            // global step of the signal that fired
  std::string layer;           // "layers.0.dense"; "" for whole-model signals
  double value = 0;            // the measured number (z-score, ratio, fraction, growth per step)
  double threshold = 0;        // the threshold it crossed
  double forecast_steps = -1;  // growth: steps left before float32 overflow at this rate; -1 otherwise
  std::string cause;           // the cause of the taxonomy it points to ("lr_too_high", ...)
  std::string message;         // one sentence with the numbers
  std::string suggestion;      // what to change
};

}  // namespace nanguard::monitor
