// Whether a tensor is plain CPU float32 memory that the loops of float_sums.h can read
// directly (defined, on the CPU, float32, contiguous).
#pragma once

#include <ATen/core/Tensor.h>

namespace nanguard::detail {

inline bool plain_cpu_float(const at::Tensor& t) {
  return t.defined() && t.is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
}

}  // namespace nanguard::detail
