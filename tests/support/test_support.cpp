#include "support/test_support.h"

#include <atomic>
#include <fstream>
#include <random>
#include <sstream>

#include <ftw.h>
#include <unistd.h>

namespace nanguard::testing {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() /
          ("nanguard-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
           std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

// Deletes a folder tree with POSIX nftw rather than std::filesystem::remove_all: PyTorch's
// wheels export their own std::filesystem::remove_all from libtorch.so, and that copy crashes
// (a call through a null pointer) once the folder holds files.
void remove_tree(const std::filesystem::path& path) {
  ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        ::remove(p);  // best effort: a leftover file must not fail a test
        return 0;
      },
      16,
      FTW_DEPTH | FTW_PHYS);
}

TempDir::~TempDir() { remove_tree(path_); }

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

::testing::AssertionResult tensors_match(const torch::Tensor& actual, const torch::Tensor& expected,
                                         double rtol, double atol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "shape " << actual.sizes() << " != " << expected.sizes();
  }
  auto a = actual.to(torch::kDouble);
  auto e = expected.to(torch::kDouble);
  if (!torch::equal(a.isnan(), e.isnan())) return ::testing::AssertionFailure() << "NaN positions differ";
  if (!torch::equal(a.isposinf(), e.isposinf())) return ::testing::AssertionFailure() << "+Inf positions differ";
  if (!torch::equal(a.isneginf(), e.isneginf())) return ::testing::AssertionFailure() << "-Inf positions differ";
  auto finite = a.isfinite();
  auto af = a.masked_select(finite), ef = e.masked_select(finite);
  if (!torch::allclose(af, ef, rtol, atol)) {
    return ::testing::AssertionFailure() << "values differ; max abs diff "
                                         << (af - ef).abs().max().item<double>();
  }
  return ::testing::AssertionSuccess();
}

}  // namespace nanguard::testing
