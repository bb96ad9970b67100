// The optimizer adapter of a Python torch.optim.Optimizer: the guard's optimizer seam
// (nanguard/guard/optimizer_adapter.h) implemented by calls into Python.
//
// Learning rates and epsilons are read from and written to optimizer.param_groups; the state of
// each parameter is optimizer.state[p], every tensor value of it (its keys in sorted order) plus
// a numeric "step" when it is not a tensor. Snapshots copy those tensors and load_state copies
// them back in place, so a rollback restores the optimizer exactly. Values that are neither
// tensors nor a numeric step (an optimizer with Python lists in its state) are left alone.
//
// Every call runs Python and needs the GIL: the guard calls it only from the thread that called
// into the guard from Python, which holds it.
#pragma once

#include <string>
#include <vector>

#include <pybind11/pybind11.h>

#include "nanguard/guard/optimizer_adapter.h"

namespace nanguard::python {

class PyOptimizer final : public OptimizerAdapter {
 public:
  // Throws ValueError when `optimizer` is not a torch.optim.Optimizer or holds no parameter.
  explicit PyOptimizer(pybind11::object optimizer);

  std::string name() const override { return name_; }
  void step() override;
  std::vector<at::Tensor> parameters() const override { return params_; }
  size_t num_groups() const override;
  double learning_rate(size_t group) const override;
  std::vector<double> learning_rates() const override;  // one read of param_groups
  void set_learning_rate(size_t group, double lr) override;
  double epsilon(size_t group) const override;
  void set_epsilon(size_t group, double eps) override;
  std::vector<OptimizerParamStateView> state() override;
  void load_state(const std::vector<OptimizerParamStateView>& saved) override;
  std::vector<at::Tensor> second_moments() override;

  const pybind11::object& optimizer() const { return optimizer_; }

 private:
  pybind11::object group(size_t g) const;

  pybind11::object optimizer_;
  // Keys made once: the guard reads the learning rates on every step.
  pybind11::str param_groups_key_{"param_groups"};
  pybind11::str lr_key_{"lr"};
  std::string name_;
  std::vector<pybind11::object> py_params_;  // the Parameter objects: keys of optimizer.state
  std::vector<at::Tensor> params_;
  // Per parameter: the keys of its tensors in the order state() lists them, and whether its
  // "step" is a plain number (kept in OptimizerParamStateView::step).
  std::vector<std::vector<std::string>> keys_;
  std::vector<int> numeric_step_;  // 0: none, 1: int, 2: float
};

}  // namespace nanguard::python
