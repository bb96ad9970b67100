// NaN and Inf are traced apart: an op that writes -inf on purpose from a fill value (the
// attention mask) made an Inf, not the NaN; the NaN is born where a softmax normalises a row
// that is all -inf. An optimizer step whose denominator holds exact zeros (epsilon 0, a
// gradient that is exactly 0) is born at its division, for every LibTorch optimizer with one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <limits>

#include "nanguard/trace/birth.h"
#include "nanguard/trace/tracer.h"

namespace nanguard::trace {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::string dump(const std::vector<OpRecord>& records) {
  std::string s;
  for (const auto& r : records) s += r.to_string() + "\n";
  return s;
}

// Attention-like scores [4, 3]; rows 1 and 3 are fully masked.
struct Masked {
  std::vector<OpRecord> records;
  torch::Tensor loss;
};

Masked masked_softmax(bool log_softmax) {
  torch::manual_seed(0);
  auto scores = torch::randn({4, 3});
  auto mask = torch::zeros({4, 3}, torch::kBool);
  mask[1].fill_(true);
  mask[3].fill_(true);
  mask[0][2] = true;  // partly masked: finite
  OpTracer tracer(TracerOptions().batch_size(4));
  auto filled = scores.masked_fill(mask, -kInf);
  auto p = log_softmax ? torch::log_softmax(filled, 1) : torch::softmax(filled, 1);
  auto loss = p.sum();
  tracer.stop();
  return {tracer.records(), loss};
}

TEST(NanInf, FillWithMinusInfIsNoBirthTheSoftmaxOfAFullyMaskedRowIs) {
  for (bool log : {false, true}) {
    Masked m = masked_softmax(log);
    ASSERT_TRUE(std::isnan(m.loss.item<float>()));
    const Birth b = find_birth(m.records, tensor_id(m.loss));
    ASSERT_TRUE(b.found) << dump(m.records);
    EXPECT_EQ(b.op.name, log ? "aten::_log_softmax" : "aten::_softmax") << dump(m.records);
    EXPECT_TRUE(b.connected);
    EXPECT_EQ(b.op.nan_rows, (std::vector<int64_t>{1, 3}));
    // log_softmax is -inf at the masked position of the partly masked row 0, on purpose.
    EXPECT_EQ(b.op.nonfinite_rows, log ? (std::vector<int64_t>{0, 1, 3}) : (std::vector<int64_t>{1, 3}));
    EXPECT_EQ(b.inf_source.rfind("aten::masked_fill", 0), 0u) << b.inf_source;
    EXPECT_NE(b.reason.find("fully masked"), std::string::npos) << b.reason;
  }
}

TEST(NanInf, AFillRecordsItsNonFiniteScalar) {
  Masked m = masked_softmax(false);
  bool seen = false;
  for (const auto& r : m.records) {
    if (r.name.rfind("aten::masked_fill", 0) != 0) continue;
    seen = true;
    EXPECT_TRUE(r.nonfinite_scalar_input) << r.to_string();
    EXPECT_FALSE(r.inputs_finite());
  }
  EXPECT_TRUE(seen) << dump(m.records);
}

// An Inf the model computed (log(0)) is still the birth of the NaN it leads to.
TEST(NanInf, AnInfComputedFromFiniteValuesStaysTheBirth) {
  auto p = torch::tensor({0.0f, 0.5f, 0.5f});
  auto y = torch::tensor({0.0f, 1.0f, 0.0f});
  OpTracer tracer;
  auto loss = -(y * torch::log(p)).sum();
  tracer.stop();
  ASSERT_TRUE(std::isnan(loss.item<float>()));
  const Birth b = find_birth(tracer.records(), tensor_id(loss));
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.op.name, "aten::log");
  EXPECT_TRUE(b.inf_source.empty());
}

// inf - inf from a tensor created full of inf: the subtraction made the NaN.
TEST(NanInf, FullOfInfThenSubtractIsBornAtTheSubtraction) {
  OpTracer tracer;
  auto a = torch::full({3}, kInf);
  auto loss = (a - a).sum();
  tracer.stop();
  const Birth b = find_birth(tracer.records(), tensor_id(loss));
  ASSERT_TRUE(b.found) << dump(tracer.records());
  EXPECT_EQ(b.op.name, "aten::sub") << dump(tracer.records());
  EXPECT_FALSE(b.inf_source.empty());
}

// A NaN scalar argument (a bad fill) marks the op too; a finite one does not.
TEST(NanInf, FiniteScalarsDoNotMarkAnOp) {
  OpTracer tracer;
  auto a = torch::ones({3}).masked_fill(torch::tensor({true, false, true}), -1e9);
  tracer.stop();
  for (const auto& r : tracer.records()) EXPECT_FALSE(r.nonfinite_scalar_input) << r.to_string();
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
}

// One optimizer step with epsilon 0 where one parameter's gradient is exactly 0.
struct Step {
  std::vector<OpRecord> records;
  torch::Tensor dead;
};

template <typename Optimizer, typename Options>
Step optimizer_step(Options options) {
  torch::manual_seed(0);
  auto live = torch::randn({3}, torch::requires_grad());
  auto dead = torch::randn({2}, torch::requires_grad());
  Optimizer opt(std::vector<torch::Tensor>{live, dead}, options);
  auto loss = (live * live).sum() + (dead * 0).sum();
  loss.backward();
  OpTracer tracer;
  tracer.set_phase(Phase::optimizer);
  opt.step();
  tracer.stop();
  return {tracer.records(), dead};
}

void expect_zero_denominator(const Step& s, const char* what) {
  SCOPED_TRACE(what);
  ASSERT_FALSE(torch::isfinite(s.dead).all().item<bool>()) << dump(s.records);
  const Birth b = find_birth(s.records, tensor_id(s.dead));
  ASSERT_TRUE(b.found) << dump(s.records);
  EXPECT_EQ(b.op.name, "aten::addcdiv_") << dump(s.records);
  EXPECT_EQ(b.op.phase, Phase::optimizer);
  const Denominator d = find_denominator(s.records, b.op);
  EXPECT_TRUE(d.division);
  EXPECT_EQ(d.zeros, 2);
  EXPECT_EQ(d.numel, 2);
  EXPECT_TRUE(d.sqrt_then_add) << dump(s.records);
  ASSERT_FALSE(d.made_by.empty());
  EXPECT_EQ(d.made_by.front(), "aten::sqrt");
  EXPECT_EQ(d.made_by.back(), "aten::add_");
  std::string chain;
  for (const auto& op : d.made_by) chain += op + " ";
  std::cout << what << ": birth " << b.op.name << ", denominator " << chain << "\n";
}

TEST(NanInf, ZeroEpsilonDenominatorsOfEveryLibTorchOptimizer) {
  using namespace torch::optim;
  expect_zero_denominator(optimizer_step<Adam>(AdamOptions(1e-3).eps(0)), "adam");
  expect_zero_denominator(optimizer_step<Adam>(AdamOptions(1e-3).eps(0).amsgrad(true)), "adam amsgrad");
  expect_zero_denominator(optimizer_step<AdamW>(AdamWOptions(1e-3).eps(0)), "adamw");
  expect_zero_denominator(optimizer_step<RMSprop>(RMSpropOptions(1e-3).eps(0)), "rmsprop");
  expect_zero_denominator(optimizer_step<Adagrad>(AdagradOptions(1e-3).eps(0)), "adagrad");
}

TEST(NanInf, DenominatorOfDivisionsByName) {
  OpRecord r;
  r.name = "aten::div";
  EXPECT_FALSE(find_denominator({}, r).division);  // no inputs recorded: nothing to read
  TensorHealth num, den;
  num.numel = 4;
  den.numel = 4;
  den.zero_count = 3;
  r.inputs = {num, den};
  Denominator d = find_denominator({}, r);
  EXPECT_TRUE(d.division);
  EXPECT_EQ(d.zeros, 3);
  r.name = "aten::_foreach_addcdiv_";  // [params..., t1..., t2...]: the last third
  r.inputs = {num, num, num, num, den, den};
  EXPECT_EQ(find_denominator({}, r).zeros, 6);
  r.inputs = {num, num};  // not a multiple of three: not read
  EXPECT_FALSE(find_denominator({}, r).division);
  r.name = "aten::mul";
  EXPECT_FALSE(find_denominator({}, r).division);
}

}  // namespace
}  // namespace nanguard::trace
