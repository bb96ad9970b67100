#include "numerics/sum_squares.h"

namespace nanguard::detail {
namespace {

// Eight lanes: one AVX register, or two SSE registers on the default target.
typedef float Lanes __attribute__((vector_size(32)));

}  // namespace

// target_clones: the loader picks the Haswell build (AVX2 + FMA) on CPUs that have it; the
// build contracts x * x + acc into FMA (-ffp-contract=fast for this file).
__attribute__((target_clones("arch=haswell", "default"))) float sum_of_squares(const float* data, int64_t n) {
  Lanes a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    Lanes x0, x1, x2, x3;
    __builtin_memcpy(&x0, data + i, sizeof(Lanes));
    __builtin_memcpy(&x1, data + i + 8, sizeof(Lanes));
    __builtin_memcpy(&x2, data + i + 16, sizeof(Lanes));
    __builtin_memcpy(&x3, data + i + 24, sizeof(Lanes));
    a0 += x0 * x0;
    a1 += x1 * x1;
    a2 += x2 * x2;
    a3 += x3 * x3;
  }
  Lanes sum = (a0 + a1) + (a2 + a3);
  float total = 0;
  for (int k = 0; k < 8; ++k) total += sum[k];
  for (; i < n; ++i) total += data[i] * data[i];
  return total;
}

}  // namespace nanguard::detail
