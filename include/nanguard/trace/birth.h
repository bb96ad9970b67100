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
  // Set when the op made NaN from Inf that an earlier op wrote on purpose from a non-finite
  // scalar (masked_fill(mask, -inf) before a softmax): that op, e.g. "aten::masked_fill_". It
  // created an Inf, not the NaN, so `op` is the one that turned the Inf into NaN.
  std::string inf_source;
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
// A failing NaN made from Inf that an op wrote on purpose (a non-finite scalar such as
// masked_fill's -inf: that op is no birth) is born at the first op on the walk that made NaN
// from inputs without NaN (the softmax of a fully masked row); inf_source names the fill.
// preceding < 0 is a ValueError.
Birth find_birth(const std::vector<OpRecord>& records,
                 std::optional<uintptr_t> failing_tensor = std::nullopt, int preceding = 8);

// The denominator of a division op (addcdiv's tensor2, div's other, reciprocal's input, and
// their _foreach_ forms), as the optimizers' updates run them.
struct Denominator {
  bool division = false;  // op is one of those divisions
  int64_t zeros = 0;      // exact zeros in the denominator
  int64_t numel = 0;
  // The ops that wrote the denominator, oldest first, up to its sqrt: e.g. aten::sqrt,
  // aten::div, aten::add_ (Adam's sqrt(v) / sqrt(bias correction) + eps).
  std::vector<std::string> made_by;
  bool sqrt_then_add = false;  // sqrt followed by an add: the add is where eps went in
};

// The denominator of op (a record of records) and where it came from.
Denominator find_denominator(const std::vector<OpRecord>& records, const OpRecord& op);

// The reason text find_birth gives for an op whose inputs are finite and outputs are not.
std::string birth_reason(const OpRecord& op);

}  // namespace nanguard::trace
