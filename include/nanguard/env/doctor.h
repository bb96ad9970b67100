// The environment doctor: gathers facts (LibTorch build, BLAS and its speed, CPU, threads,
// floating-point state, determinism, CUDA, the numerics self-test), judges them with a table
// of rules, and renders pass/warn/fail lines for people or JSON for machines.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "nanguard/env/blas.h"
#include "nanguard/env/cpu.h"
#include "nanguard/env/cuda.h"
#include "nanguard/env/self_test.h"

namespace nanguard::env {

// What the BLAS rules look at; filled by measure_blas() or by a test.
struct BlasFacts {
  BlasInfo info;                 // detect_blas()
  std::string alternative;       // target of the libblas.so.3 alternative (Debian), "" when none
  std::string version;           // "0.3.21" (from openblas_get_config), "" when unknown
  std::string config;            // openblas_get_config() or "", for the report
  double measured_gflops = 0;    // float32 matmul throughput measured here; 0 when not measured
  int64_t matmul_size = 0;       // the n of the n x n x n product timed
};
// Detects the library and times a float32 matmul of size n (1 thread-count as configured).
BlasFacts measure_blas(int64_t n = 512);

struct ThreadFacts {
  int intra_op = 0;      // at::get_num_threads()
  int inter_op = 0;      // at::get_num_interop_threads()
  std::string omp_num_threads, mkl_num_threads, openblas_num_threads;  // env, "" when unset
  std::string parallel_info;  // at::get_parallel_info()
};

struct TorchFacts {
  std::string version;      // "1.13.0"
  std::string config;       // at::show_config()
  bool deterministic_algorithms = false;
  bool deterministic_warn_only = false;
  bool cudnn_enabled = true, cudnn_deterministic = false, cudnn_benchmark = false;
  bool tf32_cublas = false, tf32_cudnn = false;
};

// Everything the rules read; every part can be built by hand in a test.
struct EnvFacts {
  TorchFacts torch;
  BlasFacts blas;
  CpuInfo cpu;
  ThreadFacts threads;
  FpState fp;                     // the calling thread
  std::vector<FpState> worker_fp;  // as seen inside LibTorch's intra-op threads
  CudaInfo cuda;
  bool self_test_run = false;
  SelfTestReport self_test;        // on the CPU
  bool cuda_self_test_run = false;
  SelfTestReport cuda_self_test;   // the quick self-test on cuda:0, when a device is usable
};

enum class Status { pass, info, warn, fail };
const char* to_string(Status s);

// One line of the report.
struct Finding {
  std::string section;  // "torch", "blas", "cpu", "threads", "fp", "determinism", "cuda", "self_test", "rules"
  std::string name;     // "blas.library"
  Status status = Status::pass;
  std::string value;    // "openblas 0.3.21, 38.2 GFLOP/s"
  std::string detail;   // why it is a warning or failure and what to do; "" for a plain pass
};

// A known-bad combination: one row of the rules table.
struct Rule {
  std::string id;           // "reference_blas"
  Status status;            // the status when it applies
  std::string description;  // one line, for docs and --json
};
// The table (ids, severities, descriptions) that evaluate_rules applies.
const std::vector<Rule>& rules();
// The findings of every rule that applies to `facts` (pure: no probing).
std::vector<Finding> evaluate_rules(const EnvFacts& facts);

struct DoctorOptions {
  bool quick = false;          // smaller BLAS timing and the quick self-test
  bool run_self_test = true;
  DoctorOptions& set_quick(bool v) { quick = v; return *this; }
  DoctorOptions& set_run_self_test(bool v) { run_self_test = v; return *this; }
};

struct DoctorReport {
  EnvFacts facts;
  std::vector<Finding> findings;  // facts first (per section), then the rules that applied
  Status worst() const;           // the most severe status (pass when empty)
  int count(Status s) const;
};

EnvFacts gather_facts(const DoctorOptions& options = {});
// Turns facts into per-section findings plus the rules' findings.
DoctorReport make_report(EnvFacts facts);
DoctorReport run_doctor(const DoctorOptions& options = {});

// Human-readable: one "[PASS] name  value" line each, grouped by section, details indented.
void print_report(const DoctorReport& report, std::ostream& out);
// Machine-readable: {"status", "counts", "sections": {torch, blas, cpu, threads, fp,
// determinism, cuda, self_test}, "findings": [...]}.
std::string report_json(const DoctorReport& report);

// Exit status of `nanguard doctor`: 0 when nothing is worse than info, `warn_code` when the
// worst is a warning, `fail_code` when something failed.
int exit_code_for(Status worst, int warn_code, int fail_code);

// The short environment record every fit writes into its run folder (env.json).
struct EnvSummary {
  std::string torch_version;
  std::string blas;            // "openblas"
  std::string blas_path;
  int intra_op_threads = 0, inter_op_threads = 0;
  std::string cpu_model;
  std::vector<std::string> isa;
  bool flush_to_zero = false, denormals_are_zero = false;
  bool deterministic_algorithms = false;
  int cuda_devices = 0;
  std::vector<std::string> cuda_device_names;
  bool self_test_run = false;
  bool self_test_passed = true;
  std::string self_test_failure;  // the first failure, "" when passed
  double self_test_seconds = 0;
};
// Cheap facts plus the quick self-test (when `self_test`); no BLAS timing.
EnvSummary environment_summary(bool self_test = true);
std::string summary_json(const EnvSummary& summary);

// The quick self-test on the CPU, run once per process and cached (for the guard, which asks
// after an incident that did not reproduce).
const SelfTestReport& cached_quick_self_test();

}  // namespace nanguard::env
