// nanguard data describe|check|fix FILE: the data auditor on the command line.
#include <cmath>
#include <iostream>

#include <fmt/format.h>
#include <unistd.h>

#include "commands.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "nanguard/data/audit.h"
#include "nanguard/data/audit_fix.h"

namespace nanguard::cli {
namespace {

struct DataArgs {
  std::string file;
  bool json = false;
  std::string label_column;
  std::string labels;
  std::string histograms;
  std::string delimiter = ",";
  bool no_header = false;
  int threads = 0;
  int64_t num_classes = 0;
  std::string range;
  double zscore = 6.0;
  bool ascii = false;
  // check
  std::string rules;
  std::string out_json;
  // fix
  std::string out;
  std::string report;
  std::string impute;
  bool drop_rows = false;
  std::string clip;
  double winsorize = 0;
  bool standardize = false;
};

std::pair<double, double> parse_pair(const std::string& text, const char* flag) {
  const size_t comma = text.find(',');
  auto num = [&](const std::string& s) {
    if (s.empty()) return std::numeric_limits<double>::quiet_NaN();
    try {
      size_t used = 0;
      const double v = std::stod(s, &used);
      if (used == s.size() && std::isfinite(v)) return v;
    } catch (const std::exception&) {
    }
    throw ValueError(fmt::format("{} LO,HI: expected numbers, found '{}'", flag, text));
  };
  if (comma == std::string::npos) throw ValueError(fmt::format("{} LO,HI: expected two numbers, found '{}'", flag, text));
  return {num(text.substr(0, comma)), num(text.substr(comma + 1))};
}

data::AuditOptions audit_options(const DataArgs& a) {
  if (a.delimiter.size() != 1) throw ValueError(fmt::format("--delimiter: expected one character, found '{}'", a.delimiter));
  data::AuditOptions o;
  o.label_column(a.label_column)
      .labels_file(a.labels)
      .delimiter(a.delimiter[0])
      .has_header(!a.no_header)
      .threads(a.threads)
      .num_classes(a.num_classes)
      .zscore_limit(a.zscore);
  if (!a.range.empty()) {
    const auto [lo, hi] = parse_pair(a.range, "--range");
    o.range_min(lo).range_max(hi);
  }
  return o;
}

int run_describe(const DataArgs& a) {
  const data::AuditReport report = data::describe_file(a.file, audit_options(a));
  if (a.json) {
    std::cout << data::audit_to_json(report);
  } else {
    std::cout << data::audit_to_text(report, !a.ascii);
  }
  if (!a.histograms.empty()) {
    const auto files = data::write_histograms(report, a.histograms);
    if (!a.json) std::cout << fmt::format("{} histograms written to {}\n", files.size(), a.histograms);
  }
  return kOk;
}

int run_check(const DataArgs& a) {
  const data::CheckRules rules = data::parse_check_rules(a.rules, data::CheckRules().zscore_limit(a.zscore));
  data::AuditOptions options = audit_options(a);
  options.zscore_limit(rules.zscore_limit());
  const data::AuditReport report = data::describe_file(a.file, options);
  const auto findings = data::check_report(report, rules);
  const bool failed = data::check_failed(findings);
  if (!a.out_json.empty()) write_text_atomic(a.out_json, data::audit_to_json(report, &findings));
  if (a.json) {
    std::cout << data::audit_to_json(report, &findings);
  } else {
    for (const auto& f : findings) std::cout << f.severity << ": " << f.message << "\n";
    std::cout << fmt::format("{}: {} ({} findings, {} errors)\n", a.file, failed ? "FAILED" : "passed", findings.size(),
                             std::count_if(findings.begin(), findings.end(),
                                           [](const data::Finding& f) { return f.severity == "error"; }));
  }
  return failed ? kChecksFailed : kOk;
}

int run_fix(const DataArgs& a) {
  if (a.delimiter.size() != 1) throw ValueError(fmt::format("--delimiter: expected one character, found '{}'", a.delimiter));
  data::FixOptions o;
  o.impute(a.impute)
      .drop_rows(a.drop_rows)
      .winsorize(a.winsorize)
      .standardize(a.standardize)
      .label_column(a.label_column)
      .delimiter(a.delimiter[0])
      .has_header(!a.no_header);
  if (!a.clip.empty()) {
    const auto [lo, hi] = parse_pair(a.clip, "--clip");
    o.clip_min(lo).clip_max(hi);
  }
  const std::string report_path = a.report.empty() ? a.out + ".changes.json" : a.report;
  if (data::same_file(a.file, report_path)) {
    throw ValueError(fmt::format("fix: the report '{}' is the input file; fix never overwrites its input", report_path));
  }
  const data::FixReport report = data::fix_file(a.file, a.out, o);
  write_text_atomic(report_path, data::fix_report_to_json(report));
  int64_t imputed = 0, clipped = 0;
  for (const auto& c : report.columns) imputed += c.imputed, clipped += c.clipped;
  std::cout << fmt::format("{} -> {}: {} rows in, {} out ({} dropped), {} values imputed, {} clipped{}; report {}\n",
                           a.file, a.out, report.rows_in, report.rows_out, report.rows_dropped, imputed, clipped,
                           a.standardize ? ", standardized" : "", report_path);
  return kOk;
}

void add_common(CLI::App* sub, DataArgs& a) {
  sub->add_option("file", a.file, "Data file: .csv/.tsv/.txt, .npy, or IDX (*-ubyte, *.idx, optionally .gz)")->required();
  sub->add_option("--label-column", a.label_column, "CSV: the label column (name, or 0-based index with --no-header)");
  sub->add_option("--delimiter", a.delimiter, "CSV field separator (default ,)");
  sub->add_flag("--no-header", a.no_header, "CSV: the first line is data, not column names");
}

void add_audit(CLI::App* sub, DataArgs& a) {
  sub->add_option("--labels", a.labels, "IDX/NPY: the file holding the samples' labels");
  sub->add_option("--threads", a.threads, "Parsing threads (default: one per core, at least 2)");
  sub->add_option("--num-classes", a.num_classes, "Labels must lie in [0, N)");
  sub->add_option("--range", a.range, "Images: the expected value range LO,HI (uint8 data: 0,255)");
  sub->add_option("--zscore", a.zscore, "z-score beyond which a value is an outlier (default 6)");
  sub->add_flag("--json", a.json, "Print JSON instead of the table");
}

}  // namespace

Command add_data(CLI::App& app) {
  auto a = std::make_shared<DataArgs>();
  CLI::App* data = app.add_subcommand("data", "Audit a data set: describe, check and fix it before training");
  data->require_subcommand(1);

  CLI::App* describe = data->add_subcommand("describe", "Statistics, outliers and bad samples of a data file");
  add_common(describe, *a);
  add_audit(describe, *a);
  describe->add_option("--histograms", a->histograms, "Write one SVG histogram per column into this folder");
  describe->add_flag("--ascii", a->ascii, "Draw histograms with ASCII characters");

  CLI::App* check = data->add_subcommand(
      "check", "Exit with code 6 when findings exceed the rules (for pipelines); findings name rows and columns");
  add_common(check, *a);
  add_audit(check, *a);
  check->add_option("--rules", a->rules,
                    "Comma-separated rules: max-missing=F, forbid-nonfinite=BOOL, max-outliers=N, zscore=Z, "
                    "max-bad-samples=N, max-duplicates=F, forbid-constant=BOOL, forbid-bad-labels=BOOL "
                    "(defaults: 0, true, 0, 6, 0, off, false, true)");
  check->add_option("--out", a->out_json, "Also write the report and findings as JSON to this file");

  CLI::App* fix = data->add_subcommand("fix", "Write a repaired copy (never the input) and a report of every change");
  add_common(fix, *a);
  fix->add_option("--out", a->out, "The repaired file (must not be the input)")->required();
  fix->add_option("--report", a->report, "The change report (default: OUT.changes.json)");
  fix->add_option("--impute", a->impute, "Replace missing/NaN/Inf: mean, median or constant:V");
  fix->add_flag("--drop-rows", a->drop_rows, "Drop rows holding missing/NaN/Inf values");
  fix->add_option("--clip", a->clip, "Clip every feature to LO,HI (either may be empty)");
  fix->add_option("--winsorize", a->winsorize, "Clip every feature to its [P, 1-P] quantiles");
  fix->add_flag("--standardize", a->standardize, "Rescale every feature to mean 0, std 1 (after the rest)");

  return [a, describe, check, fix] {
    if (describe->parsed()) return run_describe(*a);
    if (check->parsed()) return run_check(*a);
    if (fix->parsed()) return run_fix(*a);
    return static_cast<int>(kBadInput);
  };
}

}  // namespace nanguard::cli
