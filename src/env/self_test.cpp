#include "nanguard/env/self_test.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/env/cpu.h"

namespace nanguard::env {

at::Tensor NumericOps::matmul(const at::Tensor& a, const at::Tensor& b) const { return at::matmul(a, b); }
at::Tensor NumericOps::softmax(const at::Tensor& x, int64_t dim) const { return at::softmax(x, dim); }
at::Tensor NumericOps::log_softmax(const at::Tensor& x, int64_t dim) const { return at::log_softmax(x, dim); }
at::Tensor NumericOps::exp(const at::Tensor& x) const { return at::exp(x); }
at::Tensor NumericOps::log(const at::Tensor& x) const { return at::log(x); }
at::Tensor NumericOps::sqrt(const at::Tensor& x) const { return at::sqrt(x); }
at::Tensor NumericOps::sum(const at::Tensor& x) const { return at::sum(x); }
at::Tensor NumericOps::mean(const at::Tensor& x) const { return at::mean(x); }
at::Tensor NumericOps::conv2d(const at::Tensor& x, const at::Tensor& w) const { return at::conv2d(x, w); }

bool SelfTestReport::passed() const { return failures() == 0; }

int SelfTestReport::failures() const {
  int n = 0;
  for (const auto& c : checks) n += (!c.passed && !c.skipped) ? 1 : 0;
  return n;
}

std::string SelfTestReport::first_failure() const {
  for (const auto& c : checks) {
    if (c.passed || c.skipped) continue;
    return fmt::format("{} ({}, {}): max abs error {:.3g}, max rel error {:.3g} (bound {:.3g}){}{}", c.op,
                       c.case_name, c.size, c.max_abs_error, c.max_rel_error, c.bound,
                       c.message.empty() ? "" : ": ", c.message);
  }
  return "";
}

namespace {

constexpr float kEps32 = std::numeric_limits<float>::epsilon();
constexpr double kDenormUlp = 1.401298464324817e-45;  // smallest float32 denormal

std::string shape_text(const at::Tensor& t) {
  std::string s;
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "x" : "") + std::to_string(t.size(i));
  return s.empty() ? "scalar" : s;
}

SelfTestCheck make_check(std::string op, std::string case_name, std::string size) {
  SelfTestCheck c;
  c.op = std::move(op);
  c.case_name = std::move(case_name);
  c.size = std::move(size);
  return c;
}

class Runner {
 public:
  Runner(const NumericOps& ops, const SelfTestOptions& o) : ops_(ops), device_(o.device) {
    const FpState fp = read_fp_state();
    flushing_ = fp.flush_to_zero || fp.denormals_are_zero;
  }

  at::Tensor dev(const at::Tensor& t) const { return t.to(device_); }
  const NumericOps& ops() const { return ops_; }
  bool flushing() const { return flushing_; }

  // Compares `actual` (any float dtype/device) with a float64 reference. Non-finite reference
  // values must be matched exactly (inf sign, NaN position); finite ones within `rel_bound` of
  // `scale` (|reference| by default) or within `abs_bound`.
  void compare(const std::string& op, const std::string& case_name, const std::string& size,
               const at::Tensor& actual, const at::Tensor& reference, double rel_bound,
               double abs_bound = 2 * kDenormUlp, const at::Tensor& scale = {}) {
    SelfTestCheck c = make_check(op, case_name, size);
    c.bound = rel_bound;
    try {
      at::Tensor a = actual.detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1});
      at::Tensor r = reference.to(at::kDouble).contiguous().reshape({-1});
      if (a.numel() != r.numel()) {
        c.passed = false;
        c.message = fmt::format("expected {} values, got {}", r.numel(), a.numel());
        checks_.push_back(c);
        return;
      }
      at::Tensor s = scale.defined() ? scale.to(at::kDouble).contiguous().reshape({-1}) : r.abs();
      auto ap = a.accessor<double, 1>();
      auto rp = r.accessor<double, 1>();
      auto sp = s.accessor<double, 1>();
      int64_t bad = -1;
      for (int64_t i = 0; i < a.numel(); ++i) {
        const double x = ap[i], y = rp[i];
        if (!std::isfinite(y)) {
          const bool same = std::isnan(y) ? std::isnan(x) : x == y;
          if (!same) {
            c.max_abs_error = std::numeric_limits<double>::infinity();
            c.max_rel_error = std::numeric_limits<double>::infinity();
            if (bad < 0) bad = i;
          }
          continue;
        }
        const double err = std::isfinite(x) ? std::abs(x - y) : std::numeric_limits<double>::infinity();
        const double rel = err / std::max(sp[i], std::numeric_limits<double>::min());
        c.max_abs_error = std::max(c.max_abs_error, err);
        if (err > abs_bound) c.max_rel_error = std::max(c.max_rel_error, rel);
        if (err > abs_bound && !(rel <= rel_bound) && bad < 0) bad = i;
      }
      if (bad >= 0) {
        c.passed = false;
        c.message = fmt::format("element {}: expected {:.9g}, got {:.9g}", bad, rp[bad], ap[bad]);
      }
    } catch (const std::exception& e) {
      c.passed = false;
      c.message = std::string("the op threw: ") + e.what();
    }
    checks_.push_back(std::move(c));
  }

  void skip(const std::string& op, const std::string& case_name, const std::string& why) {
    SelfTestCheck c = make_check(op, case_name, "");
    c.skipped = true;
    c.message = why;
    checks_.push_back(std::move(c));
  }

  void error(const std::string& op, const std::string& case_name, const std::string& what) {
    SelfTestCheck c = make_check(op, case_name, "");
    c.passed = false;
    c.message = "the op threw: " + what;
    checks_.push_back(std::move(c));
  }

  void bits_equal(const std::string& op, const std::string& size, const at::Tensor& a, const at::Tensor& b) {
    SelfTestCheck c = make_check(op, "repeat (same inputs twice, same bits)", size);
    at::Tensor x = a.to(at::kCPU).contiguous(), y = b.to(at::kCPU).contiguous();
    const bool same = x.sizes() == y.sizes() && x.dtype() == y.dtype() &&
                      std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
    if (!same) {
      c.passed = false;
      const at::Tensor d = (x.to(at::kDouble) - y.to(at::kDouble)).abs();
      c.max_abs_error = d.numel() ? d.max().item<double>() : 0;
      c.message = "two runs of the same op on the same inputs differ";
    }
    checks_.push_back(std::move(c));
  }

  std::vector<SelfTestCheck> take() { return std::move(checks_); }

 private:
  const NumericOps& ops_;
  at::Device device_;
  bool flushing_ = false;
  std::vector<SelfTestCheck> checks_;
};

at::Tensor f32(std::vector<float> v) { return torch::tensor(v, torch::kFloat32); }
// The float64 reference of a float32 result: computed in double, then rounded to float32 so
// that overflow to inf (exp(89)) is part of the expected answer.
at::Tensor as_f32(const at::Tensor& d) { return d.to(at::kFloat).to(at::kDouble); }

// Matrix product in float64 without BLAS (broadcast multiply and sum, in row blocks), and the
// same for |A||B|, the scale of the classic error bound |C - fl(C)| <= k eps |A||B|.
std::pair<at::Tensor, at::Tensor> reference_matmul(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  std::vector<at::Tensor> rows, scale;
  const int64_t block = std::max<int64_t>(1, (1 << 21) / std::max<int64_t>(1, a.size(1) * b.size(1)));
  for (int64_t i = 0; i < a.size(0); i += block) {
    const at::Tensor ai = ad.slice(0, i, std::min(a.size(0), i + block)).unsqueeze(2);
    rows.push_back((ai * bd.unsqueeze(0)).sum(1));
    scale.push_back((ai.abs() * bd.abs().unsqueeze(0)).sum(1));
  }
  return {at::cat(rows), at::cat(scale)};
}

void check_matmul(Runner& r, int64_t m, int64_t k, int64_t n, const std::string& case_name) {
  const at::Tensor a = torch::randn({m, k}), b = torch::randn({k, n});
  const std::string size = fmt::format("{}x{} @ {}x{}", m, k, k, n);
  try {
    const at::Tensor c = r.ops().matmul(r.dev(a), r.dev(b));
    auto [ref, scale] = reference_matmul(a, b);
    r.compare("matmul", case_name, size, c, ref, std::max(1e-5, 4.0 * k * kEps32), 2 * kDenormUlp, scale);
  } catch (const std::exception& e) {
    r.error("matmul", case_name, e.what());
  }
}

void matmul_checks(Runner& r, bool quick) {
  check_matmul(r, 64, 64, 64, "random");
  check_matmul(r, 33, 17, 65, "odd shapes");
  if (!quick) {
    check_matmul(r, 512, 512, 512, "random large");
    check_matmul(r, 1000, 37, 129, "tall");
  }
  try {
    const at::Tensor eye = torch::eye(16), x = torch::randn({16, 16});
    r.compare("matmul", "identity (exact)", "16x16 @ 16x16", r.ops().matmul(r.dev(eye), r.dev(x)),
              x.to(at::kDouble), 0.0, 0.0);
    // Products near the top of the float32 range stay finite: 2 x (1e19)^2 = 2e38 < 3.4e38.
    const at::Tensor big = torch::full({4, 2}, 1e19f);
    r.compare("matmul", "large values (2e38, finite)", "4x2 @ 2x4",
              r.ops().matmul(r.dev(big), r.dev(big.t())), as_f32(torch::full({4, 4}, 2e38, torch::kDouble)),
              1e-6, 0.0);
    const at::Tensor zero = torch::zeros({8, 8});
    r.compare("matmul", "zeros (exact)", "8x8 @ 8x8", r.ops().matmul(r.dev(zero), r.dev(torch::randn({8, 8}))),
              torch::zeros({8, 8}, torch::kDouble), 0.0, 0.0);
  } catch (const std::exception& e) {
    r.error("matmul", "edge cases", e.what());
  }
}

at::Tensor ref_softmax(const at::Tensor& x) {
  const at::Tensor d = x.to(at::kDouble);
  const at::Tensor m = std::get<0>(d.max(-1, true));
  const at::Tensor e = (d - m).exp();
  return e / e.sum(-1, true);
}

at::Tensor ref_log_softmax(const at::Tensor& x) {
  const at::Tensor d = x.to(at::kDouble);
  const at::Tensor m = std::get<0>(d.max(-1, true));
  return d - m - (d - m).exp().sum(-1, true).log();
}

void softmax_checks(Runner& r) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<std::string, at::Tensor>> cases{
      {"random rows", torch::randn({32, 10}) * 10},
      {"[1000, 0]", f32({1000, 0})},
      {"[-1000, -1000]", f32({-1000, -1000})},
      {"above exp overflow [89, 90, 91]", f32({89, 90, 91})},
      {"with -inf [-inf, 0, 1]", f32({-inf, 0, 1})},
      {"zeros", torch::zeros({7})},
  };
  for (const auto& [name, x] : cases) {
    try {
      r.compare("softmax", name, shape_text(x), r.ops().softmax(r.dev(x), -1), as_f32(ref_softmax(x)), 1e-5,
                1e-7);
      // log_softmax must stay finite where softmax underflows: log_softmax([1000, 0]) = [0, -1000].
      r.compare("log_softmax", name, shape_text(x), r.ops().log_softmax(r.dev(x), -1),
                as_f32(ref_log_softmax(x)), 1e-5, 1e-5);
    } catch (const std::exception& e) {
      r.error("softmax", name, e.what());
    }
  }
}

void elementwise_checks(Runner& r) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float fmax = std::numeric_limits<float>::max();
  auto run = [&](const std::string& op, const std::string& name, const at::Tensor& x,
                 at::Tensor (NumericOps::*fn)(const at::Tensor&) const, at::Tensor (*ref)(const at::Tensor&),
                 double bound) {
    try {
      r.compare(op, name, shape_text(x), (r.ops().*fn)(r.dev(x)), as_f32(ref(x.to(at::kDouble))), bound);
    } catch (const std::exception& e) {
      r.error(op, name, e.what());
    }
  };
  auto dexp = [](const at::Tensor& d) { return d.exp(); };
  auto dlog = [](const at::Tensor& d) { return d.log(); };
  auto dsqrt = [](const at::Tensor& d) { return d.sqrt(); };
  // A few ulp: LibTorch's vectorised exp/log are not correctly rounded.
  const double ulps = 8 * kEps32;
  run("exp", "random [-20, 20]", torch::rand({4096}) * 40 - 20, &NumericOps::exp, +dexp, ulps);
  run("exp", "exact and special [0, -inf, inf, nan]", f32({0, -inf, inf, nan}), &NumericOps::exp, +dexp, 0.0);
  run("exp", "overflow: exp(89) = inf, exp(88) finite", f32({88, 88.7f, 89, 100}), &NumericOps::exp, +dexp, ulps);
  run("exp", "underflow to 0: exp(-104), exp(-1000)", f32({-104, -150, -1000}), &NumericOps::exp, +dexp, ulps);
  run("log", "random (0, 1e6]", torch::rand({4096}) * 1e6 + 1e-3, &NumericOps::log, +dlog, ulps);
  run("log", "log(0) = -inf, log(1) = 0, log(-1) = nan, log(inf) = inf", f32({0, 1, -1, inf}), &NumericOps::log,
      +dlog, 0.0);
  run("log", "large: log(FLT_MAX)", f32({fmax, 1e30f}), &NumericOps::log, +dlog, ulps);
  run("sqrt", "random [0, 1e6]", torch::rand({4096}) * 1e6, &NumericOps::sqrt, +dsqrt, 2 * kEps32);
  run("sqrt", "exact squares, 0, -1 = nan, inf", f32({0, 4, 1e6f, 0.25f, -1, inf}), &NumericOps::sqrt, +dsqrt, 0.0);
  run("sqrt", "large: sqrt(FLT_MAX)", f32({fmax}), &NumericOps::sqrt, +dsqrt, 2 * kEps32);
  if (r.flushing()) {
    const std::string why = "flush-to-zero or denormals-are-zero is on in this thread";
    r.skip("exp", "denormal result: exp(-100)", why);
    r.skip("log", "denormal input: log(1e-40)", why);
    r.skip("sqrt", "denormal input: sqrt(1e-40)", why);
    r.skip("matmul", "denormal products", why);
    return;
  }
  run("exp", "denormal result: exp(-100)", f32({-100, -95}), &NumericOps::exp, +dexp, ulps);
  run("log", "denormal input: log(1e-40)", f32({1e-40f, 1e-44f}), &NumericOps::log, +dlog, ulps);
  run("sqrt", "denormal input: sqrt(1e-40)", f32({1e-40f, 1e-44f}), &NumericOps::sqrt, +dsqrt, 2 * kEps32);
  try {
    const at::Tensor tiny = torch::full({4, 4}, 1e-20f);  // products 1e-40: denormal
    r.compare("matmul", "denormal products (1e-20 x 1e-20)", "4x4 @ 4x4", r.ops().matmul(r.dev(tiny), r.dev(tiny)),
              as_f32(torch::full({4, 4}, 4e-40, torch::kDouble)), 1e-3, 4 * kDenormUlp);
  } catch (const std::exception& e) {
    r.error("matmul", "denormal products", e.what());
  }
}

// Kahan-Babuska (Neumaier) sum in double over the float32 values: the reference for reductions.
double compensated_sum(const at::Tensor& x) {
  const at::Tensor c = x.contiguous();
  const float* p = c.data_ptr<float>();
  double s = 0, comp = 0;
  for (int64_t i = 0; i < c.numel(); ++i) {
    const double v = p[i], t = s + v;
    comp += std::abs(s) >= std::abs(v) ? (s - t) + v : (v - t) + s;
    s = t;
  }
  return s + comp;
}

void reduction_checks(Runner& r, bool quick) {
  const int64_t n = quick ? (1 << 18) : (1 << 24);
  const std::string size = std::to_string(n);
  try {
    // 0.1 is inexact in binary and a naive float32 running sum stalls near 2^24 / 0.1.
    const at::Tensor x = torch::rand({n}) * 0.2;
    const double ref = compensated_sum(x);
    // A pairwise/cascade sum keeps the error near log2(n) eps; naive summation would not.
    const double bound = 64 * kEps32;
    r.compare("sum", "uniform [0, 0.2), large n", size, r.ops().sum(r.dev(x)), torch::tensor({ref}, torch::kDouble),
              bound, 0.0);
    r.compare("mean", "uniform [0, 0.2), large n", size, r.ops().mean(r.dev(x)),
              torch::tensor({ref / static_cast<double>(n)}, torch::kDouble), bound, 0.0);
    const at::Tensor y = torch::randn({n});
    const double ref_y = compensated_sum(y);
    const double scale = compensated_sum(y.abs());  // cancellation: bound against sum |x|
    r.compare("sum", "standard normal (cancellation)", size, r.ops().sum(r.dev(y)),
              torch::tensor({ref_y}, torch::kDouble), bound, 0.0, torch::tensor({scale}, torch::kDouble));
    const float big = 1e38f;
    r.compare("sum", "overflow: 4 x 1e38 = inf", "4", r.ops().sum(r.dev(f32({big, big, big, big}))),
              as_f32(torch::tensor({4e38}, torch::kDouble)), 0.0, 0.0);
    r.compare("mean", "zeros (exact)", "1000", r.ops().mean(r.dev(torch::zeros({1000}))),
              torch::zeros({1}, torch::kDouble), 0.0, 0.0);
  } catch (const std::exception& e) {
    r.error("sum", "reductions", e.what());
  }
}

// Direct convolution in float64 (stride 1, no padding), and the same over |x| and |w|.
std::pair<at::Tensor, at::Tensor> reference_conv2d(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor xd = x.to(at::kDouble).contiguous(), wd = w.to(at::kDouble).contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), KH = w.size(2), KW = w.size(3), OH = H - KH + 1, OW = W - KW + 1;
  at::Tensor out = torch::zeros({N, O, OH, OW}, torch::kDouble), scale = torch::zeros({N, O, OH, OW}, torch::kDouble);
  auto xa = xd.accessor<double, 4>();
  auto wa = wd.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  auto sa = scale.accessor<double, 4>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < OH; ++i)
        for (int64_t j = 0; j < OW; ++j) {
          double s = 0, a = 0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t u = 0; u < KH; ++u)
              for (int64_t v = 0; v < KW; ++v) {
                const double p = xa[n][c][i + u][j + v] * wa[o][c][u][v];
                s += p;
                a += std::abs(p);
              }
          oa[n][o][i][j] = s;
          sa[n][o][i][j] = a;
        }
  return {out, scale};
}

void conv_checks(Runner& r, bool quick) {
  std::vector<std::pair<at::Tensor, at::Tensor>> cases{{torch::randn({1, 3, 8, 8}), torch::randn({4, 3, 3, 3})}};
  if (!quick) cases.emplace_back(torch::randn({2, 8, 32, 32}), torch::randn({16, 8, 5, 5}));
  for (const auto& [x, w] : cases) {
    const std::string size = shape_text(x) + " * " + shape_text(w);
    try {
      auto [ref, scale] = reference_conv2d(x, w);
      const int64_t k = w.size(1) * w.size(2) * w.size(3);
      r.compare("conv2d", "random", size, r.ops().conv2d(r.dev(x), r.dev(w)), ref,
                std::max(1e-5, 4.0 * k * kEps32), 2 * kDenormUlp, scale);
    } catch (const std::exception& e) {
      r.error("conv2d", "random", e.what());
    }
  }
}

void repeat_checks(Runner& r, bool quick) {
  const int64_t n = quick ? 128 : 512;
  try {
    const at::Tensor a = r.dev(torch::randn({n, n})), b = r.dev(torch::randn({n, n}));
    r.bits_equal("matmul", fmt::format("{0}x{0} @ {0}x{0}", n), r.ops().matmul(a, b), r.ops().matmul(a, b));
    const at::Tensor x = r.dev(torch::randn({1 << 16}));
    r.bits_equal("sum", std::to_string(1 << 16), r.ops().sum(x), r.ops().sum(x));
    const at::Tensor y = r.dev(torch::randn({64, 100}));
    r.bits_equal("softmax", "64x100", r.ops().softmax(y, -1), r.ops().softmax(y, -1));
  } catch (const std::exception& e) {
    r.error("repeat", "same inputs twice", e.what());
  }
}

}  // namespace

SelfTestReport run_self_test(const NumericOps& ops, const SelfTestOptions& options) {
  try {
    (void)at::Device(options.device);
  } catch (const c10::Error&) {
    throw ValueError("self-test device: expected \"cpu\" or \"cuda:N\", got \"" + options.device + "\"");
  }
  const auto start = std::chrono::steady_clock::now();
  SelfTestReport report;
  // Fixed inputs, without disturbing the caller's random stream.
  auto gen = at::detail::getDefaultCPUGenerator();
  at::Tensor saved;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    saved = gen.get_state();
  }
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(20240611);  // the CPU generator only: CUDA streams stay untouched
  }
  at::NoGradGuard no_grad;
  Runner r(ops, options);
  // TF32 (on by default for cuDNN convolutions) is a deliberate precision trade, not a fault:
  // check full float32 and restore the user's choice.
  auto& ctx = at::globalContext();
  const bool tf32_cublas = ctx.allowTF32CuBLAS(), tf32_cudnn = ctx.allowTF32CuDNN();
  const bool on_gpu = at::Device(options.device).is_cuda();
  if (on_gpu) ctx.setAllowTF32CuBLAS(false), ctx.setAllowTF32CuDNN(false);
  try {
    matmul_checks(r, options.quick);
    softmax_checks(r);
    elementwise_checks(r);
    reduction_checks(r, options.quick);
    conv_checks(r, options.quick);
    repeat_checks(r, options.quick);
  } catch (const std::exception& e) {
    r.error("self_test", "setup", e.what());
  }
  if (on_gpu) ctx.setAllowTF32CuBLAS(tf32_cublas), ctx.setAllowTF32CuDNN(tf32_cudnn);
  report.checks = r.take();
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(saved);
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

SelfTestReport run_self_test(const SelfTestOptions& options) { return run_self_test(NumericOps{}, options); }

}  // namespace nanguard::env
