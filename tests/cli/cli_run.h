// Runs the real nanguard binary (NANGUARD_CLI, set by tests/CMakeLists.txt) and writes the tiny
// data sets and configs the CLI tests train on. No LibTorch here: see tests/CMakeLists.txt.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace nanguard::cli_test {

// A fresh folder under the system temp dir, removed with everything in it when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_bytes(const std::filesystem::path& path, const std::string& bytes);
std::string read_bytes(const std::filesystem::path& path);

struct CliResult {
  int code = -1;  // the exit status; 128 + N when killed by signal N
  std::string out;
  std::string err;
};

// Runs `nanguard ARGS...` in `cwd` with stdout and stderr captured; kills it after
// `timeout_s` seconds (code -1, err says so).
CliResult run_cli(const std::vector<std::string>& args, const std::filesystem::path& cwd, int timeout_s = 120);

// Prints what a run said, for failure messages.
std::string describe(const CliResult& r);

// Whether `text` contains every needle, naming the first one it lacks.
::testing::AssertionResult contains_all(const std::string& text, std::initializer_list<std::string> needles);

// Writes DIR/train.csv (rows x1..x4,y of 3 separable classes) and DIR/test.csv; a NaN in the
// first feature of training row `nan_row` when it is >= 0.
void write_tiny_csv(const std::filesystem::path& dir, int rows = 48, int nan_row = -1);
// The config for that data: a 4 -> 3 softmax model, 1 epoch of batch 16. `extra` is appended.
std::string tiny_config(const std::string& extra = "");
// Both of the above in DIR, the config as DIR/tiny.toml; returns its path.
std::filesystem::path write_tiny_run(const std::filesystem::path& dir, const std::string& extra = "", int nan_row = -1);

// The four MNIST IDX files in DIR: `train` and `test` pseudo-random 28x28 images, labels
// 0-9 in turn. A tiny stand-in for MNIST in the zoo's tests, never the real data set.
void write_fake_mnist(const std::filesystem::path& dir, uint32_t train, uint32_t test);

}  // namespace nanguard::cli_test
