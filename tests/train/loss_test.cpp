#include "nanguard/train/loss.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::throws_with;

torch::Tensor f32(std::initializer_list<float> values, std::vector<int64_t> shape) {
  return torch::tensor(std::vector<float>(values), torch::kFloat).reshape(shape);
}

double loss_value(const LossSpec& spec, const torch::Tensor& logits, const std::string& act,
                  const torch::Tensor& target) {
  return compute_loss(spec, logits, act, target).item<double>();
}

TEST(Loss, MeanSquaredAndAbsoluteErrorByHand) {
  auto out = f32({1, 2, 3, 4}, {2, 2});
  auto target = f32({0, 2, 3, 2}, {2, 2});
  // Errors 1, 0, 0, 2: squares average to 5/4, absolutes to 3/4.
  EXPECT_NEAR(loss_value(LossType::mse, out, "linear", target), 1.25, 1e-6);
  EXPECT_NEAR(loss_value(LossType::mae, out, "linear", target), 0.75, 1e-6);
}

TEST(Loss, RegressionLossesApplyTheFinalActivation) {
  // sigmoid(0) = 0.5 against 1 -> squared error 0.25.
  EXPECT_NEAR(loss_value(LossType::mse, f32({0}, {1, 1}), "sigmoid", f32({1}, {1, 1})), 0.25, 1e-6);
}

TEST(Loss, TargetWithoutTrailingOneIsAcceptedButBroadcastingIsRefused) {
  auto out = f32({1, 2, 3}, {3, 1});
  EXPECT_NEAR(loss_value(LossType::mse, out, "linear", f32({1, 2, 5}, {3})), 4.0 / 3.0, 1e-6);
  // [3] against [3, 1] would broadcast to [3, 3] in torch::mse_loss; here it is read as [3, 1].
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { compute_loss(LossType::mse, f32({1, 2, 3, 4, 5, 6}, {3, 2}), "linear", f32({1, 2, 3}, {3})); },
      {"mse expects targets of shape [3, 2]", "float32 [3]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { compute_loss(LossType::mae, out, "linear", torch::zeros({3, 1}, torch::kBool)); },
      {"mae expects numeric targets", "bool [3, 1]"}));
}

TEST(Loss, SparseCategoricalCrossentropyByHand) {
  auto logits = f32({1, 2, 3, 1, 1, 1}, {2, 3});
  auto labels = torch::tensor({2, 0}, torch::kLong);
  const double row0 = -(3.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
  const double row1 = std::log(3.0);
  const double expected = (row0 + row1) / 2;
  EXPECT_NEAR(loss_value(LossType::sparse_categorical_crossentropy, logits, "softmax", labels),
              expected, 1e-6);
  // The same model written with a linear output and from_logits.
  auto from_logits = LossSpec(LossType::sparse_categorical_crossentropy).from_logits(true);
  EXPECT_NEAR(loss_value(from_logits, logits, "linear", labels), expected, 1e-6);
  // The literal form agrees while nothing underflows.
  auto literal = LossSpec(LossType::sparse_categorical_crossentropy).fused(false);
  EXPECT_NEAR(loss_value(literal, logits, "softmax", labels), expected, 1e-6);
  // Probabilities given directly (linear output, not from_logits) take the clipped path.
  auto probs = torch::softmax(logits, -1);
  EXPECT_NEAR(loss_value(LossType::sparse_categorical_crossentropy, probs, "linear", labels),
              expected, 1e-6);
}

TEST(Loss, SparseLabelsMayBeInt32OrHaveATrailingOne) {
  auto logits = f32({1, 2, 3, 1, 1, 1}, {2, 3});
  auto labels = torch::tensor({2, 0}, torch::kLong);
  double reference = loss_value(LossType::sparse_categorical_crossentropy, logits, "softmax", labels);
  EXPECT_DOUBLE_EQ(loss_value(LossType::sparse_categorical_crossentropy, logits, "softmax",
                              labels.to(torch::kInt)),
                   reference);
  EXPECT_DOUBLE_EQ(loss_value(LossType::sparse_categorical_crossentropy, logits, "softmax",
                              labels.reshape({2, 1})),
                   reference);
}

TEST(Loss, SparseCrossentropyOverASequenceAveragesEveryPosition) {
  torch::manual_seed(0);
  auto logits = torch::randn({2, 3, 4});
  auto labels = torch::randint(0, 4, {2, 3}, torch::kLong);
  double flat = loss_value(LossType::sparse_categorical_crossentropy, logits.reshape({6, 4}),
                           "softmax", labels.reshape({6}));
  EXPECT_NEAR(loss_value(LossType::sparse_categorical_crossentropy, logits, "softmax", labels), flat,
              1e-6);
}

TEST(Loss, CategoricalCrossentropyWithSoftTargetsByHand) {
  // exp of the logits: 1, 3, 1 -> probabilities 0.2, 0.6, 0.2.
  auto logits = f32({0, static_cast<float>(std::log(3.0)), 0}, {1, 3});
  auto target = f32({0.25f, 0.75f, 0}, {1, 3});
  const double expected = -(0.25 * std::log(0.2) + 0.75 * std::log(0.6));
  EXPECT_NEAR(loss_value(LossType::categorical_crossentropy, logits, "softmax", target), expected,
              1e-6);
  EXPECT_NEAR(loss_value(LossSpec(LossType::categorical_crossentropy).fused(false), logits,
                         "softmax", target),
              expected, 1e-6);
  // Integer one-hot targets are accepted.
  auto one_hot = torch::tensor({0, 1, 0}, torch::kLong).reshape({1, 3});
  EXPECT_NEAR(loss_value(LossType::categorical_crossentropy, logits, "softmax", one_hot),
              -std::log(0.6), 1e-6);
}

TEST(Loss, BinaryCrossentropyByHand) {
  auto logits = f32({0, 2}, {2, 1});
  auto target = f32({1, 0}, {2, 1});
  // -log(sigmoid(0)) = log 2; -log(1 - sigmoid(2)) = log(1 + e^2).
  const double expected = (std::log(2.0) + std::log(1 + std::exp(2.0))) / 2;
  EXPECT_NEAR(loss_value(LossType::binary_crossentropy, logits, "sigmoid", target), expected, 1e-6);
  EXPECT_NEAR(loss_value(LossSpec(LossType::binary_crossentropy).from_logits(true), logits,
                         "linear", target),
              expected, 1e-6);
  EXPECT_NEAR(loss_value(LossSpec(LossType::binary_crossentropy).fused(false), logits, "sigmoid",
                         target),
              expected, 1e-5);
  // Integer targets of shape [N] for an [N, 1] output.
  EXPECT_NEAR(loss_value(LossType::binary_crossentropy, logits, "sigmoid",
                         torch::tensor({1, 0}, torch::kLong)),
              expected, 1e-6);
}

TEST(Loss, ActivationWithoutAFusedFormTakesTheProbabilityPath) {
  // Categorical CE after a sigmoid: sigmoid(0) = 0.5 twice, normalised to 0.5 / 0.5 as Keras does.
  EXPECT_NEAR(loss_value(LossType::categorical_crossentropy, f32({0, 0}, {1, 2}), "sigmoid",
                         f32({1, 0}, {1, 2})),
              std::log(2.0), 1e-6);
  // Binary CE after a softmax over one unit: p = 1, clipped to 1 - 1e-7, against target 0.
  double clipped = loss_value(LossType::binary_crossentropy, f32({3}, {1, 1}), "softmax", f32({0}, {1, 1}));
  EXPECT_NEAR(clipped, -std::log(1.0 - static_cast<double>(1.0f - 1e-7f)), 1e-2);
}

TEST(Loss, KeepsTheOutputDtype) {
  auto logits = torch::tensor({1.0, 2.0, 3.0}, torch::kDouble).reshape({1, 3});
  auto loss = compute_loss(LossType::sparse_categorical_crossentropy, logits, "softmax",
                           torch::tensor({2}, torch::kLong));
  EXPECT_EQ(loss.scalar_type(), torch::kDouble);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0, 1e-14);
}

TEST(Loss, ProbabilitiesGivenDirectlyAreClippedLikeKeras) {
  // p = 0 for a positive target: Keras clips to 1e-7, so the loss is -log(1e-7) ~ 16.118.
  auto probs = f32({0.0f, 0.8f}, {2, 1});
  auto target = f32({1, 1}, {2, 1});
  const double expected = (-std::log(static_cast<double>(1e-7f)) - std::log(0.8)) / 2;
  EXPECT_NEAR(loss_value(LossType::binary_crossentropy, probs, "linear", target), expected, 1e-4);
  // The literal form takes log(0).
  auto literal = LossSpec(LossType::binary_crossentropy).fused(false);
  EXPECT_TRUE(std::isinf(loss_value(literal, probs, "linear", target)));
  // p = 0 with target 0 in the literal form: 0 * log(0) is NaN, as in a hand-written loss.
  EXPECT_TRUE(std::isnan(loss_value(literal, f32({0.0f}, {1, 1}), "linear", f32({0}, {1, 1}))));
}

TEST(Loss, StableFormsStayFiniteOnExtremeLogitsWhereTheLiteralFormsFail) {
  torch::manual_seed(1);
  for (float scale : {50.0f, 1000.0f}) {
    SCOPED_TRACE(scale);
    auto base = torch::randn({8, 10});
    auto logits = (base * scale).requires_grad_(true);
    // Labels that are never the arg max, so their softmax probability underflows to 0.
    auto labels = (base.argmax(-1) + 1).remainder(10);
    auto stable = compute_loss(LossType::sparse_categorical_crossentropy, logits, "softmax", labels);
    EXPECT_TRUE(std::isfinite(stable.item<double>()));
    stable.backward();
    EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
    // Reference in float64.
    auto ref = torch::nll_loss(torch::log_softmax(logits.detach().to(torch::kDouble), -1), labels);
    EXPECT_NEAR(stable.item<double>(), ref.item<double>(), 1e-4 * ref.item<double>());

    auto naive = compute_loss(LossSpec(LossType::sparse_categorical_crossentropy).fused(false),
                              logits, "softmax", labels);
    if (scale == 1000.0f) EXPECT_FALSE(std::isfinite(naive.item<double>()));
    auto one_hot = torch::one_hot(labels, 10).to(torch::kFloat);
    auto naive_cat = compute_loss(LossSpec(LossType::categorical_crossentropy).fused(false),
                                  logits, "softmax", one_hot);
    EXPECT_TRUE(std::isnan(naive_cat.item<double>()));  // 0 * log(0) for the other classes
    auto stable_cat = compute_loss(LossType::categorical_crossentropy, logits, "softmax", one_hot);
    EXPECT_NEAR(stable_cat.item<double>(), stable.item<double>(), 1e-4 * stable.item<double>());
  }
}

TEST(Loss, SparseLiteralFormFailsOnAConfidentWrongAnswer) {
  // The right class 150 below the winner: e^-150 underflows to 0 in float32, so the literal
  // -log(p) is inf while log_softmax gives 150.
  auto logits = f32({150, 0}, {1, 2});
  auto labels = torch::tensor({1}, torch::kLong);
  auto literal = LossSpec(LossType::sparse_categorical_crossentropy).fused(false);
  EXPECT_TRUE(std::isinf(loss_value(literal, logits, "softmax", labels)));
  EXPECT_NEAR(loss_value(LossType::sparse_categorical_crossentropy, logits, "softmax", labels), 150.0,
              1e-3);
}

TEST(Loss, BinaryStableFormsStayFiniteOnSaturatedSigmoids) {
  auto logits = f32({50, -50, 1000}, {3, 1}).requires_grad_(true);
  auto target = f32({0, 1, 0}, {3, 1});
  auto stable = compute_loss(LossType::binary_crossentropy, logits, "sigmoid", target);
  EXPECT_NEAR(stable.item<double>(), (50.0 + 50.0 + 1000.0) / 3, 1e-2);
  stable.backward();
  EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
  auto naive =
      compute_loss(LossSpec(LossType::binary_crossentropy).fused(false), logits, "sigmoid", target);
  EXPECT_FALSE(std::isfinite(naive.item<double>()));
  // Sigmoid outputs fed as probabilities with fused=true are clipped: finite, about -log(1e-7).
  auto clipped = compute_loss(LossType::binary_crossentropy, torch::sigmoid(logits), "linear", target);
  EXPECT_TRUE(std::isfinite(clipped.item<double>()));
  EXPECT_NEAR(clipped.item<double>(), 15.9, 0.3);
}

TEST(Loss, FromLogitsNeedsALinearOutput) {
  auto logits = f32({1, 2}, {1, 2});
  auto labels = torch::tensor({0}, torch::kLong);
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossSpec(LossType::sparse_categorical_crossentropy).from_logits(true), logits,
                     "softmax", labels);
      },
      {"from_logits=true", "softmax"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { compute_loss(LossSpec(LossType::mse).from_logits(true), logits, "linear", logits); },
      {"mse", "from_logits applies only to the cross-entropy losses"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { compute_loss(LossType::sparse_categorical_crossentropy, logits, "relu", labels); },
      {"softmax, sigmoid or linear", "\"relu\""}));
}

TEST(Loss, SparseTargetsOfTheWrongKindAreNamed) {
  auto logits = torch::zeros({4, 10});
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossType::sparse_categorical_crossentropy, logits, "softmax",
                     torch::zeros({4, 10}));
      },
      {"sparse_categorical_crossentropy expects int64 class indices of shape [4], got float32 [4, 10]",
       "categorical_crossentropy"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossType::sparse_categorical_crossentropy, logits, "softmax",
                     torch::zeros({5}, torch::kLong));
      },
      {"shape [4]", "int64 [5]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossType::sparse_categorical_crossentropy, torch::zeros({4}), "softmax",
                     torch::zeros({4}, torch::kLong));
      },
      {"class axis", "[4]"}));
}

TEST(Loss, SparseLabelsOutOfRangeAreNamed) {
  auto logits = torch::zeros({3, 10});
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossType::sparse_categorical_crossentropy, logits, "softmax",
                     torch::tensor({1, 10, 2}, torch::kLong));
      },
      {"label 10", "[0, 10)"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossType::sparse_categorical_crossentropy, logits, "softmax",
                     torch::tensor({-1, 3, 2}, torch::kLong));
      },
      {"label -1", "[0, 10)"}));
  // With the check off, a valid batch gives the same loss.
  auto labels = torch::tensor({1, 9, 0}, torch::kLong);
  auto unchecked = LossSpec(LossType::sparse_categorical_crossentropy).check_labels(false);
  EXPECT_NEAR(loss_value(unchecked, logits, "softmax", labels), std::log(10.0), 1e-6);
}

TEST(Loss, CategoricalTargetsOfTheWrongKindAreNamed) {
  auto logits = torch::zeros({4, 10});
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossType::categorical_crossentropy, logits, "softmax",
                     torch::zeros({4}, torch::kLong));
      },
      {"categorical_crossentropy expects one-hot or probability targets of shape [4, 10]",
       "int64 [4]", "sparse_categorical_crossentropy"}));
}

TEST(Loss, BadModelOutputsAreRefused) {
  auto labels = torch::zeros({0}, torch::kLong);
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { compute_loss(LossType::sparse_categorical_crossentropy, torch::zeros({0, 3}), "softmax", labels); },
      {"empty", "[0, 3]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        compute_loss(LossType::mse, torch::zeros({2, 1}, torch::kLong), "linear", torch::zeros({2, 1}));
      },
      {"floating point", "int64 [2, 1]"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { compute_loss(LossType::mse, torch::Tensor(), "linear", torch::zeros({2, 1})); },
      {"undefined"}));
}

TEST(Loss, StableFormAndIsStable) {
  auto literal = LossSpec(LossType::sparse_categorical_crossentropy).fused(false);
  EXPECT_FALSE(is_stable(literal));
  LossSpec repaired = stable_form(literal);
  EXPECT_TRUE(is_stable(repaired));
  EXPECT_TRUE(repaired.fused());
  EXPECT_EQ(repaired.type(), LossType::sparse_categorical_crossentropy);
  EXPECT_TRUE(is_stable(LossSpec(LossType::binary_crossentropy).fused(false).from_logits(true)));
  EXPECT_TRUE(is_stable(LossSpec(LossType::mse).fused(false)));
  EXPECT_TRUE(is_stable(LossSpec()));

  // The repaired spec computes the same value where the literal one is finite.
  auto logits = f32({1, 2, 3}, {1, 3});
  auto labels = torch::tensor({1}, torch::kLong);
  EXPECT_NEAR(loss_value(literal, logits, "softmax", labels),
              loss_value(repaired, logits, "softmax", labels), 1e-6);
}

TEST(Loss, TypeNames) {
  for (auto type : {LossType::mse, LossType::mae, LossType::binary_crossentropy,
                    LossType::categorical_crossentropy, LossType::sparse_categorical_crossentropy}) {
    EXPECT_EQ(parse_loss_type(to_string(type)), type);
  }
  EXPECT_EQ(parse_loss_type("mean_squared_error"), LossType::mse);
  EXPECT_EQ(parse_loss_type("mean_absolute_error"), LossType::mae);
  EXPECT_STREQ(to_string(LossType::mse), "mse");
  EXPECT_TRUE(throws_with<ValueError>([] { parse_loss_type("crossentropy"); },
                                      {"unknown loss \"crossentropy\"", "sparse_categorical_crossentropy"}));
}

}  // namespace
}  // namespace nanguard
