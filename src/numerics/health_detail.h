// Internals of tensor_health exposed for tests.
#pragma once

#include "nanguard/numerics/health.h"

namespace nanguard::detail {

// tensor_health computed with device kernels and one host copy, the path used off the CPU.
TensorHealth tensor_health_by_kernels(const torch::Tensor& tensor);

}  // namespace nanguard::detail
