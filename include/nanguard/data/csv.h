// Reading numeric CSV files into a feature matrix and an optional label vector.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/types.h>

namespace nanguard::data {

struct CsvOptions {
  // Name of the label column ("" = no label column). Without a header the columns are named
  // "0", "1", ... (their 0-based index), so the label column is given by its index.
  TORCH_ARG(std::string, label_column) = "";
  // Field separator; any character except a quote, CR or LF.
  TORCH_ARG(char, delimiter) = ',';
  // Whether the first line holds the column names.
  TORCH_ARG(bool, has_header) = true;
  // Read at most this many data rows (-1 = all).
  TORCH_ARG(int64_t, max_rows) = -1;
};

struct CsvTable {
  // Names of the feature columns, in file order (the label column excluded).
  std::vector<std::string> feature_names;
  // float32 [rows, feature_names.size()]; missing cells are NaN.
  torch::Tensor features;
  // int64 [rows] if every label is an integer, else float32 [rows]; undefined without a label
  // column.
  torch::Tensor labels;
  // Name of the label column ("" without one).
  std::string label_name;
};

// Reads a CSV file whose cells are all numbers. Empty cells and NA, N/A, NaN, null read as NaN;
// inf, +inf, -inf, Infinity (any case) as +/-Inf. RFC 4180 quoting, CRLF line endings and
// blank lines are accepted. Throws ValueError naming the line, column and text of a bad cell
// or a row with the wrong number of fields, and IoError when the file cannot be read.
CsvTable read_csv(const std::filesystem::path& path, const CsvOptions& options = {});

}  // namespace nanguard::data
