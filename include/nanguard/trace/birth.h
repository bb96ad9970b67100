// Finding where non-finite values were born in a traced step: the op whose inputs are all
// finite and whose output is not. Later ops only propagate what it created.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nanguard/trace/tracer.h"

namespace nanguard::trace {

struct Birth {
  bool found = false;
  // The birth op (the innermost one when a composite op and the op it calls both qualify).
  OpRecord op;
  // Whether the failing tensor was followed back to this op through the recorded dataflow.
  // False when the op is only the first birth of the step (no failing tensor given, or the
  // failing tensor's values came from elsewhere).
  bool connected = false;
  // The dataflow chain from the birth op to the op that produced the failing tensor, in run
  // order (both ends included); empty unless connected. For a NaN born in a forward op and
  // discarded there (a masked where) it shows the backward ops that carried it to the
  // gradients.
  std::vector<OpRecord> path;
  // Elementwise ops on the path that, besides propagating, made new non-finite elements
  // (more than any input held), e.g. a 0/0 next to a propagated NaN. birth_reason() explains
  // each from its input statistics.
  std::vector<OpRecord> also_created;
  // Up to N ops that ran just before the birth op (its enclosing ops excluded), oldest first,
  // to show values growing before an overflow.
  std::vector<OpRecord> preceding;
  // Why the op produced non-finite values, from its input statistics, e.g.
  // "input 0 of aten::log holds 37 exact zeros (log(0) = -inf)".
  std::string reason;
};

// Finds the birth op among records (as returned by OpTracer::records()). With a failing
// tensor (the tensor_id() of the loss or of a non-finite gradient), births it depends on are
// preferred: the recorded dataflow is followed backwards from it, and the earliest birth it
// reaches wins; otherwise the first birth of the step. found is false when no op turned finite
// inputs into non-finite outputs, i.e. the values entered the step from outside (the input
// batch, parameters or optimizer state), which the caller checks separately.
// The rule is strict (all inputs finite), so in the masked case where(x > 0, sqrt(x), x) with
// x = [0, 1, -1] the birth of the NaN gradient is the forward aten::sqrt: its NaN is discarded
// by where but saved for backward, and SqrtBackward0 divides by it; path lists those backward
// ops and also_created the backward aten::div whose 0/0 adds a second NaN. With x = [0, 1, 4]
// the forward is finite and the birth is that backward aten::div (phase backward,
// backward_node SqrtBackward0, module of the forward sqrt).
// preceding < 0 is a ValueError.
Birth find_birth(const std::vector<OpRecord>& records,
                 std::optional<uintptr_t> failing_tensor = std::nullopt, int preceding = 8);

// The reason text find_birth gives for an op whose inputs are finite and outputs are not.
std::string birth_reason(const OpRecord& op);

}  // namespace nanguard::trace
