// Where a run's data comes from, as named in a config file, and the loader that turns it into
// train / validation / test datasets.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "nanguard/data/dataset.h"

namespace nanguard::data {

struct DataSource {
  // "mnist": the four IDX files of MNIST-layout data in `dir` (MNIST, Fashion-MNIST);
  // "csv": `train` / `test` CSV files with a `label` column; "npy": `train_x`, `train_y`,
  // `test_x`, `test_y` NPY files.
  std::string kind = "mnist";
  std::filesystem::path dir;
  std::filesystem::path train, test;  // csv
  std::string label = "label";        // csv label column
  std::filesystem::path train_x, train_y, test_x, test_y;  // npy
  // Inputs are divided by this (255 maps 8-bit pixels to [0, 1]; 1 leaves raw values).
  double scale = 1.0;
  // "test": validate on the test split; "split": hold out validation_fraction of train;
  // "none": no validation.
  std::string validation = "test";
  double validation_fraction = 0.1;
  // Keep only the first N samples (0 = all): quick experiments and tests.
  int64_t max_train_samples = 0;
  int64_t max_test_samples = 0;
  uint64_t seed = 0;  // for the validation split
  // Audit the training data before fit (non-finite, extreme, blank samples, bad labels).
  bool audit = true;
};

struct LoadedData {
  TensorDataset train;
  TensorDataset validation;  // empty when validation == "none"
  TensorDataset test;        // empty when the source has no test split
};

// Loads everything the source names. Errors name the file and what is wrong with it.
LoadedData load_data(const DataSource& source);

}  // namespace nanguard::data
