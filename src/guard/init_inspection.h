// A bad initialisation, measured on the parameters themselves, and its repair.
//
// A parameter is out of scale when no standard initialisation gives it:
//   recurrent_gain:  a recurrent matrix ("weight_hh", Keras' "recurrent_kernel"; an LSTM's or
//                    GRU's per gate block) whose largest singular value is above 1.25. An
//                    orthogonal init gives exactly 1 and PyTorch's default U(+-1/sqrt(H)) gives
//                    1.03-1.14 (measured for H = 32, 96, 256); above 1 the backward product of the
//                    step Jacobians can grow with every time step (Pascanu et al. 2013);
//   weight_scale:    a weight whose RMS is over 3x He's sqrt(2 / fan_in). The standard inits
//                    lie within 0.4x-1x of He's scale (PyTorch's default is 1 / sqrt(3 fan_in),
//                    LeCun 1 / sqrt(fan_in), Glorot at most He's); embeddings are left out
//                    (N(0, 1) is their standard). Its replacement fits the activation whose
//                    outputs the weight reads, when the monitor saw it (an activation's factor
//                    sits in the fan-in sum of the weight after it, He et al. 2015): He normal
//                    after relu, orthogonal at gain 1 after tanh and at gain 4 = 1 / sigmoid'(0)
//                    after sigmoid, with the bias centring the pre-activations there (sigmoid
//                    outputs start at 0.5). Each layer's Jacobian then has singular values near 1
//                    (dynamical isometry, Pennington et al. 2017). A weight reading the model's
//                    inputs gets He normal before a relu, orthogonal at gain 1 before a sigmoid
//                    or tanh; Glorot uniform otherwise;
//   saturating_bias: a bias with an RMS above 4, where sigmoid' < 0.018 and tanh' < 0.0013 from
//                    the bias alone (forget-gate tricks stay below: 1, or up to log(T) for chrono
//                    initialisation). A recurrent layer's bias is replaced by the layer's default
//                    U(+-1/sqrt(H)), any other by zeros.
// These describe the parameters as they are; whether they explain an incident is the
// diagnosis's call (an exploding recurrent gradient, a layer that starts with no gradient).
#pragma once

#include <map>
#include <utility>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanguard/diagnose/evidence.h"

namespace nanguard::detail {

inline constexpr double kRecurrentGainLimit = 1.25;
inline constexpr double kWeightScaleLimit = 3.0;  // times He's std
inline constexpr double kSaturatingBiasLimit = 4.0;

inline constexpr double kSigmoidGain = 4.0;  // 1 / sigmoid'(0)

// The activation kind of each layer ("layers.1.dense" -> "sigmoid"), as the monitor's sampled
// steps saw them (monitor::ActivationStats); a layer's parameters are "<layer>.<name>".
using ActivationKinds = std::map<std::string, std::string>;

// Adds the kinds of one sampled step's activations (layer, kind), in the order they ran. An
// activation that runs in a scope of its own (a torch.nn.ReLU module of a Sequential: scope "2",
// no parameters of its own) belongs to the layer with a weight that precedes it: the i-th such
// activation to the i-th weighted layer, when there are as many of them as weighted layers or
// one fewer (an output layer without activation); otherwise they are left out. `owners`, when
// given, receives each such scope's layer ("1" -> "0").
void learn_activation_kinds(ActivationKinds& kinds, const std::vector<std::string>& names,
                            const std::vector<at::Tensor>& params,
                            const std::vector<std::pair<std::string, std::string>>& seen,
                            std::map<std::string, std::string>* owners = nullptr);

// The out-of-scale parameters among `params` whose name starts with `prefix` ("" for all).
// recurrent_only: only recurrent matrices are inspected (an SVD each; the rest is skipped).
std::vector<InitFinding> inspect_initialisation(const std::vector<std::string>& names,
                                                const std::vector<at::Tensor>& params,
                                                const std::string& prefix = "", bool recurrent_only = false,
                                                const ActivationKinds& activations = {});

// Re-initialises one parameter in place with finding.scheme ("orthogonal": a recurrent matrix
// per gate block at gain 1, any other whole at finding.gain; "glorot_uniform"; "he_normal";
// "uniform" in +-finding.bound; "lstm_forget_one": zeros, the forget gate's block 0.5 in each of
// an LSTM's two biases; "zeros") from the default generator; returns what it did, e.g.
// "rnn.weight_hh: orthogonal, gain 1 (largest singular value 1.5 -> 1)". A weight with a
// finding.input_mean sets `bias` (its layer's, when defined) to -input_mean * W 1. Throws
// ValueError for an unknown scheme.
std::string reinitialize(const at::Tensor& param, const InitFinding& finding, const at::Tensor& bias = {});

// The bias beside a weight ("layers.1.dense.weight" -> "layers.1.dense.bias"); "" when the name
// does not end in "weight".
std::string sibling_bias(const std::string& weight_name);

}  // namespace nanguard::detail
