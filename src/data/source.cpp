#include "nanguard/data/source.h"

#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/error.h"
#include "nanguard/data/csv.h"
#include "nanguard/data/npy.h"

namespace nanguard::data {
namespace fs = std::filesystem;

namespace {

void require_file(const fs::path& path, const std::string& key) {
  NANGUARD_CHECK(!path.empty(), "data.{} is required for this data source", key);
  if (!fs::exists(path)) throw IoError("data." + key + ": file " + path.string() + " does not exist");
}

TensorDataset read_csv_split(const fs::path& path, const std::string& key, const DataSource& s) {
  require_file(path, key);
  CsvTable table = read_csv(path, CsvOptions().label_column(s.label));
  return TensorDataset(table.features.div(s.scale), table.labels);
}

TensorDataset read_npy_split(const fs::path& x_path, const fs::path& y_path, const std::string& prefix,
                             const DataSource& s) {
  require_file(x_path, prefix + "_x");
  require_file(y_path, prefix + "_y");
  auto x = read_npy(x_path).to(torch::kFloat).div(s.scale);
  auto y = read_npy(y_path);
  NANGUARD_CHECK(x.dim() >= 1 && y.dim() >= 1 && x.size(0) == y.size(0),
                 "{} has {} samples but {} has {}", x_path.string(), x.dim() ? x.size(0) : 0, y_path.string(),
                 y.dim() ? y.size(0) : 0);
  if (!y.is_floating_point()) y = y.to(torch::kLong);
  return TensorDataset(x, y);
}

}  // namespace

LoadedData load_data(const DataSource& s) {
  NANGUARD_CHECK(s.scale > 0, "data.scale must be positive, got {}", s.scale);
  LoadedData out;
  if (s.kind == "mnist") {
    NANGUARD_CHECK(!s.dir.empty(), "data.dir is required for data source 'mnist'");
    auto splits = load_mnist(s.dir, s.scale);
    out.train = std::move(splits.train);
    out.test = std::move(splits.test);
  } else if (s.kind == "csv") {
    out.train = read_csv_split(s.train, "train", s);
    if (!s.test.empty()) out.test = read_csv_split(s.test, "test", s);
  } else if (s.kind == "npy") {
    out.train = read_npy_split(s.train_x, s.train_y, "train", s);
    if (!s.test_x.empty() || !s.test_y.empty()) out.test = read_npy_split(s.test_x, s.test_y, "test", s);
  } else {
    throw ValueError("data.source: unknown kind '" + s.kind + "' (expected mnist, csv or npy)");
  }
  NANGUARD_CHECK(s.max_train_samples >= 0 && s.max_test_samples >= 0, "data.max_*_samples must be >= 0");
  if (s.max_train_samples > 0) out.train = out.train.head(s.max_train_samples);
  if (s.max_test_samples > 0 && out.test.size() > 0) out.test = out.test.head(s.max_test_samples);

  if (s.validation == "test") {
    NANGUARD_CHECK(out.test.size() > 0, "data.validation = \"test\" but the data source has no test split");
    out.validation = out.test;
  } else if (s.validation == "split") {
    auto [train, validation] = out.train.split(s.validation_fraction, s.seed);
    out.train = std::move(train);
    out.validation = std::move(validation);
  } else if (s.validation != "none") {
    throw ValueError("data.validation: expected \"test\", \"split\" or \"none\", got \"" + s.validation + "\"");
  }
  return out;
}

}  // namespace nanguard::data
