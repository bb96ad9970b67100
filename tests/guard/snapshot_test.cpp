#include "nanguard/guard/snapshot.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/guard/optimizer_adapter.h"

namespace nanguard {
namespace {

struct Net : torch::nn::Module {
  Net() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    bn = register_module("bn", torch::nn::BatchNorm1d(3));
  }
  torch::Tensor forward(torch::Tensor x) { return torch::dropout(bn(fc(x)), 0.3, is_training()); }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};

void train_steps(Net& net, torch::optim::Optimizer& opt, int n) {
  for (int i = 0; i < n; ++i) {
    opt.zero_grad();
    auto x = torch::randn({8, 4});  // consumes the global RNG, as dropout does
    net.forward(x).pow(2).mean().backward();
    opt.step();
  }
}

std::vector<torch::Tensor> state_of(Net& net, torch::optim::Optimizer& opt) {
  std::vector<torch::Tensor> out;
  for (auto& p : net.parameters()) out.push_back(p.clone());
  for (auto& b : net.buffers()) out.push_back(b.clone());
  for (auto& [key, st] : opt.state()) {
    auto& s = static_cast<torch::optim::AdamParamState&>(*st);
    out.push_back(s.exp_avg().clone());
    out.push_back(s.exp_avg_sq().clone());
    out.push_back(torch::tensor(s.step()));
  }
  return out;
}

bool bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

TEST(SnapshotRing, RestoreIsBitwiseExactAndContinuesIdentically) {
  torch::manual_seed(0);
  Net net;
  torch::optim::Adam opt(net.parameters(), torch::optim::AdamOptions(1e-2));
  double extra_value = 7;
  auto adapter = make_optimizer_adapter(opt);
  TrainingStateRefs refs{net.parameters(), net.buffers(), {adapter.get()}, [&] { return std::vector<double>{extra_value}; },
                         [&](const std::vector<double>& v) { extra_value = v.at(0); }};
  SnapshotRing ring(refs, 2);
  train_steps(net, opt, 3);
  ring.take(3);
  const auto saved = state_of(net, opt);
  train_steps(net, opt, 2);
  const auto after_more = state_of(net, opt);
  extra_value = 99;
  ASSERT_FALSE(bitwise_equal(saved, after_more));

  ASSERT_EQ(ring.restore_newest(), 3);
  EXPECT_TRUE(bitwise_equal(saved, state_of(net, opt)));
  EXPECT_EQ(extra_value, 7);
  // The RNG was restored too: the same two steps give the same state, bit for bit.
  train_steps(net, opt, 2);
  EXPECT_TRUE(bitwise_equal(after_more, state_of(net, opt)));
}

TEST(SnapshotRing, RestoringASnapshotFromBeforeTheFirstStepClearsOptimizerState) {
  torch::manual_seed(0);
  Net net;
  torch::optim::Adam opt(net.parameters(), torch::optim::AdamOptions(1e-2));
  auto adapter = make_optimizer_adapter(opt);
  SnapshotRing ring({net.parameters(), net.buffers(), {adapter.get()}, nullptr, nullptr}, 1);
  ring.take(0);
  train_steps(net, opt, 1);
  EXPECT_FALSE(opt.state().empty());
  ring.restore_newest();
  EXPECT_TRUE(opt.state().empty());
}

TEST(SnapshotRing, KeepsTheNewestCapacitySnapshotsAndPicksByStep) {
  torch::manual_seed(0);
  Net net;
  torch::optim::SGD opt(net.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto adapter = make_optimizer_adapter(opt);
  SnapshotRing ring({net.parameters(), net.buffers(), {adapter.get()}, nullptr, nullptr}, 3);
  for (int64_t step : {0, 10, 20, 30}) {
    ring.take(step);
    train_steps(net, opt, 1);
  }
  EXPECT_EQ(ring.steps(), (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(ring.restore_at_or_before(25), 20);
  EXPECT_EQ(ring.restore_at_or_before(5), std::nullopt);
  ring.discard_after(10);
  EXPECT_EQ(ring.steps(), (std::vector<int64_t>{10}));
  EXPECT_GT(ring.memory_bytes(), 0);
  EXPECT_THROW(SnapshotRing({net.parameters(), {}, {adapter.get()}, nullptr, nullptr}, 0), ValueError);
}

}  // namespace
}  // namespace nanguard
