#include "numerics/sum_squares.h"

namespace nanguard::detail {
namespace {

// Eight lanes: one AVX register, or two SSE registers on the default target.
typedef float Lanes __attribute__((vector_size(32)));

}  // namespace

// target_clones: the loader picks the x86-64-v3 build (AVX2 + FMA) on CPUs that have it; the
// build contracts x * x + acc into FMA (-ffp-contract=fast for this file). ("arch=haswell"
// would test for an Intel Haswell model, false on every AMD CPU, which then ran the SSE build
// with its accumulators spilled to the stack.)
// Eight independent accumulators: an FMA has a latency of about four cycles and two issue
// ports, so fewer chains leave the loop latency-bound (four took about twice as long here).
__attribute__((target_clones("arch=x86-64-v3", "default"))) float sum_of_squares(const float* data, int64_t n) {
  constexpr int kChains = 8;
  constexpr int64_t kStride = kChains * 8;
  Lanes acc[kChains] = {};
  int64_t i = 0;
  for (; i + kStride <= n; i += kStride) {
    for (int k = 0; k < kChains; ++k) {
      Lanes x;
      __builtin_memcpy(&x, data + i + 8 * k, sizeof(Lanes));
      acc[k] += x * x;
    }
  }
  for (; i + 8 <= n; i += 8) {
    Lanes x;
    __builtin_memcpy(&x, data + i, sizeof(Lanes));
    acc[0] += x * x;
  }
  Lanes sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  float total = 0;
  for (int k = 0; k < 8; ++k) total += sum[k];
  for (; i < n; ++i) total += data[i] * data[i];
  return total;
}

}  // namespace nanguard::detail
