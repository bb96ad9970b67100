// A numerics self-test: known-answer checks of the ops training depends on (matmul, softmax,
// log_softmax, exp, log, sqrt, sum, mean, conv2d) against double-precision references, at edge
// cases (large, tiny, denormal, zero, negative inputs), plus a repeat check (the same op twice
// gives the same bits). The ops are reached through NumericOps so a test can substitute a
// deliberately wrong implementation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace nanguard::env {

// The ops under test. The default implementation calls LibTorch on the CPU (or `device`).
class NumericOps {
 public:
  virtual ~NumericOps() = default;
  virtual at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) const;
  virtual at::Tensor softmax(const at::Tensor& x, int64_t dim) const;
  virtual at::Tensor log_softmax(const at::Tensor& x, int64_t dim) const;
  virtual at::Tensor exp(const at::Tensor& x) const;
  virtual at::Tensor log(const at::Tensor& x) const;
  virtual at::Tensor sqrt(const at::Tensor& x) const;
  virtual at::Tensor sum(const at::Tensor& x) const;
  virtual at::Tensor mean(const at::Tensor& x) const;
  virtual at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w) const;  // stride 1, no padding
};

struct SelfTestOptions {
  // Quick: small sizes only (well under 200 ms); full: adds large matmuls and reductions.
  bool quick = false;
  // Checks run on this device ("cpu", "cuda:0"); inputs are made on the CPU and moved there.
  std::string device = "cpu";
  SelfTestOptions& set_quick(bool v) { quick = v; return *this; }
  SelfTestOptions& set_device(std::string v) { device = std::move(v); return *this; }
};

// One known-answer check.
struct SelfTestCheck {
  std::string op;        // "matmul"
  std::string case_name; // "random 64x64x64"
  std::string size;      // "64x64 @ 64x64"
  bool passed = true;
  bool skipped = false;  // not applicable here (e.g. denormal cases while FTZ/DAZ is on)
  double max_abs_error = 0;
  double max_rel_error = 0;
  double bound = 0;      // the relative (or absolute, see message) error allowed
  std::string message;   // what was expected vs found, for failures and skips
};

struct SelfTestReport {
  std::vector<SelfTestCheck> checks;
  double seconds = 0;
  bool passed() const;
  int failures() const;
  // "matmul (random 64x64x64, 64x64 @ 64x64): max abs error 1.2e-02, max rel error 3.4e-02
  // (bound 1e-04)" for the first failure; "" when all passed.
  std::string first_failure() const;
};

SelfTestReport run_self_test(const NumericOps& ops, const SelfTestOptions& options = {});
// run_self_test with LibTorch's own ops.
SelfTestReport run_self_test(const SelfTestOptions& options = {});

}  // namespace nanguard::env
