#include "nanguard/report/console_summary.h"

#include <cmath>
#include <map>

#include <fmt/format.h>

namespace nanguard::report {
namespace {

std::string plural(size_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

std::string samples_phrase(const std::vector<int64_t>& samples) {
  if (samples.empty()) return "";
  std::string ids;
  for (size_t i = 0; i < samples.size() && i < 8; ++i) ids += (i ? ", " : "") + std::to_string(samples[i]);
  if (samples.size() > 8) ids += fmt::format(" and {} more", samples.size() - 8);
  return fmt::format("; {} {}", samples.size() == 1 ? "sample" : "samples", ids);
}

}  // namespace

std::string cause_in_words(const std::string& cause) {
  static const std::map<std::string, std::string> words{
      {"bad_input_data", "bad input data (NaN or Inf in the batch)"},
      {"data_outlier", "an outlier in the data"},
      {"exploding_gradients", "exploding gradients"},
      {"vanishing_gradients", "vanishing gradients"},
      {"bad_initialization", "a bad weight initialisation"},
      {"lr_too_high", "a learning rate that is too high"},
      {"unscaled_inputs", "inputs far from unit range (not scaled)"},
      {"optimizer_setting", "an unsafe optimizer setting"},
      {"fully_masked_row", "a softmax over a fully masked row"},
      {"unsafe_loss", "an unsafe loss"},
      {"optimizer_state_overflow", "an overflow in the optimizer's state"},
      {"transient_fault", "a transient fault (the step did not reproduce)"},
      {"environment", "the environment (BLAS, dtype or versions)"},
  };
  static const std::map<std::string, std::string> sub{{"log_of_zero", "log of zero"},
                                                      {"exp_overflow", "exp overflow"},
                                                      {"zero_division", "division by zero"},
                                                      {"sqrt_of_negative", "square root of a negative number"},
                                                      {"divergence", "a finite divergence"},
                                                      {"zero_epsilon", "epsilon 0 over a zero denominator"},
                                                      {"epsilon_underflow", "an epsilon that underflows"}};
  if (cause.empty()) return "an unknown cause";
  const auto slash = cause.find('/');
  const std::string main = cause.substr(0, slash);
  auto it = words.find(main);
  std::string out = it != words.end() ? it->second : main;
  if (slash != std::string::npos) {
    const std::string s = cause.substr(slash + 1);
    auto st = sub.find(s);
    out += " (" + (st != sub.end() ? st->second : s) + ")";
  }
  return out;
}

std::string console_summary(const RunRecord& run, const std::filesystem::path& report) {
  const auto incidents = run.incidents();
  const size_t actions = run.count("action"), warnings = run.count("warning");
  std::string out;
  const RunVerdictRecord verdict = run.verdict();
  if (verdict.known && !verdict.learned) {
    out = fmt::format("nanguard: {}, with {}, {} and {}.\n", verdict.headline,
                      plural(incidents.size(), "incident", "incidents"),
                      plural(actions, "repair action", "repair actions"), plural(warnings, "warning", "warnings"));
  } else if (incidents.empty() && warnings == 0) {
    out = "nanguard: no incidents and no warnings; every step was finite.\n";
  } else {
    out = fmt::format("nanguard: {}, {} and {}.\n", plural(incidents.size(), "incident", "incidents"),
                      plural(actions, "repair action", "repair actions"), plural(warnings, "warning", "warnings"));
  }
  for (const auto& r : incidents) {
    const GuardEvent& e = r.incident;
    std::string where;
    if (!e.op.empty()) {
      where = " It first appeared in " + e.op;
      if (!e.module.empty()) where += " in module " + e.module;
      if (!e.phase.empty()) where += " during the " + e.phase + " pass";
      where += ".";
    }
    const std::string what = e.detail == "divergence" ? "run diverged with every value finite"
                             : fmt::format("{} went non-finite", e.detail.empty() ? "step" : e.detail);
    out += fmt::format("  - Step {}: the {}, most likely because of {}{}{}.{}\n", e.step, what, cause_in_words(e.cause),
                       std::isfinite(e.confidence) ? fmt::format(" ({:.0f}% confidence)", e.confidence * 100) : "",
                       samples_phrase(e.samples), where);
    if (r.actions.empty()) {
      out += "    Nothing was repaired.\n";
    } else {
      std::string done;
      for (size_t i = 0; i < r.actions.size(); ++i) {
        done += (i ? "; " : "") + r.actions[i].action + (r.actions[i].detail.empty() ? "" : " (" + r.actions[i].detail + ")");
      }
      out += "    Repaired by: " + done + ".\n";
    }
  }
  for (const auto& e : run.events) {
    if (e.kind == "incident" || e.kind == "action") continue;
    out += fmt::format("  - Warning at step {}: {}\n", e.step,
                       e.explanation.empty() ? cause_in_words(e.cause) : e.explanation);
  }
  if (!report.empty()) out += "Report: " + report.string() + "\n";
  return out;
}

}  // namespace nanguard::report
