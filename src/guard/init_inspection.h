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
//                    (N(0, 1) is their standard);
//   saturating_bias: a bias with an RMS above 4, where sigmoid' < 0.018 and tanh' < 0.0013 from
//                    the bias alone (forget-gate tricks stay below: 1, or up to log(T) for chrono
//                    initialisation). A recurrent layer's bias is replaced by the layer's default
//                    U(+-1/sqrt(H)), any other by zeros.
// These describe the parameters as they are; whether they explain an incident is the
// diagnosis's call (an exploding recurrent gradient, a layer that starts with no gradient).
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanguard/diagnose/evidence.h"

namespace nanguard::detail {

inline constexpr double kRecurrentGainLimit = 1.25;
inline constexpr double kWeightScaleLimit = 3.0;  // times He's std
inline constexpr double kSaturatingBiasLimit = 4.0;

// The out-of-scale parameters among `params` whose name starts with `prefix` ("" for all).
// recurrent_only: only recurrent matrices are inspected (an SVD each; the rest is skipped).
std::vector<InitFinding> inspect_initialisation(const std::vector<std::string>& names,
                                                const std::vector<at::Tensor>& params,
                                                const std::string& prefix = "", bool recurrent_only = false);

// Re-initialises one parameter in place with finding.scheme ("orthogonal": per gate block at
// gain 1; "glorot_uniform"; "uniform" in +-finding.bound; "zeros") from the default generator; returns what it did, e.g.
// "rnn.weight_hh: orthogonal, gain 1 (largest singular value 1.5 -> 1)". Throws ValueError for an
// unknown scheme.
std::string reinitialize(const at::Tensor& param, const InitFinding& finding);

}  // namespace nanguard::detail
