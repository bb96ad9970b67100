#include "nanguard/train/optimizer.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::tensors_match;
using testing::throws_with;

torch::Tensor f64(std::initializer_list<double> values) { return torch::tensor(std::vector<double>(values), torch::kDouble); }

torch::Tensor param(std::initializer_list<double> values) { return f64(values).requires_grad_(true); }

// One optimizer step with a gradient given directly.
void step_with(torch::optim::Optimizer& opt, const torch::Tensor& p, const torch::Tensor& grad) {
  p.mutable_grad() = grad.clone();
  opt.step();
}

TEST(Optimizer, KerasDefaults) {
  EXPECT_EQ(OptimizerSpec(OptimizerType::sgd).effective_learning_rate(), 0.01);
  EXPECT_EQ(OptimizerSpec(OptimizerType::adam).effective_learning_rate(), 0.001);
  EXPECT_EQ(OptimizerSpec(OptimizerType::adamw).effective_learning_rate(), 0.001);
  EXPECT_EQ(OptimizerSpec(OptimizerType::rmsprop).effective_learning_rate(), 0.001);
  EXPECT_EQ(OptimizerSpec(OptimizerType::sgd).learning_rate(0.5).effective_learning_rate(), 0.5);
  EXPECT_EQ(OptimizerSpec(OptimizerType::adamw).effective_weight_decay(), 0.004);
  EXPECT_EQ(OptimizerSpec(OptimizerType::adam).effective_weight_decay(), 0.0);
  EXPECT_EQ(OptimizerSpec().epsilon(), 1e-7);
  EXPECT_EQ(OptimizerSpec().type(), OptimizerType::adam);
  for (auto type : {OptimizerType::sgd, OptimizerType::adam, OptimizerType::adamw, OptimizerType::rmsprop}) {
    auto opt = make_optimizer(type, {param({1.0})});
    EXPECT_DOUBLE_EQ(get_learning_rate(*opt), OptimizerSpec(type).effective_learning_rate());
  }
}

TEST(Optimizer, SgdMomentumMatchesKerasUpdateRule) {
  const double lr = 0.1, m = 0.9;
  auto p = param({1.0, -2.0});
  auto opt = make_optimizer(OptimizerSpec(OptimizerType::sgd).learning_rate(lr).momentum(m), {p});
  auto g1 = f64({0.5, 1.0});
  auto g2 = f64({-0.25, 0.5});
  // Keras: v = m * v - lr * g; w = w + v.
  auto w = f64({1.0, -2.0});
  auto v = -lr * g1;
  w = w + v;
  step_with(*opt, p, g1);
  EXPECT_TRUE(tensors_match(p.detach(), w, 1e-12, 1e-12));
  v = m * v - lr * g2;
  w = w + v;
  step_with(*opt, p, g2);
  EXPECT_TRUE(tensors_match(p.detach(), w, 1e-12, 1e-12));
  // By hand for the first coordinate: 1 - 0.05 = 0.95, then v = -0.045 + 0.025 -> 0.93.
  EXPECT_NEAR(p[0].item<double>(), 0.93, 1e-12);
}

TEST(Optimizer, SgdNesterovMatchesKerasUpdateRule) {
  const double lr = 0.1, m = 0.9;
  auto p = param({1.0});
  auto opt = make_optimizer(
      OptimizerSpec(OptimizerType::sgd).learning_rate(lr).momentum(m).nesterov(true), {p});
  // Keras: v = m * v - lr * g; w = w + m * v - lr * g.
  double w = 1.0, v = 0.0;
  for (double g : {0.5, -0.25, 1.0}) {
    v = m * v - lr * g;
    w = w + m * v - lr * g;
    step_with(*opt, p, f64({g}));
    EXPECT_NEAR(p.item<double>(), w, 1e-12);
  }
}

TEST(Optimizer, AdamTwoStepsByHand) {
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-7;
  auto p = param({1.0});
  auto opt = make_optimizer(OptimizerSpec(OptimizerType::adam).learning_rate(lr), {p});
  double w = 1.0, m = 0.0, v = 0.0;
  int t = 0;
  for (double g : {0.5, -0.3}) {
    ++t;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    double m_hat = m / (1 - std::pow(b1, t));
    double v_hat = v / (1 - std::pow(b2, t));
    w -= lr * m_hat / (std::sqrt(v_hat) + eps);
    step_with(*opt, p, f64({g}));
    EXPECT_NEAR(p.item<double>(), w, 1e-12);
  }
  EXPECT_NEAR(w, 1.0 - 0.1 * 0.5 / (0.5 + 1e-7) - 0.1 * (0.015 / 0.19) / (std::sqrt(0.00033975 / 0.001999) + 1e-7),
              1e-9);
}

TEST(Optimizer, AdamUsesKerasEpsilon) {
  // A gradient of 1e-7 makes epsilon as large as sqrt(v_hat): the step is lr * 1e-7 / 2e-7.
  // With torch's default 1e-8 it would be lr * 1e-7 / 1.1e-7.
  auto p = param({1.0});
  auto opt = make_optimizer(OptimizerSpec(OptimizerType::adam).learning_rate(0.1), {p});
  step_with(*opt, p, f64({1e-7}));
  EXPECT_NEAR(p.item<double>(), 1.0 - 0.05, 1e-9);
}

TEST(Optimizer, AdamwDecaysWeightsDecoupled) {
  auto p = param({2.0});
  auto opt = make_optimizer(OptimizerType::adamw, {p});
  // A zero gradient leaves only the decay: w * (1 - lr * weight_decay) with Keras defaults.
  step_with(*opt, p, f64({0.0}));
  EXPECT_NEAR(p.item<double>(), 2.0 * (1 - 0.001 * 0.004), 1e-15);
}

TEST(Optimizer, RmspropOneStepByHand) {
  auto p = param({1.0});
  auto opt = make_optimizer(OptimizerSpec(OptimizerType::rmsprop).learning_rate(0.01), {p});
  step_with(*opt, p, f64({0.5}));
  // v = (1 - rho) * g^2 = 0.025; w -= lr * g / (sqrt(v) + eps).
  EXPECT_NEAR(p.item<double>(), 1.0 - 0.01 * 0.5 / (std::sqrt(0.025) + 1e-7), 1e-12);
}

TEST(Optimizer, SetAndGetLearningRateForEveryType) {
  for (auto type : {OptimizerType::sgd, OptimizerType::adam, OptimizerType::adamw, OptimizerType::rmsprop}) {
    SCOPED_TRACE(to_string(type));
    auto p = param({1.0});
    auto q = param({1.0});
    auto opt = make_optimizer(type, {p});
    opt->add_param_group(torch::optim::OptimizerParamGroup({q}));
    set_learning_rate(*opt, 0.125);
    EXPECT_EQ(get_learning_rate(*opt), 0.125);
    for (const auto& group : opt->param_groups()) EXPECT_EQ(group.options().get_lr(), 0.125);
    set_learning_rate(*opt, 0.0);
    EXPECT_EQ(get_learning_rate(*opt), 0.0);
  }
  // The new rate is the one the step uses.
  auto p = param({1.0});
  auto sgd = make_optimizer(OptimizerType::sgd, {p});
  set_learning_rate(*sgd, 0.5);
  step_with(*sgd, p, f64({1.0}));
  EXPECT_DOUBLE_EQ(p.item<double>(), 0.5);
}

TEST(Optimizer, BadLearningRatesAreRefused) {
  auto opt = make_optimizer(OptimizerType::sgd, {param({1.0})});
  EXPECT_TRUE(throws_with<ValueError>([&] { set_learning_rate(*opt, -0.1); }, {"lr", "-0.1"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { set_learning_rate(*opt, std::nan("")); }, {"nan"}));
  EXPECT_EQ(get_learning_rate(*opt), 0.01);
}

TEST(Optimizer, InvalidSpecsAreRefused) {
  std::vector<torch::Tensor> params = {param({1.0})};
  auto refused = [&](const OptimizerSpec& spec, std::initializer_list<std::string> needles) {
    return throws_with<ValueError>([&] { make_optimizer(spec, params); }, needles);
  };
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::adam).learning_rate(-1.0),
                      {"adam: learning_rate must be a positive number, got -1"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::adam).learning_rate(0.0), {"learning_rate"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::adam).beta_1(1.0), {"beta_1", "[0, 1)"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::adam).beta_2(-0.1), {"beta_2"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::adam).epsilon(0.0), {"epsilon"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::sgd).nesterov(true), {"nesterov needs momentum"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::sgd).momentum(1.0), {"momentum"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::rmsprop).rho(1.5), {"rho"}));
  EXPECT_TRUE(refused(OptimizerSpec(OptimizerType::adamw).weight_decay(-1.0), {"weight_decay"}));
  EXPECT_TRUE(refused(OptimizerSpec().clipnorm(1.0).clipvalue(1.0), {"at most one of clipnorm"}));
  EXPECT_TRUE(refused(OptimizerSpec().clipnorm(-1.0), {"clipnorm must be >= 0"}));
  EXPECT_TRUE(throws_with<ValueError>([] { make_optimizer(OptimizerType::adam, {}); },
                                      {"no parameters"}));
}

TEST(Optimizer, ClipnormClipsEachParameterLikeKeras) {
  auto a = param({0.0, 0.0});
  auto b = param({0.0, 0.0});
  auto c = param({0.0});  // no gradient
  a.mutable_grad() = f64({3.0, 4.0});
  b.mutable_grad() = f64({0.3, 0.4});
  clip_gradients(OptimizerSpec().clipnorm(1.0), {a, b, c});
  EXPECT_TRUE(tensors_match(a.grad(), f64({0.6, 0.8}), 1e-12, 1e-12));
  EXPECT_TRUE(tensors_match(b.grad(), f64({0.3, 0.4}), 1e-12, 1e-12));
  EXPECT_FALSE(c.grad().defined());
}

TEST(Optimizer, GlobalClipnormScalesAllGradientsTogether) {
  auto a = param({0.0, 0.0});
  auto b = param({0.0, 0.0, 0.0});
  a.mutable_grad() = f64({3.0, 4.0});
  b.mutable_grad() = f64({0.0, 0.0, 12.0});
  // Global norm 13; clipping to 6.5 halves everything.
  clip_gradients(OptimizerSpec().global_clipnorm(6.5), {a, b});
  EXPECT_TRUE(tensors_match(a.grad(), f64({1.5, 2.0}), 1e-6, 1e-6));
  EXPECT_TRUE(tensors_match(b.grad(), f64({0.0, 0.0, 6.0}), 1e-6, 1e-6));
  clip_gradients(OptimizerSpec().global_clipnorm(100.0), {a, b});
  EXPECT_TRUE(tensors_match(a.grad(), f64({1.5, 2.0}), 1e-6, 1e-6));
}

TEST(Optimizer, ClipvalueAndOff) {
  auto a = param({0.0, 0.0, 0.0});
  a.mutable_grad() = f64({3.0, -4.0, 0.2});
  clip_gradients(OptimizerSpec(), {a});
  EXPECT_TRUE(tensors_match(a.grad(), f64({3.0, -4.0, 0.2})));
  clip_gradients(OptimizerSpec().clipvalue(0.5), {a});
  EXPECT_TRUE(tensors_match(a.grad(), f64({0.5, -0.5, 0.2})));
}

TEST(Optimizer, ClippingKeepsNonFiniteGradientsNonFinite) {
  const double inf = std::numeric_limits<double>::infinity();
  auto a = param({0.0, 0.0});
  a.mutable_grad() = f64({inf, 1.0});
  clip_gradients(OptimizerSpec().clipnorm(1.0), {a});
  EXPECT_FALSE(torch::isfinite(a.grad()).all().item<bool>());
  auto b = param({0.0, 0.0});
  auto c = param({0.0});
  b.mutable_grad() = f64({inf, 1.0});
  c.mutable_grad() = f64({1.0});
  clip_gradients(OptimizerSpec().global_clipnorm(1.0), {b, c});
  EXPECT_TRUE(torch::isnan(c.grad()).all().item<bool>());  // as tf.clip_by_global_norm
}

TEST(Optimizer, TypeNames) {
  for (auto type : {OptimizerType::sgd, OptimizerType::adam, OptimizerType::adamw, OptimizerType::rmsprop}) {
    EXPECT_EQ(parse_optimizer_type(to_string(type)), type);
  }
  EXPECT_TRUE(throws_with<ValueError>([] { parse_optimizer_type("Adam"); },
                                      {"unknown optimizer \"Adam\"", "sgd, adam, adamw, rmsprop"}));
}

}  // namespace
}  // namespace nanguard
