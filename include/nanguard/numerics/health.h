// Tensor health: how many elements are NaN, +Inf, -Inf or zero, and the range and spread of the
// finite ones. tensor_health() is for diagnosis (one host sync per tensor); the cheap
// per-step check is nonfinite_sentinel() / all_finite(), which touch each element once.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <torch/types.h>

namespace nanguard {

struct TensorHealth {
  // Element type and shape of the tensor the health was computed for.
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  std::vector<int64_t> sizes;

  int64_t numel = 0;
  int64_t nan_count = 0;
  int64_t posinf_count = 0;
  int64_t neginf_count = 0;
  // Elements equal to zero (+0 and -0).
  int64_t zero_count = 0;
  // Elements below zero, -Inf included (sqrt and log of these are NaN).
  int64_t negative_count = 0;

  // Over the finite elements only; NaN when there are none. std is the population standard
  // deviation (divides by the number of finite elements), so one finite element gives 0.
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
  double absmax = std::numeric_limits<double>::quiet_NaN();
  double mean = std::numeric_limits<double>::quiet_NaN();
  double std = std::numeric_limits<double>::quiet_NaN();

  int64_t nonfinite_count() const { return nan_count + posinf_count + neginf_count; }
  int64_t finite_count() const { return numel - nonfinite_count(); }
  bool finite() const { return nonfinite_count() == 0; }
  // One line, e.g. "float32[32, 10] numel=320 nan=3 +inf=0 -inf=0 zeros=0 neg=12 min=-4.1 ...".
  std::string to_string() const;
};

// Health of one tensor (any device, any dtype). Integer and bool tensors are finite by
// construction; complex tensors are measured over their real and imaginary parts; sparse
// tensors over their stored values. An undefined tensor gives numel 0.
// Cost: on CPU two passes over the data; on other devices a handful of kernels and one
// device-to-host copy (one sync).
TensorHealth tensor_health(const torch::Tensor& tensor);

// Cheapest finiteness test over many tensors, with no host sync: a 0-dim float tensor on the
// tensors' device that is exactly 0 when every element is finite and NaN otherwise. Undefined
// tensors are skipped; integer and bool tensors are always finite. All defined floating
// tensors must be on one device. An empty list gives a CPU zero.
torch::Tensor nonfinite_sentinel(torch::TensorList tensors);

// Exact number of non-finite elements over many tensors, as a 0-dim int64 tensor on the
// tensors' device, with no host sync. About 5x the cost of nonfinite_sentinel().
torch::Tensor nonfinite_count(torch::TensorList tensors);

// Whether every element of every tensor is finite: nonfinite_sentinel() plus one host sync.
bool all_finite(torch::TensorList tensors);

// The largest |x| for which exp(x) is finite in this floating dtype (88.72 for float32 and
// bfloat16, 11.09 for half, 709.78 for double); +Inf for other dtypes.
double exp_overflow_threshold(c10::ScalarType dtype);

// Short dtype name as PyTorch prints it: "float32", "float16", "int64", ...
std::string dtype_name(c10::ScalarType dtype);

}  // namespace nanguard
