// The LibTorch optimizer adapter: learning rates, epsilon, state per parameter, second moments,
// and a state saved and loaded back that makes the optimizer continue bitwise as before.
#include "nanguard/guard/optimizer_adapter.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

struct Case {
  const char* name;
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor>)> make;
  size_t second_moments;  // per parameter after a step
  double epsilon;         // NaN: none
};

std::vector<Case> cases() {
  using namespace torch::optim;
  const double nan = std::nan("");
  return {
      {"sgd", [](auto p) { return std::make_unique<SGD>(p, SGDOptions(0.1).momentum(0.9)); }, 0, nan},
      {"adam", [](auto p) { return std::make_unique<Adam>(p, AdamOptions(0.01).eps(1e-7)); }, 1, 1e-7},
      {"adamw", [](auto p) { return std::make_unique<AdamW>(p, AdamWOptions(0.01).eps(1e-6)); }, 1, 1e-6},
      {"rmsprop", [](auto p) { return std::make_unique<RMSprop>(p, RMSpropOptions(0.01).eps(1e-5)); }, 1, 1e-5},
      {"adagrad", [](auto p) { return std::make_unique<Adagrad>(p, AdagradOptions(0.1).eps(1e-9)); }, 1, 1e-9},
  };
}

void step_on(std::vector<at::Tensor> params, torch::optim::Optimizer& opt, int64_t seed) {
  torch::manual_seed(seed);
  for (auto& p : params) p.mutable_grad() = torch::randn_like(p);
  opt.step();
}

TEST(OptimizerAdapter, EveryLibTorchOptimizer) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto w = torch::randn({3, 4}, torch::requires_grad());
    auto b = torch::randn({4}, torch::requires_grad());
    auto opt = c.make({w, b});
    auto adapter = make_optimizer_adapter(*opt);
    EXPECT_EQ(adapter->name(), c.name);
    EXPECT_EQ(adapter->parameters().size(), 2u);
    // No state before the first step, but Adagrad's accumulator, made with the optimizer.
    EXPECT_EQ(adapter->state().empty(), std::string(c.name) != "adagrad");
    EXPECT_EQ(std::isnan(adapter->epsilon(0)), std::isnan(c.epsilon));
    if (!std::isnan(c.epsilon)) {
      EXPECT_DOUBLE_EQ(adapter->epsilon(0), c.epsilon);
      adapter->set_epsilon(0, 1e-3);
      EXPECT_DOUBLE_EQ(adapter->epsilon(0), 1e-3);
      adapter->set_epsilon(0, c.epsilon);
    }
    adapter->scale_learning_rates(0.5);
    const double lr = adapter->learning_rate(0);
    EXPECT_EQ(adapter->learning_rates(), std::vector<double>{lr});

    step_on({w, b}, *opt, 1);
    auto state = adapter->state();
    ASSERT_EQ(state.size(), 2u);
    EXPECT_EQ(state[0].param, 0);
    EXPECT_EQ(state[1].param, 1);
    EXPECT_EQ(adapter->second_moments().size(), 2 * c.second_moments);
    EXPECT_FALSE(adapter->state_tensors().empty() && std::string(c.name) != "sgd");

    // Save (deep copies), take two more steps, load, take the same two steps: bitwise equal.
    std::vector<OptimizerParamStateView> saved = state;
    for (auto& s : saved) {
      for (auto& t : s.tensors) t = t.defined() ? t.clone() : t;
    }
    const auto w0 = w.detach().clone(), b0 = b.detach().clone();
    step_on({w, b}, *opt, 2);
    step_on({w, b}, *opt, 3);
    const auto w_after = w.detach().clone();
    {
      torch::NoGradGuard no_grad;
      w.copy_(w0);
      b.copy_(b0);
    }
    adapter->load_state(saved);
    step_on({w, b}, *opt, 2);
    step_on({w, b}, *opt, 3);
    EXPECT_TRUE(torch::equal(w, w_after));

    // Loading an empty state erases it, as before the first step.
    adapter->load_state({});
    EXPECT_TRUE(adapter->state().empty());
    // Loading a state the optimizer had dropped creates it again.
    adapter->load_state(saved);
    EXPECT_EQ(adapter->state().size(), 2u);
  }
}

TEST(OptimizerAdapter, RejectsOtherOptimizers) {
  struct Mine : torch::optim::Optimizer {
    explicit Mine(std::vector<at::Tensor> p)
        : Optimizer({torch::optim::OptimizerParamGroup(p)}, std::make_unique<torch::optim::SGDOptions>(0.1)) {}
    at::Tensor step(LossClosure) override { return {}; }
    void save(torch::serialize::OutputArchive&) const override {}
    void load(torch::serialize::InputArchive&) override {}
  };
  Mine mine({torch::zeros({2}, torch::requires_grad())});
  EXPECT_TRUE(testing::throws_with<ValueError>([&] { make_optimizer_adapter(mine); }, {"Adam", "SGD"}));
}

}  // namespace
}  // namespace nanguard
