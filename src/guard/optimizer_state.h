// Access to the tensors inside torch::optim optimizer state, for the optimizers LibTorch ships.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

namespace nanguard::detail {

// The tensors and step counter of one parameter's optimizer state.
struct ParamStateView {
  std::vector<at::Tensor*> tensors;
  int64_t* step = nullptr;
};

// Throws ValueError for optimizers other than Adam, AdamW, SGD, RMSprop and Adagrad.
ParamStateView view_state(torch::optim::OptimizerParamState& state);

// Every defined state tensor of every parameter (moments, momentum buffers).
std::vector<at::Tensor> optimizer_state_tensors(torch::optim::Optimizer& optimizer);

}  // namespace nanguard::detail
