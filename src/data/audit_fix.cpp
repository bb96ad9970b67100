#include "nanguard/data/audit_fix.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/check.h"
#include "data/audit_csv.h"
#include "data/binary_file.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "nanguard/data/audit.h"
#include "nanguard/data/idx.h"
#include "nanguard/data/npy.h"

namespace nanguard::data {
namespace fs = std::filesystem;
using json = nlohmann::json;

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::exists(b, ec) && fs::exists(a, ec)) {
    const bool eq = fs::equivalent(a, b, ec);
    if (!ec) return eq;
  }
  // b does not exist yet: compare the resolved paths.
  const fs::path ca = fs::weakly_canonical(fs::absolute(a), ec);
  const fs::path cb = fs::weakly_canonical(fs::absolute(b), ec);
  return ca == cb;
}

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

bool ends_with(std::string s, const std::string& suffix) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct Plan {
  enum class Impute { kNone, kMean, kMedian, kConstant } impute = Impute::kNone;
  double constant = 0;
};

Plan parse_plan(const FixOptions& o) {
  Plan plan;
  const std::string& s = o.impute();
  if (s.empty()) {
  } else if (s == "mean") {
    plan.impute = Plan::Impute::kMean;
  } else if (s == "median") {
    plan.impute = Plan::Impute::kMedian;
  } else if (s.rfind("constant:", 0) == 0) {
    plan.impute = Plan::Impute::kConstant;
    const std::string v = s.substr(9);
    double value = 0;
    if (detail::parse_cell(v, &value) != detail::CellKind::kValue || !std::isfinite(value)) {
      throw ValueError(fmt::format("--impute constant:V: V must be a finite number, found '{}'", v));
    }
    plan.constant = value;
  } else {
    throw ValueError(fmt::format("--impute: expected mean, median or constant:V, found '{}'", s));
  }
  NANGUARD_CHECK(o.winsorize() >= 0 && o.winsorize() < 0.5, "--winsorize: expected P in [0, 0.5), found {}",
                 o.winsorize());
  NANGUARD_CHECK(!(o.winsorize() > 0 && (!std::isnan(o.clip_min()) || !std::isnan(o.clip_max()))),
                 "--clip and --winsorize cannot be combined");
  NANGUARD_CHECK(std::isnan(o.clip_min()) || std::isnan(o.clip_max()) || o.clip_min() <= o.clip_max(),
                 "--clip LO,HI: LO ({}) must not exceed HI ({})", o.clip_min(), o.clip_max());
  NANGUARD_CHECK(plan.impute != Plan::Impute::kNone || o.drop_rows() || o.winsorize() > 0 ||
                     !std::isnan(o.clip_min()) || !std::isnan(o.clip_max()) || o.standardize(),
                 "fix: nothing to do (give --impute, --drop-rows, --clip, --winsorize or --standardize)");
  return plan;
}

// Per column: what missing values become, and the clipping bounds.
void prepare_columns(const AuditReport& audit, const Plan& plan, const FixOptions& o, FixReport& report) {
  for (const ColumnSummary& c : audit.columns) {
    FixColumnCounts fc;
    fc.column = c.name;
    switch (plan.impute) {
      case Plan::Impute::kMean: fc.impute_value = std::isfinite(c.mean) ? c.mean : 0; break;
      case Plan::Impute::kMedian: fc.impute_value = std::isfinite(c.q50) ? c.q50 : 0; break;
      case Plan::Impute::kConstant: fc.impute_value = plan.constant; break;
      case Plan::Impute::kNone: fc.impute_value = kNaN; break;
    }
    fc.low = std::isnan(o.clip_min()) ? -kInf : o.clip_min();
    fc.high = std::isnan(o.clip_max()) ? kInf : o.clip_max();
    if (o.winsorize() > 0 && c.extra_quantiles.size() == 2) {
      fc.low = c.extra_quantiles[0];
      fc.high = c.extra_quantiles[1];
    }
    report.columns.push_back(fc);
  }
}

void note_change(FixReport& report, const FixOptions& o, int64_t row, const std::string& column, const char* action,
                 double old_value, double new_value) {
  if (static_cast<int64_t>(report.changes.size()) < o.max_listed_changes()) {
    report.changes.push_back({row, column, action, old_value, new_value});
  } else {
    report.changes_complete = false;
  }
}

std::string quote_if_needed(std::string_view text, char delimiter) {
  if (text.find_first_of(std::string{delimiter, '"', '\n', '\r'}) == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

FixReport fix_csv(const fs::path& input, const fs::path& output, const FixOptions& o, const Plan& plan) {
  const std::string where = fmt::format("CSV file '{}'", input.string());
  AuditOptions ao;
  ao.label_column(o.label_column()).delimiter(o.delimiter()).has_header(o.has_header());
  if (o.winsorize() > 0) ao.extra_quantiles({o.winsorize(), 1 - o.winsorize()});
  const AuditReport audit = detail::describe_csv(input, ao);
  FixReport report;
  report.input = input.string();
  report.output = output.string();
  prepare_columns(audit, plan, o, report);

  const detail::CsvHead head = detail::read_csv_head(input, o.delimiter(), o.has_header());
  const auto ncols = static_cast<int64_t>(head.names.size());
  const int64_t label = detail::find_label_column(head.names, o.label_column(), o.has_header(), where);
  std::vector<int64_t> feature_of(ncols, -1);
  for (int64_t c = 0, f = 0; c < ncols; ++c) {
    if (c != label) feature_of[c] = f++;
  }
  const char delim = o.delimiter();

  // One pass over the rows: transform(fields, line, row, emit) decides each cell.
  std::vector<double> values(ncols);
  std::vector<bool> changed(ncols);
  auto for_each_row = [&](auto&& on_row) {
    detail::CsvChunkReader reader(input, head);
    std::string buffer;
    int64_t first_line = 0;
    int64_t row = 0;
    std::vector<std::string_view> fields;
    while (reader.next(buffer, &first_line)) {
      detail::for_each_record(buffer.data(), buffer.data() + buffer.size(), first_line, delim, where, fields,
                              [&](const std::vector<std::string_view>& f, int64_t line) {
                                if (static_cast<int64_t>(f.size()) != ncols) {
                                  detail::fail_record(where, line,
                                                      fmt::format("expected {} fields, found {}", ncols, f.size()));
                                }
                                on_row(f, line, row++);
                              });
    }
  };
  // Applies impute and clipping to a row; false when the row is dropped.
  auto transform = [&](const std::vector<std::string_view>& f, int64_t line, int64_t row, bool record) {
    bool bad = false;
    for (int64_t c = 0; c < ncols; ++c) {
      double v = 0;
      const detail::CellKind kind = detail::parse_cell(f[c], &v);
      if (kind == detail::CellKind::kBad) {
        throw ValueError(fmt::format("{}: line {}, column {}: expected a number, found '{}'", where, line, c + 1,
                                     std::string(f[c]).substr(0, 40)));
      }
      if (kind == detail::CellKind::kMissing) v = kNaN;
      values[c] = v;
      changed[c] = false;
      bad |= !std::isfinite(v);
    }
    if (bad && o.drop_rows()) {
      if (record) {
        ++report.rows_dropped;
        if (static_cast<int64_t>(report.dropped_rows.size()) < o.max_listed_changes()) report.dropped_rows.push_back(row);
      }
      return false;
    }
    for (int64_t c = 0; c < ncols; ++c) {
      if (c == label) continue;
      FixColumnCounts& fc = report.columns[feature_of[c]];
      double& v = values[c];
      if (!std::isfinite(v)) {
        if (plan.impute == Plan::Impute::kNone) continue;
        if (record) {
          ++fc.imputed;
          note_change(report, o, row, fc.column, "impute", v, fc.impute_value);
        }
        v = fc.impute_value;
        changed[c] = true;
      }
      if (v < fc.low || v > fc.high) {
        const double nv = std::clamp(v, fc.low, fc.high);
        if (record) {
          ++fc.clipped;
          note_change(report, o, row, fc.column, o.winsorize() > 0 ? "winsorize" : "clip", v, nv);
        }
        v = nv;
        changed[c] = true;
      }
    }
    return true;
  };

  if (o.standardize()) {
    // Mean and std of the values after impute and clipping: one more pass.
    std::vector<double> n(ncols, 0), mean(ncols, 0), m2(ncols, 0);
    for_each_row([&](const std::vector<std::string_view>& f, int64_t line, int64_t row) {
      if (!transform(f, line, row, false)) return;
      for (int64_t c = 0; c < ncols; ++c) {
        if (c == label || !std::isfinite(values[c])) continue;
        n[c] += 1;
        const double d = values[c] - mean[c];
        mean[c] += d / n[c];
        m2[c] += d * (values[c] - mean[c]);
      }
    });
    for (int64_t c = 0; c < ncols; ++c) {
      if (c == label) continue;
      FixColumnCounts& fc = report.columns[feature_of[c]];
      fc.mean = mean[c];
      fc.std = n[c] > 1 ? std::sqrt(m2[c] / (n[c] - 1)) : 1;
      if (!(fc.std > 0)) fc.std = 1;  // a constant column only moves to 0
    }
  }

  write_file_atomic(output, [&](const fs::path& tmp) {
    detail::OutputFile out(tmp);
    std::string line_text;
    if (o.has_header()) {
      for (int64_t c = 0; c < ncols; ++c) {
        if (c) line_text += delim;
        line_text += quote_if_needed(head.names[c], delim);
      }
      line_text += '\n';
      out.write(line_text.data(), line_text.size());
    }
    std::string block;
    for_each_row([&](const std::vector<std::string_view>& f, int64_t line, int64_t row) {
      ++report.rows_in;
      if (!transform(f, line, row, true)) return;
      ++report.rows_out;
      for (int64_t c = 0; c < ncols; ++c) {
        if (c) block += delim;
        if (c != label && o.standardize() && std::isfinite(values[c])) {
          FixColumnCounts& fc = report.columns[feature_of[c]];
          values[c] = (values[c] - fc.mean) / fc.std;
          ++fc.standardized;
          changed[c] = true;
        }
        if (changed[c]) {
          block += fmt::format("{}", values[c]);
        } else {
          block += quote_if_needed(f[c], delim);
        }
      }
      block += '\n';
      if (block.size() > (1 << 20)) {
        out.write(block.data(), block.size());
        block.clear();
      }
    });
    out.write(block.data(), block.size());
    out.close();
  });
  return report;
}

FixReport fix_tensor(const fs::path& input, const fs::path& output, const FixOptions& o, const Plan& plan,
                     bool npy) {
  torch::NoGradGuard no_grad;
  const at::Tensor data = npy ? read_npy(input) : read_idx(input);
  NANGUARD_CHECK(data.dim() >= 1, "'{}': a data file needs a sample dimension (found a 0-d array)", input.string());
  const int64_t n = data.size(0);
  at::Tensor x = data.reshape({n, -1}).to(torch::kFloat64).clone();
  const int64_t d = x.size(1);
  AuditOptions ao;
  if (o.winsorize() > 0) ao.extra_quantiles({o.winsorize(), 1 - o.winsorize()});
  const AuditReport audit = describe_tensor(x, {}, ao);
  FixReport report;
  report.input = input.string();
  report.output = output.string();
  report.rows_in = n;
  prepare_columns(audit, plan, o, report);
  if (o.drop_rows()) {
    const at::Tensor bad_rows = (~x.isfinite()).any(1);
    const at::Tensor dropped = bad_rows.nonzero().reshape({-1}).contiguous();
    report.rows_dropped = dropped.size(0);
    for (int64_t i = 0; i < std::min<int64_t>(dropped.size(0), o.max_listed_changes()); ++i) {
      report.dropped_rows.push_back(dropped[i].item<int64_t>());
    }
    x = x.index({~bad_rows});
  }
  // Row numbers of the kept samples in the input, for the change list.
  std::vector<int64_t> original_row;
  {
    std::vector<int64_t> dropped = report.dropped_rows;
    size_t k = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (k < dropped.size() && dropped[k] == r) {
        ++k;
        continue;
      }
      original_row.push_back(r);
    }
  }
  auto list_changes = [&](const at::Tensor& mask, const at::Tensor& before, const at::Tensor& after, const char* action,
                          bool imputed) {
    const at::Tensor where = mask.nonzero().contiguous();
    const int64_t count = where.size(0);
    const auto* p = where.data_ptr<int64_t>();
    const auto b = before.accessor<double, 2>();
    const auto a = after.accessor<double, 2>();
    std::vector<int64_t> per_column(d, 0);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = p[2 * i], c = p[2 * i + 1];
      ++per_column[c];
      note_change(report, o, original_row[r], report.columns[c].column, action, b[r][c], a[r][c]);
    }
    for (int64_t c = 0; c < d; ++c) (imputed ? report.columns[c].imputed : report.columns[c].clipped) += per_column[c];
  };
  std::vector<double> imp(d), lo(d), hi(d);
  for (int64_t c = 0; c < d; ++c) {
    imp[c] = report.columns[c].impute_value, lo[c] = report.columns[c].low, hi[c] = report.columns[c].high;
  }
  if (plan.impute != Plan::Impute::kNone) {
    const at::Tensor mask = ~x.isfinite();
    const at::Tensor after = torch::where(mask, torch::tensor(imp, torch::kFloat64).unsqueeze(0), x);
    list_changes(mask, x, after, "impute", true);
    x = after;
  }
  const at::Tensor tlo = torch::tensor(lo, torch::kFloat64).unsqueeze(0), thi = torch::tensor(hi, torch::kFloat64).unsqueeze(0);
  const at::Tensor clip_mask = x.isfinite() & ((x < tlo) | (x > thi));
  if (clip_mask.any().item<bool>()) {
    const at::Tensor after = torch::where(clip_mask, torch::maximum(torch::minimum(x, thi), tlo), x);
    list_changes(clip_mask, x, after, o.winsorize() > 0 ? "winsorize" : "clip", false);
    x = after;
  }
  if (o.standardize()) {
    const at::Tensor finite = x.isfinite();
    const at::Tensor zeroed = torch::where(finite, x, torch::zeros({}, x.options()));
    const at::Tensor cnt = finite.sum(0).to(torch::kFloat64);
    const at::Tensor mean = zeroed.sum(0) / cnt.clamp_min(1);
    const at::Tensor dev = torch::where(finite, x - mean, torch::zeros({}, x.options()));
    at::Tensor sd = (dev.pow(2).sum(0) / (cnt - 1).clamp_min(1)).sqrt();
    sd = torch::where(sd > 0, sd, torch::ones({}, sd.options()));
    x = torch::where(finite, (x - mean) / sd, x);
    for (int64_t c = 0; c < d; ++c) {
      report.columns[c].mean = mean[c].item<double>();
      report.columns[c].std = sd[c].item<double>();
      report.columns[c].standardized = cnt[c].item<int64_t>();
    }
  }
  report.rows_out = x.size(0);
  std::vector<int64_t> shape = data.sizes().vec();
  shape[0] = x.size(0);
  // Integer data stays integer when no value changed (only rows dropped).
  bool values_changed = plan.impute != Plan::Impute::kNone || o.standardize();
  for (const auto& c : report.columns) values_changed |= c.clipped > 0;
  c10::ScalarType dtype = data.scalar_type();
  if (values_changed && !data.is_floating_point()) dtype = torch::kFloat32;
  if (dtype == torch::kHalf && !npy) dtype = torch::kFloat32;
  const at::Tensor result = x.to(dtype).reshape(shape).contiguous();
  if (npy) write_npy(output, result);
  else write_idx(output, result);
  return report;
}

}  // namespace

FixReport fix_file(const fs::path& input, const fs::path& output, const FixOptions& options) {
  NANGUARD_CHECK(!output.empty(), "fix: --out is required");
  {
    std::error_code ec;
    if (!fs::exists(input, ec)) throw IoError(fmt::format("cannot open '{}': No such file or directory", input.string()));
  }
  NANGUARD_CHECK(!same_file(input, output),
                 "fix: the output '{}' is the input file '{}'; fix never overwrites its input, give another --out",
                 output.string(), input.string());
  const Plan plan = parse_plan(options);
  const std::string name = input.filename().string();
  if (ends_with(name, ".csv") || ends_with(name, ".tsv") || ends_with(name, ".txt")) {
    return fix_csv(input, output, options, plan);
  }
  if (ends_with(name, ".npy")) return fix_tensor(input, output, options, plan, true);
  if (ends_with(name, "-ubyte") || ends_with(name, ".idx") || ends_with(name, "-ubyte.gz") || ends_with(name, ".idx.gz")) {
    return fix_tensor(input, output, options, plan, false);
  }
  throw ValueError(fmt::format("'{}': unknown data format (expected .csv/.tsv/.txt, .npy or an IDX file)", input.string()));
}

std::string fix_report_to_json(const FixReport& r) {
  auto num = [](double v) -> json {
    if (std::isfinite(v)) return v;
    if (std::isnan(v)) return nullptr;
    return v > 0 ? "inf" : "-inf";
  };
  json j;
  j["input"] = r.input;
  j["output"] = r.output;
  j["rows_in"] = r.rows_in;
  j["rows_out"] = r.rows_out;
  j["rows_dropped"] = r.rows_dropped;
  j["dropped_rows"] = r.dropped_rows;
  j["columns"] = json::array();
  for (const auto& c : r.columns) {
    j["columns"].push_back({{"column", c.column},
                            {"imputed", c.imputed},
                            {"clipped", c.clipped},
                            {"standardized", c.standardized},
                            {"impute_value", num(c.impute_value)},
                            {"low", num(c.low)},
                            {"high", num(c.high)},
                            {"mean", num(c.mean)},
                            {"std", num(c.std)}});
  }
  j["changes"] = json::array();
  for (const auto& c : r.changes) {
    j["changes"].push_back(
        {{"row", c.row}, {"column", c.column}, {"action", c.action}, {"old", num(c.old_value)}, {"new", num(c.new_value)}});
  }
  j["changes_complete"] = r.changes_complete;
  j["note"] = "standardization changes every value; it is reported per column (mean, std), not per cell";
  return j.dump(2) + "\n";
}

}  // namespace nanguard::data
