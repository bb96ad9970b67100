// The processor: model, instruction sets, an estimate of its peak float32 throughput, and the
// floating-point control state (flush-to-zero / denormals-are-zero) that changes results.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nanguard::env {

struct CpuInfo {
  std::string model;            // "AMD EPYC 7R13", "" when unknown
  std::string vendor;           // vendor id ("GenuineIntel", "AuthenticAMD"), "" when unknown
  int logical_cores = 0;        // processors this process may run on
  double mhz = 0;               // nominal frequency; 0 when unknown
  std::vector<std::string> isa; // the relevant instruction sets present: sse4_2, avx, avx2, fma, avx512f, ...
  bool has(const std::string& flag) const;
  // float32 FLOPs per cycle per core from the widest vector unit (2 FMA units assumed).
  int flops_per_cycle() const;
  // logical cores x frequency x FLOPs/cycle, in GFLOP/s; 0 when the frequency is unknown.
  double peak_gflops() const;
};

// Parses the text of /proc/cpuinfo (exposed for tests); `logical_cores` is the number of
// "processor" entries.
CpuInfo parse_cpuinfo(const std::string& text);
// Reads /proc/cpuinfo (cpuid on x86 when that is missing); logical_cores from the affinity mask.
CpuInfo detect_cpu();

// The SSE control/status register (x86 only) and its two denormal switches.
struct FpState {
  bool available = false;  // false where there is no MXCSR (not x86)
  uint32_t mxcsr = 0;
  bool flush_to_zero = false;       // FTZ, bit 15: denormal results become 0
  bool denormals_are_zero = false;  // DAZ, bit 6: denormal inputs read as 0
};
FpState read_fp_state();
// Sets FTZ and DAZ in this thread's MXCSR; returns the previous state. No-op off x86.
FpState set_flush_denormal(bool flush_to_zero, bool denormals_are_zero);
// Writes a raw MXCSR value (from a previous read_fp_state()); no-op off x86.
void write_mxcsr(uint32_t value);

}  // namespace nanguard::env
