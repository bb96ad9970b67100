#include "nanguard/train/metrics.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "core/check.h"

namespace nanguard {
namespace {

std::string describe(const torch::Tensor& t) {
  return fmt::format("{} [{}]", c10::toString(t.scalar_type()), fmt::join(t.sizes(), ", "));
}

// Targets of the outputs' shape; [N] is accepted for [N, 1] outputs, as in compute_loss.
torch::Tensor same_shape_target(const std::string& metric, const torch::Tensor& outputs,
                                const torch::Tensor& target) {
  if (target.sizes() == outputs.sizes()) return target;
  bool trailing_one = outputs.dim() >= 1 && outputs.size(-1) == 1 &&
                      target.dim() == outputs.dim() - 1 &&
                      target.sizes() == outputs.sizes().slice(0, outputs.dim() - 1);
  NANGUARD_CHECK(trailing_one, "metric {}: expected targets of shape [{}] (the outputs' shape), got {}",
                 metric, fmt::join(outputs.sizes(), ", "), describe(target));
  return target.unsqueeze(-1);
}

}  // namespace

std::vector<std::string> metric_names() {
  return {"accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy",
          "binary_accuracy", "mse", "mean_squared_error", "mae", "mean_absolute_error"};
}

Metric::Metric(std::string name, const LossSpec& loss) : name_(std::move(name)), resolved_(name_) {
  if (name_ == "accuracy" || name_ == "acc") {
    switch (loss.type()) {
      case LossType::sparse_categorical_crossentropy: resolve(Kind::sparse_categorical); break;
      case LossType::categorical_crossentropy: resolve(Kind::categorical); break;
      case LossType::binary_crossentropy: resolve(Kind::binary); break;
      case LossType::mse:
      case LossType::mae: break;  // chosen from shapes at the first update
    }
  } else if (name_ == "sparse_categorical_accuracy") {
    resolve(Kind::sparse_categorical);
  } else if (name_ == "categorical_accuracy") {
    resolve(Kind::categorical);
  } else if (name_ == "binary_accuracy") {
    resolve(Kind::binary);
  } else if (name_ == "mse" || name_ == "mean_squared_error") {
    resolve(Kind::mse);
  } else if (name_ == "mae" || name_ == "mean_absolute_error") {
    resolve(Kind::mae);
  } else {
    throw ValueError(fmt::format("unknown metric \"{}\"; valid metrics: {}", name_,
                                 fmt::join(metric_names(), ", ")));
  }
}

void Metric::resolve(Kind kind) {
  kind_ = kind;
  switch (kind) {
    case Kind::sparse_categorical: resolved_ = "sparse_categorical_accuracy"; break;
    case Kind::categorical: resolved_ = "categorical_accuracy"; break;
    case Kind::binary: resolved_ = "binary_accuracy"; break;
    case Kind::mse: resolved_ = "mse"; break;
    case Kind::mae: resolved_ = "mae"; break;
    case Kind::unresolved_accuracy: break;
  }
}

void Metric::update(const torch::Tensor& outputs, const torch::Tensor& target) {
  torch::NoGradGuard no_grad;
  NANGUARD_CHECK(outputs.defined() && target.defined(), "metric {}: undefined outputs or target",
                 name_);
  NANGUARD_CHECK(outputs.is_floating_point() && outputs.dim() >= 1,
                 "metric {}: outputs must be floating point with a batch axis, got {}", name_,
                 describe(outputs));
  if (kind_ == Kind::unresolved_accuracy) {
    // Keras's rule for "accuracy" when the loss does not decide it.
    bool binary = outputs.size(-1) == 1;
    bool sparse = target.dim() < outputs.dim() || (target.dim() >= 1 && target.size(-1) == 1);
    resolve(binary ? Kind::binary : sparse ? Kind::sparse_categorical : Kind::categorical);
  }
  torch::Tensor values;  // one entry per counted element: 0/1 matches or errors
  switch (kind_) {
    case Kind::sparse_categorical: {
      auto batch_shape = outputs.sizes().slice(0, outputs.dim() - 1);
      torch::Tensor t = target;
      if (t.dim() == outputs.dim() && t.size(-1) == 1) t = t.squeeze(-1);
      NANGUARD_CHECK(t.sizes() == batch_shape && t.scalar_type() != torch::kBool,
                     "metric {} ({}): expected class indices of shape [{}], got {}", name_,
                     resolved_, fmt::join(batch_shape, ", "), describe(target));
      // Keras casts the argmax to the label dtype, so float labels like 3.0 also match.
      values = outputs.argmax(-1).to(t.scalar_type()).eq(t);
      break;
    }
    case Kind::categorical:
      NANGUARD_CHECK(target.sizes() == outputs.sizes(),
                     "metric {} ({}): expected one-hot targets of shape [{}], got {}", name_,
                     resolved_, fmt::join(outputs.sizes(), ", "), describe(target));
      values = outputs.argmax(-1).eq(target.argmax(-1));
      break;
    case Kind::binary: {
      torch::Tensor t = same_shape_target(resolved_, outputs, target);
      values = outputs.gt(0.5).to(t.scalar_type()).eq(t);
      break;
    }
    case Kind::mse:
    case Kind::mae: {
      torch::Tensor t = same_shape_target(resolved_, outputs, target);
      NANGUARD_CHECK(t.scalar_type() != torch::kBool, "metric {}: numeric targets expected, got {}",
                     name_, describe(target));
      torch::Tensor diff = outputs.to(torch::kDouble) - t.to(torch::kDouble);
      values = kind_ == Kind::mse ? diff.square() : diff.abs();
      break;
    }
    case Kind::unresolved_accuracy:
      NANGUARD_INTERNAL_ASSERT(false, "metric {} left unresolved", name_);
  }
  if (!sum_.defined()) sum_ = torch::zeros({}, outputs.options().dtype(torch::kDouble));
  sum_.add_(values.sum(torch::kDouble));
  count_ += values.numel();
}

double Metric::result() const {
  if (count_ == 0) return 0.0;
  return sum_.item<double>() / static_cast<double>(count_);
}

double Metric::total() const { return count_ == 0 || !sum_.defined() ? 0.0 : sum_.item<double>(); }

void Metric::set_totals(double total, int64_t count) {
  if (sum_.defined()) {
    sum_.fill_(total);
  } else {
    sum_ = torch::tensor(total, torch::kDouble);
  }
  count_ = count;
}

void Metric::reset() {
  if (sum_.defined()) sum_.zero_();
  count_ = 0;
}

}  // namespace nanguard
