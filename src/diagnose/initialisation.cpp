#include "diagnose/initialisation.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace nanguard::detail {
namespace {

std::string num(double x) { return fmt::format("{:.3g}", x); }

std::string finding_text(const InitFinding& f) {
  if (f.problem == "recurrent_gain")
    return fmt::format("{}: largest singular value {} (orthogonal init gives 1, PyTorch's default at most ~1.15)",
                       f.parameter, num(f.value));
  if (f.problem == "weight_scale")
    return fmt::format("{}: RMS {}, {}x He's sqrt(2 / fan_in) = {}", f.parameter, num(f.value),
                       num(f.value / f.reference), num(f.reference));
  if (f.problem == "saturating_bias")
    return fmt::format("{}: RMS {} (above {}, sigmoid and tanh are flat there)", f.parameter, num(f.value),
                       num(f.reference));
  return f.parameter + ": " + f.problem;
}

std::string scheme_text(const InitFinding& f) {
  std::string text;
  if (f.scheme == "orthogonal")
    text = fmt::format("orthogonally with gain {:g}{}", f.problem == "recurrent_gain" ? 1.0 : f.gain,
                       f.activation.empty() ? "" : " (" + f.activation + ")");
  else if (f.scheme == "glorot_uniform")
    text = "with Glorot uniform";
  else if (f.scheme == "he_normal")
    text = "with He normal (relu)";
  else if (f.scheme == "zeros")
    text = "to zeros";
  else if (f.scheme == "uniform")
    text = "with its layer's default U(+-1/sqrt(hidden))";
  else if (f.scheme == "lstm_forget_one")
    text = "to zeros with the forget gate's bias at 1 (LSTM)";
  else
    text = "with " + f.scheme;
  if (f.input_mean != 0) text += fmt::format(", bias centred for inputs at {:g}", f.input_mean);
  return text;
}

// Up to this many findings are listed one by one; the rest are counted.
constexpr size_t kListed = 4;

}  // namespace

std::string init_findings_text(const std::vector<InitFinding>& findings) {
  std::string out;
  for (size_t i = 0; i < findings.size() && i < kListed; ++i) out += (out.empty() ? "" : "; ") + finding_text(findings[i]);
  if (findings.size() > kListed) {
    double largest = 0;
    for (size_t i = kListed; i < findings.size(); ++i)
      if (findings[i].reference > 0) largest = std::max(largest, findings[i].value / findings[i].reference);
    out += fmt::format("; and {} more{}", findings.size() - kListed,
                       largest > 0 ? fmt::format(" (up to {}x their reference scale)", num(largest)) : "");
  }
  return out;
}

std::vector<InitFinding> findings_of(const Evidence& e, const std::string& problem) {
  std::vector<InitFinding> out;
  for (const auto& f : e.init_findings)
    if (f.problem == problem) out.push_back(f);
  return out;
}

// Parameters in a row with the same replacement are named together: "re-initialise a, b
// orthogonally with gain 4 (sigmoid), c with Glorot uniform".
std::string reinit_suggestion(const std::vector<InitFinding>& findings) {
  std::string out;
  for (size_t i = 0; i < findings.size();) {
    const std::string scheme = scheme_text(findings[i]);
    size_t j = i;
    std::vector<std::string> names;
    while (j < findings.size() && scheme_text(findings[j]) == scheme) names.push_back(findings[j++].parameter);
    const std::string who = names.size() <= 3 ? fmt::format("{}", fmt::join(names, ", "))
                                              : fmt::format("{} ... {} ({} parameters)", names.front(), names.back(),
                                                            names.size());
    out += fmt::format("{}{} {}", out.empty() ? "re-initialise " : ", ", who, scheme);
    i = j;
  }
  return out;
}

void diagnose_dead_start(const Evidence& e, std::vector<CauseScore>& out) {
  const bool dead = e.divergence_kind != kVanishingStart;
  if (!e.init_findings.empty()) {
    CauseScore c;
    c.cause = cause::bad_initialization;
    c.subkind = dead ? kDeadStart : kVanishingStart;
    c.confidence = 0.8;
    c.explanation =
        dead ? fmt::format("{}. Its parameters are out of the scale of every standard initialisation: {}. Units pinned "
                           "at the flat ends of their activation pass exactly zero gradient, so no update can ever "
                           "move this layer: the run trains only the layers after it.",
                           e.divergence_finding, init_findings_text(e.init_findings))
             : fmt::format("{}. Weights of the network are out of the scale of every standard initialisation: {}. "
                           "Pre-activations that large drive the units to the flat ends of their activation, and "
                           "each layer multiplies the gradient by the activation's small derivative there: the "
                           "first layers barely move and the run trains only its last layers.",
                           e.divergence_finding, init_findings_text(e.init_findings));
    c.suggestion = reinit_suggestion(e.init_findings) + (dead ? " (the layer's default initialisation)" : "") +
                   ", and restart";
    out.push_back(std::move(c));
  }
  CauseScore v;
  v.cause = cause::vanishing_gradients;
  v.confidence = e.init_findings.empty() ? 0.6 : 0.4;
  v.explanation = e.divergence_finding + ": the gradient does not reach the first layer.";
  v.suggestion = "use relu-family activations with He initialisation, add normalisation layers or residual "
                 "connections, or make the network shallower";
  out.push_back(std::move(v));
}

}  // namespace nanguard::detail
