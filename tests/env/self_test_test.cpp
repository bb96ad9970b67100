#include "nanguard/env/self_test.h"

#include <functional>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/env/cpu.h"

namespace nanguard::env {
namespace {

std::string failures_text(const SelfTestReport& r) {
  std::string s;
  for (const auto& c : r.checks) {
    if (!c.passed && !c.skipped)
      s += c.op + " / " + c.case_name + " / " + c.size + ": abs " + std::to_string(c.max_abs_error) + " rel " +
           std::to_string(c.max_rel_error) + " " + c.message + "\n";
  }
  return s;
}

std::set<std::string> failing_ops(const SelfTestReport& r) {
  std::set<std::string> ops;
  for (const auto& c : r.checks) {
    if (!c.passed && !c.skipped) ops.insert(c.op);
  }
  return ops;
}

TEST(SelfTest, PassesOnLibTorchOps) {
  const SelfTestReport quick = run_self_test(SelfTestOptions().set_quick(true));
  EXPECT_TRUE(quick.passed()) << failures_text(quick);
  EXPECT_EQ(quick.first_failure(), "");
  std::set<std::string> ops;
  for (const auto& c : quick.checks) ops.insert(c.op);
  for (const char* op : {"matmul", "softmax", "log_softmax", "exp", "log", "sqrt", "sum", "mean", "conv2d"})
    EXPECT_TRUE(ops.count(op)) << op << " is not checked";
  // Fast enough to run after an incident (typically tens of ms; generous for a loaded machine).
  EXPECT_LT(quick.seconds, 2.0);

  const SelfTestReport full = run_self_test(SelfTestOptions().set_quick(false));
  EXPECT_TRUE(full.passed()) << failures_text(full);
  EXPECT_GT(full.checks.size(), quick.checks.size());
}

TEST(SelfTest, LeavesTheRandomStreamAlone) {
  torch::manual_seed(5);
  const at::Tensor a = torch::randn({4});
  torch::manual_seed(5);
  run_self_test(SelfTestOptions().set_quick(true));
  const at::Tensor b = torch::randn({4});
  EXPECT_TRUE(torch::equal(a, b));
}

// A matmul that is a little wrong: the required test.
class NoisyMatmul : public NumericOps {
 public:
  at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) const override {
    const at::Tensor c = at::matmul(a, b);
    return c + 1e-2 * torch::randn(c.sizes());
  }
};

TEST(SelfTest, PerturbedMatmulFailsNamingTheOp) {
  const SelfTestReport r = run_self_test(NoisyMatmul{}, SelfTestOptions().set_quick(true));
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(failing_ops(r), std::set<std::string>{"matmul"}) << failures_text(r);
  const std::string first = r.first_failure();
  RecordProperty("first_failure", first);
  EXPECT_EQ(first.rfind("matmul (", 0), 0u) << first;
  EXPECT_NE(first.find("max rel error"), std::string::npos);
  EXPECT_NE(first.find("64x64 @ 64x64"), std::string::npos) << first;
  for (const auto& c : r.checks) {
    if (c.op == "matmul" && c.case_name == "random") {
      EXPECT_FALSE(c.passed);
      EXPECT_GT(c.max_abs_error, 1e-3);
      EXPECT_GT(c.max_rel_error, c.bound);
    }
  }
}

// One wrong op at a time: each must be caught and named.
class OneWrongOp : public NumericOps {
 public:
  explicit OneWrongOp(std::string op) : op_(std::move(op)) {}
  at::Tensor softmax(const at::Tensor& x, int64_t d) const override { return bend("softmax", at::softmax(x, d)); }
  at::Tensor log_softmax(const at::Tensor& x, int64_t d) const override {
    return bend("log_softmax", at::log_softmax(x, d));
  }
  at::Tensor exp(const at::Tensor& x) const override { return bend("exp", at::exp(x)); }
  at::Tensor log(const at::Tensor& x) const override { return bend("log", at::log(x)); }
  at::Tensor sqrt(const at::Tensor& x) const override { return bend("sqrt", at::sqrt(x)); }
  at::Tensor sum(const at::Tensor& x) const override { return bend("sum", at::sum(x)); }
  at::Tensor mean(const at::Tensor& x) const override { return bend("mean", at::mean(x)); }
  at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w) const override {
    return bend("conv2d", at::conv2d(x, w));
  }

 private:
  // Relative error 1e-4: far above float32 rounding, far below what a loss curve would show.
  at::Tensor bend(const char* op, const at::Tensor& t) const { return op_ == op ? t * (1 + 1e-4) : t; }
  std::string op_;
};

TEST(SelfTest, EachWrongOpIsNamed) {
  for (const char* op : {"softmax", "log_softmax", "exp", "log", "sqrt", "sum", "mean", "conv2d"}) {
    const SelfTestReport r = run_self_test(OneWrongOp(op), SelfTestOptions().set_quick(true));
    EXPECT_FALSE(r.passed()) << op;
    EXPECT_TRUE(failing_ops(r).count(op)) << op << ":\n" << failures_text(r);
    EXPECT_EQ(failing_ops(r).size(), 1u) << failures_text(r);
  }
}

// Denormal inputs read as zero (what DAZ does): log(1e-40) becomes -inf.
class FlushingLog : public NumericOps {
 public:
  at::Tensor log(const at::Tensor& x) const override {
    return at::log(at::where(x.abs() < 1.1754944e-38f, at::zeros_like(x), x));
  }
};

TEST(SelfTest, DenormalFlushingIsCaught) {
  if (read_fp_state().flush_to_zero) GTEST_SKIP() << "FTZ is on: the denormal cases are skipped";
  const SelfTestReport r = run_self_test(FlushingLog{}, SelfTestOptions().set_quick(true));
  ASSERT_FALSE(r.passed());
  bool named = false;
  for (const auto& c : r.checks) {
    if (!c.passed && c.op == "log") {
      named = true;
      EXPECT_NE(c.case_name.find("denormal"), std::string::npos);
      EXPECT_NE(c.message.find("-inf"), std::string::npos) << c.message;
    }
  }
  EXPECT_TRUE(named) << failures_text(r);
}

// Gives different bits on every other call.
class NondeterministicSum : public NumericOps {
 public:
  at::Tensor sum(const at::Tensor& x) const override {
    const at::Tensor s = at::sum(x);
    return (calls_++ % 2) ? at::nextafter(s, s + 1) : s;
  }

 private:
  mutable int calls_ = 0;
};

TEST(SelfTest, RepeatCheckCatchesNondeterminism) {
  const SelfTestReport r = run_self_test(NondeterministicSum{}, SelfTestOptions().set_quick(true));
  ASSERT_FALSE(r.passed());
  bool repeat = false;
  for (const auto& c : r.checks) {
    if (!c.passed && c.op == "sum" && c.case_name.find("repeat") != std::string::npos) {
      repeat = true;
      EXPECT_NE(c.message.find("differ"), std::string::npos);
      EXPECT_GT(c.max_abs_error, 0);
    }
  }
  EXPECT_TRUE(repeat) << failures_text(r);
}

class ThrowingConv : public NumericOps {
 public:
  at::Tensor conv2d(const at::Tensor&, const at::Tensor&) const override {
    throw std::runtime_error("no conv kernel");
  }
};

TEST(SelfTest, AThrowingOpIsAFailureNotACrash) {
  SelfTestReport r;
  ASSERT_NO_THROW(r = run_self_test(ThrowingConv{}, SelfTestOptions().set_quick(true)));
  EXPECT_EQ(failing_ops(r), std::set<std::string>{"conv2d"});
  EXPECT_NE(r.first_failure().find("no conv kernel"), std::string::npos) << r.first_failure();
  // The checks after conv2d still ran.
  bool repeat_ran = false;
  for (const auto& c : r.checks) repeat_ran |= c.case_name.find("repeat") != std::string::npos;
  EXPECT_TRUE(repeat_ran);
}

#if defined(__x86_64__)
TEST(SelfTest, DenormalCasesAreSkippedUnderFlushToZero) {
  const FpState before = set_flush_denormal(true, true);
  const SelfTestReport r = run_self_test(SelfTestOptions().set_quick(true));
  write_mxcsr(before.mxcsr);
  int skipped = 0;
  for (const auto& c : r.checks) {
    if (c.skipped) {
      ++skipped;
      EXPECT_NE(c.message.find("flush-to-zero"), std::string::npos);
    }
  }
  EXPECT_GE(skipped, 3);
  EXPECT_TRUE(r.passed()) << failures_text(r);
}
#endif

TEST(SelfTest, RunsOnTheGpu_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const SelfTestReport r = run_self_test(SelfTestOptions().set_quick(true).set_device("cuda:0"));
  EXPECT_TRUE(r.passed()) << failures_text(r);
}

}  // namespace
}  // namespace nanguard::env

namespace nanguard::env {
namespace {

TEST(SelfTest, BadDeviceIsAValueError) {
  EXPECT_THROW(run_self_test(SelfTestOptions().set_device("gpu please")), std::invalid_argument);
}

}  // namespace
}  // namespace nanguard::env
