// Optimizers with Keras defaults on top of torch::optim, gradient clipping as Keras does it,
// and learning-rate access that works for every optimizer type.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

namespace nanguard {

enum class OptimizerType { sgd, adam, adamw, rmsprop };

// "adam" -> OptimizerType::adam. Throws ValueError listing the valid names.
OptimizerType parse_optimizer_type(const std::string& name);
const char* to_string(OptimizerType type);

// Keras defaults throughout. The update rules are torch::optim's, which equal Keras's for a
// constant learning rate, with two documented differences: Adam/AdamW add epsilon to the
// bias-corrected sqrt(v) (Keras adds it before the correction), and weight_decay of sgd, adam
// and rmsprop is an L2 term added to the gradient (only adamw decouples it, as Keras does).
struct OptimizerSpec {
  OptimizerSpec() = default;
  /* implicit */ OptimizerSpec(OptimizerType type) : type_(type) {}

  // Which optimizer.
  TORCH_ARG(OptimizerType, type) = OptimizerType::adam;
  // Unset = the Keras default of the type: 0.01 for sgd, 0.001 for the others.
  TORCH_ARG(std::optional<double>, learning_rate);
  // Momentum factor (sgd, rmsprop).
  TORCH_ARG(double, momentum) = 0.0;
  // Nesterov momentum (sgd; needs momentum > 0).
  TORCH_ARG(bool, nesterov) = false;
  // Decay of the first moment (adam, adamw).
  TORCH_ARG(double, beta_1) = 0.9;
  // Decay of the second moment (adam, adamw).
  TORCH_ARG(double, beta_2) = 0.999;
  // Added to the denominator (adam, adamw, rmsprop); Keras's 1e-7, not torch's 1e-8.
  TORCH_ARG(double, epsilon) = 1e-7;
  // Unset = the Keras default: 0.004 for adamw, 0 for the others.
  TORCH_ARG(std::optional<double>, weight_decay);
  // Decay of the moving average of squared gradients (rmsprop).
  TORCH_ARG(double, rho) = 0.9;
  // The AMSGrad variant (adam, adamw).
  TORCH_ARG(bool, amsgrad) = false;
  // At most one of the three clipping options may be set, as in Keras.
  // Clip each parameter's gradient to this L2 norm (Keras clipnorm); 0 = off.
  TORCH_ARG(double, clipnorm) = 0.0;
  // Clip every gradient element to [-clipvalue, clipvalue]; 0 = off.
  TORCH_ARG(double, clipvalue) = 0.0;
  // Clip all gradients together to this global L2 norm (Keras global_clipnorm); 0 = off.
  TORCH_ARG(double, global_clipnorm) = 0.0;

 public:
  double effective_learning_rate() const;
  double effective_weight_decay() const;
  // Throws ValueError naming the first option out of range.
  void validate() const;
};

// Builds the optimizer over parameters. Throws ValueError for an invalid spec or no parameters.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerSpec& spec,
                                                        std::vector<torch::Tensor> parameters);

// The learning rate of the first parameter group.
double get_learning_rate(const torch::optim::Optimizer& optimizer);
// Sets the learning rate of every parameter group (and the defaults for groups added later).
// Throws ValueError for an optimizer type without a learning rate or lr < 0.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// Applies the spec's clipping in place on the parameters' .grad() with Keras's formulas
// (g * c / max(norm, c)); parameters without a gradient are skipped; a no-op when clipping is
// off. Never syncs with the host. A non-finite gradient stays non-finite (with
// global_clipnorm it makes every gradient NaN, as in Keras).
void clip_gradients(const OptimizerSpec& spec, const std::vector<torch::Tensor>& parameters);

}  // namespace nanguard
