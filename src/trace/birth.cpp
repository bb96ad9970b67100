#include "nanguard/trace/birth.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "core/check.h"

namespace nanguard::trace {
namespace {

constexpr size_t kNone = std::numeric_limits<size_t>::max();

bool in(const std::string& name, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (name == n) return true;
  }
  return false;
}

std::string plural(int64_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

std::string num(double v) { return fmt::format("{:.4g}", v); }

double dtype_max(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Half: return 65504.0;
    case c10::ScalarType::BFloat16: return 3.3895313892515355e38;
    case c10::ScalarType::Double: return std::numeric_limits<double>::max();
    default: return std::numeric_limits<float>::max();
  }
}

std::string absmaxes(const OpRecord& op) {
  std::string s;
  for (size_t i = 0; i < op.inputs.size(); ++i) {
    if (!s.empty()) s += ", ";
    s += num(op.inputs[i].absmax);
  }
  return s.empty() ? "none" : s;
}

std::string output_counts(const OpRecord& op) {
  int64_t nan = 0, pinf = 0, ninf = 0;
  for (const auto& h : op.outputs) {
    nan += h.nan_count;
    pinf += h.posinf_count;
    ninf += h.neginf_count;
  }
  std::vector<std::string> parts;
  if (nan) parts.push_back(fmt::format("{} NaN", nan));
  if (pinf) parts.push_back(fmt::format("{} +Inf", pinf));
  if (ninf) parts.push_back(fmt::format("{} -Inf", ninf));
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ", ") + p;
  return s;
}

// Elementwise ops that can make new non-finite values next to ones they propagate.
bool creates_elementwise(const std::string& n) {
  return in(n, {"aten::log", "aten::log_", "aten::log2", "aten::log10", "aten::log1p",
                "aten::exp", "aten::exp_", "aten::exp2", "aten::expm1", "aten::sqrt",
                "aten::sqrt_", "aten::rsqrt", "aten::div", "aten::div_", "aten::true_divide",
                "aten::reciprocal", "aten::pow", "aten::pow_", "aten::mul", "aten::mul_",
                "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::square",
                "aten::xlogy", "aten::acos", "aten::asin", "aten::atanh"});
}

// Whether an elementwise op on the path made more non-finite elements than any input held.
bool adds_nonfinite(const OpRecord& r) {
  if (!creates_elementwise(r.name) || r.outputs.size() != 1 || r.inputs_finite()) return false;
  const auto& out = r.outputs[0];
  int64_t most = 0;
  for (const auto& h : r.inputs) {
    if (h.numel > 1 && h.sizes != out.sizes) return false;  // broadcasting: counts differ
    most = std::max(most, h.nonfinite_count());
  }
  return out.nonfinite_count() > most;
}

// Births and dataflow over a list of records that may be any subset of a trace.
class Graph {
 public:
  explicit Graph(const std::vector<OpRecord>& records) : records_(records) {
    for (size_t p = 0; p < records.size(); ++p) pos_[records[p].index] = p;
    children_.resize(records.size());
    for (size_t p = 0; p < records.size(); ++p) {
      size_t parent = parent_of(p);
      if (parent != kNone) children_[parent].push_back(p);
      for (auto id : records[p].output_ids) {
        if (id != 0) producers_[id].push_back(p);
      }
    }
  }

  const OpRecord& at(size_t p) const { return records_[p]; }
  size_t size() const { return records_.size(); }

  size_t parent_of(size_t p) const {
    auto it = pos_.find(records_[p].parent);
    return it == pos_.end() ? kNone : it->second;
  }

  bool is_ancestor(size_t maybe_ancestor, size_t p) const {
    for (size_t q = parent_of(p); q != kNone; q = parent_of(q)) {
      if (q == maybe_ancestor) return true;
    }
    return false;
  }

  bool is_birth(size_t p) const {
    const auto& r = records_[p];
    return !r.outputs.empty() && r.inputs_finite() && !r.outputs_finite();
  }

  // Made NaN from inputs without any (e.g. softmax over a row of -inf, inf - inf).
  bool is_nan_birth(size_t p) const {
    const auto& r = records_[p];
    auto nan = [](const TensorHealth& h) { return h.nan_count > 0; };
    return std::any_of(r.outputs.begin(), r.outputs.end(), nan) &&
           std::none_of(r.inputs.begin(), r.inputs.end(), nan);
  }

  // The first birth inside p's subtree (p itself if none), repeated down to the innermost.
  size_t innermost(size_t p, bool nan_only = false) const {
    for (;;) {
      size_t inner = first_birth_below(p, nan_only);
      if (inner == kNone) return p;
      p = inner;
    }
  }

  // The op that last wrote tensor id before the op at consumer started (kNone: the failing
  // tensor itself, after all ops). Ops still open around the consumer have not written yet.
  size_t producer(uintptr_t id, size_t consumer) const {
    auto it = producers_.find(id);
    if (it == producers_.end()) return kNone;
    size_t best = kNone;
    for (auto p = it->second.rbegin(); p != it->second.rend(); ++p) {
      if (consumer != kNone &&
          (*p == consumer || records_[*p].index >= records_[consumer].index ||
           is_ancestor(*p, consumer))) {
        continue;
      }
      best = *p;
      break;
    }
    if (best == kNone) return kNone;
    // An enclosing op that returns the same tensor finished after the ops it called.
    for (size_t q = parent_of(best); q != kNone; q = parent_of(q)) {
      if (consumer != kNone && is_ancestor(q, consumer)) break;
      const auto& ids = records_[q].output_ids;
      if (std::find(ids.begin(), ids.end(), id) != ids.end()) best = q;
    }
    return best;
  }

  size_t first_birth() const {
    for (size_t p = 0; p < records_.size(); ++p) {
      if (is_birth(p)) return p;
    }
    return kNone;
  }

 private:
  size_t first_birth_below(size_t p, bool nan_only) const {
    for (size_t c : children_[p]) {
      if (nan_only ? is_nan_birth(c) : is_birth(c)) return c;
      size_t deeper = first_birth_below(c, nan_only);
      if (deeper != kNone) return deeper;
    }
    return kNone;
  }

  const std::vector<OpRecord>& records_;
  std::unordered_map<int64_t, size_t> pos_;
  std::vector<std::vector<size_t>> children_;
  std::unordered_map<uintptr_t, std::vector<size_t>> producers_;
};

// The op that wrote on purpose (from a non-finite scalar) the Inf that `p` turned into NaN:
// followed back through non-finite inputs; "" when none was recorded.
std::string intended_inf_source(const Graph& g, size_t p) {
  std::deque<std::pair<uintptr_t, size_t>> queue;
  auto push_inputs = [&](size_t q) {
    const auto& r = g.at(q);
    for (size_t j = 0; j < r.inputs.size() && j < r.input_ids.size(); ++j)
      if (!r.inputs[j].finite() && r.input_ids[j] != 0) queue.emplace_back(r.input_ids[j], q);
  };
  push_inputs(p);
  std::unordered_set<size_t> seen;
  while (!queue.empty()) {
    auto [id, consumer] = queue.front();
    queue.pop_front();
    size_t q = g.producer(id, consumer);
    if (q == kNone || !seen.insert(q).second) continue;
    if (g.at(q).nonfinite_scalar_input) return g.at(q).name;
    push_inputs(q);
  }
  return "";
}

// Which inputs of a division are its denominator: addcdiv's tensor2, div's other, the
// reciprocal's self; for the _foreach_ forms the matching share of the flattened lists.
std::vector<size_t> denominator_inputs(const OpRecord& op) {
  const std::string& n = op.name;
  const size_t k = op.inputs.size();
  std::vector<size_t> idx;
  auto range = [&](size_t from, size_t to) {
    for (size_t i = from; i < to && i < k; ++i) idx.push_back(i);
  };
  if (in(n, {"aten::addcdiv", "aten::addcdiv_"})) range(2, 3);
  else if (in(n, {"aten::div", "aten::div_", "aten::true_divide", "aten::true_divide_"})) range(1, 2);
  else if (in(n, {"aten::reciprocal", "aten::reciprocal_"})) range(0, 1);
  else if (in(n, {"aten::_foreach_addcdiv", "aten::_foreach_addcdiv_"}) && k % 3 == 0) range(2 * k / 3, k);
  else if (in(n, {"aten::_foreach_div", "aten::_foreach_div_"}) && k % 2 == 0) range(k / 2, k);
  return idx;
}

}  // namespace

Denominator find_denominator(const std::vector<OpRecord>& records, const OpRecord& op) {
  Denominator d;
  const std::vector<size_t> idx = denominator_inputs(op);
  if (idx.empty()) return d;
  d.division = true;
  for (size_t i : idx) {
    d.zeros += op.inputs[i].zero_count;
    d.numel += op.inputs[i].numel;
  }
  // Where the denominator came from: the chain of ops that wrote it, newest first, while they
  // are elementwise steps of an update denominator (sqrt, then scaling, then + eps).
  Graph g(records);
  size_t consumer = kNone;
  for (size_t p = 0; p < g.size(); ++p)
    if (g.at(p).index == op.index) consumer = p;
  if (consumer == kNone || idx.front() >= op.input_ids.size()) return d;
  uintptr_t id = op.input_ids[idx.front()];
  std::vector<std::string> chain;
  for (int hops = 0; hops < 4 && id != 0; ++hops) {
    size_t q = g.producer(id, consumer);
    if (q == kNone) break;
    const OpRecord& r = g.at(q);
    chain.push_back(r.name);
    if (in(r.name, {"aten::sqrt", "aten::sqrt_", "aten::_foreach_sqrt", "aten::_foreach_sqrt_"})) {
      d.sqrt_then_add = std::any_of(chain.begin(), chain.end(), [](const std::string& c) {
        return in(c, {"aten::add", "aten::add_", "aten::_foreach_add", "aten::_foreach_add_"});
      });
      break;
    }
    if (r.input_ids.empty()) break;
    id = r.input_ids.front();
    consumer = q;
  }
  std::reverse(chain.begin(), chain.end());
  d.made_by = chain;
  return d;
}

std::string birth_reason(const OpRecord& op) {
  const std::string& n = op.name;
  const auto& ins = op.inputs;
  auto input = [&](size_t i) -> const TensorHealth* { return i < ins.size() ? &ins[i] : nullptr; };
  const TensorHealth* x = input(0);

  if (x && in(n, {"aten::log", "aten::log_", "aten::log2", "aten::log2_", "aten::log10",
                  "aten::log10_"})) {
    if (x->zero_count > 0)
      return fmt::format("input 0 of {} holds {} (log(0) = -inf)", n,
                         plural(x->zero_count, "exact zero", "exact zeros"));
    if (x->negative_count > 0)
      return fmt::format("input 0 of {} holds {} (min {}; the log of a negative is NaN)", n,
                         plural(x->negative_count, "negative value", "negative values"),
                         num(x->min));
  }
  if (x && in(n, {"aten::log1p", "aten::log1p_"}) && x->min <= -1)
    return fmt::format("input 0 of {} has min {} <= -1", n, num(x->min));
  if (x && in(n, {"aten::xlogy", "aten::xlogy_"}) && ins.size() > 1) {
    const auto& y = ins[1];
    if (y.zero_count > 0 || y.negative_count > 0)
      return fmt::format("input 1 (the log argument) of {} holds {} and {}", n,
                         plural(y.zero_count, "zero", "zeros"),
                         plural(y.negative_count, "negative value", "negative values"));
  }
  if (x && in(n, {"aten::exp", "aten::exp_", "aten::expm1", "aten::expm1_", "aten::exp2",
                  "aten::exp2_", "aten::sinh", "aten::cosh"})) {
    double limit = exp_overflow_threshold(x->dtype);
    if (in(n, {"aten::exp2", "aten::exp2_"})) limit /= std::log(2.0);
    bool even = in(n, {"aten::cosh"});
    double v = even ? x->absmax : x->max;
    if (std::isfinite(limit) && v > limit)
      return fmt::format("input 0 of {} has {} {} > {:.2f} ({} exp overflow)", n,
                         even ? "absmax" : "max", num(v), limit, dtype_name(x->dtype));
  }
  if (x && in(n, {"aten::sqrt", "aten::sqrt_", "aten::rsqrt", "aten::rsqrt_"})) {
    if (x->negative_count > 0)
      return fmt::format("input 0 of {} holds {} (min {})", n,
                         plural(x->negative_count, "negative value", "negative values"),
                         num(x->min));
    if (x->zero_count > 0 && in(n, {"aten::rsqrt", "aten::rsqrt_"}))
      return fmt::format("input 0 of {} holds {} (1/sqrt(0) = inf)", n,
                         plural(x->zero_count, "zero", "zeros"));
  }
  if (x && in(n, {"aten::div", "aten::div_", "aten::true_divide", "aten::true_divide_",
                  "aten::floor_divide", "aten::floor_divide_", "aten::remainder",
                  "aten::fmod", "aten::reciprocal", "aten::reciprocal_"})) {
    bool unary = in(n, {"aten::reciprocal", "aten::reciprocal_"});
    const TensorHealth* den = unary ? x : input(1);
    if (den && den->zero_count > 0) {
      std::string s = fmt::format("denominator of {} holds {}", n,
                                  plural(den->zero_count, "zero", "zeros"));
      if (!unary && x->zero_count > 0) s += " and the numerator holds zeros too (0/0 = NaN)";
      return s;
    }
    if (den)
      return fmt::format("{} overflowed: numerator absmax {}, denominator min {} max {}", n,
                         unary ? "1" : num(x->absmax), num(den->min), num(den->max));
  }
  if (x && in(n, {"aten::softmax", "aten::_softmax", "aten::log_softmax", "aten::_log_softmax"}) &&
      x->neginf_count > 0 && x->nan_count == 0 && x->posinf_count == 0)
    return fmt::format("input 0 of {} holds {} and no NaN: a row that is all -inf (fully masked) "
                       "gives exp(-inf - (-inf)) = NaN",
                       n, plural(x->neginf_count, "-inf", "-infs"));
  if (in(n, {"aten::addcdiv", "aten::addcdiv_"}) && ins.size() > 2 && ins[2].zero_count > 0)
    return fmt::format("denominator (tensor2) of {} holds {} of {}{}", n,
                       plural(ins[2].zero_count, "exact zero", "exact zeros"), ins[2].numel,
                       ins[1].zero_count > 0 ? " and the numerator holds zeros too (0/0 = NaN)" : "");
  if (x && in(n, {"aten::pow", "aten::pow_", "aten::float_power"})) {
    if (x->negative_count > 0 && op.outputs.size() == 1 && op.outputs[0].nan_count > 0)
      return fmt::format(
          "input 0 (the base) of {} holds {} (a fractional power of a negative is NaN)", n,
          plural(x->negative_count, "negative value", "negative values"));
    if (x->zero_count > 0 && op.outputs.size() == 1 && op.outputs[0].posinf_count > 0)
      return fmt::format("input 0 (the base) of {} holds {} raised to a negative power", n,
                         plural(x->zero_count, "zero", "zeros"));
    return fmt::format("{} overflowed: base absmax {} ({} max {})", n, num(x->absmax),
                       dtype_name(x->dtype), num(dtype_max(x->dtype)));
  }
  if (x && in(n, {"aten::acos", "aten::asin", "aten::atanh", "aten::acos_", "aten::asin_",
                  "aten::atanh_"}))
    return fmt::format("input 0 of {} holds values outside [-1, 1] (min {}, max {})", n,
                       num(x->min), num(x->max));
  if (x && in(n, {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
                  "aten::mv", "aten::addmv", "aten::dot", "aten::linear", "aten::mul",
                  "aten::mul_", "aten::addbmm", "aten::outer", "aten::einsum",
                  "aten::convolution", "aten::_convolution", "aten::conv1d", "aten::conv2d",
                  "aten::conv3d", "aten::mkldnn_convolution", "aten::_addmm_activation",
                  "aten::square", "aten::add", "aten::add_", "aten::sub", "aten::sub_",
                  "aten::sum", "aten::mean", "aten::cumsum", "aten::norm",
                  "aten::linalg_vector_norm"}))
    return fmt::format("{} overflowed from finite inputs: input absmax {} ({} max {})", n,
                       absmaxes(op), dtype_name(x->dtype), num(dtype_max(x->dtype)));
  if (ins.empty())
    return fmt::format("{} created {} from no tensor inputs", n, output_counts(op));
  return fmt::format("{} turned finite inputs (absmax {}) into {}", n, absmaxes(op),
                     output_counts(op));
}

Birth find_birth(const std::vector<OpRecord>& records, std::optional<uintptr_t> failing_tensor,
                 int preceding) {
  NANGUARD_CHECK(preceding >= 0, "find_birth: preceding must be >= 0, got {}", preceding);
  Graph g(records);
  Birth birth;

  size_t found = kNone;
  // The earliest op on the walk that made NaN from inputs holding none. It is the birth when
  // no op made the walk's Inf from finite values: the Inf was written on purpose (a fill value).
  size_t nan_found = kNone;
  bool nan_birth = false;
  std::vector<size_t> chain;  // walk order: found ... producer of the failing tensor
  if (failing_tensor && *failing_tensor != 0) {
    // Breadth-first walk backwards from the failing tensor through non-finite inputs.
    std::unordered_map<size_t, size_t> via;  // op -> the op it feeds (kNone: the tensor)
    std::unordered_set<size_t> seen;
    std::deque<std::pair<uintptr_t, size_t>> queue{{*failing_tensor, kNone}};
    while (!queue.empty()) {
      auto [id, consumer] = queue.front();
      queue.pop_front();
      size_t p = g.producer(id, consumer);
      if (p == kNone || !seen.insert(p).second) continue;
      const auto& r = g.at(p);
      bool nonfinite_out = false;
      for (size_t k = 0; k < r.output_ids.size() && k < r.outputs.size(); ++k) {
        if (r.output_ids[k] == id && !r.outputs[k].finite()) nonfinite_out = true;
      }
      // A finite producer means something unrecorded wrote the tensor later: stop here.
      if (!nonfinite_out) continue;
      via[p] = consumer;
      if (g.is_birth(p)) {
        if (found == kNone || r.index < g.at(found).index) found = p;
        continue;
      }
      if (g.is_nan_birth(p) && (nan_found == kNone || r.index < g.at(nan_found).index)) nan_found = p;
      for (size_t j = 0; j < r.inputs.size() && j < r.input_ids.size(); ++j) {
        if (!r.inputs[j].finite() && r.input_ids[j] != 0) queue.emplace_back(r.input_ids[j], p);
      }
    }
    if (found == kNone && nan_found != kNone) {
      found = nan_found;
      nan_birth = true;
    }
    if (found != kNone) {
      for (size_t p = found; p != kNone; p = via[p]) chain.push_back(p);
    }
  }
  if (found == kNone) found = g.first_birth();
  if (found == kNone) {
    birth.reason =
        "no op turned finite inputs into non-finite outputs: the non-finite values entered the "
        "step from outside the traced ops (input data, parameters or optimizer state)";
    return birth;
  }

  size_t inner = g.innermost(found, nan_birth);
  birth.found = true;
  birth.connected = !chain.empty();
  birth.op = g.at(inner);
  if (nan_birth) birth.inf_source = intended_inf_source(g, inner);
  if (birth.connected) {
    if (inner != found) birth.path.push_back(g.at(inner));
    for (size_t p : chain) birth.path.push_back(g.at(p));
    for (size_t k = 1; k < chain.size(); ++k) {
      if (adds_nonfinite(g.at(chain[k]))) birth.also_created.push_back(g.at(chain[k]));
    }
  }
  // Ops that ran before it at its own level: top-level ops and siblings of it or of the ops
  // it runs inside. The helpers those ops called, and the enclosing ops, are left out.
  for (size_t p = inner; p-- > 0 && static_cast<int>(birth.preceding.size()) < preceding;) {
    const auto& r = g.at(p);
    if (r.index >= birth.op.index || r.outputs.empty() || g.is_ancestor(p, inner)) continue;
    size_t parent = g.parent_of(p);
    if (parent != kNone && !g.is_ancestor(parent, inner)) continue;
    birth.preceding.push_back(r);
  }
  std::reverse(birth.preceding.begin(), birth.preceding.end());
  birth.reason = birth_reason(birth.op);
  return birth;
}

}  // namespace nanguard::trace
