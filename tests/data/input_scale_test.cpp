// The scale of inputs and the divisor that brings them to unit range.
#include <cmath>
#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/data/input_scale.h"

namespace nanguard::data {
namespace {

TEST(InputScale, CountsOnlyFiniteValuesInDouble) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const auto x = torch::tensor({3.0f, -4.0f, nan, std::numeric_limits<float>::infinity()});
  const InputScale s = input_scale_of(x);
  EXPECT_EQ(s.finite, 2);
  EXPECT_NEAR(s.rms, std::sqrt(12.5), 1e-12);
  EXPECT_DOUBLE_EQ(s.absmax, 4.0);
  EXPECT_TRUE(s.integer);
  // Squares past float32's range stay finite.
  EXPECT_NEAR(input_scale_of(torch::tensor({1e20f, -1e20f})).rms, 1e20, 1e15);
  EXPECT_EQ(input_scale_of(torch::tensor({nan})).finite, 0);
  EXPECT_EQ(input_scale_of(at::Tensor()).finite, 0);
  EXPECT_EQ(input_scale_of(torch::tensor({1, 2})).finite, 0);  // not floating point
}

TEST(InputScale, DivisorForPixelsFeaturesAndScaledInputs) {
  const UnitRangeDivisor pixels = unit_range_divisor(torch::tensor({0.0f, 17.0f, 255.0f}));
  EXPECT_TRUE(pixels.integer);
  EXPECT_DOUBLE_EQ(pixels.divisor, 255.0);
  const UnitRangeDivisor features = unit_range_divisor(torch::tensor({30.5f, -40.5f}));
  EXPECT_FALSE(features.integer);
  EXPECT_NEAR(features.divisor, std::sqrt((30.5 * 30.5 + 40.5 * 40.5) / 2), 1e-9);
  EXPECT_DOUBLE_EQ(unit_range_divisor(torch::tensor({0.1f, 0.9f})).divisor, 1.0);  // already in range
}

}  // namespace
}  // namespace nanguard::data
