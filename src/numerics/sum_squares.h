// Sum of squares of float32 data in float32, vectorised (AVX2 where the CPU has it), for the
// guard's per-step check: like a BLAS dot of x with itself, it is non-finite iff an element is
// (or the sum overflows float32), but it needs no tensor ops and so no dispatch overhead.
#pragma once

#include <cstdint>

namespace nanguard::detail {

float sum_of_squares(const float* data, int64_t n);

}  // namespace nanguard::detail
