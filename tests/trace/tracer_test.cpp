#include "nanguard/trace/tracer.h"

#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "nanguard/core/error.h"
#include "nanguard/trace/scope.h"
#include "support/test_support.h"

namespace nanguard::trace {
namespace {

class TracerTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
};

std::vector<OpRecord> named(const std::vector<OpRecord>& records, const std::string& name) {
  std::vector<OpRecord> out;
  for (const auto& r : records) {
    if (r.name == name) out.push_back(r);
  }
  return out;
}

// Two dense layers with a relu, scoped like the spec-built models.
struct Tiny {
  torch::nn::Linear fc1{3, 4};
  torch::nn::Linear fc2{4, 2};

  torch::Tensor forward(const torch::Tensor& x) {
    NANGUARD_SCOPE("model");
    torch::Tensor h;
    {
      NANGUARD_SCOPE("fc1");
      h = fc1(x);
    }
    {
      NANGUARD_SCOPE("act");
      h = torch::relu(h);
    }
    {
      NANGUARD_SCOPE("fc2");
      h = fc2(h);
    }
    return h;
  }
  std::vector<torch::Tensor> parameters() {
    auto p = fc1->parameters();
    auto q = fc2->parameters();
    p.insert(p.end(), q.begin(), q.end());
    return p;
  }
};

TEST_F(TracerTest, PhaseNames) {
  EXPECT_STREQ(to_string(Phase::forward), "forward");
  EXPECT_STREQ(to_string(Phase::backward), "backward");
  EXPECT_STREQ(to_string(Phase::optimizer), "optimizer");
  EXPECT_STREQ(to_string(Phase::unknown), "unknown");
}

TEST_F(TracerTest, TensorIdFollowsTheFirstElement) {
  auto t = torch::arange(6, torch::kFloat).reshape({2, 3});
  EXPECT_NE(tensor_id(t), 0u);
  EXPECT_EQ(tensor_id(t.view({3, 2})), tensor_id(t));  // same first element
  EXPECT_EQ(tensor_id(t[1]), tensor_id(t) + 3 * sizeof(float));
  EXPECT_EQ(tensor_id(torch::Tensor()), 0u);
  EXPECT_EQ(tensor_id(torch::empty({0})), 0u);
  EXPECT_NE(tensor_id(t.clone()), tensor_id(t));
}

TEST_F(TracerTest, RecordsForwardOpsWithModuleScopes) {
  Tiny model;
  auto x = torch::randn({5, 3});
  OpTracer tracer;
  auto y = model.forward(x);
  auto records = tracer.records();
  ASSERT_FALSE(records.empty());

  std::set<std::string> addmm_modules;
  for (const auto& r : named(records, "aten::addmm")) {
    EXPECT_EQ(r.phase, Phase::forward);
    EXPECT_TRUE(r.backward_node.empty());
    addmm_modules.insert(r.module);
  }
  EXPECT_EQ(addmm_modules, (std::set<std::string>{"model.fc1", "model.fc2"}));
  auto relu = named(records, "aten::relu");
  ASSERT_EQ(relu.size(), 1u);
  EXPECT_EQ(relu[0].module, "model.act");
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i].index, static_cast<int64_t>(i));
}

TEST_F(TracerTest, RecordsHealthAndIdentityOfInputsAndOutputs) {
  auto x = torch::tensor({{1.0f, 0.0f}, {2.0f, 0.0f}});
  OpTracer tracer;
  auto y = torch::log(x);
  auto logs = named(tracer.records(), "aten::log");
  ASSERT_EQ(logs.size(), 1u);
  const auto& r = logs[0];
  ASSERT_EQ(r.inputs.size(), 1u);
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_EQ(r.input_ids[0], tensor_id(x));
  EXPECT_EQ(r.output_ids[0], tensor_id(y));
  EXPECT_EQ(r.inputs[0].zero_count, 2);
  EXPECT_TRUE(r.inputs_finite());
  EXPECT_EQ(r.outputs[0].neginf_count, 2);
  EXPECT_FALSE(r.outputs_finite());
  EXPECT_TRUE(r.input_values.empty());  // health only by default
  auto text = r.to_string();
  EXPECT_NE(text.find("aten::log"), std::string::npos);
  EXPECT_NE(text.find("-inf=2"), std::string::npos);
}

TEST_F(TracerTest, NestedOpsKnowTheirParent) {
  auto x = torch::randn({4, 3});
  auto w = torch::randn({4, 3});
  OpTracer tracer;
  auto y = x.t();        // aten::t calls aten::transpose
  auto z = x.mul(2.0);  // aten::mul (Scalar) calls aten::mul (Tensor)
  auto records = tracer.records();
  auto t = named(records, "aten::t");
  auto transpose = named(records, "aten::transpose");
  ASSERT_EQ(t.size(), 1u);
  ASSERT_EQ(transpose.size(), 1u);
  EXPECT_EQ(t[0].parent, -1);
  EXPECT_EQ(transpose[0].parent, t[0].index);
  EXPECT_GT(transpose[0].index, t[0].index);  // start order
  // The composite op returns the tensor its inner op produced.
  EXPECT_EQ(t[0].output_ids, transpose[0].output_ids);
  auto mul = named(records, "aten::mul");
  ASSERT_EQ(mul.size(), 2u);
  EXPECT_EQ(mul[1].parent, mul[0].index);
}

TEST_F(TracerTest, WriteOnlyArgumentsAreNotInputs) {
  auto x = torch::tensor({4.0f, 9.0f});
  auto out = torch::empty({2});
  OpTracer tracer;
  torch::sqrt_out(out, x);
  auto y = torch::empty({2});
  y.copy_(x);
  y.fill_(1.0);
  auto records = tracer.records();
  auto sqrt = named(records, "aten::sqrt");
  ASSERT_EQ(sqrt.size(), 1u);
  ASSERT_EQ(sqrt[0].inputs.size(), 1u);  // out= is left out
  EXPECT_EQ(sqrt[0].input_ids[0], tensor_id(x));
  EXPECT_EQ(sqrt[0].output_ids[0], tensor_id(out));
  auto copy = named(records, "aten::copy_");
  ASSERT_FALSE(copy.empty());
  ASSERT_EQ(copy.back().inputs.size(), 1u);  // only the source
  EXPECT_EQ(copy.back().input_ids[0], tensor_id(x));
  auto fill = named(records, "aten::fill_");
  ASSERT_FALSE(fill.empty());
  EXPECT_TRUE(fill.back().inputs.empty());
  // Uninitialised memory is never measured (it may hold garbage NaNs).
  for (const auto& r : named(records, "aten::empty")) EXPECT_TRUE(r.outputs_finite());
}

TEST_F(TracerTest, BackwardOpsGetNodeAndForwardModule) {
  Tiny model;
  auto x = torch::randn({5, 3});
  auto target = torch::randn({5, 2});
  OpTracer tracer;
  auto y = model.forward(x);
  torch::Tensor loss;
  {
    NANGUARD_SCOPE("loss");
    loss = torch::mse_loss(y, target);
  }
  loss.backward();
  auto records = tracer.records();

  std::set<std::string> addmm_back_modules, relu_back_modules, loss_back_modules;
  int backward_ops = 0;
  for (const auto& r : records) {
    if (r.phase != Phase::backward) {
      EXPECT_TRUE(r.backward_node.empty()) << r.to_string();
      continue;
    }
    ++backward_ops;
    EXPECT_FALSE(r.backward_node.empty()) << r.to_string();
    if (r.backward_node == "AddmmBackward0") addmm_back_modules.insert(r.module);
    if (r.backward_node == "ReluBackward0") relu_back_modules.insert(r.module);
    if (r.backward_node == "MseLossBackward0") loss_back_modules.insert(r.module);
  }
  EXPECT_GT(backward_ops, 5);
  EXPECT_EQ(addmm_back_modules, (std::set<std::string>{"model.fc1", "model.fc2"}));
  EXPECT_EQ(relu_back_modules, (std::set<std::string>{"model.act"}));
  EXPECT_EQ(loss_back_modules, (std::set<std::string>{"loss"}));
  auto tb = named(records, "aten::threshold_backward");
  ASSERT_EQ(tb.size(), 1u);
  EXPECT_EQ(tb[0].phase, Phase::backward);
  EXPECT_EQ(tb[0].backward_node, "ReluBackward0");
  EXPECT_EQ(tb[0].module, "model.act");
  // Forward ops keep phase forward.
  auto relu = named(records, "aten::relu");
  ASSERT_EQ(relu.size(), 1u);
  EXPECT_EQ(relu[0].phase, Phase::forward);
}

TEST_F(TracerTest, OptimizerPhaseIsMarkedByTheCaller) {
  Tiny model;
  torch::optim::SGD sgd(model.parameters(), 0.1);
  auto x = torch::randn({5, 3});
  OpTracer tracer;
  EXPECT_EQ(tracer.phase(), Phase::forward);
  model.forward(x).sum().backward();
  size_t before = tracer.size();
  {
    PhaseScope phase(Phase::optimizer);
    EXPECT_EQ(tracer.phase(), Phase::optimizer);
    sgd.step();
  }
  EXPECT_EQ(tracer.phase(), Phase::forward);
  auto records = tracer.records();
  ASSERT_GT(records.size(), before);
  for (size_t i = before; i < records.size(); ++i) {
    EXPECT_EQ(records[i].phase, Phase::optimizer) << records[i].to_string();
  }
  tracer.set_phase(Phase::unknown);
  torch::ones({2}).add(1);
  EXPECT_EQ(tracer.records().back().phase, Phase::unknown);
}

TEST_F(TracerTest, PhaseScopeWithoutTracerDoesNothing) {
  ASSERT_EQ(OpTracer::active(), nullptr);
  PhaseScope phase(Phase::optimizer);
  OpTracer tracer;
  EXPECT_EQ(tracer.phase(), Phase::forward);
}

TEST_F(TracerTest, RecordingStopsWhenTheTracerDies) {
  bool had_callbacks = at::hasGlobalCallbacks();
  {
    OpTracer tracer;
    EXPECT_TRUE(at::hasGlobalCallbacks());
    EXPECT_EQ(OpTracer::active(), &tracer);
    EXPECT_TRUE(tracer.running());
    torch::ones({2}).mul(3);
    size_t n = tracer.size();
    EXPECT_GT(n, 0u);
    tracer.stop();
    EXPECT_FALSE(tracer.running());
    EXPECT_EQ(OpTracer::active(), nullptr);
    torch::ones({2}).mul(3);
    EXPECT_EQ(tracer.size(), n);  // records stay, no new ones
    tracer.stop();                // idempotent
  }
  EXPECT_EQ(at::hasGlobalCallbacks(), had_callbacks);
  EXPECT_EQ(OpTracer::active(), nullptr);
  // A new tracer starts empty.
  OpTracer again;
  EXPECT_EQ(again.size(), 0u);
}

TEST_F(TracerTest, OnlyOneTracerAtATime) {
  OpTracer first;
  EXPECT_TRUE(testing::throws_with<ValueError>([] { OpTracer second; }, {"already running"}));
  EXPECT_EQ(OpTracer::active(), &first);
}

TEST_F(TracerTest, BadOptionsAreRejected) {
  EXPECT_TRUE(testing::throws_with<ValueError>(
      [] { OpTracer t(TracerOptions().max_records(-1)); }, {"max_records", "-1"}));
  EXPECT_TRUE(testing::throws_with<ValueError>(
      [] { OpTracer t(TracerOptions().batch_size(-3)); }, {"batch_size", "-3"}));
  EXPECT_EQ(OpTracer::active(), nullptr);
}

TEST_F(TracerTest, MaxRecordsCapsMemoryAndCountsDropped) {
  auto x = torch::ones({4});
  OpTracer tracer(TracerOptions().max_records(3));
  for (int i = 0; i < 5; ++i) x = x.neg();  // no nested ops
  EXPECT_EQ(tracer.size(), 3u);
  EXPECT_EQ(tracer.dropped(), 2);
  tracer.clear();
  EXPECT_EQ(tracer.size(), 0u);
  EXPECT_EQ(tracer.dropped(), 0);
  x.neg();
  EXPECT_EQ(tracer.size(), 1u);
  EXPECT_EQ(tracer.records()[0].index, 0);
}

TEST_F(TracerTest, NonfiniteRowsNameTheBatchRows) {
  auto p = torch::rand({6, 4}) + 0.1;
  p.index_put_({1, 2}, 0.0f);
  p.index_put_({4, 0}, 0.0f);
  p.index_put_({4, 3}, 0.0f);
  OpTracer tracer(TracerOptions().batch_size(6));
  auto l = torch::log(p);
  auto ok = torch::log(p + 1);
  auto records = tracer.records();
  auto logs = named(records, "aten::log");
  ASSERT_EQ(logs.size(), 2u);
  EXPECT_EQ(logs[0].nonfinite_rows, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(logs[0].first_nonfinite_row, 1);
  EXPECT_TRUE(logs[1].nonfinite_rows.empty());
  EXPECT_EQ(logs[1].first_nonfinite_row, -1);
}

TEST_F(TracerTest, RowsNeedMatchingBatchSize) {
  auto p = torch::ones({3, 2});
  p.index_put_({2, 1}, 0.0f);
  OpTracer tracer(TracerOptions().batch_size(5));
  torch::log(p);
  auto logs = named(tracer.records(), "aten::log");
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_FALSE(logs[0].outputs_finite());
  EXPECT_TRUE(logs[0].nonfinite_rows.empty());
}

TEST_F(TracerTest, KeepValuesCopiesTensors) {
  auto x = torch::tensor({1.0f, 2.0f});
  auto three = torch::tensor({3.0f, 3.0f});
  OpTracer tracer(TracerOptions().keep_values(true));
  auto y = x.mul(three);
  x.add_(100);  // later changes do not reach the copies
  auto mul = named(tracer.records(), "aten::mul");
  ASSERT_EQ(mul.size(), 1u);
  ASSERT_EQ(mul[0].input_values.size(), 2u);
  EXPECT_TRUE(testing::tensors_match(mul[0].input_values[0], torch::tensor({1.0f, 2.0f})));
  ASSERT_EQ(mul[0].output_values.size(), 1u);
  EXPECT_TRUE(testing::tensors_match(mul[0].output_values[0], torch::tensor({3.0f, 6.0f})));
}

TEST_F(TracerTest, OwnHealthOpsAreNotRecordedAndGradsUnchanged) {
  auto w = torch::tensor({1.0f, 2.0f}, torch::requires_grad());
  OpTracer tracer;
  auto loss = (w * w).sum();
  loss.backward();
  for (const auto& r : tracer.records()) {
    EXPECT_NE(r.name, "aten::isfinite") << "health op recorded";
    EXPECT_NE(r.name, "aten::stack") << "health op recorded";
  }
  EXPECT_TRUE(testing::tensors_match(w.grad(), torch::tensor({2.0f, 4.0f})));
}

TEST_F(TracerTest, RecordsOpsFromOtherThreads) {
  OpTracer tracer;
  std::thread worker([] {
    NANGUARD_SCOPE("worker");
    torch::ones({3}).exp();
  });
  worker.join();
  auto exps = named(tracer.records(), "aten::exp");
  ASSERT_EQ(exps.size(), 1u);
  EXPECT_EQ(exps[0].module, "worker");
  EXPECT_EQ(exps[0].phase, Phase::forward);
}

TEST_F(TracerTest, TensorListInputsAreFlattened) {
  auto a = torch::ones({2});
  auto b = torch::zeros({3});
  OpTracer tracer;
  auto c = torch::cat({a, b});
  auto cats = named(tracer.records(), "aten::cat");
  ASSERT_EQ(cats.size(), 1u);
  ASSERT_EQ(cats[0].inputs.size(), 2u);
  EXPECT_EQ(cats[0].input_ids[0], tensor_id(a));
  EXPECT_EQ(cats[0].input_ids[1], tensor_id(b));
  EXPECT_EQ(cats[0].inputs[1].zero_count, 3);
}


// Tracing must not change the step it observes (a replay has to reproduce the incident):
// same parameters after a few Adam steps with dropout, traced or not.
TEST_F(TracerTest, TracedStepsGiveTheSameResultAsUntracedOnes) {
  auto run = [](bool traced, size_t* recorded) {
    torch::manual_seed(1);
    torch::nn::Sequential net(torch::nn::Linear(20, 16), torch::nn::ReLU(),
                              torch::nn::Dropout(0.2), torch::nn::Linear(16, 4));
    torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
    auto x = torch::randn({8, 20});
    auto y = torch::randint(0, 4, {8});
    std::unique_ptr<OpTracer> tracer;
    if (traced) tracer = std::make_unique<OpTracer>();
    for (int step = 0; step < 3; ++step) {
      adam.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
      loss.backward();
      PhaseScope phase(Phase::optimizer);
      adam.step();
    }
    if (tracer) *recorded = tracer->size();
    std::vector<torch::Tensor> flat;
    for (const auto& p : net->parameters()) flat.push_back(p.detach().reshape(-1));
    return torch::cat(flat);
  };
  size_t recorded = 0;
  auto plain = run(false, nullptr);
  auto traced = run(true, &recorded);
  EXPECT_GT(recorded, 100u);
  EXPECT_TRUE(torch::equal(plain, traced));
}

TEST_F(TracerTest, ConcurrentThreadsAreRecordedSafely) {
  OpTracer tracer;
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([] {
      auto x = torch::ones({16});
      for (int i = 0; i < 50; ++i) x = x.neg();
    });
  }
  for (auto& t : workers) t.join();
  auto records = tracer.records();
  EXPECT_EQ(named(records, "aten::neg").size(), 200u);
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i].index, static_cast<int64_t>(i));
}

}  // namespace
}  // namespace nanguard::trace
