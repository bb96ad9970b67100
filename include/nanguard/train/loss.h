// Losses with Keras semantics, computed from the model's pre-activation output so that the
// numerically stable form can be chosen (log_softmax instead of log(softmax(x))), and with an
// opt-in literal form that reproduces the log(0) failures of hand-written losses.
#pragma once

#include <string>

#include <torch/arg.h>
#include <torch/types.h>

namespace nanguard {

enum class LossType {
  mse,
  mae,
  binary_crossentropy,
  categorical_crossentropy,
  sparse_categorical_crossentropy,
};

// "sparse_categorical_crossentropy" -> LossType::sparse_categorical_crossentropy; Keras aliases
// "mean_squared_error" and "mean_absolute_error" are accepted. Throws ValueError listing the
// valid names.
LossType parse_loss_type(const std::string& name);
// The canonical Keras name of a loss type.
const char* to_string(LossType type);

// How the loss is computed. Keras defaults.
struct LossSpec {
  LossSpec() = default;
  /* implicit */ LossSpec(LossType type) : type_(type) {}

  // Which loss.
  TORCH_ARG(LossType, type) = LossType::sparse_categorical_crossentropy;
  // The model ends in a linear layer and its output is logits (Keras from_logits). Only for
  // the cross-entropy losses; the model's final activation must then be "linear".
  TORCH_ARG(bool, from_logits) = false;
  // When the model ends in softmax (categorical losses) or sigmoid (binary), compute from the
  // pre-activation logits through the stable path, as Keras does. When probabilities are given
  // directly, clip them to [1e-7, 1 - 1e-7] as Keras does. false = the literal formula on the
  // probabilities with a plain log and no clipping (finite only while no probability is 0 or 1).
  TORCH_ARG(bool, fused) = true;
  // Check that sparse labels lie in [0, C) on every call (one min/max and one host sync).
  // Switch off in a loop that must stay sync-free and whose labels were validated up front.
  // Target dtype and shape are always checked (they cost nothing).
  TORCH_ARG(bool, check_labels) = true;

 public:
  // Throws ValueError for inconsistent options (from_logits on a regression loss).
  void validate() const;
};

// The mean loss over the batch, a scalar in logits' dtype.
// logits: the model output BEFORE its final activation, [N, ..., C] (classes on the last axis).
// output_activation: the model's final activation, "softmax", "sigmoid" or "linear".
// target: sparse CE: integer class indices of shape logits.shape[:-1] (a trailing 1 is
//   allowed); categorical CE: probabilities of logits' shape; binary CE, mse, mae: values of
//   logits' shape (a missing trailing 1 is allowed).
// Throws ValueError for a bad activation, from_logits with a non-linear activation, or a
// target of the wrong dtype/shape or (sparse) with labels outside [0, C).
torch::Tensor compute_loss(const LossSpec& spec, const torch::Tensor& logits,
                           const std::string& output_activation, const torch::Tensor& target);

// The stable equivalent of spec (fused = true): the form an automatic repair switches to.
LossSpec stable_form(const LossSpec& spec);
// True when spec never takes a plain log of a probability that may be 0 or 1.
bool is_stable(const LossSpec& spec);

}  // namespace nanguard
