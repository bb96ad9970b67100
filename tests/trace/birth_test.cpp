#include "nanguard/trace/birth.h"

#include <gtest/gtest.h>

#include <limits>

#include "nanguard/core/error.h"
#include "nanguard/trace/scope.h"
#include "support/test_support.h"

namespace nanguard::trace {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

class BirthTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
};

std::string dump(const Birth& b) {
  std::string s = "found=" + std::to_string(b.found) + " reason=" + b.reason + "\nop: " +
                  b.op.to_string() + "\npath:";
  for (const auto& r : b.path) s += "\n  " + r.to_string();
  return s;
}

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// -(y * log(softmax(z * 50))).sum(): softmax of large logits underflows to exact zeros, log
// turns them into -inf, and y = 0 times -inf is NaN.
TEST_F(BirthTest, LogOfSoftmaxZerosIsBornInForwardLog) {
  auto z = torch::randn({4, 10}, torch::requires_grad());
  auto y = torch::nn::functional::one_hot(torch::tensor({1, 3, 5, 7}), 10).to(torch::kFloat);
  OpTracer tracer(TracerOptions().batch_size(4));
  torch::Tensor loss;
  {
    NANGUARD_SCOPE("loss");
    auto p = torch::softmax(z * 50, 1);
    loss = -(y * torch::log(p)).sum();
  }
  ASSERT_TRUE(std::isnan(loss.item<float>()));
  auto birth = find_birth(tracer.records(), tensor_id(loss));
  ASSERT_TRUE(birth.found) << dump(birth);
  EXPECT_TRUE(birth.connected);
  EXPECT_EQ(birth.op.name, "aten::log") << dump(birth);
  EXPECT_EQ(birth.op.phase, Phase::forward);
  EXPECT_EQ(birth.op.module, "loss");
  ASSERT_EQ(birth.op.inputs.size(), 1u);
  int64_t zeros = birth.op.inputs[0].zero_count;
  EXPECT_GT(zeros, 0);
  EXPECT_TRUE(contains(birth.reason, "input 0 of aten::log holds " + std::to_string(zeros) +
                                         " exact zero"))
      << birth.reason;
  // Every row has an underflowed probability.
  EXPECT_EQ(birth.op.nonfinite_rows, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(birth.also_created.empty()) << dump(birth);
  // The path ends at the op that produced the loss.
  ASSERT_FALSE(birth.path.empty());
  EXPECT_EQ(birth.path.front().index, birth.op.index);
  EXPECT_EQ(birth.path.back().output_ids.at(0), tensor_id(loss));
  // Without a failing tensor the first birth is the same op.
  auto first = find_birth(tracer.records());
  EXPECT_EQ(first.op.index, birth.op.index);
  EXPECT_FALSE(first.connected);
  EXPECT_TRUE(first.path.empty());
}

// A hand-written softmax exp(z) / exp(z).sum() with logits above 88 overflows in float32.
TEST_F(BirthTest, ExpOverflowIsBornInForwardExp) {
  auto z = torch::randn({2, 5});
  z.index_put_({1, 2}, 95.0f);
  auto target = torch::tensor({2, 0});
  OpTracer tracer;
  torch::Tensor loss;
  {
    NANGUARD_SCOPE("softmax");
    auto e = torch::exp(z);
    auto p = e / e.sum(1, true);
    loss = torch::nll_loss(torch::log(p), target);
  }
  ASSERT_FALSE(std::isfinite(loss.item<float>()));
  auto birth = find_birth(tracer.records(), tensor_id(loss));
  ASSERT_TRUE(birth.found) << dump(birth);
  EXPECT_TRUE(birth.connected);
  EXPECT_EQ(birth.op.name, "aten::exp") << dump(birth);
  EXPECT_EQ(birth.op.module, "softmax");
  EXPECT_TRUE(contains(birth.reason, "input 0 of aten::exp has max 95 > 88.72 (float32 exp overflow)"))
      << birth.reason;
}

// NaN that is already in the data: no op creates it, the caller detects bad input separately.
TEST_F(BirthTest, NanInTheInputHasNoBirth) {
  torch::nn::Linear lin(4, 3);
  auto x = torch::randn({2, 4});
  x.index_put_({1, 3}, kNaN);
  auto target = torch::tensor({0, 2});
  OpTracer tracer;
  auto loss = torch::cross_entropy_loss(lin(x), target);
  loss.backward();
  ASSERT_TRUE(std::isnan(loss.item<float>()));
  auto birth = find_birth(tracer.records(), tensor_id(loss));
  EXPECT_FALSE(birth.found) << dump(birth);
  EXPECT_FALSE(birth.connected);
  EXPECT_TRUE(contains(birth.reason, "entered the step from outside")) << birth.reason;
  auto by_grad = find_birth(tracer.records(), tensor_id(lin->weight.grad()));
  EXPECT_FALSE(by_grad.found) << dump(by_grad);
}

// The masked-NaN case: where(x > 0, sqrt(x), x) with x = [0, 1, -1]. Forward sqrt(-1) makes a
// NaN that where discards, so the loss is finite; backward divides by 2 * sqrt(x) (the saved
// forward result, NaN at -1 and 0 at 0) and the gradient is NaN. No backward op has all-finite
// inputs (the saved result already holds the NaN), so following the gradient back through
// SqrtBackward0 names the forward aten::sqrt, with the backward ops on the path.
TEST_F(BirthTest, MaskedSqrtOfNegativeIsTracedThroughBackwardToForwardSqrt) {
  auto x = torch::tensor({0.0f, 1.0f, -1.0f}, torch::requires_grad());
  OpTracer tracer;
  torch::Tensor loss;
  {
    NANGUARD_SCOPE("safe_sqrt");
    loss = torch::where(x > 0, torch::sqrt(x), x).sum();
  }
  loss.backward();
  ASSERT_TRUE(std::isfinite(loss.item<float>()));
  ASSERT_FALSE(x.grad().isfinite().all().item<bool>());
  auto records = tracer.records();

  // The loss is finite: nothing to follow from it, and it was not produced by a birth.
  auto from_grad = find_birth(records, tensor_id(x.grad()));
  ASSERT_TRUE(from_grad.found) << dump(from_grad);
  EXPECT_TRUE(from_grad.connected);
  EXPECT_EQ(from_grad.op.name, "aten::sqrt") << dump(from_grad);
  EXPECT_EQ(from_grad.op.phase, Phase::forward);
  EXPECT_EQ(from_grad.op.module, "safe_sqrt");
  EXPECT_TRUE(contains(from_grad.reason, "input 0 of aten::sqrt holds 1 negative value (min -1)"))
      << from_grad.reason;
  bool through_sqrt_backward = false;
  for (const auto& r : from_grad.path) {
    if (r.phase == Phase::backward && r.backward_node == "SqrtBackward0") {
      through_sqrt_backward = true;
      EXPECT_EQ(r.module, "safe_sqrt");
    }
  }
  EXPECT_TRUE(through_sqrt_backward) << dump(from_grad);
  // The 0/0 at x = 0 is made in SqrtBackward0's div next to the propagated NaN.
  ASSERT_EQ(from_grad.also_created.size(), 1u) << dump(from_grad);
  EXPECT_EQ(from_grad.also_created[0].name, "aten::div");
  EXPECT_EQ(from_grad.also_created[0].backward_node, "SqrtBackward0");
  EXPECT_TRUE(contains(birth_reason(from_grad.also_created[0]),
                       "denominator of aten::div holds 1 zero"));
  EXPECT_EQ(from_grad.path.back().phase, Phase::backward);
  ASSERT_FALSE(from_grad.path.back().output_ids.empty());
  EXPECT_EQ(from_grad.path.back().output_ids[0], tensor_id(x.grad()));
}

// Same mask with x = [0, 1, 4]: forward is finite everywhere, and backward computes
// 0 / (2 * sqrt(0)) = 0/0 for the discarded element. That NaN is born in backward.
TEST_F(BirthTest, MaskedSqrtOfZeroIsBornInBackwardDiv) {
  auto x = torch::tensor({0.0f, 1.0f, 4.0f}, torch::requires_grad());
  OpTracer tracer;
  {
    NANGUARD_SCOPE("safe_sqrt");
    torch::where(x > 0, torch::sqrt(x), torch::zeros_like(x)).sum().backward();
  }
  ASSERT_FALSE(x.grad().isfinite().all().item<bool>());
  auto birth = find_birth(tracer.records(), tensor_id(x.grad()));
  ASSERT_TRUE(birth.found) << dump(birth);
  EXPECT_TRUE(birth.connected);
  EXPECT_EQ(birth.op.name, "aten::div") << dump(birth);
  EXPECT_EQ(birth.op.phase, Phase::backward);
  EXPECT_EQ(birth.op.backward_node, "SqrtBackward0");
  EXPECT_EQ(birth.op.module, "safe_sqrt");
  EXPECT_TRUE(contains(birth.reason, "denominator of aten::div holds 1 zero")) << birth.reason;
  EXPECT_TRUE(contains(birth.reason, "0/0")) << birth.reason;
}

// A harmless forward NaN (discarded, never reaches the loss) and a real overflow: following
// the loss names the overflow, while the first birth of the step is the harmless one.
TEST_F(BirthTest, FailingTensorBeatsAnEarlierHarmlessBirth) {
  auto x = torch::tensor({4.0f, -1.0f});
  auto w = torch::tensor({1.0f, 2.0f}, torch::requires_grad());
  OpTracer tracer;
  auto masked = torch::where(x > 0, torch::sqrt(x), torch::zeros_like(x));  // finite
  auto loss = (masked + torch::exp(w * 100)).sum();
  ASSERT_TRUE(std::isinf(loss.item<float>()));
  auto records = tracer.records();

  auto first = find_birth(records);
  ASSERT_TRUE(first.found);
  EXPECT_EQ(first.op.name, "aten::sqrt");
  EXPECT_FALSE(first.connected);

  auto real = find_birth(records, tensor_id(loss));
  ASSERT_TRUE(real.found) << dump(real);
  EXPECT_EQ(real.op.name, "aten::exp") << dump(real);
  EXPECT_TRUE(real.connected);
  EXPECT_TRUE(contains(real.reason, "max 200 > 88.72")) << real.reason;

  // A tensor the trace never produced falls back to the first birth.
  auto unknown = find_birth(records, tensor_id(x));
  EXPECT_EQ(unknown.op.name, "aten::sqrt");
  EXPECT_FALSE(unknown.connected);
}

TEST_F(BirthTest, SqrtOfNegatives) {
  auto x = torch::tensor({{4.0f, -0.5f}, {-2.0f, 1.0f}, {9.0f, 0.0f}});
  OpTracer tracer(TracerOptions().batch_size(3));
  auto loss = torch::sqrt(x).sum();
  auto birth = find_birth(tracer.records(), tensor_id(loss));
  ASSERT_TRUE(birth.found) << dump(birth);
  EXPECT_EQ(birth.op.name, "aten::sqrt");
  EXPECT_EQ(birth.reason, "input 0 of aten::sqrt holds 2 negative values (min -2)");
  EXPECT_EQ(birth.op.nonfinite_rows, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(birth.op.first_nonfinite_row, 0);
}

TEST_F(BirthTest, RowsNameTheBatchRowsThatWentNonFinite) {
  const int64_t batch = 6;
  auto logits = torch::randn({batch, 5});
  logits.index_put_({2, 1}, 200.0f);  // rows 2 and 5 overflow exp
  logits.index_put_({5, 4}, 150.0f);
  OpTracer tracer(TracerOptions().batch_size(batch));
  torch::Tensor loss;
  {
    NANGUARD_SCOPE("head");
    auto e = logits.exp();
    loss = (e / e.sum(1, true)).log().mean();
  }
  auto birth = find_birth(tracer.records(), tensor_id(loss));
  ASSERT_TRUE(birth.found) << dump(birth);
  EXPECT_EQ(birth.op.name, "aten::exp");
  EXPECT_EQ(birth.op.nonfinite_rows, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(birth.op.first_nonfinite_row, 2);
}

TEST_F(BirthTest, PrecedingOpsComeBeforeTheBirth) {
  auto x = torch::randn({3, 3});
  OpTracer tracer;
  auto h = (x * 30).abs() + 20;
  auto big = h * 2;
  auto loss = big.exp().sum();
  auto records = tracer.records();
  auto birth = find_birth(records, tensor_id(loss), 3);
  ASSERT_TRUE(birth.found) << dump(birth);
  EXPECT_EQ(birth.op.name, "aten::exp");
  ASSERT_EQ(birth.preceding.size(), 3u);
  for (size_t i = 0; i < birth.preceding.size(); ++i) {
    EXPECT_LT(birth.preceding[i].index, birth.op.index);
    if (i > 0) EXPECT_GT(birth.preceding[i].index, birth.preceding[i - 1].index);
  }
  EXPECT_EQ(birth.preceding.back().name, "aten::mul");  // h * 2 ran just before
  EXPECT_TRUE(find_birth(records, tensor_id(loss), 0).preceding.empty());
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { find_birth(records, std::nullopt, -1); },
                                               {"preceding", "-1"}));
}

TEST_F(BirthTest, EmptyAndFiniteTracesHaveNoBirth) {
  EXPECT_FALSE(find_birth({}).found);
  auto x = torch::randn({3});
  OpTracer tracer;
  auto loss = (x * 2).sum();
  auto birth = find_birth(tracer.records(), tensor_id(loss));
  EXPECT_FALSE(birth.found);
}

// Hand-built records: the birth logic does not need a live trace.
TensorHealth finite_health(double min, double max, int64_t zeros = 0, int64_t negatives = 0,
                           c10::ScalarType dtype = torch::kFloat) {
  TensorHealth h;
  h.dtype = dtype;
  h.numel = 10;
  h.min = min;
  h.max = max;
  h.absmax = std::max(std::fabs(min), std::fabs(max));
  h.zero_count = zeros;
  h.negative_count = negatives;
  return h;
}

TensorHealth bad_health(int64_t nan, int64_t posinf = 0) {
  TensorHealth h;
  h.dtype = torch::kFloat;
  h.numel = 10;
  h.nan_count = nan;
  h.posinf_count = posinf;
  return h;
}

OpRecord record(int64_t index, std::string name, std::vector<TensorHealth> ins,
                std::vector<uintptr_t> in_ids, std::vector<TensorHealth> outs,
                std::vector<uintptr_t> out_ids, int64_t parent = -1) {
  OpRecord r;
  r.index = index;
  r.parent = parent;
  r.name = std::move(name);
  r.inputs = std::move(ins);
  r.input_ids = std::move(in_ids);
  r.outputs = std::move(outs);
  r.output_ids = std::move(out_ids);
  return r;
}

TEST_F(BirthTest, InnermostOfNestedBirthsIsNamed) {
  // A composite op (outer) whose inner op does the computation; both qualify.
  std::vector<OpRecord> recs = {
      record(0, "aten::outer_composite", {finite_health(1, 2)}, {100}, {bad_health(1)}, {200}),
      record(1, "aten::empty", {}, {}, {finite_health(0, 0)}, {200}, 0),
      record(2, "aten::inner_kernel", {finite_health(1, 2)}, {100}, {bad_health(1)}, {200}, 0),
      record(3, "aten::sum", {bad_health(1)}, {200}, {bad_health(1)}, {300}),
  };
  auto b = find_birth(recs, uintptr_t{300});
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.op.name, "aten::inner_kernel");
  EXPECT_TRUE(b.connected);
  ASSERT_EQ(b.path.size(), 3u);  // inner, the composite that returned it, sum
  EXPECT_EQ(b.path[1].name, "aten::outer_composite");
  EXPECT_EQ(b.path[2].name, "aten::sum");
  EXPECT_EQ(find_birth(recs).op.name, "aten::inner_kernel");
}

TEST_F(BirthTest, ReusedAddressesFollowTheLatestWriter) {
  // Tensor address 500 is written twice; the consumer reads the second value.
  std::vector<OpRecord> recs = {
      record(0, "aten::log", {finite_health(0, 1, 3)}, {10}, {bad_health(0, 3)}, {500}),
      record(1, "aten::exp", {finite_health(0, 100)}, {20}, {bad_health(0, 2)}, {500}),
      record(2, "aten::sum", {bad_health(0, 2)}, {500}, {bad_health(0, 1)}, {600}),
  };
  auto b = find_birth(recs, uintptr_t{600});
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.op.name, "aten::exp");
  EXPECT_EQ(find_birth(recs).op.name, "aten::log");
}

TEST_F(BirthTest, ReasonsFromInputStatistics) {
  auto op = [](std::string name, std::vector<TensorHealth> ins, TensorHealth out = bad_health(1)) {
    return record(0, std::move(name), std::move(ins), {}, {out}, {});
  };
  EXPECT_EQ(birth_reason(op("aten::log", {finite_health(0, 1, 37)})),
            "input 0 of aten::log holds 37 exact zeros (log(0) = -inf)");
  EXPECT_TRUE(contains(birth_reason(op("aten::log", {finite_health(-3, 1, 0, 12)})),
                       "holds 12 negative values (min -3"));
  EXPECT_EQ(birth_reason(op("aten::exp", {finite_health(-1, 104.2)})),
            "input 0 of aten::exp has max 104.2 > 88.72 (float32 exp overflow)");
  EXPECT_EQ(birth_reason(op("aten::exp", {finite_health(0, 12, 0, 0, torch::kHalf)})),
            "input 0 of aten::exp has max 12 > 11.09 (float16 exp overflow)");
  EXPECT_TRUE(contains(birth_reason(op("aten::div", {finite_health(1, 2), finite_health(0, 3, 4)})),
                       "denominator of aten::div holds 4 zeros"));
  EXPECT_TRUE(contains(birth_reason(op("aten::reciprocal", {finite_health(0, 3, 1)})),
                       "denominator of aten::reciprocal holds 1 zero"));
  EXPECT_EQ(birth_reason(op("aten::sqrt", {finite_health(-0.5, 4, 0, 12)})),
            "input 0 of aten::sqrt holds 12 negative values (min -0.5)");
  EXPECT_TRUE(contains(birth_reason(op("aten::rsqrt", {finite_health(0, 4, 2)})), "2 zeros"));
  auto mm = birth_reason(op("aten::addmm", {finite_health(-1, 1), finite_health(-3e19, 1e19),
                                            finite_health(-2e20, 5)}));
  EXPECT_TRUE(contains(mm, "aten::addmm overflowed from finite inputs: input absmax 1, 3e+19, 2e+20"))
      << mm;
  EXPECT_TRUE(contains(birth_reason(op("aten::acos", {finite_health(-2, 0.5)})), "outside [-1, 1]"));
  EXPECT_TRUE(contains(birth_reason(op("aten::pow", {finite_health(-2, 1, 0, 3)})),
                       "3 negative values"));
  EXPECT_EQ(birth_reason(record(0, "aten::full", {}, {}, {bad_health(0, 4)}, {})),
            "aten::full created 4 +Inf from no tensor inputs");
  EXPECT_TRUE(contains(birth_reason(op("aten::weird", {finite_health(1, 2)}, bad_health(2, 1))),
                       "aten::weird turned finite inputs (absmax 2) into 2 NaN, 1 +Inf"));
}

}  // namespace
}  // namespace nanguard::trace
