// The optimizer adapter of LibTorch's optimizers. The optimizer's type is found once, at
// construction; every later call casts its state statically.
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>

#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/guard/optimizer_adapter.h"
#include "nanguard/trace/tracer.h"

namespace nanguard {

std::vector<at::Tensor> OptimizerAdapter::state_tensors() {
  std::vector<at::Tensor> out;
  for (auto& entry : state()) {
    for (auto& t : entry.tensors) {
      if (t.defined()) out.push_back(t);
    }
  }
  return out;
}

std::vector<double> OptimizerAdapter::learning_rates() const {
  std::vector<double> out(num_groups());
  for (size_t g = 0; g < out.size(); ++g) out[g] = learning_rate(g);
  return out;
}

void OptimizerAdapter::set_learning_rates(const std::vector<double>& rates) {
  for (size_t g = 0; g < num_groups() && g < rates.size(); ++g) set_learning_rate(g, rates[g]);
}

void OptimizerAdapter::scale_learning_rates(double factor) {
  for (size_t g = 0; g < num_groups(); ++g) set_learning_rate(g, learning_rate(g) * factor);
}

namespace {

using namespace torch::optim;

enum class Kind { sgd, adam, adamw, rmsprop, adagrad };

// The optimizer's state map is keyed by std::string in LibTorch 1.13 and by void* in 2.x.
using StateMap = std::remove_reference_t<decltype(std::declval<Optimizer&>().state())>;
using StateKey = typename StateMap::key_type;

template <typename Key = StateKey>
Key key_of(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;  // as LibTorch 1.13 writes it: the TensorImpl's address
    key << p.unsafeGetTensorImpl();
    return key.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

Kind kind_of(Optimizer& o) {
  if (dynamic_cast<SGD*>(&o)) return Kind::sgd;
  if (dynamic_cast<Adam*>(&o)) return Kind::adam;
  if (dynamic_cast<AdamW*>(&o)) return Kind::adamw;
  if (dynamic_cast<RMSprop*>(&o)) return Kind::rmsprop;
  if (dynamic_cast<Adagrad*>(&o)) return Kind::adagrad;
  throw ValueError("the guard supports the Adam, AdamW, SGD, RMSprop and Adagrad optimizers only");
}

// The tensors of one parameter's state, and its step counter, by optimizer kind.
struct StateFields {
  std::vector<at::Tensor*> tensors;
  int64_t* step = nullptr;
  at::Tensor* second_moment = nullptr;
};

StateFields fields_of(Kind kind, OptimizerParamState& base) {
  StateFields f;
  switch (kind) {
    case Kind::sgd: {
      auto& s = static_cast<SGDParamState&>(base);
      f.tensors = {&s.momentum_buffer()};
      break;
    }
    case Kind::adam: {
      auto& s = static_cast<AdamParamState&>(base);
      f.tensors = {&s.exp_avg(), &s.exp_avg_sq(), &s.max_exp_avg_sq()};
      f.step = &s.step();
      f.second_moment = &s.exp_avg_sq();
      break;
    }
    case Kind::adamw: {
      auto& s = static_cast<AdamWParamState&>(base);
      f.tensors = {&s.exp_avg(), &s.exp_avg_sq(), &s.max_exp_avg_sq()};
      f.step = &s.step();
      f.second_moment = &s.exp_avg_sq();
      break;
    }
    case Kind::rmsprop: {
      auto& s = static_cast<RMSpropParamState&>(base);
      f.tensors = {&s.square_avg(), &s.momentum_buffer(), &s.grad_avg()};
      f.step = &s.step();
      f.second_moment = &s.square_avg();
      break;
    }
    case Kind::adagrad: {
      auto& s = static_cast<AdagradParamState&>(base);
      f.tensors = {&s.sum()};
      f.step = &s.step();
      f.second_moment = &s.sum();
      break;
    }
  }
  return f;
}

std::unique_ptr<OptimizerParamState> new_state(Kind kind) {
  switch (kind) {
    case Kind::sgd: return std::make_unique<SGDParamState>();
    case Kind::adam: return std::make_unique<AdamParamState>();
    case Kind::adamw: return std::make_unique<AdamWParamState>();
    case Kind::rmsprop: return std::make_unique<RMSpropParamState>();
    case Kind::adagrad: return std::make_unique<AdagradParamState>();
  }
  return nullptr;
}

class LibTorchOptimizer final : public OptimizerAdapter {
 public:
  explicit LibTorchOptimizer(Optimizer& optimizer) : optimizer_(optimizer), kind_(kind_of(optimizer)) {
    for (auto& group : optimizer_.param_groups()) {
      for (auto& p : group.params()) {
        params_.push_back(p);
        keys_.push_back(key_of(p));
      }
    }
  }

  std::string name() const override {
    switch (kind_) {
      case Kind::sgd: return "sgd";
      case Kind::adam: return "adam";
      case Kind::adamw: return "adamw";
      case Kind::rmsprop: return "rmsprop";
      case Kind::adagrad: return "adagrad";
    }
    return "?";
  }

  void step() override {
    trace::PhaseScope phase(trace::Phase::optimizer);
    optimizer_.step();
  }

  std::vector<at::Tensor> parameters() const override { return params_; }
  size_t num_groups() const override { return optimizer_.param_groups().size(); }
  double learning_rate(size_t g) const override { return optimizer_.param_groups()[g].options().get_lr(); }
  void set_learning_rate(size_t g, double lr) override { optimizer_.param_groups()[g].options().set_lr(lr); }

  double epsilon(size_t g) const override {
    const double* eps = epsilon_of(const_cast<Optimizer&>(optimizer_).param_groups()[g].options());
    return eps ? *eps : std::numeric_limits<double>::quiet_NaN();
  }

  void set_epsilon(size_t g, double eps) override {
    if (double* field = epsilon_of(optimizer_.param_groups()[g].options())) *field = eps;
  }

  std::vector<OptimizerParamStateView> state() override {
    std::vector<OptimizerParamStateView> out;
    auto& live = optimizer_.state();
    if (live.empty()) return out;
    for (size_t i = 0; i < keys_.size(); ++i) {
      auto it = live.find(keys_[i]);
      if (it == live.end()) continue;
      StateFields f = fields_of(kind_, *it->second);
      OptimizerParamStateView v;
      v.param = static_cast<int64_t>(i);
      for (at::Tensor* t : f.tensors) v.tensors.push_back(*t);
      v.step = f.step ? *f.step : 0;
      out.push_back(std::move(v));
    }
    return out;
  }

  void load_state(const std::vector<OptimizerParamStateView>& saved) override {
    torch::NoGradGuard no_grad;
    auto& live = optimizer_.state();
    std::vector<bool> keep(keys_.size(), false);
    for (const auto& s : saved) {
      if (s.param < 0 || s.param >= static_cast<int64_t>(keys_.size())) continue;
      keep[static_cast<size_t>(s.param)] = true;
      auto& slot = live[keys_[static_cast<size_t>(s.param)]];
      if (!slot) slot = new_state(kind_);  // state the optimizer had then and dropped since
      StateFields f = fields_of(kind_, *slot);
      for (size_t k = 0; k < f.tensors.size() && k < s.tensors.size(); ++k) {
        at::Tensor& dst = *f.tensors[k];
        const at::Tensor& src = s.tensors[k];
        if (src.defined() && dst.defined() && dst.sizes() == src.sizes() && dst.dtype() == src.dtype()) {
          dst.copy_(src);
        } else {
          dst = src.defined() ? src.clone() : at::Tensor();
        }
      }
      if (f.step) *f.step = s.step;
    }
    // State created after the snapshot (e.g. before the first step) must disappear, so the
    // optimizer behaves exactly as it did then.
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (!keep[i]) live.erase(keys_[i]);
    }
  }

  std::vector<at::Tensor> second_moments() override {
    std::vector<at::Tensor> out;
    if (kind_ == Kind::sgd) return out;
    for (auto& entry : optimizer_.state()) {
      at::Tensor* t = fields_of(kind_, *entry.second).second_moment;
      if (t != nullptr && t->defined()) out.push_back(*t);
    }
    return out;
  }

 private:
  // A group's epsilon field; null for SGD, which has none.
  double* epsilon_of(OptimizerOptions& o) const {
    switch (kind_) {
      case Kind::sgd: return nullptr;
      case Kind::adam: return &static_cast<AdamOptions&>(o).eps();
      case Kind::adamw: return &static_cast<AdamWOptions&>(o).eps();
      case Kind::rmsprop: return &static_cast<RMSpropOptions&>(o).eps();
      case Kind::adagrad: return &static_cast<AdagradOptions&>(o).eps();
    }
    return nullptr;
  }

  Optimizer& optimizer_;
  Kind kind_;
  std::vector<at::Tensor> params_;
  std::vector<StateKey> keys_;
};

}  // namespace

std::unique_ptr<OptimizerAdapter> make_optimizer_adapter(torch::optim::Optimizer& optimizer) {
  return std::make_unique<LibTorchOptimizer>(optimizer);
}

}  // namespace nanguard
