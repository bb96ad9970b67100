// How a zoo result is judged against its scenario's truth. Pure functions of plain data (the
// measured result and the scenario's labels), so they are tested without training.
//
// Contract:
// - cause_matches(top, spec): top is a result's top cause, "cause" or "cause/subkind"; spec is
//   "cause/subkind", which matches that cause with that sub-kind only, or a bare "cause", which
//   matches the cause with any sub-kind. ("lr_too_high/divergence" matches a top cause
//   "lr_too_high/divergence", not "lr_too_high"; "lr_too_high" matches both.)
// - cause_correct: the top cause matches the true cause (true_cause with true_subkind, or bare
//   when true_subkind is empty) or one of also_correct. A healthy scenario (true cause "none")
//   is correct when a diagnosing baseline reported nothing.
// - localization_correct: only for scenarios that produce a non-finite value and runs with an
//   incident. Every expectation the scenario sets must hold: the birth op (with the phase, when
//   one is set) or else the phase alone, and the blamed samples (the same set). A scenario that
//   expects none of them (a transient fault) is correct when no op and no sample is blamed.
// - repaired: final accuracy within 1 point of the clean twin's, or above it.
#pragma once

#include <string>

#include "nanguard/zoo/scenario.h"

namespace nanguard::zoo::detail {

bool cause_matches(const std::string& top_cause, const std::string& spec);

// Sets r.cause_correct, r.localization_correct and r.repaired from r's measured fields.
void judge(const Scenario& s, ScenarioResult& r);

}  // namespace nanguard::zoo::detail
