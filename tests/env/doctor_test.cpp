#include "nanguard/env/doctor.h"

#include <algorithm>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace nanguard::env {
namespace {

using nlohmann::json;

const Finding* find_rule(const std::vector<Finding>& findings, const std::string& id) {
  for (const auto& f : findings) {
    if (f.name == "rule." + id) return &f;
  }
  return nullptr;
}

// A healthy machine, built by hand: 8 AVX2 cores at 3 GHz (peak 768 GFLOP/s) and OpenBLAS.
EnvFacts healthy() {
  EnvFacts f;
  f.torch.version = "1.13.0";
  f.torch.config = "Build settings: BLAS_INFO=open, USE_CUDA=OFF, USE_OPENMP=ON";
  f.blas.info = {"openblas", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"};
  f.blas.version = "0.3.21";
  f.blas.measured_gflops = 200;
  f.cpu.model = "Test CPU";
  f.cpu.logical_cores = 8;
  f.cpu.mhz = 3000;
  f.cpu.isa = {"sse2", "avx", "avx2", "fma"};
  f.threads.intra_op = 8;
  f.threads.inter_op = 8;
  f.fp.available = true;
  f.fp.mxcsr = 0x1f80;
  f.torch.deterministic_algorithms = true;
  return f;
}

TEST(Doctor, HealthyFactsTriggerNoRule) {
  const auto findings = evaluate_rules(healthy());
  EXPECT_TRUE(findings.empty()) << findings.front().name;
  const DoctorReport r = make_report(healthy());
  EXPECT_LE(r.worst(), Status::info);
  EXPECT_EQ(r.count(Status::fail), 0);
}

TEST(Doctor, ReferenceBlasIsDetectedFromItsPath) {
  EnvFacts f = healthy();
  const std::string path = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3";
  f.blas.info = {classify_blas_path(path), path};
  f.blas.version = "";
  f.blas.measured_gflops = 1.6;  // what the Netlib BLAS reaches
  const auto findings = evaluate_rules(f);
  const Finding* ref = find_rule(findings, "reference_blas");
  ASSERT_NE(ref, nullptr);
  EXPECT_EQ(ref->status, Status::warn);
  EXPECT_EQ(ref->value, path);
  EXPECT_NE(ref->detail.find("libopenblas0-pthread"), std::string::npos);
  const Finding* slow = find_rule(findings, "blas_slow");
  ASSERT_NE(slow, nullptr);
  EXPECT_NE(slow->value.find("1.6 of ~768"), std::string::npos) << slow->value;
  const DoctorReport r = make_report(f);
  EXPECT_EQ(r.worst(), Status::warn);
}

TEST(Doctor, SlowBlasIsFlaggedEvenWhenItsNameIsUnknown) {
  EnvFacts f = healthy();
  f.blas.info = {"unknown", ""};
  f.blas.measured_gflops = 10;  // 1.3% of 768
  const auto findings = evaluate_rules(f);
  EXPECT_NE(find_rule(findings, "blas_slow"), nullptr);
  EXPECT_NE(find_rule(findings, "blas_unknown"), nullptr);
  f.blas.measured_gflops = 100;
  EXPECT_EQ(find_rule(evaluate_rules(f), "blas_slow"), nullptr);
  f.cpu.mhz = 0;  // peak unknown: no judgement
  f.blas.measured_gflops = 1;
  EXPECT_EQ(find_rule(evaluate_rules(f), "blas_slow"), nullptr);
}

TEST(Doctor, OldOpenblasOnAvx512) {
  EnvFacts f = healthy();
  f.blas.version = "0.3.9";
  EXPECT_EQ(find_rule(evaluate_rules(f), "openblas_old_avx512"), nullptr);  // no AVX-512
  f.cpu.isa.push_back("avx512f");
  EXPECT_NE(find_rule(evaluate_rules(f), "openblas_old_avx512"), nullptr);
  f.blas.version = "0.3.10";
  EXPECT_EQ(find_rule(evaluate_rules(f), "openblas_old_avx512"), nullptr);  // numeric, not string, order
}

TEST(Doctor, CudaRuntimeNewerThanDriverFails) {
  EnvFacts f = healthy();
  f.cuda.runtime_version = 12040;
  f.cuda.driver_version = 12020;
  const auto findings = evaluate_rules(f);
  const Finding* r = find_rule(findings, "cuda_runtime_newer_than_driver");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, Status::fail);
  EXPECT_NE(r->value.find("12.4 > driver 12.2"), std::string::npos) << r->value;
  f.cuda.driver_version = 12040;
  EXPECT_EQ(find_rule(evaluate_rules(f), "cuda_runtime_newer_than_driver"), nullptr);
}

TEST(Doctor, GpuHealthRules) {
  EnvFacts f = healthy();
  CudaDevice d;
  d.name = "Test GPU";
  d.has_nvml = true;
  d.temperature_c = 91;
  d.throttle_names = {"hw_thermal"};
  d.ecc_corrected = 3;
  d.ecc_uncorrected = 1;
  d.cc_major = 9;
  f.cuda.devices = {d};
  f.cuda.torch_available = true;
  f.torch.deterministic_algorithms = false;
  f.torch.tf32_cublas = true;
  const auto findings = evaluate_rules(f);
  for (const char* id : {"gpu_hot", "gpu_throttled", "ecc_corrected_errors", "ecc_uncorrected_errors",
                         "nondeterministic_algorithms", "tf32_matmuls"})
    EXPECT_NE(find_rule(findings, id), nullptr) << id;
  EXPECT_EQ(find_rule(findings, "ecc_uncorrected_errors")->status, Status::fail);
  EXPECT_NE(find_rule(findings, "gpu_hot")->value.find("91 C"), std::string::npos);
  EXPECT_EQ(make_report(f).worst(), Status::fail);
}

TEST(Doctor, CudaBuildWithoutADeviceIsInfo) {
  EnvFacts f = healthy();
  f.torch.config = "Build settings: USE_CUDA=ON";
  const auto findings = evaluate_rules(f);
  const Finding* r = find_rule(findings, "torch_cuda_without_device");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, Status::info);
}

TEST(Doctor, FlushToZeroAndThreadRules) {
  EnvFacts f = healthy();
  f.fp.flush_to_zero = true;
  f.fp.mxcsr |= 1u << 15;
  FpState worker;
  worker.available = true;
  worker.mxcsr = 0x1f80;
  f.worker_fp = {worker};
  f.threads.intra_op = 16;
  f.threads.omp_num_threads = "4";
  const auto findings = evaluate_rules(f);
  for (const char* id : {"flush_denormal_on", "flush_denormal_differs_across_threads", "threads_oversubscribed",
                         "omp_num_threads_ignored"})
    EXPECT_NE(find_rule(findings, id), nullptr) << id;
  f.threads.omp_num_threads = "not a number";
  EXPECT_EQ(find_rule(evaluate_rules(f), "omp_num_threads_ignored"), nullptr);
}

TEST(Doctor, FailingSelfTestFailsAndNamesTheCheck) {
  EnvFacts f = healthy();
  f.self_test_run = true;
  SelfTestCheck c;
  c.op = "matmul";
  c.case_name = "random";
  c.size = "64x64 @ 64x64";
  c.passed = false;
  c.max_abs_error = 0.03;
  c.max_rel_error = 0.002;
  c.bound = 1.5e-5;
  f.self_test.checks = {c};
  const DoctorReport r = make_report(f);
  EXPECT_EQ(r.worst(), Status::fail);
  const Finding* rule = find_rule(r.findings, "self_test_failed");
  ASSERT_NE(rule, nullptr);
  EXPECT_NE(rule->detail.find("matmul (random, 64x64 @ 64x64)"), std::string::npos) << rule->detail;
  std::ostringstream text;
  print_report(r, text);
  EXPECT_NE(text.str().find("[FAIL] self_test.matmul"), std::string::npos) << text.str();
}

TEST(Doctor, FailingGpuSelfTestIsReportedSeparately) {
  EnvFacts f = healthy();
  f.self_test_run = true;  // the CPU one passed (no checks failed)
  f.cuda_self_test_run = true;
  SelfTestCheck c;
  c.op = "conv2d";
  c.case_name = "random";
  c.passed = false;
  f.cuda_self_test.checks = {c};
  const DoctorReport r = make_report(f);
  EXPECT_EQ(r.worst(), Status::fail);
  const Finding* rule = find_rule(r.findings, "self_test_failed");
  ASSERT_NE(rule, nullptr);
  EXPECT_NE(rule->value.find("cuda:0"), std::string::npos);
  bool line = false;
  for (const auto& x : r.findings) line |= x.name == "self_test.cuda.conv2d" && x.status == Status::fail;
  EXPECT_TRUE(line);
  const json j = json::parse(report_json(r));
  EXPECT_FALSE(j["sections"]["self_test"]["cuda"]["passed"].get<bool>());
  EXPECT_TRUE(j["sections"]["self_test"]["passed"].get<bool>());
}

TEST(Doctor, ReportsTheGpu_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const DoctorReport r = run_doctor(DoctorOptions().set_quick(true));
  const json j = json::parse(report_json(r));
  EXPECT_TRUE(j["sections"]["cuda"]["present"].get<bool>());
  EXPECT_FALSE(j["sections"]["cuda"]["devices"].empty());
  EXPECT_TRUE(j["sections"]["self_test"]["cuda"]["passed"].get<bool>()) << j["sections"]["self_test"]["cuda"].dump(1);
}

TEST(Doctor, RuleTableIsConsistent) {
  std::set<std::string> ids;
  for (const auto& r : rules()) {
    EXPECT_TRUE(ids.insert(r.id).second) << "duplicate rule " << r.id;
    EXPECT_FALSE(r.description.empty());
    EXPECT_NE(r.status, Status::pass);
  }
  EXPECT_GE(ids.size(), 12u);
}

TEST(Doctor, ExitCodes) {
  EXPECT_EQ(exit_code_for(Status::pass, 5, 6), 0);
  EXPECT_EQ(exit_code_for(Status::info, 5, 6), 0);
  EXPECT_EQ(exit_code_for(Status::warn, 5, 6), 5);
  EXPECT_EQ(exit_code_for(Status::fail, 5, 6), 6);
}

TEST(Doctor, JsonOfARealRunHasEverySection) {
  const DoctorReport r = run_doctor(DoctorOptions().set_quick(true));
  const json j = json::parse(report_json(r));
  for (const char* s : {"torch", "blas", "cpu", "threads", "fp", "determinism", "cuda", "self_test"})
    EXPECT_TRUE(j["sections"].contains(s)) << s;
  EXPECT_EQ(j["status"], to_string(r.worst()));
  EXPECT_EQ(j["sections"]["torch"]["version"].get<std::string>().substr(0, 1).find_first_of("12"), 0u);
  EXPECT_GT(j["sections"]["blas"]["measured_gflops"].get<double>(), 0);
  EXPECT_NE(j["sections"]["blas"]["name"], "");
  EXPECT_TRUE(j["sections"]["self_test"]["passed"].get<bool>()) << j["sections"]["self_test"].dump();
  EXPECT_EQ(j["sections"]["threads"]["intra_op"], at::get_num_threads());
  EXPECT_EQ(j["sections"]["fp"]["worker_mxcsr"].size(), static_cast<size_t>(at::get_num_threads()));
  EXPECT_FALSE(j["findings"].empty());
  if (!torch::cuda::is_available() && r.facts.cuda.devices.empty()) {
    EXPECT_FALSE(j["sections"]["cuda"]["present"].get<bool>());
    EXPECT_TRUE(j["sections"]["cuda"]["devices"].empty());
    bool absent = false;
    for (const auto& f : r.findings) absent |= f.name == "cuda.present" && f.value == "absent";
    EXPECT_TRUE(absent);
  }
  std::ostringstream text;
  print_report(r, text);
  for (const char* s : {"torch\n", "blas\n", "self_test\n", "[PASS] torch.version", "doctor: "})
    EXPECT_NE(text.str().find(s), std::string::npos) << s;
}

TEST(Doctor, JsonSurvivesInfiniteErrors) {
  EnvFacts f = healthy();
  f.self_test_run = true;
  SelfTestCheck c;
  c.op = "log";
  c.passed = false;
  c.max_abs_error = std::numeric_limits<double>::infinity();
  c.max_rel_error = std::numeric_limits<double>::quiet_NaN();
  f.self_test.checks = {c};
  const json j = json::parse(report_json(make_report(f)));
  EXPECT_TRUE(j["sections"]["self_test"]["checks"][0]["max_abs_error"].is_null());
  EXPECT_EQ(j["status"], "fail");
}

TEST(Doctor, RunFolderSummary) {
  const EnvSummary s = environment_summary(true);
  EXPECT_FALSE(s.torch_version.empty());
  EXPECT_NE(s.blas, "");
  EXPECT_GT(s.intra_op_threads, 0);
  EXPECT_TRUE(s.self_test_run);
  EXPECT_TRUE(s.self_test_passed) << s.self_test_failure;
  const json j = json::parse(summary_json(s));
  for (const char* k : {"torch_version", "blas", "intra_op_threads", "cpu_model", "flush_to_zero", "cuda_devices",
                        "self_test"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_TRUE(j["self_test"]["passed"].get<bool>());
  // The quick self-test runs once per process.
  EXPECT_EQ(&cached_quick_self_test(), &cached_quick_self_test());
  const json without = json::parse(summary_json(environment_summary(false)));
  EXPECT_TRUE(without["self_test"].is_null());
}

}  // namespace
}  // namespace nanguard::env
