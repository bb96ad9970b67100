// The run's verdict: did it learn? A run that stays finite can still be dead (every unit of a
// layer off, accuracy at chance); the verdict says so even with zero incidents.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace nanguard::report {

struct VerdictInputs {
  static constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();
  double initial_loss = kUnknown;  // training loss of the first step
  double final_loss = kUnknown;    // training loss of the last epoch
  double accuracy = kUnknown;      // held-out accuracy in [0, 1] (NaN: no accuracy metric)
  int64_t evaluated = 0;           // samples the accuracy was measured on
  int64_t classes = 0;             // a classifier's outputs (0: not a classifier)
  double majority_fraction = kUnknown;  // share of the most frequent label in those samples
  // ReLU layers whose every unit was dead at the last sampled step.
  std::vector<std::string> dead_layers;
  bool stopped = false;  // the guard stopped the run
};

struct RunVerdict {
  bool learned = true;
  // One sentence: "this run learned: accuracy 97.7% against 11.4% for the majority class" or
  // "this run did not learn: accuracy 10.1% is chance level (10.0%)".
  std::string headline;
  std::vector<std::string> reasons;  // every finding behind it, one sentence each
  // The better of 1/classes and the majority share (NaN without an accuracy).
  double chance = std::numeric_limits<double>::quiet_NaN();
};

// Accuracy within the binomial noise (three standard errors, at least 2 points) of the better
// of chance and the majority class, a final loss not below 90% of the first step's, a dead
// layer, or a stopped run: did not learn.
RunVerdict judge_run(const VerdictInputs& in);

}  // namespace nanguard::report
