#include "numerics/float_sums.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace nanguard::detail {
namespace {

// Every test runs the dispatched functions and both builds behind them (the AVX2 one where
// the CPU has it), so the build this CPU does not pick is tested too.
struct Kernels {
  const char* name;
  float (*sum)(const float*, int64_t);
  float (*sum_of_squares)(const float*, int64_t);
  float (*sum_of_squared_differences)(const float*, const float*, int64_t);
  SumMax (*sum_and_max)(const float*, int64_t);
};

std::vector<Kernels> builds() {
  std::vector<Kernels> out{
      {"dispatched", &detail::sum, &detail::sum_of_squares, &detail::sum_of_squared_differences, &detail::sum_and_max},
      {"baseline", &baseline::sum, &baseline::sum_of_squares, &baseline::sum_of_squared_differences,
       &baseline::sum_and_max}};
#if defined(__x86_64__)
  if (cpu_has_avx2_fma())
    out.push_back({"avx2", &avx2::sum, &avx2::sum_of_squares, &avx2::sum_of_squared_differences, &avx2::sum_and_max});
#endif
  return out;
}

// Lengths around every loop boundary (64-wide main loop, 8-wide tail, scalar tail), the end
// of the prefetch window (1024 + 64) and a whole MLP gradient.
const std::vector<int64_t> kLengths{0,    1,    7,    8,    9,    31,   32,   33,   63,    64,    65,
                                    71,   72,   127,  128,  129,  1000, 1087, 1088, 1089, 1151, 1152,
                                    2177, 101770};

TEST(FloatSums, SumOfSquaresMatchesDoubleReferenceAtEveryLength) {
  for (const auto& k : builds()) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t n : kLengths) {
      std::vector<float> v(n);
      for (auto& x : v) x = normal(rng);
      double want = 0;
      for (float x : v) want += static_cast<double>(x) * x;
      EXPECT_NEAR(k.sum_of_squares(v.data(), n), want, 1e-5 * std::max(1.0, want)) << k.name << " n=" << n;
    }
  }
}

// A single non-finite element anywhere makes the sums non-finite (the guard's check).
TEST(FloatSums, NonFiniteAnywhereGivesNonFinite) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const auto& k : builds()) {
    for (int64_t n : {1, 9, 64, 130, 1000}) {
      for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
        for (float bad : {nan, inf, -inf}) {
          std::vector<float> v(n, 0.5f);
          v[pos] = bad;
          EXPECT_FALSE(std::isfinite(k.sum_of_squares(v.data(), n))) << k.name << " n=" << n << " pos=" << pos;
          EXPECT_FALSE(std::isfinite(k.sum(v.data(), n))) << k.name << " n=" << n << " pos=" << pos;
        }
      }
    }
  }
}

TEST(FloatSums, SumOfSquaresOverflowsLikeFloat) {
  std::vector<float> v(16, 3e19f);  // each square is 9e38 > FLT_MAX: overflows in float
  for (const auto& k : builds()) EXPECT_TRUE(std::isinf(k.sum_of_squares(v.data(), 16))) << k.name;
}

TEST(FloatSums, SumMatchesDoubleReference) {
  for (const auto& k : builds()) {
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t n : kLengths) {
      std::vector<float> v(n);
      for (auto& x : v) x = normal(rng);
      double want = 0;
      for (float x : v) want += x;
      EXPECT_NEAR(k.sum(v.data(), n), want, 1e-4 * std::max(1.0, std::sqrt(static_cast<double>(n))))
          << k.name << " n=" << n;
    }
  }
}

TEST(FloatSums, SumOfSquaredDifferencesMatchesDoubleReference) {
  for (const auto& k : builds()) {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t n : kLengths) {
      std::vector<float> a(n), b(n);
      for (auto& x : a) x = normal(rng);
      for (auto& x : b) x = normal(rng);
      double want = 0;
      for (int64_t i = 0; i < n; ++i) want += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      EXPECT_NEAR(k.sum_of_squared_differences(a.data(), b.data(), n), want, 1e-5 * std::max(1.0, want))
          << k.name << " n=" << n;
    }
    std::vector<float> same(100, 2.5f);
    EXPECT_EQ(k.sum_of_squared_differences(same.data(), same.data(), 100), 0.0f) << k.name;
  }
}

// The max may sit in any lane, in the vector or the scalar tail; values all negative too.
TEST(FloatSums, SumAndMaxMatchReferenceWhereverTheMaxIs) {
  for (const auto& k : builds()) {
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-10.f, -1.f);
    for (int64_t n : {1, 7, 8, 9, 31, 32, 33, 40, 1000}) {
      for (int64_t pos : {int64_t{0}, n / 3, n - 1}) {
        std::vector<float> v(n);
        for (auto& x : v) x = u(rng);
        v[pos] = -0.5f;
        double want_sum = 0;
        for (float x : v) want_sum += x;
        const SumMax got = k.sum_and_max(v.data(), n);
        EXPECT_EQ(got.max, -0.5f) << k.name << " n=" << n << " pos=" << pos;
        EXPECT_NEAR(got.sum, want_sum, 1e-5 * std::abs(want_sum)) << k.name << " n=" << n;
      }
    }
    EXPECT_EQ(k.sum_and_max(nullptr, 0).max, -std::numeric_limits<float>::infinity()) << k.name;
  }
}

// In the 32-wide loop, the 8-wide tail and the scalar tail (n = 43: 32 + 8 + 3).
TEST(FloatSums, NaNReachesTheSumButNotTheMax) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const auto& k : builds()) {
    for (int64_t pos : {17, 35, 41}) {
      std::vector<float> v(43, 1.0f);
      v[pos] = nan;
      const SumMax got = k.sum_and_max(v.data(), 43);
      EXPECT_TRUE(std::isnan(got.sum)) << k.name << " pos=" << pos;
      EXPECT_EQ(got.max, 1.0f) << k.name << " pos=" << pos;
    }
    std::vector<float> all(43, nan);
    EXPECT_EQ(k.sum_and_max(all.data(), 43).max, -std::numeric_limits<float>::infinity()) << k.name;
  }
}

}  // namespace
}  // namespace nanguard::detail
