#include "nanguard/train/loss.h"

#include <array>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "core/check.h"

namespace nanguard {
namespace {

// Keras backend.epsilon(): the clipping bound of the probability path.
constexpr double kEpsilon = 1e-7;

constexpr std::array<std::pair<const char*, LossType>, 7> kLossNames = {{
    {"mse", LossType::mse},
    {"mae", LossType::mae},
    {"binary_crossentropy", LossType::binary_crossentropy},
    {"categorical_crossentropy", LossType::categorical_crossentropy},
    {"sparse_categorical_crossentropy", LossType::sparse_categorical_crossentropy},
    {"mean_squared_error", LossType::mse},
    {"mean_absolute_error", LossType::mae},
}};

enum class Activation { linear, softmax, sigmoid };

Activation parse_activation(LossType type, const std::string& name) {
  if (name == "linear") return Activation::linear;
  if (name == "softmax") return Activation::softmax;
  if (name == "sigmoid") return Activation::sigmoid;
  throw ValueError(fmt::format(
      "{}: the model's final activation must be softmax, sigmoid or linear, got \"{}\"",
      to_string(type), name));
}

const char* to_string(Activation a) {
  switch (a) {
    case Activation::linear: return "linear";
    case Activation::softmax: return "softmax";
    case Activation::sigmoid: return "sigmoid";
  }
  return "?";
}

std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case torch::kFloat: return "float32";
    case torch::kDouble: return "float64";
    case torch::kHalf: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kLong: return "int64";
    case torch::kInt: return "int32";
    case torch::kShort: return "int16";
    case torch::kChar: return "int8";
    case torch::kByte: return "uint8";
    case torch::kBool: return "bool";
    default: return c10::toString(t);
  }
}

std::string shape_str(c10::IntArrayRef sizes) { return fmt::format("[{}]", fmt::join(sizes, ", ")); }

std::string describe(const torch::Tensor& t) {
  return fmt::format("{} {}", dtype_name(t.scalar_type()), shape_str(t.sizes()));
}

bool is_integral(const torch::Tensor& t) {
  return c10::isIntegralType(t.scalar_type(), /*includeBool=*/false);
}

torch::Tensor activate(const torch::Tensor& logits, Activation a) {
  switch (a) {
    case Activation::softmax: return torch::softmax(logits, -1);
    case Activation::sigmoid: return torch::sigmoid(logits);
    case Activation::linear: return logits;
  }
  return logits;
}

// Targets of the output's shape (binary CE, mse, mae). A missing trailing 1 ([N] for [N, 1])
// is accepted as Keras does; anything else would broadcast to [N, N] silently, so it is refused.
torch::Tensor dense_target(LossType type, const torch::Tensor& output, const torch::Tensor& target) {
  NANGUARD_CHECK(target.scalar_type() != torch::kBool || type == LossType::binary_crossentropy,
                 "{} expects numeric targets, got {}", to_string(type), describe(target));
  NANGUARD_CHECK(target.is_floating_point() || c10::isIntegralType(target.scalar_type(), true),
                 "{} expects real-valued targets, got {}", to_string(type), describe(target));
  torch::Tensor t = target;
  if (t.sizes() != output.sizes()) {
    bool trailing_one = output.dim() >= 1 && output.size(-1) == 1 && t.dim() == output.dim() - 1 &&
                        t.sizes() == output.sizes().slice(0, output.dim() - 1);
    NANGUARD_CHECK(trailing_one, "{} expects targets of shape {} (the model output's shape), got {}",
                   to_string(type), shape_str(output.sizes()), describe(target));
    t = t.unsqueeze(-1);
  }
  return t.scalar_type() == output.scalar_type() ? t : t.to(output.scalar_type());
}

torch::Tensor keras_clip(const torch::Tensor& p) { return p.clamp(kEpsilon, 1.0 - kEpsilon); }

torch::Tensor sparse_ce(const LossSpec& spec, const torch::Tensor& logits, Activation act,
                        const torch::Tensor& target) {
  const int64_t classes = logits.size(-1);
  auto batch_shape = logits.sizes().slice(0, logits.dim() - 1);
  bool shape_ok = target.sizes() == batch_shape ||
                  (target.dim() == logits.dim() && target.size(-1) == 1 &&
                   target.sizes().slice(0, target.dim() - 1) == batch_shape);
  NANGUARD_CHECK(is_integral(target) && shape_ok,
                 "sparse_categorical_crossentropy expects int64 class indices of shape {}, got {}{}",
                 shape_str(batch_shape), describe(target),
                 target.sizes() == logits.sizes() && !is_integral(target)
                     ? " (one-hot targets need categorical_crossentropy)"
                     : "");
  torch::Tensor labels = target.reshape({-1});
  if (labels.scalar_type() != torch::kLong) labels = labels.to(torch::kLong);
  if (spec.check_labels()) {
    auto minmax = torch::aminmax(labels);
    // One transfer for both values: a single host sync.
    auto both = torch::stack({std::get<0>(minmax), std::get<1>(minmax)}).cpu();
    const int64_t lo = both[0].item<int64_t>();
    const int64_t hi = both[1].item<int64_t>();
    NANGUARD_CHECK(lo >= 0 && hi < classes,
                   "sparse_categorical_crossentropy: label {} is out of range [0, {}) (the model "
                   "has {} outputs)",
                   lo < 0 ? lo : hi, classes, classes);
  }
  torch::Tensor flat = logits.reshape({-1, classes});
  if (spec.from_logits() || (spec.fused() && act == Activation::softmax)) {
    return torch::nll_loss(torch::log_softmax(flat, -1), labels);
  }
  torch::Tensor p = activate(flat, act);
  if (spec.fused()) p = keras_clip(p / p.sum(-1, /*keepdim=*/true));
  return -torch::log(p.gather(1, labels.unsqueeze(1))).mean();
}

torch::Tensor categorical_ce(const LossSpec& spec, const torch::Tensor& logits, Activation act,
                             const torch::Tensor& target) {
  NANGUARD_CHECK(target.sizes() == logits.sizes() && target.scalar_type() != torch::kBool,
                 "categorical_crossentropy expects one-hot or probability targets of shape {}, "
                 "got {}{}",
                 shape_str(logits.sizes()), describe(target),
                 is_integral(target) && target.dim() < logits.dim()
                     ? " (class indices need sparse_categorical_crossentropy)"
                     : "");
  torch::Tensor t = target.scalar_type() == logits.scalar_type() ? target : target.to(logits.scalar_type());
  torch::Tensor log_p;
  if (spec.from_logits() || (spec.fused() && act == Activation::softmax)) {
    log_p = torch::log_softmax(logits, -1);
  } else {
    torch::Tensor p = activate(logits, act);
    if (spec.fused()) p = keras_clip(p / p.sum(-1, /*keepdim=*/true));
    log_p = torch::log(p);
  }
  return -(t * log_p).sum(-1).mean();
}

torch::Tensor binary_ce(const LossSpec& spec, const torch::Tensor& logits, Activation act,
                        const torch::Tensor& target) {
  torch::Tensor t = dense_target(LossType::binary_crossentropy, logits, target);
  if (spec.from_logits() || (spec.fused() && act == Activation::sigmoid)) {
    return torch::binary_cross_entropy_with_logits(logits, t);
  }
  torch::Tensor p = activate(logits, act);
  if (spec.fused()) p = keras_clip(p);
  // Written out: torch::binary_cross_entropy clamps its logs at -100 and would hide log(0).
  return -(t * torch::log(p) + (1 - t) * torch::log(1 - p)).mean();
}

}  // namespace

LossType parse_loss_type(const std::string& name) {
  for (const auto& [n, type] : kLossNames) {
    if (name == n) return type;
  }
  throw ValueError(fmt::format(
      "unknown loss \"{}\"; valid losses: mse, mae, binary_crossentropy, categorical_crossentropy, "
      "sparse_categorical_crossentropy",
      name));
}

const char* to_string(LossType type) {
  for (const auto& [n, t] : kLossNames) {
    if (t == type) return n;
  }
  return "unknown";
}

void LossSpec::validate() const {
  bool cross_entropy = type_ != LossType::mse && type_ != LossType::mae;
  NANGUARD_CHECK(cross_entropy || !from_logits_,
                 "{}: from_logits applies only to the cross-entropy losses", to_string(type_));
}

torch::Tensor compute_loss(const LossSpec& spec, const torch::Tensor& logits,
                           const std::string& output_activation, const torch::Tensor& target) {
  spec.validate();
  const char* name = to_string(spec.type());
  Activation act = parse_activation(spec.type(), output_activation);
  NANGUARD_CHECK(logits.defined() && target.defined(), "{}: undefined logits or target tensor", name);
  NANGUARD_CHECK(logits.is_floating_point(), "{}: the model output must be floating point, got {}",
                 name, describe(logits));
  NANGUARD_CHECK(logits.dim() >= 1 && logits.numel() > 0,
                 "{}: the model output is empty ({}); a batch needs at least one sample", name,
                 describe(logits));
  NANGUARD_CHECK(!spec.from_logits() || act == Activation::linear,
                 "{}: from_logits=true needs a model whose final activation is linear, but it is "
                 "{}; remove the final {} or set from_logits=false",
                 name, to_string(act), to_string(act));
  switch (spec.type()) {
    case LossType::mse:
    case LossType::mae: {
      torch::Tensor out = activate(logits, act);
      torch::Tensor diff = out - dense_target(spec.type(), out, target);
      return spec.type() == LossType::mse ? diff.square().mean() : diff.abs().mean();
    }
    case LossType::binary_crossentropy:
      return binary_ce(spec, logits, act, target);
    case LossType::categorical_crossentropy:
    case LossType::sparse_categorical_crossentropy:
      NANGUARD_CHECK(logits.dim() >= 2,
                     "{} needs a model output with a class axis ([N, C]), got {}", name,
                     describe(logits));
      return spec.type() == LossType::sparse_categorical_crossentropy
                 ? sparse_ce(spec, logits, act, target)
                 : categorical_ce(spec, logits, act, target);
  }
  NANGUARD_INTERNAL_ASSERT(false, "unhandled loss type {}", static_cast<int>(spec.type()));
  return {};
}

LossSpec stable_form(const LossSpec& spec) {
  LossSpec stable = spec;
  stable.fused(true);
  return stable;
}

bool is_stable(const LossSpec& spec) {
  return spec.fused() || spec.from_logits() || spec.type() == LossType::mse ||
         spec.type() == LossType::mae;
}

}  // namespace nanguard
