#include "numerics/float_sums.h"

#include <limits>

namespace nanguard::detail {

// Two builds of the same kernels (see float_sums_kernels.inc), picked once at run time. A
// pragma covers the helpers and lambdas that target_clones would leave at the baseline target
// (where they are not inlined, the AVX2 clone calls an SSE loop), and it tests the CPU's
// features, not its model ("arch=haswell" is false on every AMD CPU).
namespace baseline {
#include "numerics/float_sums_kernels.inc"
}  // namespace baseline

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "numerics/float_sums_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

bool cpu_has_avx2_fma() {
#if defined(__x86_64__)
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  return false;
#endif
}

#if defined(__x86_64__)
#define NANGUARD_DISPATCH(call) (cpu_has_avx2_fma() ? avx2::call : baseline::call)
#else
#define NANGUARD_DISPATCH(call) baseline::call
#endif

float sum(const float* x, int64_t n) { return NANGUARD_DISPATCH(sum(x, n)); }
float sum_of_squares(const float* x, int64_t n) { return NANGUARD_DISPATCH(sum_of_squares(x, n)); }
float sum_of_squared_differences(const float* a, const float* b, int64_t n) {
  return NANGUARD_DISPATCH(sum_of_squared_differences(a, b, n));
}
SumMax sum_and_max(const float* x, int64_t n) { return NANGUARD_DISPATCH(sum_and_max(x, n)); }

#undef NANGUARD_DISPATCH

}  // namespace nanguard::detail
