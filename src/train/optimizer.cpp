#include "nanguard/train/optimizer.h"

#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"

namespace nanguard {

OptimizerType parse_optimizer_type(const std::string& name) {
  if (name == "sgd") return OptimizerType::sgd;
  if (name == "adam") return OptimizerType::adam;
  if (name == "adamw") return OptimizerType::adamw;
  if (name == "rmsprop") return OptimizerType::rmsprop;
  throw ValueError(
      fmt::format("unknown optimizer \"{}\"; valid optimizers: sgd, adam, adamw, rmsprop", name));
}

const char* to_string(OptimizerType type) {
  switch (type) {
    case OptimizerType::sgd: return "sgd";
    case OptimizerType::adam: return "adam";
    case OptimizerType::adamw: return "adamw";
    case OptimizerType::rmsprop: return "rmsprop";
  }
  return "unknown";
}

double OptimizerSpec::effective_learning_rate() const {
  if (learning_rate_) return *learning_rate_;
  return type_ == OptimizerType::sgd ? 0.01 : 0.001;
}

double OptimizerSpec::effective_weight_decay() const {
  if (weight_decay_) return *weight_decay_;
  return type_ == OptimizerType::adamw ? 0.004 : 0.0;
}

void OptimizerSpec::validate() const {
  const char* name = to_string(type_);
  const double lr = effective_learning_rate();
  NANGUARD_CHECK(std::isfinite(lr) && lr > 0, "{}: learning_rate must be a positive number, got {}",
                 name, lr);
  NANGUARD_CHECK(momentum_ >= 0 && momentum_ < 1, "{}: momentum must be in [0, 1), got {}", name,
                 momentum_);
  NANGUARD_CHECK(!nesterov_ || momentum_ > 0, "{}: nesterov needs momentum > 0", name);
  NANGUARD_CHECK(beta_1_ >= 0 && beta_1_ < 1, "{}: beta_1 must be in [0, 1), got {}", name, beta_1_);
  NANGUARD_CHECK(beta_2_ >= 0 && beta_2_ < 1, "{}: beta_2 must be in [0, 1), got {}", name, beta_2_);
  NANGUARD_CHECK(std::isfinite(epsilon_) && epsilon_ > 0, "{}: epsilon must be positive, got {}",
                 name, epsilon_);
  const double wd = effective_weight_decay();
  NANGUARD_CHECK(std::isfinite(wd) && wd >= 0, "{}: weight_decay must be >= 0, got {}", name, wd);
  NANGUARD_CHECK(rho_ >= 0 && rho_ < 1, "{}: rho must be in [0, 1), got {}", name, rho_);
  for (auto [key, value] : {std::pair<const char*, double>{"clipnorm", clipnorm_},
                            {"clipvalue", clipvalue_},
                            {"global_clipnorm", global_clipnorm_}}) {
    NANGUARD_CHECK(std::isfinite(value) && value >= 0, "{}: {} must be >= 0 (0 = off), got {}",
                   name, key, value);
  }
  int clips = (clipnorm_ > 0) + (clipvalue_ > 0) + (global_clipnorm_ > 0);
  NANGUARD_CHECK(clips <= 1, "{}: set at most one of clipnorm, clipvalue and global_clipnorm", name);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerSpec& spec,
                                                        std::vector<torch::Tensor> parameters) {
  spec.validate();
  NANGUARD_CHECK(!parameters.empty(), "{}: no parameters to optimize", to_string(spec.type()));
  const double lr = spec.effective_learning_rate();
  const double wd = spec.effective_weight_decay();
  const auto betas = std::make_tuple(spec.beta_1(), spec.beta_2());
  switch (spec.type()) {
    case OptimizerType::sgd:
      return std::make_unique<torch::optim::SGD>(
          std::move(parameters), torch::optim::SGDOptions(lr)
                                     .momentum(spec.momentum())
                                     .nesterov(spec.nesterov())
                                     .weight_decay(wd));
    case OptimizerType::adam:
      return std::make_unique<torch::optim::Adam>(
          std::move(parameters), torch::optim::AdamOptions(lr)
                                     .betas(betas)
                                     .eps(spec.epsilon())
                                     .weight_decay(wd)
                                     .amsgrad(spec.amsgrad()));
    case OptimizerType::adamw:
      return std::make_unique<torch::optim::AdamW>(
          std::move(parameters), torch::optim::AdamWOptions(lr)
                                     .betas(betas)
                                     .eps(spec.epsilon())
                                     .weight_decay(wd)
                                     .amsgrad(spec.amsgrad()));
    case OptimizerType::rmsprop:
      return std::make_unique<torch::optim::RMSprop>(
          std::move(parameters), torch::optim::RMSpropOptions(lr)
                                     .alpha(spec.rho())
                                     .eps(spec.epsilon())
                                     .momentum(spec.momentum())
                                     .weight_decay(wd));
  }
  NANGUARD_INTERNAL_ASSERT(false, "unhandled optimizer type {}", static_cast<int>(spec.type()));
  return nullptr;
}

double get_learning_rate(const torch::optim::Optimizer& optimizer) {
  NANGUARD_CHECK(!optimizer.param_groups().empty(), "get_learning_rate: optimizer has no parameter groups");
  try {
    return optimizer.param_groups().front().options().get_lr();
  } catch (const c10::Error& e) {
    // OptimizerOptions::get_lr() throws for optimizer types that do not override it.
    throw ValueError(fmt::format("get_learning_rate: unsupported optimizer type ({})",
                                 e.what_without_backtrace()));
  }
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  NANGUARD_CHECK(std::isfinite(lr) && lr >= 0, "set_learning_rate: lr must be finite and >= 0, got {}",
                 lr);
  try {
    for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
    optimizer.defaults().set_lr(lr);
  } catch (const c10::Error& e) {
    throw ValueError(fmt::format("set_learning_rate: unsupported optimizer type ({})",
                                 e.what_without_backtrace()));
  }
}

void clip_gradients(const OptimizerSpec& spec, const std::vector<torch::Tensor>& parameters) {
  if (spec.clipnorm() <= 0 && spec.clipvalue() <= 0 && spec.global_clipnorm() <= 0) return;
  torch::NoGradGuard no_grad;
  if (spec.clipvalue() > 0) {
    for (const auto& p : parameters) {
      auto& g = p.grad();
      if (g.defined()) g.clamp_(-spec.clipvalue(), spec.clipvalue());
    }
  }
  if (spec.clipnorm() > 0) {
    // Keras _clip_by_norm: g * c / max(||g||, c), computed on the device.
    for (const auto& p : parameters) {
      auto& g = p.grad();
      if (!g.defined()) continue;
      g.mul_(spec.clipnorm() / g.norm().clamp_min(spec.clipnorm()));
    }
  }
  if (spec.global_clipnorm() > 0) {
    std::vector<torch::Tensor> norms;
    for (const auto& p : parameters) {
      if (p.grad().defined()) norms.push_back(p.grad().norm().to(torch::kFloat));
    }
    if (norms.empty()) return;
    torch::Tensor total = torch::stack(norms).norm();
    // As tf.clip_by_global_norm: (total - total) is NaN for a non-finite norm, so a non-finite
    // gradient anywhere poisons every gradient instead of being scaled to zero.
    torch::Tensor scale =
        spec.global_clipnorm() / total.clamp_min(spec.global_clipnorm()) + (total - total);
    for (const auto& p : parameters) {
      auto& g = p.grad();
      if (g.defined()) g.mul_(scale.to(g.scalar_type()));
    }
  }
}

}  // namespace nanguard
