// Helpers shared by the test executables: scratch folders and tensor comparisons.
#pragma once

#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nanguard::testing {

// A fresh folder under the system temp dir, removed when the object dies.
// Deletes a folder and everything in it (missing folders are fine).
void remove_tree(const std::filesystem::path& path);

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

// Writes bytes to a file, creating it (for bad-input tests).
void write_bytes(const std::filesystem::path& path, const std::string& bytes);
std::string read_bytes(const std::filesystem::path& path);

// Equal shapes, equal NaN positions, equal +/-Inf positions and close finite values.
::testing::AssertionResult tensors_match(const torch::Tensor& actual, const torch::Tensor& expected,
                                         double rtol = 1e-5, double atol = 1e-6);

// Runs fn and checks that it throws E whose what() contains every needle.
template <typename E, typename Fn>
::testing::AssertionResult throws_with(Fn&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const E& e) {
    std::string what = e.what();
    for (const auto& needle : needles) {
      if (what.find(needle) == std::string::npos) {
        return ::testing::AssertionFailure() << "message \"" << what << "\" lacks \"" << needle << "\"";
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace nanguard::testing
