#include "nanguard/env/doctor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <ostream>
#include <set>
#include <sstream>

#include <dlfcn.h>

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

namespace nanguard::env {
namespace {

using json = nlohmann::json;

std::string env_var(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// "open" for key BLAS_INFO in at::show_config()'s "Build settings: BLAS_INFO=open, ..." line.
std::string build_setting(const std::string& config, const std::string& key) {
  const auto at = config.find(key + "=");
  if (at == std::string::npos) return "";
  const auto begin = at + key.size() + 1;
  const auto end = config.find_first_of(",\n", begin);
  return config.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// "0.3.21" from "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64".
std::string openblas_version(const std::string& config) {
  std::istringstream in(config);
  std::string word, version;
  in >> word >> version;
  return word == "OpenBLAS" ? version : "";
}

// Compares dotted versions numerically: "0.3.9" < "0.3.10".
bool version_less(const std::string& a, const std::string& b) {
  std::istringstream x(a), y(b);
  std::string p, q;
  while (true) {
    const bool hx = static_cast<bool>(std::getline(x, p, '.')), hy = static_cast<bool>(std::getline(y, q, '.'));
    if (!hx || !hy) return !hx && hy;
    const long u = std::strtol(p.c_str(), nullptr, 10), v = std::strtol(q.c_str(), nullptr, 10);
    if (u != v) return u < v;
  }
}

const char* kRefBlas = "reference_blas";
const char* kBlasSlow = "blas_slow";
const char* kBlasUnknown = "blas_unknown";
const char* kOpenblasAvx512 = "openblas_old_avx512";
const char* kSelfTest = "self_test_failed";
const char* kCudaNewer = "cuda_runtime_newer_than_driver";
const char* kCudaNoDevice = "torch_cuda_without_device";
const char* kGpuHot = "gpu_hot";
const char* kGpuThrottled = "gpu_throttled";
const char* kEccUncorrected = "ecc_uncorrected_errors";
const char* kEccCorrected = "ecc_corrected_errors";
const char* kFtz = "flush_denormal_on";
const char* kFtzWorkers = "flush_denormal_differs_across_threads";
const char* kOversubscribed = "threads_oversubscribed";
const char* kOmpMismatch = "omp_num_threads_ignored";
const char* kNondeterministic = "nondeterministic_algorithms";
const char* kTf32 = "tf32_matmuls";

// Thresholds, named so the docs and the rules say the same thing.
constexpr double kSlowFraction = 0.05;   // measured BLAS below 5% of the estimated peak
constexpr int kHotCelsius = 85;

}  // namespace

const char* to_string(Status s) {
  switch (s) {
    case Status::pass: return "pass";
    case Status::info: return "info";
    case Status::warn: return "warn";
    case Status::fail: return "fail";
  }
  return "?";
}

const std::vector<Rule>& rules() {
  static const std::vector<Rule> table{
      {kRefBlas, Status::warn, "LibTorch calls the Netlib reference BLAS: correct but about 6x slower training"},
      {kBlasSlow, Status::warn, "measured float32 matmul throughput is below 5% of the CPU's estimated peak"},
      {kBlasUnknown, Status::info, "the BLAS library in use could not be identified"},
      {kOpenblasAvx512, Status::warn,
       "OpenBLAS older than 0.3.10 on an AVX-512 CPU: early SkylakeX kernels had wrong-result bugs"},
      {kSelfTest, Status::fail, "the numerics self-test failed: an op gave a wrong answer on this machine"},
      {kCudaNewer, Status::fail, "the CUDA runtime is newer than the driver supports"},
      {kCudaNoDevice, Status::info, "LibTorch was built with CUDA but no device is usable"},
      {kGpuHot, Status::warn, "a GPU is at or above 85 C"},
      {kGpuThrottled, Status::warn, "a GPU is clock-throttled for thermal or power reasons"},
      {kEccUncorrected, Status::fail, "a GPU reports uncorrected ECC memory errors since boot"},
      {kEccCorrected, Status::warn, "a GPU reports corrected ECC memory errors since boot"},
      {kFtz, Status::warn,
       "flush-to-zero / denormals-are-zero is on: tiny values become 0 (a model that expects gradual "
       "underflow loses them)"},
      {kFtzWorkers, Status::warn,
       "FTZ/DAZ differs between the calling thread and LibTorch's intra-op threads: results depend on "
       "tensor size"},
      {kOversubscribed, Status::warn, "more intra-op threads than logical cores"},
      {kOmpMismatch, Status::info, "OMP_NUM_THREADS is set but LibTorch uses a different thread count"},
      {kNondeterministic, Status::info,
       "deterministic algorithms are off: on a GPU, replays of a step may differ in the last bits"},
      {kTf32, Status::info, "TF32 is allowed for CUDA matmuls: 10-bit mantissas on Ampere and newer"},
  };
  return table;
}

std::vector<Finding> evaluate_rules(const EnvFacts& f) {
  std::vector<Finding> out;
  auto add = [&](const char* id, const std::string& section, std::string value, std::string detail) {
    const auto& table = rules();
    const auto it = std::find_if(table.begin(), table.end(), [&](const Rule& r) { return r.id == id; });
    out.push_back({section, std::string("rule.") + id, it->status, std::move(value),
                   it->description + (detail.empty() ? "" : ". " + detail)});
  };
  const double peak = f.cpu.peak_gflops();
  if (f.blas.info.is_reference())
    add(kRefBlas, "blas", f.blas.info.path,
        "Install an optimised BLAS (e.g. `apt-get install libopenblas0-pthread`) or select it with "
        "`update-alternatives --config libblas.so.3-x86_64-linux-gnu`");
  else if (f.blas.info.name == "unknown")
    add(kBlasUnknown, "blas", f.blas.info.path, "");
  if (f.blas.measured_gflops > 0 && peak > 0 && f.blas.measured_gflops < kSlowFraction * peak)
    add(kBlasSlow, "blas", fmt::format("{:.1f} of ~{:.0f} GFLOP/s", f.blas.measured_gflops, peak),
        "Check which BLAS is loaded and the thread settings");
  if (f.blas.info.name == "openblas" && !f.blas.version.empty() && version_less(f.blas.version, "0.3.10") &&
      f.cpu.has("avx512f"))
    add(kOpenblasAvx512, "blas", "OpenBLAS " + f.blas.version, "Upgrade OpenBLAS");
  if (f.self_test_run && !f.self_test.passed())
    add(kSelfTest, "self_test", fmt::format("{} failing check(s)", f.self_test.failures()),
        f.self_test.first_failure());
  if (f.cuda_self_test_run && !f.cuda_self_test.passed())
    add(kSelfTest, "self_test", fmt::format("cuda:0: {} failing check(s)", f.cuda_self_test.failures()),
        f.cuda_self_test.first_failure());
  const CudaInfo& c = f.cuda;
  if (c.runtime_version > 0 && c.driver_version > 0 && c.runtime_version > c.driver_version)
    add(kCudaNewer, "cuda",
        fmt::format("runtime {} > driver {}", cuda_version_text(c.runtime_version), cuda_version_text(c.driver_version)),
        "Upgrade the NVIDIA driver or use a LibTorch built for an older CUDA");
  const bool cuda_build = f.torch.config.find("CUDA Runtime") != std::string::npos ||
                          f.torch.config.find("USE_CUDA=ON") != std::string::npos ||
                          f.torch.config.find("USE_CUDA=1") != std::string::npos;
  if (cuda_build && !c.torch_available) add(kCudaNoDevice, "cuda", "", c.note);
  for (const auto& d : c.devices) {
    const std::string who = fmt::format("cuda:{} {}", d.index, d.name);
    if (d.temperature_c >= kHotCelsius) add(kGpuHot, "cuda", fmt::format("{}: {} C", who, d.temperature_c), "");
    if (!d.throttle_names.empty()) {
      std::string names;
      for (const auto& n : d.throttle_names) names += (names.empty() ? "" : ", ") + n;
      add(kGpuThrottled, "cuda", who + ": " + names, "");
    }
    if (d.ecc_uncorrected > 0)
      add(kEccUncorrected, "cuda", fmt::format("{}: {}", who, d.ecc_uncorrected),
          "Drain the device: it corrupts data");
    if (d.ecc_corrected > 0) add(kEccCorrected, "cuda", fmt::format("{}: {}", who, d.ecc_corrected), "");
    if (d.cc_major >= 8 && f.torch.tf32_cublas) add(kTf32, "determinism", who, "");
  }
  if (f.fp.available && (f.fp.flush_to_zero || f.fp.denormals_are_zero))
    add(kFtz, "fp", fmt::format("FTZ {}, DAZ {}", f.fp.flush_to_zero ? "on" : "off",
                                f.fp.denormals_are_zero ? "on" : "off"),
        "at::globalContext().setFlushDenormal(true) or -ffast-math turn it on");
  for (const auto& w : f.worker_fp) {
    if (w.available && f.fp.available &&
        (w.flush_to_zero != f.fp.flush_to_zero || w.denormals_are_zero != f.fp.denormals_are_zero)) {
      add(kFtzWorkers, "fp", fmt::format("caller MXCSR {:#06x}, worker {:#06x}", f.fp.mxcsr, w.mxcsr),
          "setFlushDenormal affects only the thread that calls it");
      break;
    }
  }
  if (f.cpu.logical_cores > 0 && f.threads.intra_op > f.cpu.logical_cores)
    add(kOversubscribed, "threads", fmt::format("{} threads on {} cores", f.threads.intra_op, f.cpu.logical_cores),
        "Set OMP_NUM_THREADS or at::set_num_threads to the core count");
  if (!f.threads.omp_num_threads.empty()) {
    char* end = nullptr;
    const long n = std::strtol(f.threads.omp_num_threads.c_str(), &end, 10);
    if (end && *end == '\0' && n > 0 && n != f.threads.intra_op)
      add(kOmpMismatch, "threads", fmt::format("OMP_NUM_THREADS={}, LibTorch uses {}", n, f.threads.intra_op), "");
  }
  if (!f.torch.deterministic_algorithms && c.torch_available) add(kNondeterministic, "determinism", "", "");
  return out;
}

BlasFacts measure_blas(int64_t n) {
  BlasFacts b;
  at::NoGradGuard no_grad;
  const at::Tensor x = torch::rand({n, n}), y = torch::rand({n, n});
  at::Tensor z = x.mm(y);  // maps the BLAS library and warms it up
  b.info = detect_blas();
  b.matmul_size = n;
  std::error_code ec;
  const auto alt = std::filesystem::read_symlink("/etc/alternatives/libblas.so.3-x86_64-linux-gnu", ec);
  if (!ec) b.alternative = alt.string();
  using Config = char* (*)();
  if (auto cfg = reinterpret_cast<Config>(dlsym(RTLD_DEFAULT, "openblas_get_config")); cfg && cfg()) {
    b.config = cfg();
    // OpenBLAS's liblapack can be mapped while sgemm_ binds elsewhere: only then is it ours.
    if (b.info.name == "openblas") b.version = openblas_version(b.config);
  }
  const auto start = std::chrono::steady_clock::now();
  int reps = 0;
  double seconds = 0;
  while (reps < 2 || seconds < 0.1) {
    z = x.mm(y);
    ++reps;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (seconds > 2.0) break;  // reference BLAS on a big n: enough to judge
  }
  b.measured_gflops = 2.0 * n * n * n * reps / seconds / 1e9;
  return b;
}

Status DoctorReport::worst() const {
  Status w = Status::pass;
  for (const auto& f : findings) w = std::max(w, f.status);
  return w;
}

int DoctorReport::count(Status s) const {
  return static_cast<int>(std::count_if(findings.begin(), findings.end(), [&](const Finding& f) { return f.status == s; }));
}

namespace {

TorchFacts torch_facts() {
  TorchFacts t;
  t.version = TORCH_VERSION;
  t.config = at::show_config();
  auto& ctx = at::globalContext();
  t.deterministic_algorithms = ctx.deterministicAlgorithms();
  t.deterministic_warn_only = ctx.deterministicAlgorithmsWarnOnly();
  t.cudnn_enabled = ctx.userEnabledCuDNN();
  t.cudnn_deterministic = ctx.deterministicCuDNN();
  t.cudnn_benchmark = ctx.benchmarkCuDNN();
  t.tf32_cublas = ctx.allowTF32CuBLAS();
  t.tf32_cudnn = ctx.allowTF32CuDNN();
  return t;
}

ThreadFacts thread_facts() {
  ThreadFacts t;
  t.intra_op = at::get_num_threads();
  t.inter_op = at::get_num_interop_threads();
  t.omp_num_threads = env_var("OMP_NUM_THREADS");
  t.mkl_num_threads = env_var("MKL_NUM_THREADS");
  t.openblas_num_threads = env_var("OPENBLAS_NUM_THREADS");
  t.parallel_info = at::get_parallel_info();
  return t;
}

// MXCSR is per thread: read it inside LibTorch's intra-op pool too.
std::vector<FpState> worker_fp_states() {
  const int64_t n = std::max(1, at::get_num_threads());
  std::vector<FpState> states(static_cast<size_t>(n));
  std::mutex m;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    const FpState s = read_fp_state();
    std::lock_guard<std::mutex> lock(m);
    for (int64_t i = begin; i < end; ++i) states[static_cast<size_t>(i)] = s;
  });
  return states;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

std::string gib(int64_t bytes) { return fmt::format("{:.1f} GiB", bytes / 1073741824.0); }

}  // namespace

EnvFacts gather_facts(const DoctorOptions& options) {
  EnvFacts f;
  f.torch = torch_facts();
  f.cpu = detect_cpu();
  f.threads = thread_facts();
  f.fp = read_fp_state();
  f.worker_fp = worker_fp_states();
  f.blas = measure_blas(options.quick ? 256 : 512);
  f.cuda = detect_cuda();
  if (options.run_self_test) {
    f.self_test_run = true;
    f.self_test = run_self_test(SelfTestOptions().set_quick(options.quick));
    if (f.cuda.torch_available) {
      f.cuda_self_test_run = true;
      f.cuda_self_test = run_self_test(SelfTestOptions().set_quick(true).set_device("cuda:0"));
    }
  }
  return f;
}

DoctorReport make_report(EnvFacts facts) {
  DoctorReport r;
  const EnvFacts& f = facts;
  auto add = [&](std::string section, std::string name, Status s, std::string value, std::string detail = "") {
    r.findings.push_back({std::move(section), std::move(name), s, std::move(value), std::move(detail)});
  };
  add("torch", "torch.version", Status::pass, f.torch.version);
  std::string build;
  for (const char* key : {"BLAS_INFO", "USE_CUDA", "USE_CUDNN", "USE_OPENMP", "USE_MKLDNN", "CUDA_VERSION"}) {
    const std::string v = build_setting(f.torch.config, key);
    if (!v.empty()) build += (build.empty() ? "" : ", ") + std::string(key) + "=" + v;
  }
  const auto cap = f.torch.config.find("CPU capability usage: ");
  if (cap != std::string::npos) {
    const auto b = cap + std::string("CPU capability usage: ").size();
    build += (build.empty() ? "" : ", ") + std::string("CPU kernels=") + f.torch.config.substr(b, f.torch.config.find('\n', b) - b);
  }
  add("torch", "torch.build", Status::info, build.empty() ? "(no build settings reported)" : build);

  const double peak = f.cpu.peak_gflops();
  add("blas", "blas.library", f.blas.info.is_reference() ? Status::warn : Status::pass,
      f.blas.info.name + (f.blas.version.empty() ? "" : " " + f.blas.version) +
          (f.blas.info.path.empty() ? "" : " (" + f.blas.info.path + ")"));
  if (f.blas.measured_gflops > 0) {
    const bool slow = peak > 0 && f.blas.measured_gflops < kSlowFraction * peak;
    add("blas", "blas.gflops", slow ? Status::warn : Status::pass,
        peak > 0 ? fmt::format("{:.1f} GFLOP/s ({:.0f}% of ~{:.0f} GFLOP/s peak), sgemm {}^3", f.blas.measured_gflops,
                               100 * f.blas.measured_gflops / peak, peak, f.blas.matmul_size)
                 : fmt::format("{:.1f} GFLOP/s, sgemm {}^3 (peak unknown)", f.blas.measured_gflops, f.blas.matmul_size));
  }

  add("cpu", "cpu.model", Status::info,
      fmt::format("{} ({} logical cores{})", f.cpu.model.empty() ? "unknown" : f.cpu.model, f.cpu.logical_cores,
                  f.cpu.mhz > 0 ? fmt::format(", {:.0f} MHz", f.cpu.mhz) : ""));
  add("cpu", "cpu.isa", Status::info, join(f.cpu.isa) + fmt::format(" ({} float32 FLOPs/cycle/core)", f.cpu.flops_per_cycle()));

  add("threads", "threads.intra_op", Status::info, std::to_string(f.threads.intra_op));
  add("threads", "threads.inter_op", Status::info, std::to_string(f.threads.inter_op));
  add("threads", "threads.env", Status::info,
      fmt::format("OMP_NUM_THREADS={} MKL_NUM_THREADS={} OPENBLAS_NUM_THREADS={}",
                  f.threads.omp_num_threads.empty() ? "unset" : f.threads.omp_num_threads,
                  f.threads.mkl_num_threads.empty() ? "unset" : f.threads.mkl_num_threads,
                  f.threads.openblas_num_threads.empty() ? "unset" : f.threads.openblas_num_threads));

  if (f.fp.available) {
    const bool flushing = f.fp.flush_to_zero || f.fp.denormals_are_zero;
    add("fp", "fp.denormals", flushing ? Status::warn : Status::pass,
        fmt::format("MXCSR {:#06x}: FTZ {}, DAZ {}", f.fp.mxcsr, f.fp.flush_to_zero ? "on" : "off",
                    f.fp.denormals_are_zero ? "on" : "off"));
  } else {
    add("fp", "fp.denormals", Status::info, "no MXCSR on this architecture");
  }

  add("determinism", "determinism.algorithms", Status::info,
      f.torch.deterministic_algorithms ? (f.torch.deterministic_warn_only ? "on (warn only)" : "on") : "off");
  add("determinism", "determinism.cudnn", Status::info,
      fmt::format("enabled {}, deterministic {}, benchmark {}, TF32 cuBLAS {}, TF32 cuDNN {}", f.torch.cudnn_enabled,
                  f.torch.cudnn_deterministic, f.torch.cudnn_benchmark, f.torch.tf32_cublas, f.torch.tf32_cudnn));

  const CudaInfo& c = f.cuda;
  if (!c.present()) {
    add("cuda", "cuda.present", Status::info, "absent", c.note);
  } else {
    add("cuda", "cuda.present", Status::pass,
        fmt::format("torch sees {} device(s); runtime {}, driver supports {}, NVIDIA driver {}", c.torch_device_count,
                    c.runtime_version ? cuda_version_text(c.runtime_version) : "unknown",
                    c.driver_version ? cuda_version_text(c.driver_version) : "unknown",
                    c.nvml_driver_version.empty() ? "unknown" : c.nvml_driver_version),
        c.note);
    for (const auto& d : c.devices) {
      std::string health = d.has_nvml ? fmt::format("{} C, ECC corrected {}, uncorrected {}, throttle {:#x}",
                                                    d.temperature_c, d.ecc_corrected, d.ecc_uncorrected,
                                                    d.throttle_reasons)
                                      : "NVML unavailable";
      add("cuda", fmt::format("cuda.device{}", d.index), Status::info,
          fmt::format("{}, {}, compute capability {}.{}; {}", d.name, gib(d.total_memory), d.cc_major, d.cc_minor,
                      health));
    }
  }

  auto self_test_lines = [&](const SelfTestReport& st, const std::string& prefix) {
    int skipped = 0;
    for (const auto& ch : st.checks) skipped += ch.skipped ? 1 : 0;
    add("self_test", prefix + "result", st.passed() ? Status::pass : Status::fail,
        fmt::format("{} checks, {} failed, {} skipped, {:.0f} ms", st.checks.size(), st.failures(), skipped,
                    st.seconds * 1000));
    for (const auto& ch : st.checks) {
      if (ch.passed && !ch.skipped) continue;
      add("self_test", prefix + ch.op, ch.skipped ? Status::info : Status::fail,
          ch.case_name + (ch.size.empty() ? "" : ", " + ch.size),
          ch.skipped ? ch.message
                     : fmt::format("max abs error {:.3g}, max rel error {:.3g} (bound {:.3g}); {}", ch.max_abs_error,
                                   ch.max_rel_error, ch.bound, ch.message));
    }
  };
  if (f.self_test_run) self_test_lines(f.self_test, "self_test.");
  if (f.cuda_self_test_run) self_test_lines(f.cuda_self_test, "self_test.cuda.");

  for (auto& finding : evaluate_rules(f)) r.findings.push_back(std::move(finding));
  r.facts = std::move(facts);
  return r;
}

DoctorReport run_doctor(const DoctorOptions& options) { return make_report(gather_facts(options)); }

namespace {
const std::vector<std::string>& section_order() {
  static const std::vector<std::string> order{"torch", "blas", "cpu", "threads", "fp", "determinism", "cuda", "self_test"};
  return order;
}
}  // namespace

void print_report(const DoctorReport& report, std::ostream& out) {
  std::vector<std::string> sections = section_order();
  for (const auto& f : report.findings) {
    if (std::find(sections.begin(), sections.end(), f.section) == sections.end()) sections.push_back(f.section);
  }
  for (const auto& s : sections) {
    bool header = false;
    for (const auto& f : report.findings) {
      if (f.section != s) continue;
      if (!header) out << s << "\n", header = true;
      std::string tag = to_string(f.status);
      std::transform(tag.begin(), tag.end(), tag.begin(), ::toupper);
      out << "  [" << tag << "] " << fmt::format("{:<24}", f.name) << " " << f.value << "\n";
      if (!f.detail.empty()) out << "         " << f.detail << "\n";
    }
  }
  out << fmt::format("doctor: {} pass, {} info, {} warn, {} fail\n", report.count(Status::pass),
                     report.count(Status::info), report.count(Status::warn), report.count(Status::fail));
}

std::string report_json(const DoctorReport& report) {
  const EnvFacts& f = report.facts;
  json j;
  j["status"] = to_string(report.worst());
  j["counts"] = {{"pass", report.count(Status::pass)}, {"info", report.count(Status::info)},
                 {"warn", report.count(Status::warn)}, {"fail", report.count(Status::fail)}};
  json& s = j["sections"];
  s["torch"] = {{"version", f.torch.version}, {"config", f.torch.config}};
  s["blas"] = {{"name", f.blas.info.name}, {"path", f.blas.info.path}, {"alternative", f.blas.alternative},
               {"version", f.blas.version}, {"config", f.blas.config}, {"measured_gflops", f.blas.measured_gflops},
               {"matmul_size", f.blas.matmul_size}, {"peak_gflops_estimate", f.cpu.peak_gflops()}};
  s["cpu"] = {{"model", f.cpu.model}, {"vendor", f.cpu.vendor}, {"logical_cores", f.cpu.logical_cores},
              {"mhz", f.cpu.mhz}, {"isa", f.cpu.isa}, {"flops_per_cycle", f.cpu.flops_per_cycle()}};
  s["threads"] = {{"intra_op", f.threads.intra_op}, {"inter_op", f.threads.inter_op},
                  {"OMP_NUM_THREADS", f.threads.omp_num_threads}, {"MKL_NUM_THREADS", f.threads.mkl_num_threads},
                  {"OPENBLAS_NUM_THREADS", f.threads.openblas_num_threads}, {"parallel_info", f.threads.parallel_info}};
  json workers = json::array();
  for (const auto& w : f.worker_fp) workers.push_back(w.mxcsr);
  s["fp"] = {{"available", f.fp.available}, {"mxcsr", f.fp.mxcsr}, {"flush_to_zero", f.fp.flush_to_zero},
             {"denormals_are_zero", f.fp.denormals_are_zero}, {"worker_mxcsr", workers}};
  s["determinism"] = {{"deterministic_algorithms", f.torch.deterministic_algorithms},
                      {"warn_only", f.torch.deterministic_warn_only}, {"cudnn_enabled", f.torch.cudnn_enabled},
                      {"cudnn_deterministic", f.torch.cudnn_deterministic}, {"cudnn_benchmark", f.torch.cudnn_benchmark},
                      {"tf32_cublas", f.torch.tf32_cublas}, {"tf32_cudnn", f.torch.tf32_cudnn}};
  const CudaInfo& c = f.cuda;
  json devices = json::array();
  for (const auto& d : c.devices) {
    devices.push_back({{"index", d.index}, {"name", d.name}, {"total_memory", d.total_memory},
                       {"compute_capability", fmt::format("{}.{}", d.cc_major, d.cc_minor)}, {"nvml", d.has_nvml},
                       {"temperature_c", d.temperature_c}, {"throttle_reasons", d.throttle_reasons},
                       {"throttle", d.throttle_names}, {"ecc_corrected", d.ecc_corrected},
                       {"ecc_uncorrected", d.ecc_uncorrected}});
  }
  s["cuda"] = {{"present", c.present()}, {"torch_available", c.torch_available},
               {"torch_device_count", c.torch_device_count}, {"runtime_loaded", c.runtime_loaded},
               {"runtime_version", cuda_version_text(c.runtime_version)}, {"driver_loaded", c.driver_loaded},
               {"driver_version", cuda_version_text(c.driver_version)}, {"nvml_loaded", c.nvml_loaded},
               {"nvidia_driver", c.nvml_driver_version}, {"devices", devices}, {"note", c.note}};
  auto checks_json = [](const SelfTestReport& st) {
    json checks = json::array();
    for (const auto& ch : st.checks) {
      checks.push_back({{"op", ch.op}, {"case", ch.case_name}, {"size", ch.size}, {"passed", ch.passed},
                        {"skipped", ch.skipped}, {"max_abs_error", ch.max_abs_error},
                        {"max_rel_error", ch.max_rel_error}, {"bound", ch.bound}, {"message", ch.message}});
    }
    return checks;
  };
  s["self_test"] = {{"run", f.self_test_run}, {"passed", f.self_test.passed()}, {"failures", f.self_test.failures()},
                    {"seconds", f.self_test.seconds}, {"checks", checks_json(f.self_test)}};
  if (f.cuda_self_test_run) {
    s["self_test"]["cuda"] = {{"device", "cuda:0"}, {"passed", f.cuda_self_test.passed()},
                              {"failures", f.cuda_self_test.failures()}, {"seconds", f.cuda_self_test.seconds},
                              {"checks", checks_json(f.cuda_self_test)}};
  }
  json findings = json::array();
  for (const auto& x : report.findings) {
    findings.push_back({{"section", x.section}, {"name", x.name}, {"status", to_string(x.status)},
                        {"value", x.value}, {"detail", x.detail}});
  }
  j["findings"] = findings;
  // Non-finite errors (a failed check) are not JSON numbers: dump them as null, never crash.
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

int exit_code_for(Status worst, int warn_code, int fail_code) {
  if (worst == Status::fail) return fail_code;
  if (worst == Status::warn) return warn_code;
  return 0;
}

EnvSummary environment_summary(bool self_test) {
  EnvSummary s;
  s.torch_version = TORCH_VERSION;
  {
    at::NoGradGuard no_grad;
    const at::Tensor a = torch::ones({8, 8});
    (void)a.mm(a);  // maps the BLAS library
  }
  const BlasInfo blas = detect_blas();
  s.blas = blas.name;
  s.blas_path = blas.path;
  s.intra_op_threads = at::get_num_threads();
  s.inter_op_threads = at::get_num_interop_threads();
  const CpuInfo cpu = detect_cpu();
  s.cpu_model = cpu.model;
  s.isa = cpu.isa;
  const FpState fp = read_fp_state();
  s.flush_to_zero = fp.flush_to_zero;
  s.denormals_are_zero = fp.denormals_are_zero;
  s.deterministic_algorithms = at::globalContext().deterministicAlgorithms();
  const CudaInfo cuda = detect_cuda();
  s.cuda_devices = cuda.torch_device_count;
  for (const auto& d : cuda.devices) s.cuda_device_names.push_back(d.name);
  if (self_test) {
    const SelfTestReport& r = cached_quick_self_test();
    s.self_test_run = true;
    s.self_test_passed = r.passed();
    s.self_test_failure = r.first_failure();
    s.self_test_seconds = r.seconds;
  }
  return s;
}

std::string summary_json(const EnvSummary& s) {
  json j{{"torch_version", s.torch_version},
         {"blas", s.blas},
         {"blas_path", s.blas_path},
         {"intra_op_threads", s.intra_op_threads},
         {"inter_op_threads", s.inter_op_threads},
         {"cpu_model", s.cpu_model},
         {"isa", s.isa},
         {"flush_to_zero", s.flush_to_zero},
         {"denormals_are_zero", s.denormals_are_zero},
         {"deterministic_algorithms", s.deterministic_algorithms},
         {"cuda_devices", s.cuda_devices},
         {"cuda_device_names", s.cuda_device_names}};
  if (s.self_test_run) {
    j["self_test"] = {{"quick", true}, {"passed", s.self_test_passed}, {"failure", s.self_test_failure},
                      {"seconds", s.self_test_seconds}};
  } else {
    j["self_test"] = nullptr;
  }
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

const SelfTestReport& cached_quick_self_test() {
  static const SelfTestReport report = run_self_test(SelfTestOptions().set_quick(true));
  return report;
}

}  // namespace nanguard::env
