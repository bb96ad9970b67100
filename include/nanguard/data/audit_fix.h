// Repairing a data file into a new one: impute, drop rows, clip or winsorize, standardize.
// The input is never written; the output is written atomically, with a report of every change.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <torch/arg.h>

namespace nanguard::data {

struct FixOptions {
  // Replace missing, NaN and Inf values: "" (no), "mean", "median" or "constant:V".
  TORCH_ARG(std::string, impute) = "";
  // Drop the rows (samples) holding a missing, NaN or Inf feature (or label).
  TORCH_ARG(bool, drop_rows) = false;
  // Clip every feature to [clip_min, clip_max] (NaN = that side unbounded).
  TORCH_ARG(double, clip_min) = std::numeric_limits<double>::quiet_NaN();
  TORCH_ARG(double, clip_max) = std::numeric_limits<double>::quiet_NaN();
  // Clip every feature to its own [p, 1 - p] quantiles (0 = off; p < 0.5).
  TORCH_ARG(double, winsorize) = 0;
  // Rescale every feature to mean 0 and standard deviation 1 (after the steps above).
  TORCH_ARG(bool, standardize) = false;
  // CSV: the label column, never changed except by drop_rows ("" = none).
  TORCH_ARG(std::string, label_column) = "";
  TORCH_ARG(char, delimiter) = ',';
  TORCH_ARG(bool, has_header) = true;
  // Changes listed one by one in the report; beyond, only counted.
  TORCH_ARG(int64_t, max_listed_changes) = 100000;
};

// One changed cell (row is the 0-based data row or sample; column the feature name).
struct FixChange {
  int64_t row = 0;
  std::string column;
  std::string action;  // "impute", "clip", "winsorize", "standardize"
  double old_value = 0;
  double new_value = 0;
};

struct FixColumnCounts {
  std::string column;
  int64_t imputed = 0, clipped = 0, standardized = 0;
  double impute_value = 0;      // what missing values became
  double low = 0, high = 0;     // clipping bounds (+/-inf when unbounded)
  double mean = 0, std = 1;     // standardization
};

struct FixReport {
  std::string input, output;
  int64_t rows_in = 0, rows_out = 0;
  std::vector<int64_t> dropped_rows;  // all of them (up to max_listed_changes)
  int64_t rows_dropped = 0;
  std::vector<FixColumnCounts> columns;
  std::vector<FixChange> changes;  // every change except standardization, up to the limit
  bool changes_complete = true;    // false when the list was cut
};

// Reads input (CSV, NPY or IDX), applies the options and writes output in the same format,
// atomically. Throws ValueError when output is the input (also through a link or another
// path), for nothing to do, or bad options; IoError on I/O failure.
FixReport fix_file(const std::filesystem::path& input, const std::filesystem::path& output,
                   const FixOptions& options);

// The change report as JSON.
std::string fix_report_to_json(const FixReport& report);

// Whether two paths name the same file (after links), also when b does not exist yet.
bool same_file(const std::filesystem::path& a, const std::filesystem::path& b);

}  // namespace nanguard::data
