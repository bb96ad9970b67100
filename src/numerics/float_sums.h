// Reductions over float32 memory in float32, vectorised (AVX2 + FMA where the CPU has it), for
// the guard's per-step check and the monitor's sampled signals: no tensor ops, so no dispatch
// overhead and one pass over memory. Like a BLAS dot of x with itself, a sum of squares is
// non-finite iff an element is (or the sum overflows float32).
#pragma once

#include <cstdint>

namespace nanguard::detail {

// sum of x[i]
float sum(const float* x, int64_t n);

// sum of x[i]^2
float sum_of_squares(const float* x, int64_t n);

// sum of (a[i] - b[i])^2
float sum_of_squared_differences(const float* a, const float* b, int64_t n);

struct SumMax {
  float sum = 0;
  float max = 0;  // -inf for n == 0; NaN elements are ignored by the max (never by the sum)
};
// sum and max of x[i]
SumMax sum_and_max(const float* x, int64_t n);

// The two builds behind the functions above (tests check both; the avx2 one may only run
// where the CPU has AVX2 and FMA).
#define NANGUARD_FLOAT_SUMS_DECLARE                                                  \
  float sum(const float* x, int64_t n);                                             \
  float sum_of_squares(const float* x, int64_t n);                                  \
  float sum_of_squared_differences(const float* a, const float* b, int64_t n);      \
  SumMax sum_and_max(const float* x, int64_t n);
namespace baseline {
NANGUARD_FLOAT_SUMS_DECLARE
}
#if defined(__x86_64__)
namespace avx2 {
NANGUARD_FLOAT_SUMS_DECLARE
}
#endif
#undef NANGUARD_FLOAT_SUMS_DECLARE
bool cpu_has_avx2_fma();

}  // namespace nanguard::detail
