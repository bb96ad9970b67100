#include "numerics/sum_squares.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace nanguard::detail {
namespace {

double reference(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return s;
}

// Lengths around every loop boundary (64-wide main loop, 8-wide tail, scalar tail).
TEST(SumOfSquares, MatchesDoubleReferenceAtEveryLength) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int64_t n : {0, 1, 7, 8, 9, 63, 64, 65, 71, 72, 127, 128, 129, 1000, 101770}) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng);
    const double want = reference(v);
    const double got = sum_of_squares(v.data(), n);
    EXPECT_NEAR(got, want, 1e-5 * std::max(1.0, want)) << "n=" << n;
  }
}

// A single non-finite element anywhere makes the sum non-finite (the guard's check).
TEST(SumOfSquares, NonFiniteAnywhereGivesNonFinite) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t n : {1, 9, 64, 130, 1000}) {
    for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
      for (float bad : {nan, inf, -inf}) {
        std::vector<float> v(n, 0.5f);
        v[pos] = bad;
        EXPECT_FALSE(std::isfinite(sum_of_squares(v.data(), n))) << "n=" << n << " pos=" << pos << " value=" << bad;
      }
    }
  }
}

TEST(SumOfSquares, OverflowsLikeFloat) {
  std::vector<float> v(16, 3e19f);  // each square is 9e38 > FLT_MAX: overflows in float
  EXPECT_TRUE(std::isinf(sum_of_squares(v.data(), 16)));
}

}  // namespace
}  // namespace nanguard::detail
