#include "guard/init_inspection.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/error.h"

namespace nanguard::detail {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
bool contains(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

bool is_recurrent_matrix(const std::string& name, const at::Tensor& p) {
  const std::string n = lower(name);
  if (!(contains(n, "weight_hh") || contains(n, "recurrent_kernel")) || p.dim() != 2) return false;
  const int64_t rows = p.size(0), cols = p.size(1);
  return rows > 0 && cols > 0 && (rows % cols == 0 || cols % rows == 0);
}

// The square blocks of a recurrent matrix: one per gate ([k H, H] as torch::nn stacks them, or
// [H, k H] as Keras does).
std::vector<at::Tensor> gate_blocks(const at::Tensor& p) {
  const int64_t rows = p.size(0), cols = p.size(1);
  const int64_t h = std::min(rows, cols);
  const int64_t dim = rows >= cols ? 0 : 1;
  std::vector<at::Tensor> blocks;
  for (int64_t start = 0; start < p.size(dim); start += h) blocks.push_back(p.narrow(dim, start, h));
  return blocks;
}

double largest_singular_value(const at::Tensor& block) {
  return at::linalg_svdvals(block.detach().to(torch::kCPU, torch::kDouble)).max().item<double>();
}

double rms(const at::Tensor& p) {
  return std::sqrt(p.detach().to(torch::kCPU, torch::kDouble).pow(2).mean().item<double>());
}

// The hidden size of the recurrent layer a bias belongs to ("x.bias_ih_l0" -> "x.weight_hh_l0"
// [k H, H]); 0 when it is not a recurrent layer's.
int64_t recurrent_hidden_size(const std::vector<std::string>& names, const std::vector<at::Tensor>& params,
                              const std::string& bias_name) {
  for (const char* kind : {"bias_ih", "bias_hh"}) {
    const auto at = bias_name.rfind(kind);
    if (at == std::string::npos) continue;
    std::string sibling = bias_name;
    sibling.replace(at, std::string(kind).size(), "weight_hh");
    for (size_t i = 0; i < names.size() && i < params.size(); ++i)
      if (names[i] == sibling && params[i].dim() == 2) return params[i].size(1);
  }
  return 0;
}

}  // namespace

std::vector<InitFinding> inspect_initialisation(const std::vector<std::string>& names,
                                                const std::vector<at::Tensor>& params, const std::string& prefix,
                                                bool recurrent_only) {
  torch::NoGradGuard no_grad;
  std::vector<InitFinding> out;
  for (size_t i = 0; i < names.size() && i < params.size(); ++i) {
    const std::string& name = names[i];
    const at::Tensor& p = params[i];
    if (!p.defined() || p.numel() == 0 || !p.is_floating_point()) continue;
    if (!prefix.empty() && name.rfind(prefix, 0) != 0) continue;
    if (!at::isfinite(p).all().item<bool>()) continue;  // poisoned, not mis-initialised (and no SVD of NaN)
    InitFinding f;
    f.parameter = name;
    if (is_recurrent_matrix(name, p)) {
      double gain = 0;
      for (const auto& b : gate_blocks(p)) gain = std::max(gain, largest_singular_value(b));
      if (std::isfinite(gain) && gain > kRecurrentGainLimit) {
        f.problem = "recurrent_gain";
        f.value = gain;
        f.reference = 1.0;
        f.scheme = "orthogonal";
        out.push_back(f);
      }
      continue;
    }
    if (recurrent_only) continue;
    const std::string n = lower(name);
    if (p.dim() >= 2 && !contains(n, "embed")) {
      const double fan_in = static_cast<double>(p.numel() / p.size(0));
      const double he = std::sqrt(2.0 / fan_in);
      const double r = rms(p);
      if (std::isfinite(r) && r > kWeightScaleLimit * he) {
        f.problem = "weight_scale";
        f.value = r;
        f.reference = he;
        f.scheme = "glorot_uniform";
        out.push_back(f);
      }
    } else if (p.dim() == 1 && contains(n, "bias")) {
      const double r = rms(p);
      if (std::isfinite(r) && r > kSaturatingBiasLimit) {
        f.problem = "saturating_bias";
        f.value = r;
        f.reference = kSaturatingBiasLimit;
        f.scheme = "zeros";
        // A recurrent layer's bias ("lstm.bias_ih_l0") gets the layer's own default, U(+-1/sqrt(H))
        // with H from its recurrent matrix ("lstm.weight_hh_l0", [gates x H, H]).
        const int64_t hidden = recurrent_hidden_size(names, params, name);
        if (hidden > 0) {
          f.scheme = "uniform";
          f.bound = 1.0 / std::sqrt(static_cast<double>(hidden));
        }
        out.push_back(f);
      }
    }
  }
  return out;
}

std::string reinitialize(const at::Tensor& param, const InitFinding& finding) {
  torch::NoGradGuard no_grad;
  at::Tensor p = param;
  if (finding.scheme == "orthogonal") {
    NANGUARD_CHECK(p.dim() == 2, "reinitialize: {} is not a matrix (orthogonal needs 2 dimensions)",
                         finding.parameter);
    for (auto& block : gate_blocks(p)) {
      auto fresh = torch::empty(block.sizes(), block.options().dtype(torch::kFloat).device(torch::kCPU));
      torch::nn::init::orthogonal_(fresh, 1.0);
      block.copy_(fresh);
    }
    return fmt::format("{}: orthogonal, gain 1 (largest singular value {:.3g} -> 1)", finding.parameter, finding.value);
  }
  if (finding.scheme == "glorot_uniform") {
    auto fresh = torch::empty(p.sizes(), p.options().dtype(torch::kFloat).device(torch::kCPU));
    torch::nn::init::xavier_uniform_(fresh);
    p.copy_(fresh);
    return fmt::format("{}: Glorot uniform (RMS {:.3g} -> {:.3g})", finding.parameter, finding.value, rms(p));
  }
  if (finding.scheme == "uniform") {
    NANGUARD_CHECK(std::isfinite(finding.bound) && finding.bound > 0,
                   "reinitialize: {} needs a positive bound for a uniform init, got {}", finding.parameter, finding.bound);
    auto fresh = torch::empty(p.sizes(), p.options().dtype(torch::kFloat).device(torch::kCPU));
    fresh.uniform_(-finding.bound, finding.bound);
    p.copy_(fresh);
    return fmt::format("{}: uniform in +-{:.3g}, the layer's default (RMS {:.3g} -> {:.3g})", finding.parameter,
                       finding.bound, finding.value, rms(p));
  }
  if (finding.scheme == "zeros") {
    p.zero_();
    return fmt::format("{}: zeros (RMS {:.3g} -> 0)", finding.parameter, finding.value);
  }
  throw ValueError(fmt::format("reinitialize: unknown scheme '{}' for {} (expected orthogonal, glorot_uniform, uniform or zeros)",
                               finding.scheme, finding.parameter));
}

}  // namespace nanguard::detail
