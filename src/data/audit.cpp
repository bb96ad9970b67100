#include "nanguard/data/audit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/check.h"
#include "data/audit_csv.h"
#include "data/audit_stats.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "nanguard/data/idx.h"
#include "nanguard/data/npy.h"

namespace nanguard::data {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace detail {

std::vector<std::pair<int64_t, int64_t>> LabelAccumulator::counts_sorted() const {
  std::map<int64_t, int64_t> counts;
  for (size_t i = 0; i < dense.size(); ++i) {
    if (dense[i] > 0) counts[static_cast<int64_t>(i)] += dense[i];
  }
  for (int64_t label : other) ++counts[label];
  return {counts.begin(), counts.end()};
}

void add_flag(AuditReport& report, const std::string& kind, int64_t count, std::vector<int64_t> samples,
              int64_t max_listed, const std::string& detail) {
  if (count <= 0) return;
  SampleFlag flag;
  flag.kind = kind;
  flag.count = count;
  std::sort(samples.begin(), samples.end());
  samples.erase(std::unique(samples.begin(), samples.end()), samples.end());
  if (static_cast<int64_t>(samples.size()) > max_listed) samples.resize(max_listed);
  flag.samples = std::move(samples);
  flag.detail = detail;
  report.flags.push_back(std::move(flag));
}

namespace {

// Linear interpolation between order statistics (numpy's and pandas' default).
double quantile_sorted(const std::vector<double>& v, double q) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto i = static_cast<size_t>(std::floor(pos));
  const double frac = pos - static_cast<double>(i);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (v[i + 1] - v[i]) * frac;
}

// Counts the values of one tail kept by `extremes` that satisfy `is_outlier`. The count is
// exact unless every kept value qualifies and the tail may hold more.
int64_t tail_count(Extremes& extremes, const std::function<bool(double)>& is_outlier, bool* exact,
                   std::vector<Extremes::Item>* hits) {
  int64_t n = 0;
  for (const auto& item : extremes.items()) {
    if (is_outlier(item.value)) {
      ++n;
      if (hits) hits->push_back(item);
    }
  }
  if (n > 0 && n == extremes.capacity()) *exact = false;
  return n;
}

// Rows with equal hashes, sorted by hash: every one after the first of its group is a
// duplicate of that first one (row refs are dataset order, so "earlier" holds).
void record_duplicates(std::vector<std::pair<uint64_t, int64_t>>& hs, const AuditOptions& options,
                       AuditReport& report) {
  std::sort(hs.begin(), hs.end());
  std::vector<int64_t> dups;
  for (size_t i = 1; i < hs.size(); ++i) {
    if (hs[i].first != hs[i - 1].first) continue;
    size_t first = i - 1;
    while (first > 0 && hs[first - 1].first == hs[i].first) --first;
    ++report.duplicate_rows;
    dups.push_back(hs[i].second);
    if (static_cast<int64_t>(report.duplicate_examples.size()) < options.max_examples()) {
      report.duplicate_examples.emplace_back(hs[i].second, hs[first].second);
    }
  }
  detail::add_flag(report, "duplicate", report.duplicate_rows, dups, options.max_listed(),
                   "samples equal to an earlier sample");
}

}  // namespace

ColumnSummary finish_column(std::string name, ColumnAccumulator& acc, const AuditOptions& options) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  ColumnSummary s;
  s.name = std::move(name);
  s.count = acc.count;
  s.missing = acc.missing;
  s.nan = acc.nan;
  s.pos_inf = acc.pos_inf;
  s.neg_inf = acc.neg_inf;
  s.zeros = acc.zeros;
  s.unique_estimate = std::min(acc.hll.estimate(), static_cast<double>(acc.count + acc.nan + acc.pos_inf + acc.neg_inf));
  std::sort(acc.nonfinite_rows.begin(), acc.nonfinite_rows.end());
  if (static_cast<int64_t>(acc.nonfinite_rows.size()) > options.max_examples()) {
    acc.nonfinite_rows.resize(options.max_examples());
  }
  s.nonfinite_rows = acc.nonfinite_rows;
  if (acc.count == 0) {
    s.mean = s.std = s.min = s.max = s.q25 = s.q50 = s.q75 = nan;
    return s;
  }
  s.mean = acc.mean();
  s.std = acc.count > 1 ? std::sqrt(acc.m2() / static_cast<double>(acc.count - 1)) : nan;
  s.min = acc.min;
  s.max = acc.max;
  std::vector<double>& sample = acc.reservoir.items();
  std::sort(sample.begin(), sample.end());
  const bool exact = acc.reservoir.exact();
  const auto m = static_cast<double>(sample.size());
  // Dvoretzky-Kiefer-Wolfowitz: the sample CDF is within eps of the column's with 99% confidence.
  s.quantile_rank_error = exact ? 0.0 : std::sqrt(std::log(2.0 / 0.01) / (2.0 * m));
  s.q25 = quantile_sorted(sample, 0.25);
  s.q50 = quantile_sorted(sample, 0.50);
  s.q75 = quantile_sorted(sample, 0.75);
  for (double q : options.extra_quantiles()) s.extra_quantiles.push_back(quantile_sorted(sample, q));
  if (exact) {
    s.q25 = std::clamp(s.q25, s.min, s.max), s.q75 = std::clamp(s.q75, s.min, s.max);
  }
  s.constant = s.min == s.max;
  // Share of the most frequent value in the sample.
  size_t best = 0;
  for (size_t i = 0; i < sample.size();) {
    size_t j = i;
    while (j < sample.size() && sample[j] == sample[i]) ++j;
    best = std::max(best, j - i);
    i = j;
  }
  s.top_fraction = sample.empty() ? 0 : static_cast<double>(best) / m;
  s.near_constant = !s.constant && s.top_fraction >= 0.99;
  if (s.constant) s.unique_estimate = 1 + (acc.nan > 0) + (acc.pos_inf > 0) + (acc.neg_inf > 0);

  // Outliers: exact from the kept extremes, else estimated from the sample.
  const double zl = options.zscore_limit();
  const double iqr = s.q75 - s.q25;
  const double lo_fence = s.q25 - options.iqr_factor() * iqr, hi_fence = s.q75 + options.iqr_factor() * iqr;
  const double mean = s.mean, sd = std::isfinite(s.std) ? s.std : 0;
  auto z_high = [&](double v) { return sd > 0 && v - mean > zl * sd; };
  auto z_low = [&](double v) { return sd > 0 && mean - v > zl * sd; };
  auto i_high = [&](double v) { return v > hi_fence; };
  auto i_low = [&](double v) { return v < lo_fence; };
  bool exact_counts = true;
  std::vector<Extremes::Item> hits;
  int64_t zc = tail_count(acc.high, z_high, &exact_counts, &hits) + tail_count(acc.low, z_low, &exact_counts, &hits);
  bool iqr_exact = true;
  int64_t ic = tail_count(acc.high, i_high, &iqr_exact, nullptr) + tail_count(acc.low, i_low, &iqr_exact, nullptr);
  auto estimate = [&](const std::function<bool(double)>& a, const std::function<bool(double)>& b) {
    int64_t k = 0;
    for (double v : sample) k += a(v) || b(v);
    return static_cast<int64_t>(std::llround(static_cast<double>(k) / m * static_cast<double>(acc.count)));
  };
  if (!exact_counts) zc = std::max(zc, estimate(z_high, z_low));
  if (!iqr_exact) ic = std::max(ic, estimate(i_high, i_low));
  s.zscore_outliers = zc;
  s.iqr_outliers = ic;
  s.outlier_counts_exact = exact_counts;
  s.iqr_counts_exact = iqr_exact;
  std::sort(hits.begin(), hits.end(),
            [&](const Extremes::Item& a, const Extremes::Item& b) { return std::fabs(a.value - mean) > std::fabs(b.value - mean); });
  for (const auto& item : hits) {
    if (static_cast<int64_t>(s.outlier_rows.size()) >= options.max_examples()) break;
    s.outlier_rows.push_back(item.row);
    s.outlier_values.push_back(item.value);
  }

  // Histogram over the range without far outliers (3 IQR beyond the quartiles).
  const int64_t bins = std::max<int64_t>(1, options.bins());
  double lo = s.min, hi = s.max;
  if (iqr > 0) {
    lo = std::max(lo, s.q25 - 3 * iqr);
    hi = std::min(hi, s.q75 + 3 * iqr);
  }
  s.hist_min = lo;
  s.hist_max = hi;
  s.histogram.assign(bins, 0.0);
  s.histogram_exact = exact;
  const double scale = static_cast<double>(acc.count) / m;
  double below = 0, above = 0;
  for (double v : sample) {
    if (v < lo) {
      below += scale;
      continue;
    }
    if (v > hi) {
      above += scale;
      continue;
    }
    int64_t b = hi > lo ? static_cast<int64_t>((v - lo) / (hi - lo) * static_cast<double>(bins)) : 0;
    b = std::clamp<int64_t>(b, 0, bins - 1);
    s.histogram[b] += scale;
  }
  s.hist_below = std::llround(below);
  s.hist_above = std::llround(above);
  return s;
}

}  // namespace detail

using detail::ColumnAccumulator;

const SampleFlag* AuditReport::flag(const std::string& kind) const {
  for (const auto& f : flags) {
    if (f.kind == kind) return &f;
  }
  return nullptr;
}

std::vector<int64_t> AuditReport::flagged_samples() const {
  std::vector<int64_t> all;
  for (const auto& f : flags) {
    if (f.kind == "duplicate") continue;
    all.insert(all.end(), f.samples.begin(), f.samples.end());
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string format_of(const fs::path& path) {
  std::string name = lower(path.filename().string());
  if (ends_with(name, ".gz")) name = name.substr(0, name.size() - 3);
  if (ends_with(name, ".csv") || ends_with(name, ".tsv") || ends_with(name, ".txt")) return "csv";
  if (ends_with(name, ".npy")) return "npy";
  if (ends_with(name, "-ubyte") || ends_with(name, ".idx") || name.find("idx") != std::string::npos) return "idx";
  return "";
}

at::Tensor read_any(const fs::path& path) {
  const std::string format = format_of(path);
  if (format == "npy") return read_npy(path);
  if (format == "idx") return read_idx(path);
  throw ValueError(fmt::format("'{}': cannot read labels in this format (expected .npy or an IDX file)", path.string()));
}

// Runs fn(thread, begin, end) over [0, n) split among threads.
template <typename Fn>
void parallel_rows(int threads, int64_t n, Fn&& fn) {
  if (threads <= 1 || n < 1024) {
    fn(0, int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t per = (n + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t b = std::min(n, per * t), e = std::min(n, per * (t + 1));
    pool.emplace_back([&fn, t, b, e] { fn(t, b, e); });
  }
  for (auto& th : pool) th.join();
}

// Column statistics of a [N, D] double matrix (one accumulator per column).
void describe_matrix(const at::Tensor& m, const std::vector<std::string>& names, const AuditOptions& options,
                     int threads, bool hash_rows, AuditReport& report) {
  const int64_t n = m.size(0), d = m.size(1);
  const double* data = m.data_ptr<double>();
  const int64_t sample_size = std::max<int64_t>(
      1024, std::min<int64_t>(options.sample_size(), (int64_t{4} << 20) / std::max<int64_t>(1, d * threads)));
  std::vector<std::vector<ColumnAccumulator>> acc(threads);
  std::vector<detail::RowAccumulator> rows(threads);
  for (int t = 0; t < threads; ++t) {
    for (int64_t c = 0; c < d; ++c) acc[t].emplace_back(sample_size, 0x5eed + 7919 * c + 104729 * t, options.max_examples());
  }
  parallel_rows(threads, n, [&](int t, int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const double* row = data + r * d;
      uint64_t h = 0x1234567;
      bool bad = false;
      for (int64_t c = 0; c < d; ++c) {
        const uint64_t vh = acc[t][c].add(row[c], r);
        bad |= !std::isfinite(row[c]);
        h = detail::combine_hash(h, vh);
      }
      h = detail::mix64(h);
      if (bad) {
        ++rows[t].nonfinite_rows;
        if (static_cast<int64_t>(rows[t].nonfinite_list.size()) < options.max_listed()) rows[t].nonfinite_list.push_back(r);
      }
      if (hash_rows) rows[t].hashes.emplace_back(h, r);
    }
  });
  for (int t = 1; t < threads; ++t) {
    for (int64_t c = 0; c < d; ++c) acc[0][c].merge(acc[t][c]);
    rows[0].nonfinite_rows += rows[t].nonfinite_rows;
    rows[0].nonfinite_list.insert(rows[0].nonfinite_list.end(), rows[t].nonfinite_list.begin(), rows[t].nonfinite_list.end());
    rows[0].hashes.insert(rows[0].hashes.end(), rows[t].hashes.begin(), rows[t].hashes.end());
  }
  for (int64_t c = 0; c < d; ++c) report.columns.push_back(detail::finish_column(names[c], acc[0][c], options));
  if (!report.images) {
    detail::add_flag(report, "non_finite", rows[0].nonfinite_rows, rows[0].nonfinite_list, options.max_listed(),
                     "rows with a NaN or Inf feature");
  }
  if (hash_rows) {
    auto& hs = rows[0].hashes;
    detail::record_duplicates(hs, options, report);
  }
}

void describe_labels(const at::Tensor& labels, const AuditOptions& options, AuditReport& report) {
  const at::Tensor l = labels.reshape({-1}).to(torch::kFloat64).contiguous();
  NANGUARD_CHECK(l.size(0) == report.rows, "labels: {} labels for {} samples", l.size(0), report.rows);
  detail::LabelAccumulator acc;
  std::vector<int64_t> bad;
  int64_t nbad = 0;
  const double* p = l.data_ptr<double>();
  for (int64_t i = 0; i < l.size(0); ++i) {
    const double v = p[i];
    acc.add(v, false);
    const bool is_bad = !std::isfinite(v) || v != std::nearbyint(v) || v < 0 ||
                        (options.num_classes() > 0 && v >= static_cast<double>(options.num_classes()));
    if (is_bad) {
      ++nbad;
      if (static_cast<int64_t>(bad.size()) < options.max_listed()) bad.push_back(i);
    }
  }
  report.has_labels = true;
  LabelSummary& ls = report.labels;
  if (ls.name.empty()) ls.name = "label";
  ls.count = acc.count;
  ls.classes = acc.counts_sorted();
  ls.non_integer = acc.non_integer;
  ls.non_finite = acc.non_finite;
  ls.out_of_range = nbad - acc.non_integer - acc.non_finite;
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
  for (const auto& [label, n] : ls.classes) {
    if (label < 0 || (options.num_classes() > 0 && label >= options.num_classes())) continue;
    lo = std::min(lo, n), hi = std::max(hi, n);
  }
  ls.imbalance = hi > 0 ? static_cast<double>(hi) / static_cast<double>(lo) : 0;
  detail::add_flag(report, "label_out_of_range", nbad, bad, options.max_listed(),
                   options.num_classes() > 0
                       ? fmt::format("labels non-finite, non-integer or outside [0, {})", options.num_classes())
                       : "labels non-finite, non-integer or negative");
}

std::vector<int64_t> indices_of(const at::Tensor& mask, int64_t limit) {
  const at::Tensor idx = mask.nonzero().reshape({-1}).to(torch::kInt64).contiguous();
  const int64_t n = std::min<int64_t>(idx.size(0), limit);
  const int64_t* p = idx.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + n);
}

}  // namespace

std::vector<SampleFlag> audit_samples(const at::Tensor& data, const AuditOptions& options) {
  NANGUARD_CHECK(data.defined() && data.dim() >= 1, "audit_samples: expected a tensor with a sample dimension");
  torch::NoGradGuard no_grad;
  const int64_t n = data.size(0);
  std::vector<SampleFlag> flags;
  if (n == 0) return flags;
  at::Tensor flat = data.reshape({n, -1});
  if (flat.size(1) == 0) return flags;
  double range_min = options.range_min(), range_max = options.range_max();
  if (std::isnan(range_min) && std::isnan(range_max) && data.scalar_type() == torch::kUInt8) {
    range_min = 0, range_max = 255;
  }
  if (!flat.is_floating_point()) flat = flat.to(torch::kFloat32);
  const int64_t limit = options.max_listed();
  auto add = [&](const std::string& kind, const at::Tensor& mask, const std::string& detail) {
    const int64_t count = mask.sum().item<int64_t>();
    if (count == 0) return;
    SampleFlag f;
    f.kind = kind;
    f.count = count;
    f.samples = indices_of(mask, limit);
    f.detail = detail;
    flags.push_back(std::move(f));
  };

  // One fused pass over the samples (each sample stays in cache): non-finite count, finite
  // min and max, and how many values equal the sample's max.
  if (flat.scalar_type() != torch::kFloat32 && flat.scalar_type() != torch::kFloat64) flat = flat.to(torch::kFloat32);
  flat = flat.contiguous();
  const int64_t d = flat.size(1);
  std::vector<double> vmin(n), vmax(n);
  std::vector<int64_t> vbad(n), vat_max(n);
  auto scan = [&](auto* data) {
    const int threads = options.threads() > 0 ? options.threads()
                                              : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
    parallel_rows(n * d < (int64_t{1} << 20) ? 1 : threads, n, [&](int, int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const auto* x = data + r * d;
        double lo = std::numeric_limits<double>::infinity(), hi = -lo;
        int64_t bad = 0;
        for (int64_t i = 0; i < d; ++i) {
          const double v = x[i];
          if (!std::isfinite(v)) {
            ++bad;
            continue;
          }
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        int64_t at = 0;
        for (int64_t i = 0; i < d; ++i) at += static_cast<double>(x[i]) == hi;
        vmin[r] = lo, vmax[r] = hi, vbad[r] = bad, vat_max[r] = at;
      }
    });
  };
  if (flat.scalar_type() == torch::kFloat32) scan(flat.data_ptr<float>());
  else scan(flat.data_ptr<double>());
  const at::Tensor mn = torch::tensor(vmin, torch::kFloat64), mx = torch::tensor(vmax, torch::kFloat64);
  const at::Tensor bad_count = torch::tensor(vbad, torch::kInt64);
  const at::Tensor finite_rows = bad_count == 0;
  add("non_finite", ~finite_rows, "samples holding NaN or Inf values");
  const at::Tensor has_finite = mn <= mx;
  const at::Tensor constant = (mn == mx) & finite_rows;
  const double blank_value = std::isnan(range_min) ? 0.0 : range_min;
  const at::Tensor blank = constant & (mn == blank_value);
  add("blank", blank, fmt::format("samples whose values are all {}", blank_value));
  // Saturated: most values at the top of the range (the data's maximum when no range is known).
  double top = range_max;
  if (std::isnan(top)) top = *std::max_element(vmax.begin(), vmax.end());
  // A sample all at the top is reported as saturated, not as constant.
  add("constant", constant & ~blank & (mn != top), "samples whose values are all equal (zero variance)");
  if (std::isfinite(top) && d > 1) {
    const at::Tensor at_top =
        torch::where(mx == top, torch::tensor(vat_max, torch::kInt64), torch::zeros({}, torch::kInt64)).to(torch::kFloat64) /
        static_cast<double>(d);
    add("saturated", (at_top >= options.saturated_fraction()) & ~blank,
        fmt::format("samples with at least {:.0f}% of their values at {}", 100 * options.saturated_fraction(), top));
  }
  if (!std::isnan(range_min) || !std::isnan(range_max)) {
    at::Tensor out = torch::zeros({n}, torch::kBool);
    if (!std::isnan(range_min)) out = out | ((mn < range_min) & has_finite);
    if (!std::isnan(range_max)) out = out | ((mx > range_max) & has_finite);
    add("out_of_range", out, fmt::format("samples with values outside [{}, {}]", range_min, range_max));
  }
  // Extreme: the largest |x| far from the typical sample's (robust z-score and a ratio).
  at::Tensor absmax = torch::maximum(mn.abs(), mx.abs()).to(torch::kFloat64);
  const at::Tensor valid = has_finite;
  const at::Tensor values = absmax.masked_select(valid);
  if (values.numel() >= 8) {
    const double median = values.median().item<double>();
    double spread = 1.4826 * (values - median).abs().median().item<double>();
    if (spread <= 0) spread = 1.2533 * (values - median).abs().mean().item<double>();
    at::Tensor z;
    if (spread > 0) {
      z = (absmax - median) / spread;
    } else {
      z = torch::where(absmax > median, torch::full({}, std::numeric_limits<double>::infinity(), absmax.options()),
                       torch::zeros({}, absmax.options()));
    }
    at::Tensor extreme = valid & (z > options.extreme_zscore());
    if (median > 0) extreme = extreme & (absmax > options.extreme_ratio() * median);
    add("extreme", extreme,
        fmt::format("samples whose largest |x| has a robust z-score above {} and exceeds {}x the median sample's ({:.4g})",
                    options.extreme_zscore(), options.extreme_ratio(), median));
  }
  return flags;
}

QuickAudit quick_audit(const at::Tensor& x, const at::Tensor& y, const at::Tensor& ids, const AuditOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  QuickAudit q;
  q.samples = x.defined() && x.dim() > 0 ? x.size(0) : 0;
  if (q.samples == 0) return q;
  AuditOptions o = options;
  o.max_listed(std::numeric_limits<int64_t>::max());  // ids are mapped below, all of them
  q.flags = audit_samples(x, o);
  if (y.defined() && y.numel() == q.samples) {
    const at::Tensor l = y.reshape({-1});
    at::Tensor bad;
    if (l.is_floating_point()) {
      bad = ~l.isfinite() | (l != l.round()) | (l < 0);
    } else {
      bad = l < 0;
    }
    if (options.num_classes() > 0) bad = bad | (l >= options.num_classes());
    const int64_t count = bad.sum().item<int64_t>();
    if (count > 0) {
      SampleFlag f;
      f.kind = "label_out_of_range";
      f.count = count;
      f.samples = indices_of(bad, std::numeric_limits<int64_t>::max());
      f.detail = "labels non-finite, non-integer or out of range";
      q.flags.push_back(std::move(f));
    }
  }
  const at::Tensor id_map = ids.defined() ? ids.reshape({-1}).to(torch::kInt64).contiguous() : at::Tensor();
  for (SampleFlag& f : q.flags) {
    if (id_map.defined()) {
      for (int64_t& s : f.samples) s = id_map.data_ptr<int64_t>()[s];
      std::sort(f.samples.begin(), f.samples.end());
    }
    q.flagged_ids.insert(q.flagged_ids.end(), f.samples.begin(), f.samples.end());
    if (static_cast<int64_t>(f.samples.size()) > options.max_listed()) f.samples.resize(options.max_listed());
  }
  std::sort(q.flagged_ids.begin(), q.flagged_ids.end());
  q.flagged_ids.erase(std::unique(q.flagged_ids.begin(), q.flagged_ids.end()), q.flagged_ids.end());
  q.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return q;
}

std::string QuickAudit::to_json() const {
  json j;
  j["samples"] = samples;
  j["seconds"] = seconds;
  j["flagged_ids"] = flagged_ids;
  j["flags"] = json::array();
  for (const SampleFlag& f : flags) {
    j["flags"].push_back({{"kind", f.kind}, {"count", f.count}, {"ids", f.samples}, {"detail", f.detail}});
  }
  return j.dump(2) + "\n";
}

AuditReport describe_tensor(const at::Tensor& data, const at::Tensor& labels, const AuditOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  NANGUARD_CHECK(data.defined() && data.dim() >= 1, "describe: expected a tensor with at least one dimension");
  torch::NoGradGuard no_grad;
  AuditReport report;
  report.format = "tensor";
  report.shape = data.sizes().vec();
  report.rows = data.size(0);
  report.zscore_limit = options.zscore_limit();
  report.iqr_factor = options.iqr_factor();
  const int threads = options.threads() > 0 ? options.threads()
                                            : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  report.threads = threads;
  const at::Tensor x = data.dim() == 1 ? data.reshape({-1, 1}) : data;
  if (x.dim() == 2) {
    const at::Tensor m = x.to(torch::kFloat64).contiguous();
    std::vector<std::string> names;
    for (int64_t c = 0; c < m.size(1); ++c) names.push_back(std::to_string(c));
    describe_matrix(m, names, options, threads, true, report);
  } else {
    report.images = true;
    const int64_t n = x.size(0);
    // All values as one column (the pixel distribution).
    const at::Tensor all = x.reshape({-1, 1}).to(torch::kFloat64).contiguous();
    {
      // Rows of the values column are the samples they belong to.
      const int64_t per = all.size(0) / std::max<int64_t>(1, n);
      AuditReport tmp;
      tmp.images = true;
      AuditOptions o = options;
      o.max_listed(0);
      describe_matrix(all, {"value"}, o, threads, false, tmp);
      for (auto& r : tmp.columns[0].outlier_rows) r /= std::max<int64_t>(1, per);
      for (auto& r : tmp.columns[0].nonfinite_rows) r /= std::max<int64_t>(1, per);
      report.columns.push_back(std::move(tmp.columns[0]));
    }
    // Per-sample summaries as columns: their outliers name samples.
    const at::Tensor flat = x.reshape({n, -1}).to(torch::kFloat64);
    const at::Tensor per_sample =
        torch::stack({flat.mean(1), flat.std(1), std::get<0>(flat.min(1)), std::get<0>(flat.max(1))}, 1).contiguous();
    describe_matrix(per_sample, {"sample_mean", "sample_std", "sample_min", "sample_max"}, options, threads, false,
                    report);
    for (auto& f : audit_samples(data, options)) report.flags.push_back(std::move(f));
    // Duplicates: hash each sample's bytes.
    const at::Tensor bytes = x.reshape({n, -1}).contiguous();
    const auto* base = static_cast<const unsigned char*>(bytes.data_ptr());
    const size_t row_bytes = static_cast<size_t>(bytes.size(1)) * bytes.element_size();
    std::vector<std::pair<uint64_t, int64_t>> hs(n);
    parallel_rows(threads, n, [&](int, int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const unsigned char* p = base + r * row_bytes;
        uint64_t h = 0x1234567;
        size_t i = 0;
        for (; i + 8 <= row_bytes; i += 8) {
          uint64_t w;
          std::memcpy(&w, p + i, 8);
          h = detail::mix64(h ^ w) + i;
        }
        for (; i < row_bytes; ++i) h = detail::mix64(h ^ p[i]);
        hs[r] = {h, r};
      }
    });
    detail::record_duplicates(hs, options, report);
  }
  if (labels.defined()) describe_labels(labels, options, report);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

AuditReport describe_file(const fs::path& path, const AuditOptions& options) {
  const std::string format = format_of(path);
  NANGUARD_CHECK(!format.empty(),
                 "'{}': unknown data format (expected .csv/.tsv/.txt, .npy, or an IDX file such as *-ubyte or *.idx, "
                 "optionally .gz)",
                 path.string());
  if (format == "csv") {
    NANGUARD_CHECK(options.labels_file().empty(), "'{}': --labels is for IDX/NPY files; CSV files name a label column",
                   path.string());
    std::error_code ec;
    if (!fs::exists(path, ec)) throw IoError(fmt::format("cannot open '{}': No such file or directory", path.string()));
    AuditReport r = detail::describe_csv(path, options);
    return r;
  }
  const auto started = std::chrono::steady_clock::now();
  const at::Tensor data = format == "npy" ? read_npy(path) : read_idx(path);
  NANGUARD_CHECK(data.dim() >= 1, "'{}': a data file needs a sample dimension (found a 0-d array)", path.string());
  at::Tensor labels;
  if (!options.labels_file().empty()) labels = read_any(options.labels_file());
  AuditOptions o = options;
  if (labels.defined() && labels.dim() != 1) {
    throw ValueError(fmt::format("labels file '{}': expected one label per sample (1-d), found {} dimensions",
                                 options.labels_file().string(), labels.dim()));
  }
  if (labels.defined() && labels.size(0) != data.size(0)) {
    throw ValueError(fmt::format("labels file '{}': {} labels for {} samples in '{}'", options.labels_file().string(),
                                 labels.size(0), data.size(0), path.string()));
  }
  AuditReport r = describe_tensor(data, labels, o);
  r.path = path.string();
  r.format = format;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return r;
}

// ---- check ----

CheckRules parse_check_rules(const std::string& text, CheckRules rules) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(pos, end - pos);
    pos = end + 1;
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const std::string value = eq == std::string::npos ? "true" : item.substr(eq + 1);
    auto number = [&]() {
      try {
        size_t used = 0;
        const double v = std::stod(value, &used);
        if (used == value.size() && std::isfinite(v)) return v;
      } catch (const std::exception&) {
      }
      throw ValueError(fmt::format("rule '{}': expected a number, found '{}'", key, value));
    };
    auto boolean = [&]() {
      if (value == "true" || value == "1" || value == "yes") return true;
      if (value == "false" || value == "0" || value == "no") return false;
      throw ValueError(fmt::format("rule '{}': expected true or false, found '{}'", key, value));
    };
    if (key == "max-missing") {
      rules.max_missing_fraction(number());
    } else if (key == "forbid-nonfinite") {
      rules.forbid_nonfinite(boolean());
    } else if (key == "max-outliers") {
      rules.max_outliers(static_cast<int64_t>(number()));
    } else if (key == "zscore") {
      const double z = number();
      NANGUARD_CHECK(z > 0, "rule 'zscore': expected a positive number, found '{}'", value);
      rules.zscore_limit(z);
    } else if (key == "max-bad-samples") {
      rules.max_bad_samples(static_cast<int64_t>(number()));
    } else if (key == "max-duplicates") {
      rules.max_duplicate_fraction(number());
    } else if (key == "forbid-constant") {
      rules.forbid_constant(boolean());
    } else if (key == "forbid-bad-labels") {
      rules.forbid_bad_labels(boolean());
    } else {
      throw ValueError(fmt::format(
          "unknown rule '{}' (expected max-missing, forbid-nonfinite, max-outliers, zscore, max-bad-samples, "
          "max-duplicates, forbid-constant, forbid-bad-labels)",
          key));
    }
  }
  return rules;
}

namespace {

std::string ids_text(const std::vector<int64_t>& ids, int64_t total) {
  std::string s;
  const size_t shown = std::min<size_t>(ids.size(), 10);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  if (total > static_cast<int64_t>(shown)) s += fmt::format(" (and {} more)", total - static_cast<int64_t>(shown));
  return s;
}

}  // namespace

std::vector<Finding> check_report(const AuditReport& report, const CheckRules& rules) {
  std::vector<Finding> out;
  const std::string unit = report.format == "csv" ? "row" : "sample";
  auto add = [&](std::string rule, bool error, std::string column, int64_t count, std::vector<int64_t> samples,
                 std::string message) {
    Finding f;
    f.rule = std::move(rule);
    f.severity = error ? "error" : "warning";
    f.column = std::move(column);
    f.count = count;
    if (samples.size() > 100) samples.resize(100);
    f.samples = std::move(samples);
    f.message = std::move(message);
    out.push_back(std::move(f));
  };
  for (const ColumnSummary& c : report.columns) {
    const int64_t cells = c.count + c.missing + c.nan + c.pos_inf + c.neg_inf;
    if (c.missing > 0) {
      const double frac = cells ? static_cast<double>(c.missing) / static_cast<double>(cells) : 0;
      add("missing", frac > rules.max_missing_fraction(), c.name, c.missing, c.nonfinite_rows,
          fmt::format("column '{}': {} missing values ({:.3g}% of {}; limit {:.3g}%), e.g. {}s {}", c.name, c.missing,
                      100 * frac, cells, 100 * rules.max_missing_fraction(), unit, ids_text(c.nonfinite_rows, c.missing)));
    }
    const int64_t nonfinite = c.nan + c.pos_inf + c.neg_inf;
    if (nonfinite > 0) {
      add("non_finite", rules.forbid_nonfinite(), c.name, nonfinite, c.nonfinite_rows,
          fmt::format("column '{}': {} NaN, {} +Inf, {} -Inf, e.g. {}s {}", c.name, c.nan, c.pos_inf, c.neg_inf, unit,
                      ids_text(c.nonfinite_rows, nonfinite)));
    }
    if (c.zscore_outliers > 0) {
      const bool error = rules.max_outliers() >= 0 && c.zscore_outliers > rules.max_outliers();
      std::string examples;
      for (size_t i = 0; i < c.outlier_rows.size() && i < 10; ++i) {
        examples += fmt::format("{}{} {} ({:.6g})", i ? ", " : "", unit, c.outlier_rows[i], c.outlier_values[i]);
      }
      add("outliers", error, c.name, c.zscore_outliers, c.outlier_rows,
          fmt::format("column '{}': {}{} values beyond {} standard deviations of the mean {:.6g} (limit {}): {}", c.name,
                      c.outlier_counts_exact ? "" : "about ", c.zscore_outliers, report.zscore_limit, c.mean,
                      rules.max_outliers(), examples));
    }
    if (c.constant && c.count > 0) {
      add("constant", rules.forbid_constant(), c.name, c.count, {},
          fmt::format("column '{}' is constant ({:.6g}): it carries no information", c.name, c.min));
    } else if (c.near_constant) {
      add("near_constant", false, c.name, c.count, {},
          fmt::format("column '{}' is near-constant: one value holds {:.1f}% of it", c.name, 100 * c.top_fraction));
    }
  }
  for (const SampleFlag& f : report.flags) {
    if (f.kind == "non_finite") {
      add("non_finite_samples", rules.forbid_nonfinite(), "", f.count, f.samples,
          fmt::format("{} {}s hold NaN or Inf: {}", f.count, unit, ids_text(f.samples, f.count)));
    } else if (f.kind == "missing") {
      // Reported per column above.
    } else if (f.kind == "label_out_of_range") {
      add("labels", rules.forbid_bad_labels(), report.labels.name, f.count, f.samples,
          fmt::format("{} {} ({}s {})", f.count, f.detail, unit, ids_text(f.samples, f.count)));
    } else if (f.kind == "duplicate") {
      const double frac = report.rows ? static_cast<double>(f.count) / static_cast<double>(report.rows) : 0;
      add("duplicates", rules.max_duplicate_fraction() >= 0 && frac > rules.max_duplicate_fraction(), "", f.count,
          f.samples, fmt::format("{} {}s duplicate an earlier one ({:.3g}%): {}", f.count, unit, 100 * frac,
                                 ids_text(f.samples, f.count)));
    } else {
      add("bad_samples", rules.max_bad_samples() >= 0 && f.count > rules.max_bad_samples(), f.kind, f.count, f.samples,
          fmt::format("{} {} {}s ({}): {}", f.count, f.kind, unit, f.detail, ids_text(f.samples, f.count)));
    }
  }
  if (!report.duplicates_exact && report.duplicate_rows > 0) {
    const double frac = report.rows ? static_cast<double>(report.duplicate_rows) / static_cast<double>(report.rows) : 0;
    add("duplicates", rules.max_duplicate_fraction() >= 0 && frac > rules.max_duplicate_fraction(), "",
        report.duplicate_rows, {}, fmt::format("about {} duplicate rows (estimated)", report.duplicate_rows));
  }
  return out;
}

bool check_failed(const std::vector<Finding>& findings) {
  return std::any_of(findings.begin(), findings.end(), [](const Finding& f) { return f.severity == "error"; });
}

// ---- output ----

namespace {

json number(double v) {
  if (std::isfinite(v)) return v;
  if (std::isnan(v)) return nullptr;
  return v > 0 ? "inf" : "-inf";
}

}  // namespace

std::string audit_to_json(const AuditReport& r, const std::vector<Finding>* findings) {
  json j;
  j["path"] = r.path;
  j["format"] = r.format;
  j["shape"] = r.shape;
  j["rows"] = r.rows;
  j["seconds"] = r.seconds;
  j["threads"] = r.threads;
  j["zscore_limit"] = r.zscore_limit;
  j["iqr_factor"] = r.iqr_factor;
  j["columns"] = json::array();
  for (const ColumnSummary& c : r.columns) {
    json h = json::array();
    for (double v : c.histogram) h.push_back(v);
    j["columns"].push_back({{"name", c.name},
                            {"count", c.count},
                            {"missing", c.missing},
                            {"nan", c.nan},
                            {"pos_inf", c.pos_inf},
                            {"neg_inf", c.neg_inf},
                            {"zeros", c.zeros},
                            {"mean", number(c.mean)},
                            {"std", number(c.std)},
                            {"min", number(c.min)},
                            {"q25", number(c.q25)},
                            {"q50", number(c.q50)},
                            {"q75", number(c.q75)},
                            {"max", number(c.max)},
                            {"quantile_rank_error", c.quantile_rank_error},
                            {"unique_estimate", std::llround(c.unique_estimate)},
                            {"zscore_outliers", c.zscore_outliers},
                            {"iqr_outliers", c.iqr_outliers},
                            {"outlier_counts_exact", c.outlier_counts_exact},
                            {"iqr_counts_exact", c.iqr_counts_exact},
                            {"outlier_rows", c.outlier_rows},
                            {"outlier_values", c.outlier_values},
                            {"nonfinite_rows", c.nonfinite_rows},
                            {"constant", c.constant},
                            {"near_constant", c.near_constant},
                            {"top_fraction", c.top_fraction},
                            {"histogram", {{"min", number(c.hist_min)},
                                           {"max", number(c.hist_max)},
                                           {"counts", h},
                                           {"below", c.hist_below},
                                           {"above", c.hist_above},
                                           {"exact", c.histogram_exact}}}});
  }
  j["flags"] = json::array();
  for (const SampleFlag& f : r.flags) {
    j["flags"].push_back({{"kind", f.kind}, {"count", f.count}, {"samples", f.samples}, {"detail", f.detail}});
  }
  j["duplicates"] = {{"rows", r.duplicate_rows}, {"exact", r.duplicates_exact}};
  json ex = json::array();
  for (const auto& [a, b] : r.duplicate_examples) ex.push_back({a, b});
  j["duplicates"]["examples"] = ex;
  if (r.has_labels) {
    json classes = json::array();
    for (const auto& [label, n] : r.labels.classes) classes.push_back({{"label", label}, {"count", n}});
    j["labels"] = {{"name", r.labels.name},         {"count", r.labels.count},
                   {"classes", classes},            {"non_integer", r.labels.non_integer},
                   {"non_finite", r.labels.non_finite}, {"out_of_range", r.labels.out_of_range},
                   {"imbalance", r.labels.imbalance}};
  }
  if (findings != nullptr) {
    j["findings"] = json::array();
    for (const Finding& f : *findings) {
      j["findings"].push_back({{"rule", f.rule},
                               {"severity", f.severity},
                               {"column", f.column},
                               {"count", f.count},
                               {"samples", f.samples},
                               {"message", f.message}});
    }
    j["passed"] = !check_failed(*findings);
  }
  return j.dump(2) + "\n";
}

namespace {

std::string sparkline(const std::vector<double>& h, bool unicode) {
  static const char* bars[] = {" ", "\u2581", "\u2582", "\u2583", "\u2584", "\u2585", "\u2586", "\u2587", "\u2588"};
  static const char ascii[] = " .:-=+*#%@";
  double top = 0;
  for (double v : h) top = std::max(top, v);
  std::string s;
  for (double v : h) {
    if (unicode) {
      int level = top > 0 ? static_cast<int>(std::ceil(v / top * 8)) : 0;
      s += bars[std::clamp(level, 0, 8)];
    } else {
      int level = top > 0 ? static_cast<int>(std::ceil(v / top * 9)) : 0;
      s += ascii[std::clamp(level, 0, 9)];
    }
  }
  return s;
}

std::string g(double v) {
  if (std::isnan(v)) return "-";
  return fmt::format("{:.4g}", v);
}

std::string cut(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n - 1) + "~"; }

}  // namespace

std::string audit_to_text(const AuditReport& r, bool unicode) {
  std::string out;
  out += fmt::format("{} ({}): {} {}, shape [", r.path.empty() ? "tensor" : r.path, r.format, r.rows,
                     r.format == "csv" ? "rows" : "samples");
  for (size_t i = 0; i < r.shape.size(); ++i) out += (i ? ", " : "") + std::to_string(r.shape[i]);
  out += fmt::format("], {:.2f} s on {} threads\n", r.seconds, r.threads);
  out += fmt::format("{:<14} {:>9} {:>7} {:>5} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} "
                     "{:>7} {:>7}  {}\n",
                     "column", "count", "missing", "nan", "+inf", "-inf", "mean", "std", "min", "25%", "50%", "75%", "max",
                     "zeros", "unique", "out(z)", "out(iqr)", "histogram");
  double max_error = 0;
  for (const ColumnSummary& c : r.columns) {
    max_error = std::max(max_error, c.quantile_rank_error);
    std::string note;
    if (c.constant) note = " constant";
    else if (c.near_constant) note = " near-constant";
    out += fmt::format("{:<14} {:>9} {:>7} {:>5} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} "
                       "{:>7} {:>7}  {}{}\n",
                       cut(c.name, 14), c.count, c.missing, c.nan, c.pos_inf, c.neg_inf, g(c.mean), g(c.std), g(c.min),
                       g(c.q25), g(c.q50), g(c.q75), g(c.max), c.zeros, std::llround(c.unique_estimate),
                       (c.outlier_counts_exact ? "" : "~") + std::to_string(c.zscore_outliers),
                       (c.iqr_counts_exact ? "" : "~") + std::to_string(c.iqr_outliers), sparkline(c.histogram, unicode),
                       note);
  }
  out += max_error > 0
             ? fmt::format("quantiles: from a uniform sample, rank error <= {:.2f}% (99% confidence); unique: "
                           "HyperLogLog (~2.3%); outliers: |z| > {}, IQR x {}\n",
                           100 * max_error, r.zscore_limit, r.iqr_factor)
             : fmt::format("quantiles: exact; unique: HyperLogLog (~2.3%); outliers: |z| > {}, IQR x {}\n",
                           r.zscore_limit, r.iqr_factor);
  for (const ColumnSummary& c : r.columns) {
    if (c.outlier_rows.empty()) continue;
    out += fmt::format("  outliers in '{}':", c.name);
    for (size_t i = 0; i < c.outlier_rows.size() && i < 5; ++i) {
      out += fmt::format(" {} {} ({})", r.format == "csv" ? "row" : "sample", c.outlier_rows[i], g(c.outlier_values[i]));
    }
    out += "\n";
  }
  if (r.duplicate_rows > 0) {
    out += fmt::format("duplicates: {}{} rows equal an earlier row", r.duplicates_exact ? "" : "about ", r.duplicate_rows);
    for (size_t i = 0; i < r.duplicate_examples.size() && i < 3; ++i) {
      out += fmt::format("{} {} = {}", i ? "," : " (e.g.", r.duplicate_examples[i].first, r.duplicate_examples[i].second);
    }
    out += r.duplicate_examples.empty() ? "\n" : ")\n";
  }
  if (r.has_labels) {
    out += fmt::format("labels '{}': {} classes, imbalance {:.2f}x;", r.labels.name, r.labels.classes.size(),
                       r.labels.imbalance);
    for (size_t i = 0; i < r.labels.classes.size() && i < 20; ++i) {
      out += fmt::format(" {}:{}", r.labels.classes[i].first, r.labels.classes[i].second);
    }
    if (r.labels.classes.size() > 20) out += " ...";
    out += fmt::format("; non-finite {}, non-integer {}, out of range {}\n", r.labels.non_finite, r.labels.non_integer,
                       r.labels.out_of_range);
  }
  for (const SampleFlag& f : r.flags) {
    out += fmt::format("{}: {} ({}): {}\n", f.kind, f.count, f.detail, ids_text(f.samples, f.count));
  }
  if (r.flags.empty()) out += "no sample flagged\n";
  return out;
}

std::string histogram_svg(const ColumnSummary& c) {
  const int width = 480, height = 240, left = 50, right = 15, top = 30, bottom = 40;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  double peak = 0;
  for (double v : c.histogram) peak = std::max(peak, v);
  auto esc = [](const std::string& s) {
    std::string o;
    for (char ch : s) {
      if (ch == '<') o += "&lt;";
      else if (ch == '>') o += "&gt;";
      else if (ch == '&') o += "&amp;";
      else if (ch == '"') o += "&quot;";
      else o += ch;
    }
    return o;
  };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      width, height);
  svg += fmt::format("<text x=\"{}\" y=\"18\" font-size=\"13\">{} (n={}{})</text>\n", left, esc(c.name), c.count,
                     c.histogram_exact ? "" : ", from a sample");
  const size_t bins = c.histogram.size();
  for (size_t i = 0; i < bins; ++i) {
    const double h = peak > 0 ? c.histogram[i] / peak * plot_h : 0;
    const double x = left + plot_w * static_cast<double>(i) / static_cast<double>(bins);
    svg += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"#4c78a8\"><title>{:.6g} .. {:.6g}: "
        "{:.0f}</title></rect>\n",
        x, top + plot_h - h, std::max(0.5, plot_w / static_cast<double>(bins) - 1), h,
        c.hist_min + (c.hist_max - c.hist_min) * static_cast<double>(i) / static_cast<double>(bins),
        c.hist_min + (c.hist_max - c.hist_min) * static_cast<double>(i + 1) / static_cast<double>(bins), c.histogram[i]);
  }
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", left, top + plot_h,
                     left + plot_w);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"start\">{}</text>\n", left, top + plot_h + 15, g(c.hist_min));
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", left + plot_w, top + plot_h + 15,
                     g(c.hist_max));
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0f}</text>\n", left - 5, top + 10, peak);
  if (c.hist_below > 0 || c.hist_above > 0) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\">{} below, {} above the range shown</text>\n", left, height - 8,
                       c.hist_below, c.hist_above);
  }
  svg += "</svg>\n";
  return svg;
}

std::vector<fs::path> write_histograms(const AuditReport& report, const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(fmt::format("cannot create '{}': {}", dir.string(), ec.message()));
  std::vector<fs::path> files;
  for (size_t i = 0; i < report.columns.size(); ++i) {
    std::string safe;
    for (char ch : report.columns[i].name) safe += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
    const fs::path file = dir / fmt::format("hist_{:03}_{}.svg", i, safe.substr(0, 40));
    write_text_atomic(file, histogram_svg(report.columns[i]));
    files.push_back(file);
  }
  return files;
}

}  // namespace nanguard::data
