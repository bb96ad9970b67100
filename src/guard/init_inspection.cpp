#include "guard/init_inspection.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/error.h"
#include "nanguard/monitor/signals.h"

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

using monitor::layer_of;

std::string kind_of(const ActivationKinds& activations, const std::string& parameter) {
  const auto it = activations.find(layer_of(parameter));
  return it == activations.end() ? std::string() : it->second;
}

bool in_recurrent_layer(const std::vector<std::string>& names, const std::vector<at::Tensor>& params,
                        const std::string& parameter) {
  const std::string prefix = layer_of(parameter) + ".";
  for (size_t i = 0; i < names.size() && i < params.size(); ++i)
    if (names[i].rfind(prefix, 0) == 0 && is_recurrent_matrix(names[i], params[i])) return true;
  return false;
}

bool is_dense_weight(const std::string& name, const at::Tensor& p) {
  return p.defined() && p.dim() == 2 && !contains(lower(name), "embed") && !is_recurrent_matrix(name, p);
}

// The activation whose outputs weight i reads: the kind of the dense weight before it in
// parameter order when that one produces as many features as this one reads (a chain of
// layers); "" when it reads the model's inputs or a layer that cannot be matched.
std::string input_activation(const std::vector<std::string>& names, const std::vector<at::Tensor>& params,
                             size_t i, const ActivationKinds& activations) {
  for (size_t j = i; j-- > 0;) {
    if (j >= params.size() || !is_dense_weight(names[j], params[j])) continue;
    if (params[j].size(0) != params[i].size(1)) return "";
    return kind_of(activations, names[j]);
  }
  return "";
}

// A weight's replacement. An activation's factor belongs to the weight that reads its outputs:
// Var(y_l) = n_l Var(w_l) E[x_l^2] with x_l = f(y_(l-1)), forward and backward alike (He et al.
// 2015, section 2.2), so the gain comes from the activation before the weight: He normal after a
// relu, orthogonal at gain 1 after a tanh and at 4 = 1 / sigmoid'(0) after a sigmoid. A weight
// that reads the model's inputs has no activation before it: He normal when a relu follows (He's
// own convention for the first layer), orthogonal at gain 1 when a sigmoid or tanh does, else
// Glorot uniform.
void choose_weight_scheme(InitFinding& f, const std::string& reads, const std::string& feeds) {
  f.activation = reads;
  const std::string& kind = reads.empty() ? feeds : reads;  // the model's inputs: by what follows
  if (kind == "relu") {
    f.scheme = "he_normal";
  } else if (kind == "sigmoid" || kind == "tanh") {
    f.scheme = "orthogonal";
    f.gain = reads == "sigmoid" ? kSigmoidGain : 1.0;
  } else {
    f.scheme = "glorot_uniform";
  }
}

}  // namespace

void learn_activation_kinds(ActivationKinds& kinds, const std::vector<std::string>& names,
                            const std::vector<at::Tensor>& params,
                            const std::vector<std::pair<std::string, std::string>>& seen,
                            std::map<std::string, std::string>* owners) {
  std::vector<std::string> weighted;  // layers with a dense weight, in parameter order
  for (size_t i = 0; i < names.size() && i < params.size(); ++i) {
    if (!is_dense_weight(names[i], params[i])) continue;
    const std::string layer = layer_of(names[i]);
    if (std::find(weighted.begin(), weighted.end(), layer) == weighted.end()) weighted.push_back(layer);
  }
  std::vector<std::pair<std::string, std::string>> own_scope;  // activations outside every weighted layer
  for (const auto& [layer, kind] : seen) {
    if (std::find(weighted.begin(), weighted.end(), layer) != weighted.end())
      kinds[layer] = kind;
    else
      own_scope.emplace_back(layer, kind);
  }
  if (own_scope.empty() || (own_scope.size() != weighted.size() && own_scope.size() + 1 != weighted.size())) return;
  for (size_t i = 0; i < own_scope.size(); ++i) {
    kinds.emplace(weighted[i], own_scope[i].second);
    if (owners != nullptr) owners->emplace(own_scope[i].first, weighted[i]);
  }
}

std::string sibling_bias(const std::string& weight_name) {
  const std::string suffix = "weight";
  if (weight_name.size() < suffix.size() ||
      weight_name.compare(weight_name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return "";
  return weight_name.substr(0, weight_name.size() - suffix.size()) + "bias";
}

std::vector<InitFinding> inspect_initialisation(const std::vector<std::string>& names,
                                                const std::vector<at::Tensor>& params, const std::string& prefix,
                                                bool recurrent_only, const ActivationKinds& activations) {
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
        const std::string reads = p.dim() == 2 ? input_activation(names, params, i, activations) : "";
        // A recurrent layer's input weight feeds gates of several kinds: no single activation.
        const bool gates = in_recurrent_layer(names, params, name);
        choose_weight_scheme(f, gates ? std::string() : reads, gates ? std::string() : kind_of(activations, name));
        // Sigmoid outputs start at 0.5: the bias then centres the pre-activations.
        if (reads == "sigmoid") f.input_mean = 0.5;
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
          // An LSTM's ([4 H]: input, forget, cell, output gates) gets zeros with the forget
          // gate open instead, bias 1 (Gers et al. 2000; Jozefowicz et al. 2015; Keras's
          // unit_forget_bias). On Z12's LSTM in PyTorch (bench/lstm_bias_init.py, seeds 0-2):
          // 87.3 / 86.0 / 87.2% against 82.6 / 76.3 / 80.4% for the default draw and
          // 81.2 / 81.8 / 82.6% for another draw of it.
          if (p.size(0) == 4 * hidden) f.scheme = "lstm_forget_one";
        }
        out.push_back(f);
      }
    }
  }
  return out;
}

namespace {

// The bias that centres a re-initialised weight's pre-activations on inputs starting at
// finding.input_mean: -input_mean * W 1. "" when there is nothing to centre.
std::string centre_bias(const at::Tensor& weight, const InitFinding& finding, const at::Tensor& bias) {
  if (finding.input_mean == 0 || !bias.defined() || weight.dim() != 2 || bias.dim() != 1 ||
      bias.size(0) != weight.size(0))
    return "";
  bias.copy_(weight.sum(1).mul(-finding.input_mean));
  return fmt::format(", its bias centred for inputs starting at {:g}", finding.input_mean);
}

}  // namespace

std::string reinitialize(const at::Tensor& param, const InitFinding& finding, const at::Tensor& bias) {
  torch::NoGradGuard no_grad;
  at::Tensor p = param;
  auto fresh_like = [](const at::Tensor& t) {
    return torch::empty(t.sizes(), t.options().dtype(torch::kFloat).device(torch::kCPU));
  };
  if (finding.scheme == "orthogonal") {
    NANGUARD_CHECK(p.dim() == 2, "reinitialize: {} is not a matrix (orthogonal needs 2 dimensions)",
                         finding.parameter);
    if (finding.problem == "recurrent_gain") {
      for (auto& block : gate_blocks(p)) {
        auto fresh = fresh_like(block);
        torch::nn::init::orthogonal_(fresh, 1.0);
        block.copy_(fresh);
      }
      return fmt::format("{}: orthogonal, gain 1 (largest singular value {:.3g} -> 1)", finding.parameter, finding.value);
    }
    NANGUARD_CHECK(std::isfinite(finding.gain) && finding.gain > 0,
                   "reinitialize: {} needs a positive gain for an orthogonal init, got {}", finding.parameter,
                   finding.gain);
    auto fresh = fresh_like(p);
    torch::nn::init::orthogonal_(fresh, finding.gain);
    p.copy_(fresh);
    return fmt::format("{}: orthogonal, gain {:g}{} (RMS {:.3g} -> {:.3g}){}", finding.parameter, finding.gain,
                       finding.activation.empty() ? "" : " after its " + finding.activation + " inputs", finding.value, rms(p),
                       centre_bias(p, finding, bias));
  }
  if (finding.scheme == "glorot_uniform" || finding.scheme == "he_normal") {
    auto fresh = fresh_like(p);
    const bool he = finding.scheme == "he_normal";
    if (he)
      torch::nn::init::kaiming_normal_(fresh, 0.0, torch::kFanIn, torch::kReLU);
    else
      torch::nn::init::xavier_uniform_(fresh);
    p.copy_(fresh);
    return fmt::format("{}: {} (RMS {:.3g} -> {:.3g}){}", finding.parameter, he ? "He normal" : "Glorot uniform",
                       finding.value, rms(p), centre_bias(p, finding, bias));
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
  if (finding.scheme == "lstm_forget_one") {
    NANGUARD_CHECK(p.dim() == 1 && p.size(0) % 4 == 0,
                   "reinitialize: {} is not an LSTM bias of 4 gate blocks (size {})", finding.parameter,
                   p.numel());
    // torch::nn::LSTM adds two bias vectors (bias_ih + bias_hh): each gets half, so the forget
    // gate's bias is 1 once both are re-initialised.
    const int64_t hidden = p.size(0) / 4;
    p.zero_();
    p.narrow(0, hidden, hidden).fill_(0.5);
    return fmt::format("{}: zeros, the forget gate's {} (RMS {:.3g} -> {:.3g})", finding.parameter,
                       "0.5 (with its sibling's, 1)", finding.value, rms(p));
  }
  if (finding.scheme == "zeros") {
    p.zero_();
    return fmt::format("{}: zeros (RMS {:.3g} -> 0)", finding.parameter, finding.value);
  }
  throw ValueError(fmt::format("reinitialize: unknown scheme '{}' for {} (expected orthogonal, glorot_uniform, he_normal, uniform, lstm_forget_one or zeros)",
                               finding.scheme, finding.parameter));
}

}  // namespace nanguard::detail
