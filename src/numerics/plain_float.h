// Whether a tensor is plain CPU float32 memory that the loops of float_sums.h can read
// directly (defined, on the CPU, float32, contiguous).
#pragma once

#include <ATen/core/Tensor.h>

namespace nanguard::detail {

// A negative view (a lazy neg bit) holds the values with the other sign.
inline bool plain_cpu_float(const at::Tensor& t) {
  return t.defined() && t.is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && !t.is_neg() &&
         t.has_storage();
}

// A one-element tensor's value in double: read from memory for plain CPU float32 (item()'s
// dispatch costs more than the guard's whole check of a scalar).
inline double scalar_value(const at::Tensor& t) {
  return plain_cpu_float(t) && t.numel() == 1 ? static_cast<double>(*t.data_ptr<float>()) : t.item<double>();
}

}  // namespace nanguard::detail
