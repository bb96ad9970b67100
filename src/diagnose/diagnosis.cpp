#include "nanguard/diagnose/diagnosis.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "diagnose/divergence.h"
#include "diagnose/initialisation.h"

namespace nanguard {
namespace {

// Thresholds. A cause is claimed only when its evidence passes them.
constexpr double kOutlierZ = 6.0;      // z-score of a sample's absmax that makes it extreme
constexpr double kGrowthFactor = 1.5;  // growth per step that counts as geometric ...
constexpr int kMinGrowthSteps = 3;     // ... over at least this many consecutive rises
constexpr int kFitWindow = 10;         // points of the log-linear fit over the tail
constexpr int kMinFitPoints = 5;
constexpr double kFitConsistency = 0.7;   // share of rising steps the fit needs
constexpr double kFitMedianStep = 1.2;    // median step ratio the fit needs (not one jump)
constexpr double kSpikeRatio = 100.0;     // last value vs the median of the earlier ones
constexpr double kGradSpikeRatio = 10.0;  // a gradient-norm jump that supports exploding
constexpr double kModerateWeight = 1e3;   // |w| up to this: weights have not run away
constexpr double kHugeWeight = 1e4;       // |w| above this: weights have run away
constexpr double kConcentrated = 10.0;    // largest layer grad norm vs the others' median
constexpr double kHugeGradNorm = 1e3;     // a layer gradient norm this large is exploding
constexpr double kVanishingRatio = 1e-4;  // first-layer / last-layer gradient norm
constexpr double kPrimary = 0.5;          // below this no cause explains the incident

// Confidences (evidence -> score; penalties multiply when the evidence points elsewhere):
//   bad_input_data   0.97 non-finite inputs in the batch; 0.9 labels out of range only.
//   transient_fault  0.85 with >= 2 finite replays, 0.6 with one; +0.1 environment suspect.
//   unsafe_loss      0.85 birth in forward at log/exp/div/sqrt with matching input stats,
//                    0.65 in backward; +0.07 clean batch, moderate weights, no growth;
//                    +0.05 log right after softmax; x0.5 dirty batch, x0.6 geometric growth,
//                    x0.7 huge weights, x0.6 extreme samples among the rows blamed.
//   lr_too_high      0.7 loss and grad norm geometric, 0.6 one of them, 0.45 a spike only;
//                    +0.2 born in the optimizer (0.4 without growth); +0.1 huge weights (0.3
//                    alone); x0.3 dirty batch, x0.6 born in backward without loss growth,
//                    x0.5 when the replay was finite, x0.7 when only the optimizer state
//                    overflowed; at most 0.95 (an inference from trends).
//   exploding        0.5 born in backward at a non-unsafe op or a gradient norm past float32
//                    (0.3 gradients failed without a birth); +0.2 concentrated in one layer, +0.1 recurrent, +0.1 huge,
//                    +0.1 grad-norm jump, +0.05 monitor warning; x0.6 loss grew geometrically,
//                    x0.3 dirty batch, x0.5 replay finite. Never with a forward birth.
//   data_outlier     0.6 samples with z >= 6; +0.25 among the rows blamed; +0.05 z >= 100;
//                    x0.5 dirty batch, x0.5 replay finite.
//   optimizer_state  0.8 state non-finite while gradients finite (+0.05 when it is what the
//                    check caught); 0.2 otherwise (a consequence).
//   vanishing / bad_initialization: monitor warnings and fading layer norms; 0.5-0.7 without
//                    an incident, at most 0.4 beside one (they do not make NaN themselves).
//   environment      0.5 beside a non-reproduced fault, 0.35 without replay, 0.3 reproduced.
//   bad_input_data   0.9 also for a zero division on rows the audit flagged blank or constant
//                    (unsafe_loss x0.5 then).
//   optimizer_setting 0.95 born in the optimizer at a division whose denominator holds exact
//                    zeros, with epsilon 0 or one that rounds to 0 in the dtype (-0.1 when the
//                    denominator was not sqrt + eps); 0.7 when the epsilon is unknown.
//   fully_masked_row 0.92 born at a softmax whose input held -inf but no NaN or +inf, the -inf
//                    written by a fill (masked_fill with -inf); 0.85 without a recorded fill.
//   unknown          1 - best when no cause reaches kPrimary.

// ---- Formatting ----

std::string num(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0) return "0";
  double a = std::fabs(x);
  if (a >= 1e-3 && a < 1e5) {
    int magnitude = static_cast<int>(std::floor(std::log10(a)));
    int decimals = std::max(0, 3 - magnitude);
    std::string s = fmt::format("{:.{}f}", x, decimals);
    if (s.find('.') != std::string::npos) {
      while (!s.empty() && s.back() == '0') s.pop_back();
      if (!s.empty() && s.back() == '.') s.pop_back();
    }
    return s;
  }
  return fmt::format("{:.3g}", x);
}

std::string ids_text(const std::vector<int64_t>& ids, size_t max_shown = 8) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < max_shown; ++i) {
    if (i) s += ", ";
    s += std::to_string(ids[i]);
  }
  if (ids.size() > max_shown) s += fmt::format(", ... ({} in all)", ids.size());
  return s;
}

std::string names_text(const std::vector<std::string>& names, size_t max_shown = 4) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max_shown; ++i) {
    if (i) s += ", ";
    s += names[i];
  }
  if (names.size() > max_shown) s += fmt::format(", ... ({} in all)", names.size());
  return s;
}

std::string plural(int64_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

std::string step_text(const Evidence& e) {
  if (e.epoch >= 0) return fmt::format("step {} (epoch {})", e.step, e.epoch);
  return fmt::format("step {}", e.step);
}

// "aten::log in layers.1.dense (forward)", "aten::div inside LogBackward0 outside any module
// (backward)".
std::string site(const std::string& op, const std::string& module, const std::string& phase,
                 const std::string& node) {
  std::string s = op.empty() ? std::string("an unnamed op") : op;
  if (!node.empty()) {
    // "autograd::engine::evaluate_function: LogBackward0" -> "LogBackward0".
    auto colon = node.rfind(": ");
    s += " inside " + (colon == std::string::npos ? node : node.substr(colon + 2));
  }
  s += module.empty() ? std::string(" outside any module") : " in " + module;
  if (!phase.empty()) s += " (" + phase + ")";
  return s;
}

std::string birth_site(const Evidence& e) {
  return site(e.birth_op, e.birth_module, e.birth_phase, e.birth_backward_node);
}

// "the gradients check failed (non-finite: a.grad, b.grad)".
std::string failure_text(const Evidence& e) {
  std::string s = e.failed_check.empty() ? std::string("the finiteness check failed")
                                         : "the " + e.failed_check + " check failed";
  if (!e.nonfinite_tensors.empty()) s += " (non-finite: " + names_text(e.nonfinite_tensors) + ")";
  return s;
}

std::string rows_text(const Evidence& e) {
  if (e.blamed_rows.empty() && e.blamed_samples.empty()) return "";
  std::string s;
  if (!e.blamed_rows.empty()) {
    s = (e.blamed_rows.size() == 1 ? "Row " : "Rows ") + ids_text(e.blamed_rows) + " of the batch";
    if (!e.blamed_samples.empty()) s += " (dataset ids " + ids_text(e.blamed_samples) + ")";
  } else {
    s = "Dataset ids " + ids_text(e.blamed_samples);
  }
  return s + " went non-finite first. ";
}

// ---- Op names ----

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "aten::log_" -> "log".
std::string op_base(const std::string& op) {
  std::string s = op;
  auto colons = s.rfind("::");
  if (colons != std::string::npos) s = s.substr(colons + 2);
  while (!s.empty() && s.back() == '_') s.pop_back();
  return lower(s);
}

// "LogBackward0" -> "log", "PowBackward1" -> "pow"; "" when not a backward node name.
std::string node_base(const std::string& node) {
  std::string s = node;
  auto colon = s.rfind(": ");  // "autograd::engine::evaluate_function: LogBackward0"
  if (colon != std::string::npos) s = s.substr(colon + 2);
  while (!s.empty() && std::isdigit(static_cast<unsigned char>(s.back()))) s.pop_back();
  const std::string suffix = "Backward";
  if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0)
    return "";
  return lower(s.substr(0, s.size() - suffix.size()));
}

enum class Family { none, log, exp, div, sqrt, rsqrt, pow };

Family family_of(const std::string& base) {
  if (base == "log" || base == "log2" || base == "log10") return Family::log;
  if (base == "exp" || base == "exp2" || base == "expm1") return Family::exp;
  if (base == "div" || base == "divide" || base == "true_divide" || base == "reciprocal" ||
      base == "fmod" || base == "remainder")
    return Family::div;
  if (base == "sqrt") return Family::sqrt;
  if (base == "rsqrt") return Family::rsqrt;
  if (base == "pow" || base == "float_power") return Family::pow;
  return Family::none;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool is_recurrent(const std::string& name) {
  std::string n = lower(name);
  return contains(n, "lstm") || contains(n, "gru") || contains(n, "rnn") ||
         contains(n, "weight_hh") || contains(n, "recurrent");
}

bool is_grad_tensor(const std::string& name) {
  return name.size() >= 5 && name.compare(name.size() - 5, 5, ".grad") == 0;
}

bool any_warning(const Evidence& e, const char* needle) {
  for (const auto& w : e.prior_warnings)
    if (contains(lower(w), needle)) return true;
  return false;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- History shape ----

struct Growth {
  int points = 0;          // values analysed (the trailing run of finite, positive values)
  bool geometric = false;  // consistent growth of at least kGrowthFactor per step
  bool spike = false;      // last value >= kSpikeRatio x the median of the earlier ones
  double factor = 1;       // growth per step over `steps` (the fit when not geometric)
  int steps = 0;
  double first = 0, last = 0;
  double earlier_median = 0;
  double spike_ratio = 0;  // last / earlier_median, 0 when unknown
  bool evidence() const { return geometric || spike; }
};

// Growth is measured on a log scale, so only the trailing run of finite positive values is
// used. Two tests: a run of consecutive rises, and a least-squares fit of log(value) over the
// last kFitWindow points (tolerates one dip in a noisy divergence).
Growth analyse_growth(const std::vector<double>& values) {
  Growth g;
  size_t begin = values.size();
  while (begin > 0 && std::isfinite(values[begin - 1]) && values[begin - 1] > 0) --begin;
  std::vector<double> v(values.begin() + static_cast<std::ptrdiff_t>(begin), values.end());
  g.points = static_cast<int>(v.size());
  if (v.size() < 2) return g;
  const int n = static_cast<int>(v.size());
  g.last = v.back();

  // Step ratios, so that one jump after small rises does not pass for steady growth.
  auto median_ratio = [&](int from, int to) {  // ratios v[i] / v[i-1] for i in (from, to]
    std::vector<double> r;
    for (int i = from + 1; i <= to; ++i) r.push_back(v[i] / v[i - 1]);
    return median(r);
  };
  int run = 0;
  while (run < n - 1 && v[n - 1 - run] > v[n - 2 - run]) ++run;
  double run_factor = run > 0 ? std::pow(v[n - 1] / v[n - 1 - run], 1.0 / run) : 1.0;

  const int k = std::min(n, kFitWindow);
  double fit_factor = 1.0;
  int rises = 0;
  if (k >= 2) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < k; ++i) {
      double x = i, y = std::log(v[n - k + i]);
      sx += x;
      sy += y;
      sxx += x * x;
      sxy += x * y;
      if (i > 0 && v[n - k + i] > v[n - k + i - 1]) ++rises;
    }
    double denom = k * sxx - sx * sx;
    if (denom > 0) fit_factor = std::exp((k * sxy - sx * sy) / denom);
  }
  bool run_geometric = run >= kMinGrowthSteps && run_factor >= kGrowthFactor &&
                       median_ratio(n - 1 - run, n - 1) >= kGrowthFactor;
  bool fit_geometric = k >= kMinFitPoints && fit_factor >= kGrowthFactor &&
                       rises >= kFitConsistency * (k - 1) &&
                       median_ratio(n - k, n - 1) >= kFitMedianStep;
  if (run_geometric && (!fit_geometric || run >= k - 1)) {
    g.geometric = true;
    g.factor = run_factor;
    g.steps = run;
    g.first = v[n - 1 - run];
  } else {
    g.geometric = fit_geometric;
    g.factor = fit_factor;
    g.steps = k - 1;
    g.first = v[n - k];
  }

  if (n >= 5) {
    g.earlier_median = median(std::vector<double>(v.begin(), v.end() - 1));
    if (g.earlier_median > 0) {
      g.spike_ratio = g.last / g.earlier_median;
      g.spike = g.spike_ratio >= kSpikeRatio;
    }
  }
  return g;
}

// "the loss grew geometrically over the last 5 steps (x2.6 per step, from 0.51 to 55)".
std::string growth_text(const char* what, const Growth& g) {
  if (g.geometric)
    return fmt::format("{} grew geometrically over the last {} steps (x{} per step, from {} to {})",
                       what, g.steps, num(g.factor), num(g.first), num(g.last));
  if (g.spike)
    return fmt::format("{} reached {}, {}x the median of the {} steps before it ({})", what,
                       num(g.last), num(g.spike_ratio), g.points - 1, num(g.earlier_median));
  return "";
}

std::string trend_text(const char* what, const Growth& g) {
  if (g.points < 2) return fmt::format("{} has no history yet", what);
  return fmt::format("{} changed by x{} per step over the last {} steps", what, num(g.factor),
                     g.steps);
}

// ---- Per-layer gradient norms ----

struct LayerNorms {
  bool known = false;  // at least two layers
  std::string largest;
  double largest_norm = 0;
  double others_median = 0;
  double concentration = 0;  // largest / others' median; inf when the others are all zero
  std::string first, last;   // model order
  double first_norm = 0, last_norm = 0;
};

LayerNorms analyse_layers(const std::vector<std::pair<std::string, double>>& norms) {
  LayerNorms l;
  std::vector<std::pair<std::string, double>> finite;
  for (const auto& [name, value] : norms)
    if (std::isfinite(value) && value >= 0) finite.emplace_back(name, value);
  if (finite.empty()) return l;
  size_t best = 0;
  for (size_t i = 1; i < finite.size(); ++i)
    if (finite[i].second > finite[best].second) best = i;
  l.largest = finite[best].first;
  l.largest_norm = finite[best].second;
  l.first = finite.front().first;
  l.first_norm = finite.front().second;
  l.last = finite.back().first;
  l.last_norm = finite.back().second;
  if (finite.size() < 2) return l;
  l.known = true;
  std::vector<double> others;
  for (size_t i = 0; i < finite.size(); ++i)
    if (i != best) others.push_back(finite[i].second);
  l.others_median = median(others);
  l.concentration = l.others_median > 0  ? l.largest_norm / l.others_median
                    : l.largest_norm > 0 ? std::numeric_limits<double>::infinity()
                                         : 0;
  return l;
}

// ---- Shared facts ----

struct Facts {
  bool clean_batch = true;      // no non-finite input values
  bool incident = false;        // a check failed (not only monitor warnings)
  bool not_reproduced = false;  // the replay ran and was finite
  bool optimizer_born = false;
  bool huge_weights = false;
  bool moderate_weights = true;
  std::vector<const SampleEvidence*> outliers;  // z >= kOutlierZ
  bool outliers_blamed = false;  // an outlier is among the rows that went non-finite first
  Growth loss, grad;
  LayerNorms layers;
};

Facts gather(const Evidence& e) {
  Facts f;
  f.clean_batch = e.nonfinite_samples.empty();
  f.incident = !e.failed_check.empty() || !e.nonfinite_tensors.empty();
  f.not_reproduced = e.replayed && !e.reproduced;
  f.optimizer_born = (e.birth_found && e.birth_phase == "optimizer") ||
                     e.params_nonfinite_before_step || e.failed_check == "parameters";
  f.huge_weights = std::isfinite(e.weight_absmax) ? e.weight_absmax > kHugeWeight : false;
  f.moderate_weights = std::isfinite(e.weight_absmax) && e.weight_absmax <= kModerateWeight;
  for (const auto& s : e.outlier_samples) {
    if (!(std::fabs(s.zscore) >= kOutlierZ)) continue;
    f.outliers.push_back(&s);
    bool by_id = s.id >= 0 && std::find(e.blamed_samples.begin(), e.blamed_samples.end(), s.id) !=
                                  e.blamed_samples.end();
    bool by_row = s.row >= 0 && std::find(e.blamed_rows.begin(), e.blamed_rows.end(), s.row) !=
                                    e.blamed_rows.end();
    if (by_id || by_row) f.outliers_blamed = true;
  }
  f.loss = analyse_growth(e.loss_history);
  f.grad = analyse_growth(e.grad_norm_history);
  f.layers = analyse_layers(e.layer_grad_norms);
  return f;
}

std::string sample_label(const SampleEvidence& s) {
  if (s.id >= 0) return fmt::format("id {}", s.id);
  return fmt::format("row {} (dataset id unknown)", s.row);
}

// Names the samples among ids that the data audit flagged before training.
std::string audit_note(const Evidence& e, const std::vector<int64_t>& ids) {
  std::vector<int64_t> flagged;
  for (int64_t id : ids) {
    if (e.audit_flagged_samples.contains(id)) flagged.push_back(id);
  }
  if (flagged.empty()) return "";
  return fmt::format(" The data audit had flagged {} {} before training (audit.json).",
                     flagged.size() == 1 ? "id" : "ids", ids_text(flagged));
}

// Every sample the audit flagged for one of `properties` that a blamed sample was flagged for
// too: one incident quarantines the whole kind, not one sample per incident. Adds them to
// samples (kept sorted) and returns a sentence saying so ("" when none was added).
std::string blame_same_kind(const Evidence& e, std::initializer_list<const char*> properties,
                            std::vector<int64_t>& samples) {
  std::vector<std::string> kinds;
  for (int64_t id : samples)
    for (const auto& p : e.audit_flagged_samples.properties_of(id))
      if (std::find(properties.begin(), properties.end(), p) != properties.end() &&
          std::find(kinds.begin(), kinds.end(), p) == kinds.end())
        kinds.push_back(p);
  std::vector<int64_t> all = samples;
  for (const auto& k : kinds) {
    const auto& more = e.audit_flagged_samples.with_property(k);
    all.insert(all.end(), more.begin(), more.end());
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  const size_t added = all.size() - std::min(all.size(), samples.size());
  if (added == 0) return "";
  samples = std::move(all);
  return fmt::format(" The data audit flagged {} more training {} as {} before training; they are blamed with "
                     "them ({} in all).",
                     added, added == 1 ? "sample" : "samples", names_text(kinds), samples.size());
}

// What the audit can see of each cause's samples.
constexpr std::initializer_list<const char*> kNonFiniteKinds = {"non_finite", "missing"};
constexpr std::initializer_list<const char*> kExtremeKinds = {"extreme", "zscore_outlier", "out_of_range"};
constexpr std::initializer_list<const char*> kDegenerateKinds = {"blank", "constant"};

// ---- Rules ----

void rule_bad_input_data(const Evidence& e, std::vector<CauseScore>& out) {
  if (e.nonfinite_samples.empty() && !e.labels_out_of_range) return;
  CauseScore c;
  c.cause = cause::bad_input_data;
  std::string text = step_text(e) + ": ";
  if (!e.nonfinite_samples.empty()) {
    c.confidence = 0.97;
    std::vector<int64_t> ids;
    std::vector<int64_t> rows;
    for (const auto& s : e.nonfinite_samples) {
      if (s.id >= 0)
        ids.push_back(s.id);
      else
        rows.push_back(s.row);
    }
    c.samples = ids;
    std::string who;
    if (!ids.empty())
      who = "dataset " + std::string(ids.size() == 1 ? "id " : "ids ") + ids_text(ids);
    if (!rows.empty())
      who += std::string(who.empty() ? "" : "; ") + "batch rows " + ids_text(rows) +
             " (dataset ids unknown)";
    text +=
        fmt::format("the batch held non-finite input values before any op ran: {}{} ({}). ",
                    plural(static_cast<int64_t>(e.nonfinite_samples.size()), "sample", "samples"),
                    e.batch_size > 0 ? fmt::format(" of {}", e.batch_size) : std::string(), who);
    const size_t shown = std::min<size_t>(e.nonfinite_samples.size(), 5);
    std::vector<std::string> details;
    for (size_t i = 0; i < shown; ++i) {
      const auto& s = e.nonfinite_samples[i];
      std::string d = fmt::format("{}: {}", sample_label(s),
                                  plural(s.nonfinite, "NaN/Inf value", "NaN/Inf values"));
      if (!s.features.empty())
        d += fmt::format(" at {} {}", s.features.size() == 1 ? "feature" : "features",
                         ids_text(s.features, 6));
      details.push_back(d);
    }
    for (size_t i = 0; i < details.size(); ++i) text += (i ? "; " : "") + details[i];
    if (e.nonfinite_samples.size() > shown)
      text += fmt::format(" (and {} more)", e.nonfinite_samples.size() - shown);
    text += ". No op created these values; every op after them only propagated them.";
    text += audit_note(e, ids);
    text += blame_same_kind(e, kNonFiniteKinds, c.samples);
    if (e.labels_out_of_range)
      text += " The batch also holds labels outside the range the loss accepts.";
    c.suggestion =
        "quarantine these samples and fix them at the source: look for missing values, "
        "failed parses or divisions by zero in loading and preprocessing";
  } else {
    c.confidence = 0.9;
    text +=
        "the batch holds labels outside the range the loss accepts (a class index below 0 or "
        "not below the number of classes, or a target outside [0, 1] for a binary loss); " +
        failure_text(e) + ".";
    c.suggestion =
        "check the label encoding against the number of outputs of the model's last "
        "layer and the loss";
  }
  c.explanation = text;
  out.push_back(std::move(c));
}

void rule_transient(const Evidence& e, const Facts& f, std::vector<CauseScore>& out) {
  if (!f.not_reproduced) return;
  CauseScore c;
  c.cause = cause::transient_fault;
  c.confidence = e.replays >= 2 ? 0.85 : 0.6;
  if (e.environment_suspect) c.confidence = std::min(0.95, c.confidence + 0.1);
  std::string text = fmt::format(
      "{}: {}, but {} of the same step from the same state, RNG and batch {} finite: the fault "
      "did not reproduce. No op and no sample is to blame; a deterministic cause (data, loss, "
      "learning rate) would have failed again.",
      step_text(e), failure_text(e),
      e.replays > 0 ? plural(e.replays, "replay", "replays") : std::string("the replay"),
      e.replays == 1 ? "was" : "were");
  if (e.environment_suspect)
    text +=
        " The environment self-test failed too" +
        (e.environment_finding.empty() ? std::string() : " (" + e.environment_finding + ")") +
        ", which points at the hardware (device memory, silent data corruption) or a broken library.";
  else
    text +=
        " Suspect the hardware (a memory bit flip, silent data corruption) or a race in a "
        "kernel.";
  if (e.replays < 2) text += " A second replay would confirm it.";
  c.explanation = text;
  c.suggestion =
      "recompute the step and change nothing else; if it recurs, run the environment "
      "doctor and check the device (ECC errors, temperature, driver)";
  out.push_back(std::move(c));
}

struct UnsafeBirth {
  bool found = false;
  const char* subkind = "";
  std::string what;    // "its input held 37 exact zeros, and log(0) = -inf"
  std::string effect;  // how the value became NaN later
};

UnsafeBirth classify_unsafe(const Evidence& e) {
  UnsafeBirth u;
  if (!e.birth_found || (e.birth_phase != "forward" && e.birth_phase != "backward")) return u;
  const bool backward = e.birth_phase == "backward";
  const Family op_family = family_of(op_base(e.birth_op));
  const Family node_family = backward ? family_of(node_base(e.birth_backward_node)) : Family::none;
  const int64_t zeros = e.birth_input_zeros;
  const int64_t negatives = e.birth_input_negatives;
  auto zeros_text = [&] { return plural(zeros, "exact zero", "exact zeros"); };
  auto negatives_text = [&] { return plural(negatives, "negative value", "negative values"); };

  // A backward node names the forward op whose derivative blew up (d log(x) = 1/x at 0).
  if (node_family != Family::none) {
    const std::string node = e.birth_backward_node;
    if (node_family == Family::log && (zeros > 0 || negatives > 0)) {
      u = {true, unsafe_loss_kind::log_of_zero,
           fmt::format("while back-propagating through log its inputs held {}: the "
                       "derivative of log at 0 is 1/0 = inf",
                       zeros_text()),
           "the gradients became non-finite"};
    } else if ((node_family == Family::sqrt || node_family == Family::rsqrt ||
                node_family == Family::pow) &&
               negatives > 0) {
      u = {true, unsafe_loss_kind::sqrt_of_negative,
           fmt::format("while back-propagating through {} its inputs held {}", node_base(node),
                       negatives_text()),
           "the gradients became NaN"};
    } else if ((node_family == Family::sqrt || node_family == Family::rsqrt ||
                node_family == Family::pow || node_family == Family::div) &&
               zeros > 0) {
      u = {true, unsafe_loss_kind::zero_division,
           fmt::format("while back-propagating through {} it divided by {}: the "
                       "derivative of {} is infinite there",
                       node_base(node), zeros_text(),
                       node_family == Family::div ? "x / d at d = 0" : "sqrt at 0"),
           "the gradients became non-finite"};
    }
    if (u.found) return u;
  }

  switch (op_family) {
    case Family::log:
      if (zeros > 0 || negatives > 0) {
        std::string held = zeros > 0 ? zeros_text() : std::string();
        if (negatives > 0) held += (held.empty() ? "" : " and ") + negatives_text();
        u = {true, unsafe_loss_kind::log_of_zero,
             fmt::format("its input held {}, and {}", held,
                         zeros > 0 ? "log(0) = -inf" : "the log of a negative number is NaN"),
             zeros > 0 ? "a zero target times -inf gives 0 * -inf = NaN, as does a sum of "
                         "opposite infinities"
                       : "NaN propagated to the result"};
      }
      break;
    case Family::exp: {
      double threshold = e.exp_overflow_threshold;
      double effective_max = e.birth_input_max;
      if (op_base(e.birth_op) == "exp2") effective_max *= std::log(2.0);
      if (std::isfinite(threshold) && effective_max > threshold)
        u = {true, unsafe_loss_kind::exp_overflow,
             fmt::format("its input reached {}, above {}, where exp overflows the dtype "
                         "(exp({}) is about {})",
                         num(e.birth_input_max), num(threshold), num(threshold),
                         num(std::exp(threshold))),
             "the output became inf, and a later inf / inf or inf - inf gives NaN"};
      break;
    }
    case Family::div:
      if (zeros > 0)
        u = {true, unsafe_loss_kind::zero_division,
             fmt::format("it divided by {}: x / 0 = inf and 0 / 0 = NaN", zeros_text()),
             "the non-finite quotient propagated"};
      break;
    case Family::sqrt:
      if (negatives > 0)
        u = {true, unsafe_loss_kind::sqrt_of_negative,
             fmt::format("its input held {}, and sqrt(x < 0) = NaN", negatives_text()),
             "NaN propagated"};
      break;
    case Family::rsqrt:
      if (negatives > 0)
        u = {true, unsafe_loss_kind::sqrt_of_negative,
             fmt::format("its input held {}, and rsqrt(x < 0) = NaN", negatives_text()),
             "NaN propagated"};
      else if (zeros > 0)
        u = {true, unsafe_loss_kind::zero_division,
             fmt::format("its input held {}, and rsqrt(0) = 1 / sqrt(0) = inf", zeros_text()),
             "inf propagated"};
      break;
    case Family::pow:
      if (negatives > 0)
        u = {true, unsafe_loss_kind::sqrt_of_negative,
             fmt::format("its base held {}, and a fractional power of a negative number is NaN",
                         negatives_text()),
             "NaN propagated"};
      else if (zeros > 0)
        u = {true, unsafe_loss_kind::zero_division,
             fmt::format("its base held {}, and a negative power of zero is inf", zeros_text()),
             "inf propagated"};
      break;
    case Family::none:
      break;
  }
  return u;
}

bool ran_op_like(const Evidence& e, std::initializer_list<const char*> needles) {
  for (const auto& op : e.replay_ops) {
    const std::string base = op_base(op);
    for (const char* n : needles)
      if (contains(base, n)) return true;
  }
  for (const auto& op : e.preceding_ops)
    for (const char* n : needles)
      if (contains(op_base(op.name), n)) return true;
  return false;
}

// The model ends in a sigmoid (binary outputs) and no softmax: advice about softmax would not
// fit it. Read from the ops the replay ran, not from any scenario name.
bool sigmoid_model(const Evidence& e) {
  return ran_op_like(e, {"sigmoid", "binary_cross_entropy"}) &&
         !ran_op_like(e, {"softmax", "logsumexp", "nll_loss", "cross_entropy_loss"});
}

std::string unsafe_suggestion(const std::string& subkind, const Evidence& e) {
  const bool sigmoid = sigmoid_model(e);
  if (subkind == unsafe_loss_kind::log_of_zero && sigmoid)
    return "compute the loss from the logits: binary_cross_entropy_with_logits (or log_sigmoid(z)) instead of "
           "log(sigmoid(z)); where a log of a probability is needed, clamp it to at least a small epsilon "
           "(e.g. 1e-7)";
  if (subkind == unsafe_loss_kind::log_of_zero)
    return "compute log_softmax(z) instead of log(softmax(z)), or use the loss with "
           "from_logits; where a log of a probability is needed, clamp it to at least a small "
           "epsilon (e.g. 1e-7)";
  if (subkind == unsafe_loss_kind::exp_overflow && sigmoid)
    return "use sigmoid(z), log_sigmoid(z) or softplus(z), which never overflow, instead of writing "
           "1 / (1 + exp(-z)) or log(1 + exp(z)) by hand; or clamp the exponent's argument";
  if (subkind == unsafe_loss_kind::exp_overflow)
    return "subtract the maximum before exponentiating (softmax(z) = exp(z - max z) / "
           "sum(exp(z - max z))), or use softmax / log_softmax / logsumexp, which do it";
  if (subkind == unsafe_loss_kind::zero_division)
    return "keep the denominator away from zero: add a small epsilon (x / (d + 1e-8)), clamp "
           "it, or mask the zero entries with where(d != 0, ...)";
  return "clamp the argument to be non-negative (sqrt(clamp_min(x, 0) + eps)) and find why it "
         "goes negative (e.g. a variance computed as E[x^2] - E[x]^2 loses precision)";
}

// Whether a sample was flagged for one of `kinds`.
bool flagged_as(const AuditFlags& flags, int64_t id, std::initializer_list<const char*> kinds) {
  for (const auto& p : flags.properties_of(id))
    if (std::find(kinds.begin(), kinds.end(), p) != kinds.end()) return true;
  return false;
}

// Whether every blamed sample was flagged for one of `kinds` by the data audit, or (with_batch)
// by the guard in the failing batch itself (where no audit flagged it).
bool every_blamed_flagged_as(const Evidence& e, std::initializer_list<const char*> kinds, bool with_batch) {
  return std::all_of(e.blamed_samples.begin(), e.blamed_samples.end(), [&](int64_t id) {
    return flagged_as(e.audit_flagged_samples, id, kinds) || (with_batch && flagged_as(e.batch_flagged_samples, id, kinds));
  });
}

// Every blamed sample is blank or constant.
bool degenerate_rows(const Evidence& e) {
  return !e.blamed_samples.empty() && every_blamed_flagged_as(e, kDegenerateKinds, true);
}

// Where the blamed samples were seen blank or constant, for the explanations.
std::string degenerate_source(const Evidence& e) {
  if (every_blamed_flagged_as(e, kDegenerateKinds, false))
    return "the data audit had flagged as blank or constant before training";
  return every_blamed_flagged_as(e, {"blank"}, true) ? "are blank (every value 0) in the input batch"
                                                     : "are blank or constant (every value the same) in the input batch";
}

// A zero division on rows that are blank or constant samples: a per-sample statistic (std,
// norm) of such a sample is 0, so (x - mean) / std is 0/0 there. The samples are the cause, and
// every sample the audit flagged for the same property fails the same way.
void rule_degenerate_samples(const Evidence& e, std::vector<CauseScore>& out) {
  const UnsafeBirth u = classify_unsafe(e);
  if (!u.found || std::string(u.subkind) != unsafe_loss_kind::zero_division || !degenerate_rows(e)) return;
  CauseScore c;
  c.cause = cause::bad_input_data;
  c.confidence = 0.9;
  c.samples = e.blamed_samples;
  std::string text = fmt::format(
      "{}: the first non-finite value was born at {}: {}, in the rows of dataset {} {}, which {}. A per-sample "
      "statistic of such a sample (its standard deviation, its norm) is 0, so a per-sample normalisation divides "
      "0 by 0 = NaN there; the other samples are unaffected.",
      step_text(e), birth_site(e), u.what, e.blamed_samples.size() == 1 ? "id" : "ids", ids_text(e.blamed_samples),
      degenerate_source(e));
  text += blame_same_kind(e, kDegenerateKinds, c.samples);
  c.explanation = text;
  c.suggestion =
      "quarantine the blank or constant samples and fix them at the source, or keep the per-sample denominator "
      "away from zero ((x - mean) / (std + 1e-8))";
  out.push_back(std::move(c));
}

void rule_unsafe_loss(const Evidence& e, const Facts& f, std::vector<CauseScore>& out) {
  UnsafeBirth u = classify_unsafe(e);
  if (!u.found) return;
  const bool backward = e.birth_phase == "backward";
  const bool growth = f.loss.geometric || f.grad.geometric;
  CauseScore c;
  c.cause = cause::unsafe_loss;
  c.subkind = u.subkind;
  c.confidence = backward ? 0.65 : 0.85;

  bool after_softmax = false;
  if (c.subkind == unsafe_loss_kind::log_of_zero && !backward && !e.preceding_ops.empty()) {
    const std::string last = op_base(e.preceding_ops.back().name);
    after_softmax = last == "softmax" || last == "_softmax";
    if (after_softmax) c.confidence += 0.05;
  }
  if (f.clean_batch && f.moderate_weights && !growth) c.confidence += 0.07;
  if (!f.clean_batch) c.confidence *= 0.5;
  if (growth) c.confidence *= 0.6;
  if (f.huge_weights) c.confidence *= 0.7;
  if (f.outliers_blamed) c.confidence *= 0.6;

  std::string text = fmt::format("{}: the first non-finite value was born at {}: {}.", step_text(e),
                                 birth_site(e), u.what);
  if (after_softmax)
    text += fmt::format(
        " Its input came straight from {}, so this is log(softmax(z)): the "
        "softmax underflows to exactly 0 for strongly negative logits.",
        e.preceding_ops.back().name);
  text += " " + rows_text(e);
  text += fmt::format("Then {}; {}.", u.effect, failure_text(e));
  if (!e.birth_reason.empty()) text += " Tracer: " + e.birth_reason + ".";
  std::vector<std::string> context;
  if (f.clean_batch)
    context.push_back("the input batch was finite");
  else
    context.push_back("the batch also held non-finite inputs, which may explain it instead");
  if (std::isfinite(e.weight_absmax) && e.weight_absmax > 0)
    context.push_back(
        fmt::format("the largest |w| was {}{}", num(e.weight_absmax),
                    f.huge_weights ? ", which is huge: the weights may have run away" : ""));
  if (growth)
    context.push_back(
        "but the loss or gradient norm had been growing geometrically, "
        "so a too-high learning rate may have driven the values there");
  text += " Context: " + names_text(context, 4) + ".";

  c.suggestion = unsafe_suggestion(c.subkind, e);
  if (e.loss_owned_by_trainer && !e.loss_is_stable) {
    text +=
        " The trainer's loss uses its literal (unstable) form; nanguard will switch it to "
        "the stable form.";
    c.suggestion =
        "let nanguard switch the trainer's loss to its stable form (or configure it "
        "that way); " +
        c.suggestion;
  } else if (e.loss_owned_by_trainer) {
    text += " The trainer's loss is already the stable form, so the unsafe op is in the model.";
  }
  // Every row that went non-finite is a sample the audit saw as blank or constant: the data is
  // the cause (rule_degenerate_samples), the division only where it shows.
  if (degenerate_rows(e)) {
    c.confidence *= 0.5;
    text += " The rows that went non-finite are samples that " + degenerate_source(e) + ", which points at the data.";
  }
  c.explanation = text;
  out.push_back(std::move(c));
}

// The monitor's first growth warning before the incident (null when none): growth it saw
// even where the guard's short history no longer shows it.
const monitor::Warning* first_growth_warning(const Evidence& e) {
  for (const auto& w : e.monitor_warnings)
    if (w.detector == "loss_growth" || w.detector == "grad_norm_growth") return &w;
  return nullptr;
}

void rule_lr_too_high(const Evidence& e, const Facts& f, const UnsafeBirth& unsafe,
                      std::vector<CauseScore>& out) {
  const monitor::Warning* warned = first_growth_warning(e);
  const bool growth = f.loss.evidence() || f.grad.evidence() || warned != nullptr;
  if (!growth && !f.optimizer_born && !f.huge_weights) return;
  const bool loss_geo = f.loss.geometric, grad_geo = f.grad.geometric;
  double conf = 0;
  if (loss_geo && grad_geo)
    conf = 0.7;
  else if (loss_geo || grad_geo)
    conf = 0.6;
  else if (growth)
    conf = 0.45;
  if (f.optimizer_born) conf += growth ? 0.2 : 0.4;
  if (f.huge_weights) conf += conf > 0 ? 0.1 : 0.3;
  if (!f.clean_batch) conf *= 0.3;
  if (e.birth_found && e.birth_phase == "backward" && !unsafe.found && !loss_geo) conf *= 0.6;
  if (f.not_reproduced) conf *= 0.5;
  const bool state_only = e.optimizer_state_nonfinite && e.failed_check == "optimizer_state";
  if (state_only) conf *= 0.7;
  conf = std::min(conf, 0.95);  // an inference from trends, never certain

  CauseScore c;
  c.cause = cause::lr_too_high;
  c.confidence = conf;
  std::vector<std::string> facts;
  if (f.loss.evidence()) facts.push_back(growth_text("the loss", f.loss));
  if (f.grad.evidence()) facts.push_back(growth_text("the gradient norm", f.grad));
  std::string text = step_text(e) + ": ";
  if (!facts.empty()) {
    text += "before the incident " + facts[0];
    if (facts.size() > 1) text += ", and " + facts[1];
    text += ". ";
  } else if (!warned)
    text += "the loss and gradient norm showed no geometric growth before the incident. ";
  if (warned)
    text += fmt::format("The monitor warned {} steps before the incident: {}. ", e.step - warned->step,
                        warned->message);
  if (f.optimizer_born) {
    if (e.birth_found && e.birth_phase == "optimizer")
      text +=
          "The first non-finite value was born in the optimizer step, at " + birth_site(e) + ". ";
    else
      text += "The first non-finite values were in the parameters after the optimizer step. ";
  } else if (e.birth_found) {
    text += "The first non-finite value was born at " + birth_site(e);
    // E.g. a loss whose per-sample values are finite but whose sum passes the dtype's range.
    if (e.birth_input_absmax > 0)
      text += fmt::format(" from finite inputs (|x| up to {}): the values had outgrown the dtype", num(e.birth_input_absmax));
    text += ". ";
  }
  if (std::isfinite(e.weight_absmax) && e.weight_absmax > 0)
    text += fmt::format("The largest |w| before the step was {}{}. ", num(e.weight_absmax),
                        f.huge_weights ? " (the weights have run away)" : "");
  text += f.clean_batch ? "The input batch was finite. "
                        : "The batch held non-finite inputs, which explains the incident better. ";
  if (f.not_reproduced)
    text += "The replay was finite, which argues against a deterministic divergence. ";
  const std::string lr = e.learning_rate > 0 ? fmt::format(" of {}", num(e.learning_rate)) : "";
  if (growth)
    text += fmt::format(
        "With a learning rate{}, each update overshoots and the next one is "
        "larger.",
        lr);
  else
    text += fmt::format(
        "One update took the parameters past the finite range, which a learning "
        "rate{} too high for the model can do.",
        lr);
  c.explanation = text;
  c.suggestion = e.learning_rate > 0
                     ? fmt::format(
                           "lower the learning rate (e.g. by 10x, to {}), add a warmup or "
                           "gradient-norm clipping, and normalise the inputs",
                           num(e.learning_rate * 0.1))
                     : std::string(
                           "lower the learning rate (e.g. by 10x), add a warmup or "
                           "gradient-norm clipping, and normalise the inputs");
  out.push_back(std::move(c));
}

void rule_exploding(const Evidence& e, const Facts& f, const UnsafeBirth& unsafe,
                    std::vector<CauseScore>& out) {
  if (e.birth_found && (e.birth_phase == "forward" || e.birth_phase == "optimizer")) return;
  if (unsafe.found) return;
  const LayerNorms& l = f.layers;
  const bool backward_born = e.birth_found && e.birth_phase == "backward";
  // A gradient norm past float32's range is an exploding gradient caught one step early: every
  // gradient is still finite, but their squared sum is not.
  const bool norm_overflow = e.gradient_norm_overflow || e.failed_check == "gradient_norm";
  const bool grads_failed = e.failed_check == "gradients" || norm_overflow;
  const bool concentrated = l.known && l.concentration >= kConcentrated;
  const bool huge = l.largest_norm >= kHugeGradNorm || norm_overflow;
  const bool jump = f.grad.points >= 3 && f.grad.earlier_median > 0 &&
                    f.grad.last >= kGradSpikeRatio * f.grad.earlier_median;
  bool recurrent = (concentrated || huge) && is_recurrent(l.largest);
  std::vector<std::string> bad_grads;
  for (const auto& t : e.nonfinite_tensors)
    if (is_grad_tensor(t)) bad_grads.push_back(t);
  bool recurrent_grads =
      !bad_grads.empty() && std::all_of(bad_grads.begin(), bad_grads.end(), is_recurrent);
  const bool magnitude = concentrated || huge || jump;
  if (!backward_born && !(grads_failed && magnitude)) return;

  double conf = backward_born || norm_overflow ? 0.5 : 0.3;
  if (concentrated) conf += 0.2;
  if (recurrent || recurrent_grads) conf += 0.1;
  if (huge) conf += 0.1;
  if (jump) conf += 0.1;
  if (any_warning(e, "exploding") || any_warning(e, "grad_norm")) conf += 0.05;
  if (f.loss.geometric) conf *= 0.6;
  if (!f.clean_batch) conf *= 0.3;
  if (f.not_reproduced) conf *= 0.5;

  CauseScore c;
  c.cause = cause::exploding_gradients;
  c.confidence = conf;
  std::string text = step_text(e) + ": ";
  if (backward_born)
    text += "the first non-finite value was born in the backward pass at " + birth_site(e) +
            " from finite inputs: the gradient overflowed while back-propagating; the forward "
            "pass stayed finite. ";
  else if (norm_overflow)
    text += "the gradient norm passed float32's range (its square overflows) while the loss and every "
            "gradient were finite: the gradient exploded in the backward pass. ";
  else
    text += failure_text(e) +
            " while the loss was finite: the gradient overflowed in the "
            "backward pass. ";
  if (concentrated)
    text += fmt::format("The gradient norm of {} was {}, {}x the median of the other layers ({}). ",
                        l.largest, num(l.largest_norm), num(l.concentration), num(l.others_median));
  else if (huge)
    text += fmt::format("The largest layer gradient norm was {} ({}). ", num(l.largest_norm),
                        l.largest);
  if (jump)
    text += fmt::format(
        "The total gradient norm jumped to {}, {}x the median of the steps before "
        "({}). ",
        num(f.grad.last), num(f.grad.last / f.grad.earlier_median), num(f.grad.earlier_median));
  if (recurrent || recurrent_grads)
    text += "These are recurrent weights, whose gradient is multiplied once per time step. ";
  if (!bad_grads.empty()) text += "Non-finite gradients: " + names_text(bad_grads) + ". ";
  if (f.loss.geometric)
    text += "The loss was growing geometrically too, which points more at the learning rate.";
  else
    text += "The loss was not growing geometrically before (" + trend_text("it", f.loss) +
            "), so the blow-up happened inside the backward pass rather than over many steps.";
  c.explanation = text;
  // A loss that grew for many steps first is the learning rate's doing, not the initial scale.
  const bool lr_driven = f.loss.geometric || first_growth_warning(e) != nullptr;
  c.suggestion = lr_driven ? "clip the gradient norm (e.g. to 1.0) and lower the learning rate (e.g. by 10x)"
                 : (recurrent || recurrent_grads)
                     ? "clip the gradient norm (e.g. to 1.0) and initialise the recurrent weights "
                       "orthogonally or with a smaller scale"
                     : "clip the gradient norm (e.g. to 1.0), check the weight initialisation "
                       "scale, or add normalisation layers";
  // A recurrent matrix with a gain above every standard init multiplies the gradient once per
  // time step: the initialisation is where the explosion comes from, and re-initialising that
  // matrix (not clipping its symptoms) is the repair.
  const std::vector<InitFinding> gains = detail::findings_of(e, "recurrent_gain");
  if ((recurrent || recurrent_grads) && !gains.empty()) {
    c.subkind = detail::kRecurrentGain;
    c.explanation += " The recurrent weights are out of scale for a stable recurrence: " + detail::init_findings_text(gains) +
                     "; above 1, the backward product of the step Jacobians can grow with every time step.";
    c.suggestion = detail::reinit_suggestion(gains) + ", or clip the gradient norm (e.g. to 1.0)";
  }
  out.push_back(std::move(c));
}

void rule_data_outlier(const Evidence& e, const Facts& f, std::vector<CauseScore>& out) {
  if (f.outliers.empty()) return;
  double max_z = 0;
  for (const auto* s : f.outliers) max_z = std::max(max_z, std::fabs(s->zscore));
  double conf = 0.6;
  if (f.outliers_blamed) conf += 0.25;
  if (max_z >= 100) conf += 0.05;
  if (!f.clean_batch) conf *= 0.5;
  if (f.not_reproduced) conf *= 0.5;

  CauseScore c;
  c.cause = cause::data_outlier;
  c.confidence = conf;
  std::vector<std::string> items;
  for (const auto* s : f.outliers) {
    if (s->id >= 0) c.samples.push_back(s->id);
    items.push_back(fmt::format("{} (|x| up to {}, z-score {})", sample_label(*s), num(s->absmax),
                                num(s->zscore)));
  }
  std::string text = fmt::format("{}: the batch holds {} finite but extreme {}: {}. ", step_text(e),
                                 f.outliers.size(), f.outliers.size() == 1 ? "sample" : "samples",
                                 names_text(items, 6));
  const bool caught_early = e.failed_check == "loss_spike" || e.failed_check == "grad_norm_spike" ||
                           e.failed_check == "sample_screen" || e.failed_check == "loss_excursion";
  if (caught_early) {
    text += e.failed_check == "sample_screen" ? std::string("The batch screen found them before the update was applied. ")
            : e.failed_check == "loss_excursion"
                ? std::string("The loss on this batch left the run's healthy range (the divergence watch) before its "
                              "update was applied. ")
                : fmt::format("The monitor's {} warning fired on this batch before its update was applied. ",
                              e.failed_check);
  } else {
    text += "The step failed on this batch: " + failure_text(e);
    if (f.outliers_blamed) text += ", and the replay traced the first non-finite rows to them";
    text += ". ";
  }
  if (f.loss.points > 0)
    text += fmt::format(
        "Before it the loss had been around {} (median of the last {} steps), so "
        "the loss spiked on these samples.",
        num(median(e.loss_history)), e.loss_history.size());
  if (f.not_reproduced) text += " The replay was finite, which argues against a data cause.";
  text += audit_note(e, c.samples);
  text += blame_same_kind(e, kExtremeKinds, c.samples);
  c.explanation = text;
  c.suggestion =
      "quarantine these samples or fix their scale; standardise or clip the input "
      "features (e.g. to a few standard deviations)";
  out.push_back(std::move(c));
}

void rule_optimizer_state(const Evidence& e, const Facts& f, std::vector<CauseScore>& out) {
  if (!e.optimizer_state_nonfinite && e.failed_check != "optimizer_state") return;
  std::vector<std::string> grads, states;
  for (const auto& t : e.nonfinite_tensors) (is_grad_tensor(t) ? grads : states).push_back(t);
  const bool grads_finite =
      grads.empty() && e.failed_check != "gradients" && e.failed_check != "loss" && f.clean_batch;
  CauseScore c;
  c.cause = cause::optimizer_state_overflow;
  c.confidence = grads_finite ? 0.8 : 0.2;
  if (grads_finite && e.failed_check == "optimizer_state") c.confidence += 0.05;
  std::string text = step_text(e) + ": the optimizer state went non-finite";
  if (!states.empty()) text += " (" + names_text(states) + ")";
  if (grads_finite) {
    text +=
        " while the loss and gradients were finite: the optimizer's running statistics "
        "overflowed (e.g. squared gradients past the dtype's range, or a tiny epsilon in a "
        "denominator).";
  } else {
    text += ", but non-finite " +
            std::string(grads.empty() ? "loss, gradients or inputs" : "gradients") +
            " reached it first, so the state is probably a consequence and the cause lies "
            "upstream: " +
            failure_text(e) + ".";
  }
  if (e.learning_rate > 0) text += fmt::format(" Learning rate: {}.", num(e.learning_rate));
  c.explanation = text;
  c.suggestion =
      "roll back and reset the optimizer state, raise the optimizer's epsilon (e.g. "
      "from 1e-8 to 1e-6 or more in low precision), or lower the learning rate";
  out.push_back(std::move(c));
}

std::string fading_text(const LayerNorms& l) {
  return fmt::format(
      "the gradient norm of the first layer {} ({}) is {}x that of the last layer "
      "{} ({})",
      l.first, num(l.first_norm), num(l.first_norm / l.last_norm), l.last, num(l.last_norm));
}

void rule_structure(const Evidence& e, const Facts& f, std::vector<CauseScore>& out) {
  const LayerNorms& l = f.layers;
  const bool fading = l.known && l.last_norm > 0 && l.first_norm / l.last_norm <= kVanishingRatio;
  const bool warned_vanishing = any_warning(e, "vanishing");
  const bool warned_saturation = any_warning(e, "saturat");
  const bool after_growth = f.loss.evidence() || f.grad.evidence() || first_growth_warning(e) != nullptr;
  const std::string warnings = names_text(e.prior_warnings, 6);

  if (warned_vanishing || fading) {
    CauseScore c;
    c.cause = cause::vanishing_gradients;
    double conf = (warned_vanishing && fading) ? 0.7 : fading ? 0.55 : 0.5;
    if (f.incident) conf = (warned_vanishing && fading) ? 0.4 : 0.3;
    c.confidence = conf;
    std::string text = step_text(e) + ": ";
    if (fading) text += fading_text(l) + ": the signal fades on its way back to the first layers. ";
    if (warned_vanishing) text += "The monitor warned before: " + warnings + ". ";
    if (f.incident)
      text +=
          "Vanishing gradients slow training but do not make NaN themselves; this is a "
          "secondary finding beside the incident: " +
          failure_text(e) + ".";
    c.explanation = text;
    // Gradients that fade after the loss or gradient norm grew come from updates that were too
    // large (units pushed dead), which no initialisation undoes.
    c.suggestion = after_growth
                       ? "lower the learning rate (e.g. by 10x) or add a warmup: the gradients faded after the "
                         "loss grew, as when too large an update pushes units into their dead range"
                       : "use relu-family activations with He initialisation, add normalisation "
                         "layers or residual connections, or make the network shallower";
    out.push_back(std::move(c));
  }
  if (warned_saturation) {
    CauseScore c;
    c.cause = cause::bad_initialization;
    double conf = fading ? 0.6 : 0.5;
    if (f.incident) conf = 0.3;
    c.confidence = conf;
    std::string text = step_text(e) + ": the monitor warned about saturated activations before (" +
                       warnings +
                       "): sigmoid/tanh units pinned at their flat ends, the usual sign "
                       "of an initial weight scale that is too large.";
    if (fading) text += " Also " + fading_text(l) + ".";
    if (f.incident)
      text += " This is a secondary finding beside the incident: " + failure_text(e) + ".";
    c.explanation = text;
    c.suggestion = after_growth
                       ? "lower the learning rate (e.g. by 10x): the activations saturated after the loss grew, "
                         "so large updates rather than the initial scale pinned them"
                       : "initialise with He (relu) or Xavier/Glorot (tanh, sigmoid) scaling instead of "
                         "N(0, 1), prefer relu-family activations, or add normalisation layers";
    out.push_back(std::move(c));
  }
}

// The smallest positive value of a dtype (its smallest subnormal): an epsilon below half of it
// rounds to 0 when the update adds it.
double smallest_subnormal(const std::string& dtype) {
  if (dtype == "float16") return 5.96e-8;
  if (dtype == "bfloat16") return 9.18e-41;
  if (dtype == "float64") return 4.94e-324;
  return 1.4e-45;  // float32
}

// "its denominator (written by aten::sqrt -> aten::div -> aten::add_)".
std::string denominator_text(const Evidence& e) {
  std::string s = "its denominator";
  if (!e.birth_denominator_ops.empty()) s += " (written by " + names_text(e.birth_denominator_ops, 6) + ")";
  return s;
}

// An update whose denominator holds exact zeros: sqrt(v) + eps is 0 only where v = 0 and eps
// adds nothing (eps = 0, or an eps that rounds to 0 in the dtype), so a parameter whose
// gradient is exactly 0 gets 0 / 0 = NaN. The zeros themselves are the evidence.
void rule_optimizer_setting(const Evidence& e, std::vector<CauseScore>& out) {
  if (!e.birth_found || e.birth_phase != "optimizer" || !e.birth_is_division || e.birth_denominator_zeros <= 0)
    return;
  const bool eps_known = !std::isnan(e.optimizer_epsilon);
  const bool zero_eps = eps_known && e.optimizer_epsilon == 0;
  const bool underflow = eps_known && e.optimizer_epsilon > 0 &&
                         e.optimizer_epsilon < 0.5 * smallest_subnormal(e.parameter_dtype);
  if (eps_known && !zero_eps && !underflow) return;  // a real epsilon: the zeros came from elsewhere
  CauseScore c;
  c.cause = cause::optimizer_setting;
  c.subkind = underflow ? optimizer_setting_kind::epsilon_underflow : optimizer_setting_kind::zero_epsilon;
  c.confidence = eps_known ? 0.95 : 0.7;
  if (eps_known && !e.birth_denominator_sqrt_add) c.confidence -= 0.1;  // not the usual sqrt(v) + eps
  const std::string opt = e.optimizer_name.empty() ? std::string("the optimizer") : "the " + e.optimizer_name + " optimizer";
  std::string text = fmt::format("{}: the first non-finite value was born in the optimizer step at {}{}: {} held {} of {}",
                                 step_text(e), birth_site(e),
                                 e.birth_parameter.empty() ? "" : ", updating " + e.birth_parameter, denominator_text(e),
                                 plural(e.birth_denominator_zeros, "exact zero", "exact zeros"),
                                 e.birth_denominator_numel);
  if (zero_eps)
    text += fmt::format(", and the epsilon of {} is 0", opt);
  else if (underflow)
    text += fmt::format(", and the epsilon of {} ({}) rounds to 0 in {}", opt, num(e.optimizer_epsilon), e.parameter_dtype);
  else
    text += ", and the optimizer's epsilon is not known";
  text +=
      ". Where a parameter's gradient is exactly 0 (a unit that never receives gradient), its moments stay 0 and "
      "the update divides 0 by 0 = NaN; the loss, gradients and input batch were finite.";
  if (!e.birth_reason.empty()) text += " Tracer: " + e.birth_reason + ".";
  c.explanation = text;
  c.suggestion = e.parameter_dtype == "float16"
                     ? "set the optimizer's epsilon to at least 1e-4 in float16 (1e-7 as Keras or 1e-8 as PyTorch "
                       "round to 0 there)"
                     : "set the optimizer's epsilon (eps) to a positive value: 1e-7 as Keras does, or 1e-8 as "
                       "PyTorch does";
  out.push_back(std::move(c));
}

bool is_softmax(const std::string& op) {
  const std::string b = op_base(op);
  return b == "softmax" || b == "_softmax" || b == "log_softmax" || b == "_log_softmax";
}

// A softmax whose input holds -inf and no NaN or +inf makes NaN only over a row that is all
// -inf: exp(-inf - (-inf)). That is the model's mask emptying a row, not the loss.
void rule_fully_masked_row(const Evidence& e, std::vector<CauseScore>& out) {
  if (!e.birth_found || !is_softmax(e.birth_op) || e.birth_input_neginf <= 0 || e.birth_input_nan > 0 ||
      e.birth_input_posinf > 0)
    return;
  CauseScore c;
  c.cause = cause::fully_masked_row;
  c.confidence = e.birth_inf_source.empty() ? 0.85 : 0.92;
  c.samples = e.blamed_samples;
  std::string text = fmt::format(
      "{}: the NaN was born at {}: its input held {} and no NaN, so at least one row it normalises was entirely "
      "-inf (every position masked), and exp(-inf - (-inf)) = NaN. ",
      step_text(e), birth_site(e), plural(e.birth_input_neginf, "-inf", "-infs"));
  if (!e.birth_inf_source.empty())
    text += fmt::format("The -inf came from {}, which writes a fill value (the mask) on purpose: it made the Inf, "
                        "not the NaN. ",
                        e.birth_inf_source);
  if (!e.blamed_rows.empty()) {
    text += fmt::format("Fully masked: {} of the batch", (e.blamed_rows.size() == 1 ? "row " : "rows ") + ids_text(e.blamed_rows));
    if (!e.blamed_samples.empty())
      text += std::string(e.blamed_samples.size() == 1 ? " (dataset id " : " (dataset ids ") +
              ids_text(e.blamed_samples) + ")";
    text += ". ";
  }
  text += "Then " + failure_text(e) + ".";
  text += blame_same_kind(e, kDegenerateKinds, c.samples);
  c.explanation = text;
  c.suggestion =
      "keep at least one position unmasked in every row (e.g. let padding positions attend to themselves), mask "
      "with a large finite negative (-1e9, or the dtype's lowest value) instead of -inf, or zero the rows that are "
      "fully masked after the softmax";
  out.push_back(std::move(c));
}

void rule_environment(const Evidence& e, const Facts& f, std::vector<CauseScore>& out) {
  if (!e.environment_suspect) return;
  CauseScore c;
  c.cause = cause::environment;
  std::string text = step_text(e) +
                     ": the environment self-test failed (a faulty device, a broken "
                     "BLAS, an unsupported dtype or a version mismatch is suspected). ";
  if (!e.environment_finding.empty()) text += "Failing check: " + e.environment_finding + ". ";
  if (f.not_reproduced) {
    c.confidence = 0.5;
    text += "The incident did not reproduce in the replay, which fits a hardware fault.";
  } else if (e.reproduced) {
    c.confidence = 0.3;
    text +=
        "The incident reproduced in the replay, so a deterministic library fault (e.g. a "
        "broken BLAS kernel) is possible, though the other findings may explain it better.";
  } else {
    c.confidence = 0.35;
    text += "No replay was run to tell a deterministic fault from a transient one.";
  }
  c.explanation = text;
  c.suggestion =
      "run the environment doctor, compare a matrix product with a reference "
      "implementation, and check the BLAS library, driver and LibTorch versions";
  out.push_back(std::move(c));
}

CauseScore unknown_cause(const Evidence& e, const Facts& f, const std::vector<CauseScore>& weak,
                         double best) {
  CauseScore c;
  c.cause = cause::unknown;
  c.confidence = 1.0 - best;
  std::string text = step_text(e) + ": ";
  if (!f.incident) {
    text += "no check failed and no monitor warning applies: the evidence shows no incident.";
    c.explanation = text;
    c.suggestion = "nothing to change";
    return c;
  }
  text += failure_text(e) + ", but no rule matched the evidence. ";
  std::vector<std::string> checked;
  checked.push_back(f.clean_batch ? "the input batch was finite"
                                  : "the batch held non-finite inputs");
  checked.push_back(f.outliers.empty() ? "no sample was extreme" : "some samples were extreme");
  checked.push_back(trend_text("the loss", f.loss));
  checked.push_back(trend_text("the gradient norm", f.grad));
  text += "Checked: " + names_text(checked, 4) + ". ";
  if (!e.replayed) {
    text += "No replay was run, so the op that created the first non-finite value is unknown. ";
  } else if (!e.birth_found) {
    text += "The replay did not locate the op that created the first non-finite value. ";
  } else {
    text += "The first non-finite value was born at " + birth_site(e) +
            " from finite inputs, but none of the rules recognises that op with these inputs";
    text += e.birth_reason.empty() ? ". " : " (" + e.birth_reason + "). ";
  }
  if (!weak.empty()) {
    std::vector<std::string> names;
    for (const auto& w : weak) names.push_back(fmt::format("{} ({})", w.cause, num(w.confidence)));
    text += "Weaker candidates: " + names_text(names, 6) + ".";
  }
  c.explanation = text;
  c.suggestion = e.birth_found ? "inspect the inputs of " + e.birth_op +
                                     " in the trace and the domain it "
                                     "accepts; check the data and the learning rate"
                               : std::string(
                                     "replay the step with the op tracer on to locate the birth "
                                     "op; check the data and the learning rate");
  return c;
}

double clamp01(double x) {
  return std::isfinite(x) ? std::clamp(x, 0.0, 1.0) : 0.0;
}

}  // namespace

AuditFlags::AuditFlags(std::vector<int64_t> flagged_ids) : ids(std::move(flagged_ids)) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
}

void AuditFlags::add(const std::string& property, std::vector<int64_t> flagged_ids) {
  std::sort(flagged_ids.begin(), flagged_ids.end());
  flagged_ids.erase(std::unique(flagged_ids.begin(), flagged_ids.end()), flagged_ids.end());
  std::vector<int64_t> merged;
  std::set_union(ids.begin(), ids.end(), flagged_ids.begin(), flagged_ids.end(), std::back_inserter(merged));
  ids = std::move(merged);
  for (auto& [p, list] : by_property) {
    if (p != property) continue;
    std::vector<int64_t> both;
    std::set_union(list.begin(), list.end(), flagged_ids.begin(), flagged_ids.end(), std::back_inserter(both));
    list = std::move(both);
    return;
  }
  by_property.emplace_back(property, std::move(flagged_ids));
}

bool AuditFlags::contains(int64_t id) const { return std::binary_search(ids.begin(), ids.end(), id); }

const std::vector<int64_t>& AuditFlags::with_property(const std::string& property) const {
  static const std::vector<int64_t> kNone;
  for (const auto& [p, list] : by_property)
    if (p == property) return list;
  return kNone;
}

std::vector<std::string> AuditFlags::properties_of(int64_t id) const {
  std::vector<std::string> out;
  for (const auto& [p, list] : by_property)
    if (std::binary_search(list.begin(), list.end(), id)) out.push_back(p);
  return out;
}

const CauseScore* Diagnosis::find(const std::string& cause) const {
  for (const auto& c : ranked)
    if (c.cause == cause) return &c;
  return nullptr;
}

Diagnosis diagnose(const Evidence& evidence) {
  const Facts facts = gather(evidence);
  const UnsafeBirth unsafe = classify_unsafe(evidence);
  std::vector<CauseScore> causes;
  if (evidence.diverged) {
    detail::diagnose_divergence(evidence, causes);  // nothing is non-finite: the other rules have nothing to read
  } else {
    rule_bad_input_data(evidence, causes);
    rule_transient(evidence, facts, causes);
    rule_unsafe_loss(evidence, facts, causes);
    rule_degenerate_samples(evidence, causes);
    rule_lr_too_high(evidence, facts, unsafe, causes);
    rule_exploding(evidence, facts, unsafe, causes);
    rule_data_outlier(evidence, facts, causes);
    rule_optimizer_state(evidence, facts, causes);
    rule_structure(evidence, facts, causes);
    rule_environment(evidence, facts, causes);
    rule_optimizer_setting(evidence, causes);
    rule_fully_masked_row(evidence, causes);
  }

  double best = 0;
  for (auto& c : causes) {
    c.confidence = clamp01(c.confidence);
    while (!c.explanation.empty() && c.explanation.back() == ' ') c.explanation.pop_back();
    best = std::max(best, c.confidence);
  }
  if (best < kPrimary) {
    causes.push_back(unknown_cause(evidence, facts, causes, best));
    while (!causes.back().explanation.empty() && causes.back().explanation.back() == ' ')
      causes.back().explanation.pop_back();
  }
  // Stable: on equal confidence the rule order above (most direct evidence first) decides.
  std::stable_sort(causes.begin(), causes.end(), [](const CauseScore& a, const CauseScore& b) {
    return a.confidence > b.confidence;
  });
  Diagnosis d;
  d.ranked = std::move(causes);
  return d;
}

}  // namespace nanguard
