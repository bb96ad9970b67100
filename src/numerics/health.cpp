#include "nanguard/numerics/health.h"

#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/check.h"
#include "numerics/health_detail.h"

namespace nanguard {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool is_integral_or_bool(const torch::Tensor& t) {
  return !t.is_floating_point() && !t.is_complex();
}

// Complex tensors are checked through their real and imaginary parts, so sums stay real.
torch::Tensor real_view(const torch::Tensor& t) {
  auto x = t.detach();
  return x.is_complex() ? at::view_as_real(x.resolve_conj()) : x;
}

void check_one_device(torch::TensorList tensors, const char* what) {
  const torch::Tensor* first = nullptr;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (!t.defined() || is_integral_or_bool(t)) continue;
    if (!first) {
      first = &t;
      continue;
    }
    NANGUARD_CHECK(t.device() == first->device(),
                   "{}: tensor {} is on {}, the earlier ones on {}", what, i, t.device().str(),
                   first->device().str());
  }
}

std::string format_stat(double v) { return fmt::format("{:.6g}", v); }

}  // namespace

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return "float32";
    case c10::ScalarType::Double: return "float64";
    case c10::ScalarType::Half: return "float16";
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::ComplexFloat: return "complex64";
    case c10::ScalarType::ComplexDouble: return "complex128";
    case c10::ScalarType::Long: return "int64";
    case c10::ScalarType::Int: return "int32";
    case c10::ScalarType::Short: return "int16";
    case c10::ScalarType::Char: return "int8";
    case c10::ScalarType::Byte: return "uint8";
    case c10::ScalarType::Bool: return "bool";
    case c10::ScalarType::Undefined: return "undefined";
    default: return c10::toString(dtype);
  }
}

double exp_overflow_threshold(c10::ScalarType dtype) {
  // log of the largest finite value of each type.
  switch (dtype) {
    case c10::ScalarType::Float:
    case c10::ScalarType::ComplexFloat:
      return std::log(static_cast<double>(std::numeric_limits<float>::max()));  // 88.72
    case c10::ScalarType::BFloat16:
      return std::log(3.3895313892515355e38);  // bfloat16 max, 88.72
    case c10::ScalarType::Half:
      return std::log(65504.0);  // 11.09
    case c10::ScalarType::Double:
    case c10::ScalarType::ComplexDouble:
      return std::log(std::numeric_limits<double>::max());  // 709.78
    default:
      return kInf;
  }
}

std::string TensorHealth::to_string() const {
  return fmt::format(
      "{}[{}] numel={} nan={} +inf={} -inf={} zeros={} neg={} min={} max={} absmax={} mean={} "
      "std={}",
      dtype_name(dtype), fmt::join(sizes, ", "), numel, nan_count, posinf_count, neginf_count,
      zero_count, negative_count, format_stat(min), format_stat(max), format_stat(absmax),
      format_stat(mean), format_stat(std));
}

namespace {

// Shape, dtype and a flat float/double view of the data to measure; undefined when there is
// nothing to measure.
torch::Tensor prepare(const torch::Tensor& tensor, TensorHealth& h) {
  if (!tensor.defined()) return {};
  h.dtype = tensor.scalar_type();
  h.sizes = tensor.sizes().vec();
  h.numel = tensor.numel();
  torch::Tensor t = tensor.detach();
  if (t.is_sparse()) {
    t = t._values();
  } else if (t.is_quantized()) {
    t = t.dequantize();
  } else if (t.is_mkldnn()) {
    t = t.to_dense();
  }
  if (t.is_meta()) return {};  // no data to measure
  if (t.is_complex()) t = at::view_as_real(t.resolve_conj());
  h.numel = t.numel();
  if (h.numel == 0) return {};
  torch::Tensor x = t.reshape(-1);
  if (is_integral_or_bool(x)) return x.to(torch::kDouble);
  // Inf and NaN survive the conversion; CPU lacks some reduced-precision kernels.
  if (x.scalar_type() == torch::kHalf || x.scalar_type() == torch::kBFloat16) return x.to(torch::kFloat);
  return x;
}

void set_stats(TensorHealth& h, double n_finite, double min, double max, double mean, double var) {
  if (n_finite <= 0) return;
  h.min = min;
  h.max = max;
  h.absmax = std::max(std::fabs(min), std::fabs(max));
  h.mean = mean;
  h.std = std::sqrt(var);
}

// CPU: two plain loops over the data (counts and sums, then the spread). For a 128x784
// float32 tensor this takes ~0.1 ms where the kernel version takes ~2 ms.
template <typename T>
void scan(const T* p, int64_t n, TensorHealth& h) {
  int64_t nan = 0, pinf = 0, ninf = 0, zeros = 0, neg = 0, fin = 0;
  double lo = kInf, hi = -kInf, sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(p[i]);
    if (std::isfinite(v)) {
      ++fin;
      zeros += v == 0;
      neg += v < 0;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum += v;
    } else if (std::isnan(v)) {
      ++nan;
    } else if (v > 0) {
      ++pinf;
    } else {
      ++ninf;
      ++neg;
    }
  }
  h.nan_count = nan;
  h.posinf_count = pinf;
  h.neginf_count = ninf;
  h.zero_count = zeros;
  h.negative_count = neg;
  if (fin == 0) return;
  const double mean = sum / static_cast<double>(fin);
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(p[i]);
    if (std::isfinite(v)) ss += (v - mean) * (v - mean);
  }
  set_stats(h, static_cast<double>(fin), lo, hi, mean, ss / static_cast<double>(fin));
}

void health_on_cpu(const torch::Tensor& flat, TensorHealth& h) {
  auto x = flat.contiguous();
  if (x.scalar_type() == torch::kDouble) {
    scan(x.data_ptr<double>(), x.numel(), h);
  } else {
    scan(x.data_ptr<float>(), x.numel(), h);
  }
}

// Any device: every statistic stays on the device and comes back in one stacked copy, so
// the whole measurement costs one host sync.
void health_by_kernels(const torch::Tensor& x, TensorHealth& h) {
  auto finite = x.sub(x).eq(0);  // x - x is 0 for finite x, NaN for NaN and +-Inf
  auto n_finite = finite.sum();
  auto nan_count = x.isnan().sum();
  auto posinf = x.eq(kInf).sum();
  auto neginf = x.eq(-kInf).sum();
  auto zeros = x.eq(0).sum();
  auto negatives = x.lt(0).sum();
  auto min = at::where(finite, x, at::scalar_tensor(kInf, x.options())).min();
  auto max = at::where(finite, x, at::scalar_tensor(-kInf, x.options())).max();
  auto xd = at::where(finite, x, at::scalar_tensor(0, x.options())).to(torch::kDouble);
  auto mean = xd.sum() / n_finite.to(torch::kDouble);
  auto centered = at::where(finite, xd - mean, at::scalar_tensor(0.0, xd.options()));
  auto var = centered.square().sum() / n_finite.to(torch::kDouble);

  auto stats = at::stack({n_finite.to(torch::kDouble), nan_count.to(torch::kDouble),
                          posinf.to(torch::kDouble), neginf.to(torch::kDouble),
                          zeros.to(torch::kDouble), negatives.to(torch::kDouble),
                          min.to(torch::kDouble), max.to(torch::kDouble), mean, var})
                   .to(torch::kCPU);
  auto s = stats.accessor<double, 1>();
  h.nan_count = static_cast<int64_t>(s[1]);
  h.posinf_count = static_cast<int64_t>(s[2]);
  h.neginf_count = static_cast<int64_t>(s[3]);
  h.zero_count = static_cast<int64_t>(s[4]);
  h.negative_count = static_cast<int64_t>(s[5]);
  set_stats(h, s[0], s[6], s[7], s[8], s[9]);
}

}  // namespace

TensorHealth tensor_health(const torch::Tensor& tensor) {
  torch::NoGradGuard no_grad;
  TensorHealth h;
  auto x = prepare(tensor, h);
  if (!x.defined()) return h;
  if (x.device().is_cpu()) {
    health_on_cpu(x, h);
  } else {
    health_by_kernels(x, h);
  }
  return h;
}

namespace detail {

TensorHealth tensor_health_by_kernels(const torch::Tensor& tensor) {
  torch::NoGradGuard no_grad;
  TensorHealth h;
  auto x = prepare(tensor, h);
  if (x.defined()) health_by_kernels(x, h);
  return h;
}

}  // namespace detail

// The sentinel must be cheap enough to run every step. Measured on this kind of CPU
// (2 cores, float32, the MNIST MLP's gradients 128x784, 128, 10x128, 10; 20,000 calls):
//   per tensor (t - t).sum(), added up      15.5 us   <- chosen
//   cat of flattened tensors, *0, sum        15.5 us   (allocates a copy of everything)
//   per tensor (t * 0).sum(), added up       19-20 us
//   per tensor abs().max() (NaN/Inf flag)    19-26 us  (not exact: only a flag, like the rest)
//   per tensor (t * 0).isnan().sum()         62-95 us  (an exact count)
//   per tensor numel - isfinite().sum()      97-150 us (isfinite is several kernels in 1.13)
// x - x is exactly 0 for finite x and NaN for NaN or +-Inf, so the sum is 0 or NaN and cannot
// overflow from large finite values (unlike a plain sum or a norm).
torch::Tensor nonfinite_sentinel(torch::TensorList tensors) {
  torch::NoGradGuard no_grad;
  check_one_device(tensors, "nonfinite_sentinel");
  torch::Tensor acc;
  for (const auto& t : tensors) {
    if (!t.defined() || is_integral_or_bool(t)) continue;
    auto x = real_view(t);
    auto s = x.sub(x).sum();
    acc = acc.defined() ? acc + s : s;
  }
  if (!acc.defined()) return torch::zeros({}, torch::kFloat);
  return acc.to(torch::kFloat);
}

torch::Tensor nonfinite_count(torch::TensorList tensors) {
  torch::NoGradGuard no_grad;
  check_one_device(tensors, "nonfinite_count");
  torch::Tensor acc;
  for (const auto& t : tensors) {
    if (!t.defined() || is_integral_or_bool(t)) continue;
    auto x = t.detach();
    auto s = x.sub(x).isnan().sum();  // complex isnan: either part
    acc = acc.defined() ? acc + s : s;
  }
  if (!acc.defined()) return torch::zeros({}, torch::kLong);
  return acc;
}

bool all_finite(torch::TensorList tensors) {
  return nonfinite_sentinel(tensors).item<float>() == 0.0f;
}

}  // namespace nanguard
