#include "nanguard/env/cpu.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <xmmintrin.h>
#define NANGUARD_X86 1
#endif

namespace nanguard::env {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// The instruction sets that matter for numerics and speed, in the order they are reported.
const std::vector<std::string>& relevant_flags() {
  static const std::vector<std::string> flags{
      "sse2", "sse4_1", "sse4_2", "avx", "f16c", "fma", "avx2", "avx512f", "avx512dq",
      "avx512cd", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile",
      "asimd", "sve"};
  return flags;
}

int affinity_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::thread::hardware_concurrency());
}

#ifdef NANGUARD_X86
CpuInfo cpuid_info() {
  CpuInfo info;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return info;
  char vendor[13] = {};
  std::copy_n(reinterpret_cast<char*>(&b), 4, vendor);
  std::copy_n(reinterpret_cast<char*>(&d), 4, vendor + 4);
  std::copy_n(reinterpret_cast<char*>(&c), 4, vendor + 8);
  info.vendor = vendor;
  const unsigned max_leaf = a;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    if (d & (1u << 26)) info.isa.push_back("sse2");
    if (c & (1u << 19)) info.isa.push_back("sse4_1");
    if (c & (1u << 20)) info.isa.push_back("sse4_2");
    if (c & (1u << 28)) info.isa.push_back("avx");
    if (c & (1u << 29)) info.isa.push_back("f16c");
    if (c & (1u << 12)) info.isa.push_back("fma");
  }
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    if (b & (1u << 5)) info.isa.push_back("avx2");
    if (b & (1u << 16)) info.isa.push_back("avx512f");
    if (b & (1u << 17)) info.isa.push_back("avx512dq");
    if (b & (1u << 28)) info.isa.push_back("avx512cd");
    if (b & (1u << 30)) info.isa.push_back("avx512bw");
    if (b & (1u << 31)) info.isa.push_back("avx512vl");
    if (c & (1u << 11)) info.isa.push_back("avx512_vnni");
  }
  unsigned ext = __get_cpuid_max(0x80000000u, nullptr);
  if (ext >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
      unsigned regs[4] = {a, b, c, d};
      std::copy_n(reinterpret_cast<char*>(regs), 16, brand + 16 * i);
    }
    info.model = trim(brand);
  }
  return info;
}
#endif

}  // namespace

bool CpuInfo::has(const std::string& flag) const {
  return std::find(isa.begin(), isa.end(), flag) != isa.end();
}

int CpuInfo::flops_per_cycle() const {
  // Two FMA pipes x lanes x 2 FLOPs (multiply + add); without FMA, one add and one multiply.
  if (has("avx512f")) return 64;
  if (has("avx2") && has("fma")) return 32;
  if (has("avx")) return 16;
  if (has("asimd")) return 16;
  return 8;  // SSE2
}

double CpuInfo::peak_gflops() const {
  if (mhz <= 0 || logical_cores <= 0) return 0;
  return logical_cores * mhz / 1000.0 * flops_per_cycle();
}

CpuInfo parse_cpuinfo(const std::string& text) {
  CpuInfo info;
  std::set<std::string> flags;
  std::istringstream in(text);
  std::string line;
  bool flags_seen = false;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon));
    const std::string value = trim(line.substr(colon + 1));
    if (key == "processor") ++info.logical_cores;
    else if (key == "model name" && info.model.empty()) info.model = value;
    else if (key == "vendor_id" && info.vendor.empty()) info.vendor = value;
    else if (key == "cpu MHz" && info.mhz == 0) {
      try { info.mhz = std::stod(value); } catch (const std::exception&) { info.mhz = 0; }
    } else if ((key == "flags" || key == "Features") && !flags_seen) {
      flags_seen = true;  // every core lists the same flags
      std::istringstream f(value);
      std::string flag;
      while (f >> flag) flags.insert(flag);
    }
  }
  for (const auto& f : relevant_flags()) {
    if (flags.count(f)) info.isa.push_back(f);
  }
  return info;
}

CpuInfo detect_cpu() {
  CpuInfo info;
  std::ifstream in("/proc/cpuinfo");
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    info = parse_cpuinfo(ss.str());
  }
#ifdef NANGUARD_X86
  if (info.isa.empty() || info.model.empty()) {
    CpuInfo id = cpuid_info();
    if (info.isa.empty()) info.isa = id.isa;
    if (info.model.empty()) info.model = id.model;
    if (info.vendor.empty()) info.vendor = id.vendor;
  }
#endif
  info.logical_cores = affinity_cores();
  return info;
}

FpState read_fp_state() {
  FpState s;
#ifdef NANGUARD_X86
  s.available = true;
  s.mxcsr = _mm_getcsr();
  s.flush_to_zero = (s.mxcsr & (1u << 15)) != 0;
  s.denormals_are_zero = (s.mxcsr & (1u << 6)) != 0;
#endif
  return s;
}

void write_mxcsr(uint32_t value) {
#ifdef NANGUARD_X86
  _mm_setcsr(value);
#else
  (void)value;
#endif
}

FpState set_flush_denormal(bool flush_to_zero, bool denormals_are_zero) {
  FpState before = read_fp_state();
  if (!before.available) return before;
  uint32_t v = before.mxcsr & ~((1u << 15) | (1u << 6));
  if (flush_to_zero) v |= 1u << 15;
  if (denormals_are_zero) v |= 1u << 6;
  write_mxcsr(v);
  return before;
}

}  // namespace nanguard::env
