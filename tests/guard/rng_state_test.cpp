#include "guard/rng_state.h"

#include <gtest/gtest.h>
#include <torch/torch.h>


namespace nanguard::detail {
namespace {

// Draws that use the engine and the cached normal samples (randn caches one of each pair).
at::Tensor draws() {
  auto a = torch::randn({7});
  auto b = torch::rand({5});
  auto c = torch::bernoulli(torch::full({9}, 0.5));
  auto d = torch::randn({3}, torch::kDouble);
  return torch::cat({a.to(torch::kDouble), b.to(torch::kDouble), c.to(torch::kDouble), d});
}

TEST(CpuRngState, RestoreRepeatsTheSameDraws) {
  torch::manual_seed(11);
  torch::randn({1});  // leave a cached normal sample behind
  CpuRngState state;
  EXPECT_FALSE(state.captured());
  state.capture();
  EXPECT_TRUE(state.captured());
  const auto first = draws();
  state.restore();
  const auto second = draws();
  EXPECT_TRUE(torch::equal(first, second));
  EXPECT_FALSE(torch::equal(draws(), first));  // without a restore the stream moves on
}

TEST(CpuRngState, TensorFormMatchesGeneratorState) {
  torch::manual_seed(5);
  torch::rand({3});
  CpuRngState state;
  state.capture();
  const auto via_get_state = at::globalContext().defaultGenerator(c10::Device(c10::kCPU)).get_state();
  EXPECT_TRUE(torch::equal(state.to_tensor(), via_get_state));
  const auto first = draws();
  auto gen = at::globalContext().defaultGenerator(c10::Device(c10::kCPU));
  gen.set_state(state.to_tensor());
  EXPECT_TRUE(torch::equal(draws(), first));
}

TEST(CpuRngState, RestoreBeforeCaptureLeavesTheGeneratorAlone) {
  torch::manual_seed(3);
  const CpuRngState never;
  never.restore();
  const auto a = draws();
  torch::manual_seed(3);
  EXPECT_TRUE(torch::equal(a, draws()));
}

}  // namespace
}  // namespace nanguard::detail
