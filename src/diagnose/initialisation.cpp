#include "diagnose/initialisation.h"

#include <fmt/format.h>

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

std::string scheme_text(const std::string& scheme) {
  if (scheme == "orthogonal") return "orthogonally with gain 1";
  if (scheme == "glorot_uniform") return "with Glorot uniform (He normal for relu layers)";
  if (scheme == "zeros") return "to zeros";
  if (scheme == "uniform") return "with its layer's default U(+-1/sqrt(hidden))";
  return "with " + scheme;
}

}  // namespace

std::string init_findings_text(const std::vector<InitFinding>& findings) {
  std::string out;
  for (const auto& f : findings) out += (out.empty() ? "" : "; ") + finding_text(f);
  return out;
}

std::vector<InitFinding> findings_of(const Evidence& e, const std::string& problem) {
  std::vector<InitFinding> out;
  for (const auto& f : e.init_findings)
    if (f.problem == problem) out.push_back(f);
  return out;
}

std::string reinit_suggestion(const std::vector<InitFinding>& findings) {
  std::string out;
  for (const auto& f : findings)
    out += fmt::format("{}{} {}", out.empty() ? "re-initialise " : ", ", f.parameter, scheme_text(f.scheme));
  return out;
}

void diagnose_dead_start(const Evidence& e, std::vector<CauseScore>& out) {
  if (!e.init_findings.empty()) {
    CauseScore c;
    c.cause = cause::bad_initialization;
    c.subkind = kDeadStart;
    c.confidence = 0.8;
    c.explanation = fmt::format(
        "{}. Its parameters are out of the scale of every standard initialisation: {}. Units pinned at the flat "
        "ends of their activation pass exactly zero gradient, so no update can ever move this layer: the run "
        "trains only the layers after it.",
        e.divergence_finding, init_findings_text(e.init_findings));
    c.suggestion = reinit_suggestion(e.init_findings) + " (the layer's default initialisation), and restart";
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
