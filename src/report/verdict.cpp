#include "nanguard/report/verdict.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace nanguard::report {
namespace {

std::string percent(double x) { return fmt::format("{:.1f}%", 100.0 * x); }

}  // namespace

RunVerdict judge_run(const VerdictInputs& in) {
  RunVerdict v;
  std::vector<std::string> bad, good;
  if (std::isfinite(in.accuracy) && in.classes > 1) {
    double baseline = 1.0 / static_cast<double>(in.classes);
    const bool majority = std::isfinite(in.majority_fraction) && in.majority_fraction > baseline;
    if (majority) baseline = in.majority_fraction;
    v.chance = baseline;
    // Three standard errors of an accuracy of `baseline` measured on `evaluated` samples.
    const double n = static_cast<double>(std::max<int64_t>(in.evaluated, 1));
    const double margin = std::max(0.02, 3.0 * std::sqrt(baseline * (1.0 - baseline) / n));
    if (in.accuracy <= baseline + margin) {
      bad.push_back(majority ? fmt::format("accuracy {} is no better than always predicting the majority class ({})",
                                           percent(in.accuracy), percent(baseline))
                             : fmt::format("accuracy {} is chance level ({})", percent(in.accuracy), percent(baseline)));
    } else {
      good.push_back(fmt::format("accuracy {} against {} for {}", percent(in.accuracy), percent(baseline),
                                 majority ? "the majority class" : "chance"));
    }
  }
  if (std::isfinite(in.initial_loss) && in.initial_loss > 0) {
    if (!std::isfinite(in.final_loss)) {
      bad.push_back("the final training loss is not finite");
    } else if (in.final_loss >= 0.9 * in.initial_loss) {
      bad.push_back(fmt::format("the training loss did not fall: {:.4g} at the first step, {:.4g} in the last epoch",
                                in.initial_loss, in.final_loss));
    } else {
      good.push_back(fmt::format("the training loss fell from {:.4g} to {:.4g}", in.initial_loss, in.final_loss));
    }
  }
  if (!in.dead_layers.empty()) {
    bad.push_back(fmt::format("every unit of {} was dead at the last sampled step", fmt::join(in.dead_layers, ", ")));
  }
  if (in.stopped) bad.push_back("the guard stopped the run before its last epoch");
  v.learned = bad.empty();
  if (v.learned) {
    v.headline = good.empty() ? "this run finished; no learning measure was available"
                              : "this run learned: " + good.front();
  } else {
    v.headline = "this run did not learn: " + bad.front();
  }
  v.reasons = bad;
  v.reasons.insert(v.reasons.end(), good.begin(), good.end());
  return v;
}

}  // namespace nanguard::report
