#include "nanguard/data/input_scale.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

namespace nanguard::data {

std::string UnitRangeDivisor::describe() const {
  return integer ? "their largest value: integer inputs such as 8-bit pixels" : "their RMS";
}

UnitRangeDivisor unit_range_divisor(const at::Tensor& x) {
  UnitRangeDivisor d;
  if (!x.defined() || !x.is_floating_point() || x.numel() == 0) return d;
  torch::NoGradGuard no_grad;
  const at::Tensor finite = x.isfinite();
  const at::Tensor values = torch::where(finite, x, torch::zeros_like(x));
  const double count = finite.sum().item<double>();
  if (count == 0) return d;
  const double absmax = values.abs().max().item<double>();
  const double rms = std::sqrt(values.pow(2).sum(torch::kDouble).item<double>() / count);
  d.integer = (values == values.round()).all().item<bool>();
  const double divisor = d.integer ? absmax : rms;
  if (std::isfinite(divisor) && divisor > 1.0) d.divisor = divisor;
  return d;
}

}  // namespace nanguard::data
