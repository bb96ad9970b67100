// The divisor that brings inputs to unit range, for a repair of inputs left unscaled (raw 8-bit
// pixels): integer-valued inputs are divided by their largest |value| (pixels to [0, 1], as
// the usual "/ 255"), any others by their RMS. Non-finite values are ignored.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace nanguard::data {

// The scale of a tensor's finite values, computed in double.
struct InputScale {
  int64_t finite = 0;   // finite values counted (0: nothing below is set)
  double rms = 0;       // root mean square
  double absmax = 0;    // largest |x|
  bool integer = false; // every finite value is an integer
};

InputScale input_scale_of(const at::Tensor& x);

struct UnitRangeDivisor {
  double divisor = 1.0;  // 1 when the inputs are already within unit range (or empty)
  bool integer = false;  // the inputs are integer-valued
  // "their largest value: integer inputs such as 8-bit pixels" or "their RMS".
  std::string describe() const;
};

UnitRangeDivisor unit_range_divisor(const at::Tensor& x);

}  // namespace nanguard::data
