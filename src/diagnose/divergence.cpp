#include "diagnose/divergence.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "diagnose/initialisation.h"

namespace nanguard::detail {
namespace {

// Inputs whose RMS is ten times unit range or more are "far from unit range": an order of
// magnitude beyond what initialisers assume (Glorot and He scale weights for unit-variance
// inputs), so the first layer's pre-activations and gradients are that much larger. MNIST on
// 0-1 pixels has an RMS of 0.3-0.4, standardised features ~1, raw 8-bit pixels ~100.
constexpr double kUnscaledRms = 10.0;

std::string num(double x) { return fmt::format("{:.4g}", x); }

std::string learning_rate_text(const Evidence& e) {
  return e.learning_rate > 0 ? fmt::format("the learning rate {}", num(e.learning_rate)) : "the learning rate";
}

std::string history_text(const Evidence& e) {
  if (e.loss_history.empty()) return "";
  const auto [lo, hi] = std::minmax_element(e.loss_history.begin(), e.loss_history.end());
  return fmt::format(" Over the {} healthy steps before it the loss stayed within [{}, {}].", e.loss_history.size(),
                     num(*lo), num(*hi));
}

bool inputs_unscaled(const Evidence& e) { return e.input_rms >= kUnscaledRms; }

CauseScore unscaled_inputs(const Evidence& e) {
  CauseScore c;
  c.cause = cause::unscaled_inputs;
  c.confidence = e.inputs_integer ? 0.85 : 0.75;
  c.explanation = fmt::format(
      "The run diverged at step {} with every value finite: {}. The inputs of the batch are far from unit range "
      "(RMS {}, largest |x| {}{}), so the first layer's pre-activations and gradients are about {}x what its "
      "initialisation assumes, and {} is too high for that layer.",
      e.step, e.divergence_finding, num(e.input_rms), num(e.input_absmax),
      e.inputs_integer ? ", integer values: raw counts or 8-bit pixels" : "", num(std::round(e.input_rms)),
      learning_rate_text(e));
  if (e.unscaled_input_backoffs > 0) {
    c.explanation += fmt::format(
        " The learning rate was already lowered {} for these inputs{}, and the run diverged again: a lower rate "
        "does not hold, the inputs' scale has to change.",
        e.unscaled_input_backoffs == 1 ? std::string("once") : fmt::format("{} times", e.unscaled_input_backoffs),
        e.rate_before_unscaled_backoffs > 0 ? " (from " + num(e.rate_before_unscaled_backoffs) + ")" : "");
  }
  c.suggestion = e.inputs_integer && e.input_absmax <= 255
                     ? "scale the inputs to [0, 1] (divide 8-bit pixels by 255: data.scale = 255 in a config) or "
                       "standardise each feature"
                     : "standardise each input feature (subtract its mean, divide by its standard deviation)";
  return c;
}

CauseScore learning_rate(const Evidence& e, bool data_cause) {
  CauseScore c;
  c.cause = cause::lr_too_high;
  c.subkind = "divergence";
  c.confidence = data_cause ? 0.6 : 0.8;
  std::string text = fmt::format("The run diverged at step {} with every value finite: {}.", e.step,
                                 e.divergence_finding);
  text += history_text(e);
  if (e.divergence_kind == "collapse") {
    text += " A layer whose units are all dead passes no gradient back: the layers before it stop learning, and "
            "the run sits at a constant prediction.";
  }
  text += fmt::format(" The batch was finite and {}; the updates with {} overshot.",
                      data_cause ? "its inputs far from unit range" : "its inputs in range", learning_rate_text(e));
  if (std::isfinite(e.weight_absmax) && e.weight_absmax > 0)
    text += fmt::format(" The largest |w| before the step was {}.", num(e.weight_absmax));
  c.explanation = text;
  c.suggestion = e.learning_rate > 0
                     ? fmt::format("lower the learning rate (e.g. by 10x, to {}) or add a warmup",
                                   num(e.learning_rate * 0.1))
                     : "lower the learning rate (e.g. by 10x) or add a warmup";
  return c;
}

}  // namespace

void diagnose_divergence(const Evidence& e, std::vector<CauseScore>& out) {
  if (e.divergence_kind == "dead_start" || e.divergence_kind == "vanishing_start") return diagnose_dead_start(e, out);
  const bool data_cause = inputs_unscaled(e);
  if (data_cause) out.push_back(unscaled_inputs(e));
  out.push_back(learning_rate(e, data_cause));
}

}  // namespace nanguard::detail
