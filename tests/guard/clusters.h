// Small learnable data and model shared by the guard's tests.
#pragma once

#include <cstdint>
#include <limits>

#include <torch/torch.h>

#include "nanguard/data/dataset.h"
#include "nanguard/train/model.h"

namespace nanguard::guard_test {

inline constexpr int64_t kClasses = 10;
inline constexpr int64_t kFeatures = 20;
inline const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Ten Gaussian clusters: learnable to high accuracy in a few epochs.
inline data::TensorDataset clusters(int64_t n, uint64_t seed, double scale = 1.0) {
  auto centers_gen = at::detail::createCPUGenerator(1234);
  auto centers = torch::randn({kClasses, kFeatures}, centers_gen) * 2.0;
  auto gen = at::detail::createCPUGenerator(seed);
  auto y = torch::randint(0, kClasses, {n}, gen, torch::kLong);
  auto x = (centers.index_select(0, y) + torch::randn({n, kFeatures}, gen)) * scale;
  return data::TensorDataset(x, y);
}

// Dense 32 relu, dense 10 softmax.
inline ModelSpec mlp() {
  ModelSpec spec;
  spec.input_shape = {kFeatures};
  spec.add(layers::dense(32, "relu")).add(layers::dense(kClasses, "softmax"));
  return spec;
}

}  // namespace nanguard::guard_test
