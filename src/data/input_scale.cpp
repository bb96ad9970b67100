#include "nanguard/data/input_scale.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

namespace nanguard::data {

std::string UnitRangeDivisor::describe() const {
  return integer ? "their largest value: integer inputs such as 8-bit pixels" : "their RMS";
}

InputScale input_scale_of(const at::Tensor& x) {
  InputScale s;
  if (!x.defined() || !x.is_floating_point() || x.numel() == 0) return s;
  torch::NoGradGuard no_grad;
  // In double: the squares of values beyond ~1.8e19 overflow float32.
  const at::Tensor all = x.detach().to(torch::kCPU, torch::kDouble).flatten();
  const at::Tensor finite = all.index({all.isfinite()});
  s.finite = finite.numel();
  if (s.finite == 0) return s;
  s.rms = finite.pow(2).mean().sqrt().item<double>();
  s.absmax = finite.abs().max().item<double>();
  s.integer = (finite == finite.round()).all().item<bool>();
  return s;
}

UnitRangeDivisor unit_range_divisor(const at::Tensor& x) {
  UnitRangeDivisor d;
  const InputScale s = input_scale_of(x);
  if (s.finite == 0) return d;
  d.integer = s.integer;
  const double divisor = d.integer ? s.absmax : s.rms;
  if (std::isfinite(divisor) && divisor > 1.0) d.divisor = divisor;
  return d;
}

}  // namespace nanguard::data
