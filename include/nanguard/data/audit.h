// The data auditor: statistics, outliers, bad samples and bad labels of a data file (CSV, IDX,
// NPY) or of an in-memory tensor, computed before the data can poison training.
//
// CSV files are streamed in chunks parsed by several threads; memory is bounded by the number
// of columns, not the number of rows. Quantiles come from a uniform sample of each column
// (exact while the column fits in it); the stated rank error holds with 99% confidence.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

namespace nanguard::data {

struct AuditOptions {
  // CSV: name of the label column ("" = none; without a header, its 0-based index).
  TORCH_ARG(std::string, label_column) = "";
  // IDX/NPY: a file holding the labels of the samples ("" = none).
  TORCH_ARG(std::filesystem::path, labels_file) = "";
  // CSV field separator.
  TORCH_ARG(char, delimiter) = ',';
  // CSV: whether the first line holds the column names.
  TORCH_ARG(bool, has_header) = true;
  // Parsing threads for CSV (0 = one per core, at least 2).
  TORCH_ARG(int, threads) = 0;
  // A value is a z-score outlier when |x - mean| > zscore_limit * std.
  TORCH_ARG(double, zscore_limit) = 6.0;
  // A value is an IQR outlier when outside [Q1 - k IQR, Q3 + k IQR].
  TORCH_ARG(double, iqr_factor) = 1.5;
  // Example rows kept per column and per finding.
  TORCH_ARG(int64_t, max_examples) = 10;
  // Sample indices listed per sample flag (the count is always exact).
  TORCH_ARG(int64_t, max_listed) = 10000;
  // Values kept per column for quantiles (smaller when there are many columns).
  TORCH_ARG(int64_t, sample_size) = 32768;
  // Bins of the histograms (terminal sparklines and SVG).
  TORCH_ARG(int64_t, bins) = 20;
  // Labels must lie in [0, num_classes) (0 = only check they are non-negative integers).
  TORCH_ARG(int64_t, num_classes) = 0;
  // Images: the expected value range (NaN = uint8 data gets [0, 255], other data none).
  TORCH_ARG(double, range_min) = std::numeric_limits<double>::quiet_NaN();
  TORCH_ARG(double, range_max) = std::numeric_limits<double>::quiet_NaN();
  // Images: a sample is saturated when at least this fraction of its values sit at range_max
  // (or at the data's maximum when no range is known).
  TORCH_ARG(double, saturated_fraction) = 0.5;
  // Images: a sample is extreme when its largest |x| has a robust z-score above this and is
  // at least extreme_ratio times the median sample's.
  TORCH_ARG(double, extreme_zscore) = 6.0;
  TORCH_ARG(double, extreme_ratio) = 10.0;
  // More quantiles to report per column (each in [0, 1]), in ColumnSummary::extra_quantiles.
  TORCH_ARG(std::vector<double>, extra_quantiles) = {};
  // Row hashes kept for exact duplicate detection; beyond, duplicates are estimated.
  TORCH_ARG(int64_t, max_row_hashes) = 2000000;
};

// Statistics of one column (or of all pixels of an image set).
struct ColumnSummary {
  std::string name;
  int64_t count = 0;    // finite values
  int64_t missing = 0;  // empty cells and NA, N/A, null (CSV)
  int64_t nan = 0;
  int64_t pos_inf = 0;
  int64_t neg_inf = 0;
  int64_t zeros = 0;
  // Over the finite values (NaN when there are none).
  double mean = 0, std = 0, min = 0, max = 0, q25 = 0, q50 = 0, q75 = 0;
  std::vector<double> extra_quantiles;  // at AuditOptions::extra_quantiles
  // Largest error of the quantiles as a fraction of count (0 = exact).
  double quantile_rank_error = 0;
  double unique_estimate = 0;  // HyperLogLog, about 2.3% standard error
  int64_t zscore_outliers = 0;
  int64_t iqr_outliers = 0;
  bool outlier_counts_exact = true;  // zscore_outliers is exact, else estimated from the sample
  bool iqr_counts_exact = true;      // likewise iqr_outliers
  std::vector<int64_t> outlier_rows;     // examples, most extreme first
  std::vector<double> outlier_values;    // their values
  std::vector<int64_t> nonfinite_rows;   // examples of missing/NaN/Inf cells
  bool constant = false;       // every finite value is equal
  bool near_constant = false;  // one value holds >= 99% of the finite values
  double top_fraction = 0;     // share of the most frequent value (from the sample)
  // Histogram of the finite values over [hist_min, hist_max]; counts outside are below/above
  // (the range excludes far outliers so the shape stays visible).
  std::vector<double> histogram;
  double hist_min = 0, hist_max = 0;
  int64_t hist_below = 0, hist_above = 0;
  bool histogram_exact = true;  // else scaled from the sample
};

// Samples (rows of a table, images of an image set) that share one problem.
struct SampleFlag {
  // "non_finite", "missing", "blank", "constant", "saturated", "out_of_range", "extreme",
  // "zscore_outlier", "label_out_of_range", "duplicate".
  std::string kind;
  int64_t count = 0;             // exact
  std::vector<int64_t> samples;  // 0-based indices, ascending (up to max_listed)
  std::string detail;            // what the flag means here
};

struct LabelSummary {
  std::string name;
  int64_t count = 0;
  std::vector<std::pair<int64_t, int64_t>> classes;  // (label, count), by label
  int64_t non_integer = 0;    // finite but not an integer
  int64_t non_finite = 0;     // missing, NaN or Inf
  int64_t out_of_range = 0;   // negative, or >= num_classes when given
  double imbalance = 0;       // largest class count / smallest class count
};

struct AuditReport {
  std::string path;
  std::string format;  // "csv", "idx", "npy", "tensor"
  std::vector<int64_t> shape;  // of the data (CSV: rows, columns)
  int64_t rows = 0;            // samples
  std::vector<ColumnSummary> columns;
  bool images = false;         // per-sample image checks were run
  std::vector<SampleFlag> flags;
  bool has_labels = false;
  LabelSummary labels;
  int64_t duplicate_rows = 0;  // rows equal to an earlier row
  bool duplicates_exact = true;
  std::vector<std::pair<int64_t, int64_t>> duplicate_examples;  // (row, earlier equal row)
  double zscore_limit = 0, iqr_factor = 0;
  double seconds = 0;  // time taken
  int threads = 1;

  // The flag of that kind, or nullptr.
  const SampleFlag* flag(const std::string& kind) const;
  // Every flagged sample index (all kinds), ascending and unique.
  std::vector<int64_t> flagged_samples() const;
};

// Audits a file; the format comes from the extension (.csv/.tsv/.txt, .npy, IDX names such as
// *-ubyte, *.idx, optionally .gz). Throws ValueError naming file, line and column for bad
// input, IoError when it cannot be read.
AuditReport describe_file(const std::filesystem::path& path, const AuditOptions& options = {});

// Audits a tensor whose first dimension indexes samples. Rank 2 is a table (one column per
// feature); rank >= 3 is an image set (all values as one column, plus per-sample checks).
// labels may be undefined.
AuditReport describe_tensor(const at::Tensor& data, const at::Tensor& labels = {},
                            const AuditOptions& options = {});

// Only the per-sample checks (non-finite, blank, constant, saturated, out of range, extreme)
// of data [N, ...] in one fused, threaded pass: about 0.1 s for MNIST's 60k images.
std::vector<SampleFlag> audit_samples(const at::Tensor& data, const AuditOptions& options = {});

// The quick audit run before training: audit_samples on x plus label checks on y (non-finite,
// non-integer or negative labels, or >= num_classes), with samples named by their dataset ids.
struct QuickAudit {
  int64_t samples = 0;
  double seconds = 0;
  std::vector<SampleFlag> flags;      // samples hold dataset ids
  std::vector<int64_t> flagged_ids;   // every flagged id, ascending
  std::string to_json() const;
};
// ids may be undefined (ids are then positions).
QuickAudit quick_audit(const at::Tensor& x, const at::Tensor& y, const at::Tensor& ids,
                       const AuditOptions& options = {});

// Thresholds for `check`: a finding with severity "error" fails the check.
struct CheckRules {
  // Largest allowed fraction of missing cells in a column.
  TORCH_ARG(double, max_missing_fraction) = 0.0;
  // Whether NaN/Inf values (and non-finite samples) are errors.
  TORCH_ARG(bool, forbid_nonfinite) = true;
  // Largest allowed number of z-score outliers per column (-1 = any number).
  TORCH_ARG(int64_t, max_outliers) = 0;
  // z-score beyond which a value is an outlier (applied when auditing).
  TORCH_ARG(double, zscore_limit) = 6.0;
  // Largest allowed number of bad samples (blank, constant, saturated, out of range, extreme).
  TORCH_ARG(int64_t, max_bad_samples) = 0;
  // Largest allowed fraction of duplicate rows (-1 = any).
  TORCH_ARG(double, max_duplicate_fraction) = -1;
  // Whether constant columns are errors (else warnings).
  TORCH_ARG(bool, forbid_constant) = false;
  // Whether labels out of range are errors.
  TORCH_ARG(bool, forbid_bad_labels) = true;
};

// Parses "max-missing=0.01,forbid-nonfinite=true,max-outliers=5,zscore=4,max-bad-samples=0,
// max-duplicates=0.1,forbid-constant=true,forbid-bad-labels=false" (any subset) onto rules.
CheckRules parse_check_rules(const std::string& text, CheckRules rules = {});

struct Finding {
  std::string rule;      // "missing", "non_finite", "outliers", "bad_samples", "labels", ...
  std::string severity;  // "error" or "warning"
  std::string column;    // "" for whole samples
  int64_t count = 0;
  std::vector<int64_t> samples;  // row / sample indices (first ones)
  std::string message;
};

// The findings of a report under the rules; the check fails when one has severity "error".
std::vector<Finding> check_report(const AuditReport& report, const CheckRules& rules);
bool check_failed(const std::vector<Finding>& findings);

// The report as JSON (findings included when given).
std::string audit_to_json(const AuditReport& report, const std::vector<Finding>* findings = nullptr);
// A terminal table with sparkline histograms (unicode bars when unicode is true).
std::string audit_to_text(const AuditReport& report, bool unicode = true);
// One SVG histogram per column into dir (created if needed); returns the files written.
std::vector<std::filesystem::path> write_histograms(const AuditReport& report, const std::filesystem::path& dir);
// One histogram as an SVG document.
std::string histogram_svg(const ColumnSummary& column);

}  // namespace nanguard::data
