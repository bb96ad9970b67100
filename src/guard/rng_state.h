// The CPU generator's state, captured before every guarded step so that a replay draws the
// same random numbers (dropout, sampling). Generator::get_state() allocates and serialises a
// tensor each call; copying the engine by value costs one 5 KB memcpy and no allocation.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Tensor.h>

namespace nanguard::detail {

class CpuRngState {
 public:
  // Copies the default CPU generator's state.
  void capture();
  // Puts the captured state back into the default CPU generator.
  void restore() const;
  // The captured state in Generator::get_state()'s format (for incident dumps).
  at::Tensor to_tensor() const;
  bool captured() const { return captured_; }

 private:
  at::mt19937 engine_;
  c10::optional<float> next_float_normal_;
  c10::optional<double> next_double_normal_;
  bool captured_ = false;
};

}  // namespace nanguard::detail
