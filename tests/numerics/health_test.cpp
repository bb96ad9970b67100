#include "nanguard/numerics/health.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "nanguard/core/error.h"
#include "numerics/health_detail.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
};

// Statistics computed by hand over a plain vector, as the reference.
struct Manual {
  int64_t nan = 0, pinf = 0, ninf = 0, zeros = 0, neg = 0;
  double min = NAN, max = NAN, mean = NAN, std = NAN;
};

Manual manual(const std::vector<double>& v) {
  Manual m;
  std::vector<double> fin;
  for (double x : v) {
    if (std::isnan(x)) ++m.nan;
    if (x == INFINITY) ++m.pinf;
    if (x == -INFINITY) ++m.ninf;
    if (x == 0) ++m.zeros;
    if (x < 0) ++m.neg;
    if (std::isfinite(x)) fin.push_back(x);
  }
  if (fin.empty()) return m;
  m.min = *std::min_element(fin.begin(), fin.end());
  m.max = *std::max_element(fin.begin(), fin.end());
  double sum = 0;
  for (double x : fin) sum += x;
  m.mean = sum / fin.size();
  double ss = 0;
  for (double x : fin) ss += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(ss / fin.size());
  return m;
}

void expect_matches(const TensorHealth& h, const Manual& m) {
  EXPECT_EQ(h.nan_count, m.nan);
  EXPECT_EQ(h.posinf_count, m.pinf);
  EXPECT_EQ(h.neginf_count, m.ninf);
  EXPECT_EQ(h.zero_count, m.zeros);
  EXPECT_EQ(h.negative_count, m.neg);
  EXPECT_NEAR(h.min, m.min, 1e-6);
  EXPECT_NEAR(h.max, m.max, 1e-6);
  EXPECT_NEAR(h.absmax, std::max(std::fabs(m.min), std::fabs(m.max)), 1e-6);
  EXPECT_NEAR(h.mean, m.mean, 1e-6);
  EXPECT_NEAR(h.std, m.std, 1e-6);
}

TEST_F(HealthTest, CountsAndStatsMatchManualWithNanInfAndZeros) {
  std::vector<double> v = {1, NAN, INFINITY, -INFINITY, 0, -2, 0, 3, NAN, 0.5};
  std::vector<float> vf(v.begin(), v.end());
  auto t = torch::tensor(vf);
  auto h = tensor_health(t);
  EXPECT_EQ(h.numel, 10);
  EXPECT_EQ(h.dtype, torch::kFloat);
  EXPECT_EQ(h.sizes, std::vector<int64_t>({10}));
  EXPECT_FALSE(h.finite());
  EXPECT_EQ(h.nonfinite_count(), 4);
  EXPECT_EQ(h.finite_count(), 6);
  expect_matches(h, manual(v));
}

TEST_F(HealthTest, RandomTensorMatchesTorchReductions) {
  auto t = torch::randn({17, 33}, torch::kDouble) * 3 + 1;
  auto h = tensor_health(t);
  EXPECT_TRUE(h.finite());
  EXPECT_EQ(h.numel, 17 * 33);
  EXPECT_DOUBLE_EQ(h.min, t.min().item<double>());
  EXPECT_DOUBLE_EQ(h.max, t.max().item<double>());
  EXPECT_NEAR(h.mean, t.mean().item<double>(), 1e-12);
  EXPECT_NEAR(h.std, t.std(/*unbiased=*/false).item<double>(), 1e-12);
  EXPECT_EQ(h.negative_count, t.lt(0).sum().item<int64_t>());
}

TEST_F(HealthTest, NonContiguousTensorIsMeasuredCorrectly) {
  auto base = torch::arange(12, torch::kFloat).reshape({3, 4});
  base.index_put_({1, 2}, kNaN);
  auto t = base.t();  // non-contiguous view
  ASSERT_FALSE(t.is_contiguous());
  auto h = tensor_health(t);
  EXPECT_EQ(h.sizes, std::vector<int64_t>({4, 3}));
  EXPECT_EQ(h.nan_count, 1);
  EXPECT_EQ(h.zero_count, 1);
  EXPECT_DOUBLE_EQ(h.max, 11);
  EXPECT_DOUBLE_EQ(h.min, 0);
}

TEST_F(HealthTest, IntegerAndBoolTensorsAreFinite) {
  auto i = torch::tensor({3, 0, -5, 7}, torch::kLong);
  auto h = tensor_health(i);
  EXPECT_TRUE(h.finite());
  EXPECT_EQ(h.dtype, torch::kLong);
  expect_matches(h, manual({3, 0, -5, 7}));

  auto b = torch::tensor({true, false, true});
  auto hb = tensor_health(b);
  EXPECT_TRUE(hb.finite());
  EXPECT_EQ(hb.zero_count, 1);
  EXPECT_DOUBLE_EQ(hb.max, 1);
  EXPECT_DOUBLE_EQ(hb.min, 0);

  auto u8 = torch::tensor({250, 0}, torch::kByte);
  EXPECT_DOUBLE_EQ(tensor_health(u8).max, 250);
}

TEST_F(HealthTest, AllNonFiniteGivesNanStats) {
  auto t = torch::tensor({kNaN, kInf, -kInf});
  auto h = tensor_health(t);
  EXPECT_EQ(h.nonfinite_count(), 3);
  EXPECT_EQ(h.finite_count(), 0);
  EXPECT_TRUE(std::isnan(h.min));
  EXPECT_TRUE(std::isnan(h.max));
  EXPECT_TRUE(std::isnan(h.absmax));
  EXPECT_TRUE(std::isnan(h.mean));
  EXPECT_TRUE(std::isnan(h.std));
  EXPECT_EQ(h.negative_count, 1);  // -Inf counts as negative
}

TEST_F(HealthTest, EmptyAndUndefinedTensors) {
  auto h = tensor_health(torch::Tensor());
  EXPECT_EQ(h.numel, 0);
  EXPECT_EQ(h.dtype, c10::ScalarType::Undefined);
  EXPECT_TRUE(h.finite());

  auto e = tensor_health(torch::empty({0, 5}));
  EXPECT_EQ(e.numel, 0);
  EXPECT_EQ(e.sizes, std::vector<int64_t>({0, 5}));
  EXPECT_TRUE(e.finite());
  EXPECT_TRUE(std::isnan(e.mean));
}

TEST_F(HealthTest, ScalarTensor) {
  auto h = tensor_health(torch::scalar_tensor(-2.5));
  EXPECT_EQ(h.numel, 1);
  EXPECT_TRUE(h.sizes.empty());
  EXPECT_DOUBLE_EQ(h.min, -2.5);
  EXPECT_DOUBLE_EQ(h.std, 0);
  EXPECT_EQ(h.negative_count, 1);
}

TEST_F(HealthTest, ReducedPrecisionKeepsInfAndNan) {
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    auto t = torch::tensor({1.0f, kInf, kNaN, 0.0f, -3.0f}).to(dtype);
    auto h = tensor_health(t);
    EXPECT_EQ(h.dtype, dtype);
    EXPECT_EQ(h.posinf_count, 1);
    EXPECT_EQ(h.nan_count, 1);
    EXPECT_EQ(h.zero_count, 1);
    EXPECT_DOUBLE_EQ(h.min, -3);
    EXPECT_DOUBLE_EQ(h.absmax, 3);
  }
  // 70000 overflows float16.
  EXPECT_EQ(tensor_health(torch::tensor({70000.0f}).to(torch::kHalf)).posinf_count, 1);
}

TEST_F(HealthTest, DoubleKeepsLargeFiniteValues) {
  auto h = tensor_health(torch::tensor({1e300, -1e300}, torch::kDouble));
  EXPECT_TRUE(h.finite());
  EXPECT_DOUBLE_EQ(h.absmax, 1e300);
  EXPECT_DOUBLE_EQ(h.mean, 0);
}

TEST_F(HealthTest, ComplexIsMeasuredOverRealAndImaginaryParts) {
  auto re = torch::tensor({1.0f, kNaN});
  auto im = torch::tensor({0.0f, 2.0f});
  auto h = tensor_health(torch::complex(re, im));
  EXPECT_EQ(h.numel, 4);
  EXPECT_EQ(h.nan_count, 1);
  EXPECT_EQ(h.zero_count, 1);
  EXPECT_DOUBLE_EQ(h.max, 2);
}

TEST_F(HealthTest, SparseUsesStoredValues) {
  auto dense = torch::tensor({{0.0f, kInf}, {2.0f, 0.0f}});
  auto h = tensor_health(dense.to_sparse());
  EXPECT_EQ(h.numel, 2);  // stored values
  EXPECT_EQ(h.posinf_count, 1);
  EXPECT_DOUBLE_EQ(h.max, 2);
}

TEST_F(HealthTest, GradTrackingTensorIsNotAddedToTheGraph) {
  auto w = torch::ones({3}, torch::requires_grad());
  auto y = w * 2;
  auto h = tensor_health(y);
  EXPECT_DOUBLE_EQ(h.mean, 2);
  y.sum().backward();
  EXPECT_TRUE(testing::tensors_match(w.grad(), torch::full({3}, 2.0f)));
  EXPECT_TRUE(y.requires_grad());
}

TEST_F(HealthTest, ToStringNamesEveryField) {
  auto h = tensor_health(torch::tensor({{1.0f, kNaN}, {kInf, 0.0f}}));
  auto s = h.to_string();
  for (const char* needle : {"float32[2, 2]", "numel=4", "nan=1", "+inf=1", "-inf=0", "zeros=1",
                             "neg=0", "min=0", "max=1", "absmax=1", "mean=0.5", "std=0.5"}) {
    EXPECT_NE(s.find(needle), std::string::npos) << needle << " not in " << s;
  }
}

// The CPU loop and the device-kernel path (used off the CPU) must agree.
TEST_F(HealthTest, CpuLoopAndKernelPathAgree) {
  std::vector<torch::Tensor> cases = {
      torch::tensor({1.0f, kNaN, kInf, -kInf, 0.0f, -2.0f, 0.0f, 3.0f}),
      torch::randn({64, 33}) * 1e3,
      torch::randn({5, 7}, torch::kDouble).t(),
      torch::tensor({kNaN, kInf}),
      torch::tensor({3, 0, -5, 7}, torch::kInt),
      torch::tensor({1.0f, kInf, -0.0f}).to(torch::kHalf),
      torch::complex(torch::tensor({1.0f, kNaN}), torch::tensor({0.0f, 2.0f})),
      torch::empty({0}),
  };
  for (const auto& t : cases) {
    auto a = tensor_health(t);
    auto b = detail::tensor_health_by_kernels(t);
    SCOPED_TRACE(a.to_string() + " vs " + b.to_string());
    EXPECT_EQ(a.numel, b.numel);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.sizes, b.sizes);
    EXPECT_EQ(a.nan_count, b.nan_count);
    EXPECT_EQ(a.posinf_count, b.posinf_count);
    EXPECT_EQ(a.neginf_count, b.neginf_count);
    EXPECT_EQ(a.zero_count, b.zero_count);
    EXPECT_EQ(a.negative_count, b.negative_count);
    for (auto [x, y] : {std::pair{a.min, b.min}, {a.max, b.max}, {a.absmax, b.absmax},
                        {a.mean, b.mean}, {a.std, b.std}}) {
      if (std::isnan(x)) {
        EXPECT_TRUE(std::isnan(y));
      } else {
        EXPECT_NEAR(x, y, 1e-9 * std::max(1.0, std::fabs(x)));
      }
    }
  }
}

std::vector<torch::Tensor> mlp_grads() {
  return {torch::randn({128, 784}), torch::randn({128}), torch::randn({10, 128}),
          torch::randn({10})};
}

TEST_F(HealthTest, SentinelIsZeroWhenFiniteAndNanOtherwise) {
  auto grads = mlp_grads();
  auto s = nonfinite_sentinel(grads);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.scalar_type(), torch::kFloat);
  EXPECT_EQ(s.item<float>(), 0.0f);
  EXPECT_TRUE(all_finite(grads));

  for (float bad : {kNaN, kInf, -kInf}) {
    auto g = mlp_grads();
    g[2].index_put_({3, 7}, bad);
    EXPECT_TRUE(std::isnan(nonfinite_sentinel(g).item<float>())) << bad;
    EXPECT_FALSE(all_finite(g)) << bad;
  }
}

TEST_F(HealthTest, SentinelDoesNotOverflowOnLargeFiniteValues) {
  // A plain sum or norm of these would overflow float32.
  auto t = torch::full({1000}, 3e38f);
  EXPECT_TRUE(all_finite({t}));
  EXPECT_EQ(nonfinite_count({t}).item<int64_t>(), 0);
}

TEST_F(HealthTest, SentinelSkipsUndefinedAndIntegerTensors) {
  std::vector<torch::Tensor> ts = {torch::Tensor(), torch::tensor({1, 2}),
                                   torch::tensor({true}), torch::ones({2})};
  EXPECT_TRUE(all_finite(ts));
  EXPECT_EQ(nonfinite_sentinel({}).item<float>(), 0.0f);
  EXPECT_EQ(nonfinite_count({}).item<int64_t>(), 0);
  EXPECT_TRUE(all_finite({torch::Tensor()}));
}

TEST_F(HealthTest, SentinelHandlesReducedPrecisionAndDouble) {
  auto h = torch::ones({4}).to(torch::kBFloat16);
  auto d = torch::ones({4}, torch::kDouble);
  EXPECT_TRUE(all_finite({h, d}));
  d[1] = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(all_finite({h, d}));
  auto c = torch::complex(torch::ones({2}), torch::tensor({0.0f, kInf}));
  EXPECT_FALSE(all_finite({c}));
  EXPECT_EQ(nonfinite_count({c}).item<int64_t>(), 1);
}

TEST_F(HealthTest, NonfiniteCountIsExactAcrossTensors) {
  auto g = mlp_grads();
  g[0].index_put_({0, 0}, kNaN);
  g[0].index_put_({5, 9}, kInf);
  g[1].index_put_({3}, -kInf);
  g[3].index_put_({0}, kNaN);
  g[3].index_put_({9}, kNaN);
  auto c = nonfinite_count(g);
  EXPECT_EQ(c.dim(), 0);
  EXPECT_EQ(c.scalar_type(), torch::kLong);
  EXPECT_EQ(c.item<int64_t>(), 5);
}

TEST_F(HealthTest, TensorsOnDifferentDevicesAreRejected) {
  std::vector<torch::Tensor> ts = {torch::ones({2}), torch::empty({2}, torch::kMeta)};
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { nonfinite_sentinel(ts); },
                                               {"tensor 1", "meta", "cpu"}));
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { nonfinite_count(ts); }, {"tensor 1"}));
}

TEST_F(HealthTest, ExpOverflowThresholds) {
  EXPECT_NEAR(exp_overflow_threshold(torch::kFloat), 88.72, 0.01);
  EXPECT_NEAR(exp_overflow_threshold(torch::kBFloat16), 88.72, 0.01);
  EXPECT_NEAR(exp_overflow_threshold(torch::kHalf), 11.09, 0.01);
  EXPECT_NEAR(exp_overflow_threshold(torch::kDouble), 709.78, 0.01);
  EXPECT_TRUE(std::isinf(exp_overflow_threshold(torch::kLong)));
  // The thresholds are where exp really overflows.
  EXPECT_TRUE(std::isfinite(std::exp(88.7f)));
  EXPECT_TRUE(std::isinf(std::exp(88.8f)));
}

TEST_F(HealthTest, DtypeNames) {
  EXPECT_EQ(dtype_name(torch::kFloat), "float32");
  EXPECT_EQ(dtype_name(torch::kHalf), "float16");
  EXPECT_EQ(dtype_name(torch::kBFloat16), "bfloat16");
  EXPECT_EQ(dtype_name(torch::kLong), "int64");
  EXPECT_EQ(dtype_name(torch::kBool), "bool");
}

}  // namespace
}  // namespace nanguard
