// Ranked causes of an incident, from the cause taxonomy (stable identifiers used in events,
// reports and tests).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nanguard/diagnose/evidence.h"

namespace nanguard {

namespace cause {
inline constexpr const char* bad_input_data = "bad_input_data";
inline constexpr const char* data_outlier = "data_outlier";
inline constexpr const char* exploding_gradients = "exploding_gradients";
inline constexpr const char* vanishing_gradients = "vanishing_gradients";
inline constexpr const char* bad_initialization = "bad_initialization";
inline constexpr const char* lr_too_high = "lr_too_high";  // sub-kind "divergence": every value finite
// Inputs far from unit range (raw 8-bit pixels, unstandardised features): the data cause of a
// divergence.
inline constexpr const char* unscaled_inputs = "unscaled_inputs";
inline constexpr const char* unsafe_loss = "unsafe_loss";
inline constexpr const char* optimizer_state_overflow = "optimizer_state_overflow";
inline constexpr const char* transient_fault = "transient_fault";
inline constexpr const char* environment = "environment";
// The optimizer's own setting poisons the update, e.g. epsilon 0 where a denominator holds
// exact zeros (sub-kinds in optimizer_setting_kind).
inline constexpr const char* optimizer_setting = "optimizer_setting";
// Model structure: a softmax or log_softmax over a row that is entirely -inf (every position
// masked), which gives NaN.
inline constexpr const char* fully_masked_row = "fully_masked_row";
inline constexpr const char* unknown = "unknown";
}  // namespace cause

// Sub-kinds of unsafe_loss.
namespace unsafe_loss_kind {
inline constexpr const char* log_of_zero = "log_of_zero";
inline constexpr const char* exp_overflow = "exp_overflow";
inline constexpr const char* zero_division = "zero_division";
inline constexpr const char* sqrt_of_negative = "sqrt_of_negative";
}  // namespace unsafe_loss_kind

// Sub-kinds of optimizer_setting.
namespace optimizer_setting_kind {
// The optimizer's epsilon is 0 and an update denominator holds exact zeros.
inline constexpr const char* zero_epsilon = "zero_epsilon";
// The epsilon is positive but the denominator still holds zeros: it underflows in the dtype.
inline constexpr const char* epsilon_underflow = "epsilon_underflow";
}  // namespace optimizer_setting_kind

struct CauseScore {
  std::string cause;        // an identifier from namespace cause
  std::string subkind;      // e.g. "log_of_zero" for unsafe_loss, "" otherwise
  double confidence = 0;    // in [0, 1]
  std::string explanation;  // one paragraph citing op, module, phase, step, samples, numbers
  std::string suggestion;   // what the user can change, e.g. "use log_softmax"
  std::vector<int64_t> samples;  // dataset ids this cause blames (quarantine candidates)
};

struct Diagnosis {
  std::vector<CauseScore> ranked;  // best first; never empty (unknown when nothing fits)
  const CauseScore& top() const { return ranked.front(); }
  // The score of a cause, nullptr when the diagnosis does not list it.
  const CauseScore* find(const std::string& cause) const;
};

// Applies the rules to the evidence. Never claims a cause without evidence for it.
Diagnosis diagnose(const Evidence& evidence);

}  // namespace nanguard
