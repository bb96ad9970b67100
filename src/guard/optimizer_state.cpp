#include "guard/optimizer_state.h"

#include <torch/torch.h>

#include "nanguard/core/error.h"

namespace nanguard::detail {

ParamStateView view_state(torch::optim::OptimizerParamState& base) {
  using namespace torch::optim;
  ParamStateView v;
  if (auto* s = dynamic_cast<AdamParamState*>(&base)) {
    v.tensors = {&s->exp_avg(), &s->exp_avg_sq(), &s->max_exp_avg_sq()};
    v.step = &s->step();
  } else if (auto* s = dynamic_cast<AdamWParamState*>(&base)) {
    v.tensors = {&s->exp_avg(), &s->exp_avg_sq(), &s->max_exp_avg_sq()};
    v.step = &s->step();
  } else if (auto* s = dynamic_cast<SGDParamState*>(&base)) {
    v.tensors = {&s->momentum_buffer()};
  } else if (auto* s = dynamic_cast<RMSpropParamState*>(&base)) {
    v.tensors = {&s->square_avg(), &s->momentum_buffer(), &s->grad_avg()};
    v.step = &s->step();
  } else if (auto* s = dynamic_cast<AdagradParamState*>(&base)) {
    v.tensors = {&s->sum()};
    v.step = &s->step();
  } else {
    throw ValueError("the guard supports the Adam, AdamW, SGD, RMSprop and Adagrad optimizers only");
  }
  return v;
}

std::vector<at::Tensor> optimizer_state_tensors(torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (auto& entry : optimizer.state()) {
    for (at::Tensor* t : view_state(*entry.second).tensors) {
      if (t->defined()) out.push_back(*t);
    }
  }
  return out;
}

}  // namespace nanguard::detail
