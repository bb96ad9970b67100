// The initialisation as a cause: a layer that starts with no gradient because its parameters
// are out of scale (a dead start), and a recurrent gain above 1 behind an exploding gradient.
// Both read Evidence::init_findings, measured by the guard.
#pragma once

#include <string>
#include <vector>

#include "nanguard/diagnose/diagnosis.h"

namespace nanguard::detail {

// Sub-kinds of bad_initialization and exploding_gradients that a re-initialisation repairs.
inline constexpr const char* kDeadStart = "dead_start";        // bad_initialization/dead_start
inline constexpr const char* kVanishingStart = "vanishing_start";  // bad_initialization/vanishing_start
inline constexpr const char* kRecurrentGain = "recurrent_gain";  // exploding_gradients/recurrent_gain

// "rnn.weight_hh: largest singular value 1.5 (a standard init gives at most ~1.15)", joined.
std::string init_findings_text(const std::vector<InitFinding>& findings);
// The findings of one problem kind ("recurrent_gain", ...).
std::vector<InitFinding> findings_of(const Evidence& e, const std::string& problem);
// What the repair re-initialises, e.g. "re-initialise rnn.weight_hh orthogonally with gain 1".
std::string reinit_suggestion(const std::vector<InitFinding>& findings);

// Evidence::divergence_kind "dead_start" or "vanishing_start": bad_initialization/<kind> first
// (with the out-of-scale parameters), vanishing_gradients beside it.
void diagnose_dead_start(const Evidence& e, std::vector<CauseScore>& out);

}  // namespace nanguard::detail
