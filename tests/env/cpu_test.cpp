#include "nanguard/env/cpu.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nanguard::env {
namespace {

const char* kCpuinfo =
    "processor\t: 0\n"
    "vendor_id\t: GenuineIntel\n"
    "model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\n"
    "cpu MHz\t\t: 3000.000\n"
    "flags\t\t: fpu sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512bw sse4a\n"
    "\n"
    "processor\t: 1\n"
    "vendor_id\t: GenuineIntel\n"
    "model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\n"
    "cpu MHz\t\t: 1000.000\n"
    "flags\t\t: fpu sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512bw sse4a\n";

TEST(Cpu, ParsesCpuinfoText) {
  CpuInfo cpu = parse_cpuinfo(kCpuinfo);
  EXPECT_EQ(cpu.logical_cores, 2);
  EXPECT_EQ(cpu.vendor, "GenuineIntel");
  EXPECT_EQ(cpu.model, "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz");
  EXPECT_DOUBLE_EQ(cpu.mhz, 3000.0);  // the first core's
  EXPECT_TRUE(cpu.has("avx2"));
  EXPECT_TRUE(cpu.has("fma"));
  EXPECT_TRUE(cpu.has("avx512f"));
  EXPECT_TRUE(cpu.has("sse4_2"));
  EXPECT_FALSE(cpu.has("sse4a"));  // not one of the reported sets
  EXPECT_FALSE(cpu.has("avx512_vnni"));
  EXPECT_EQ(cpu.flops_per_cycle(), 64);
  EXPECT_DOUBLE_EQ(cpu.peak_gflops(), 2 * 3.0 * 64);
}

TEST(Cpu, FlopsPerCycleFollowsTheWidestUnit) {
  CpuInfo cpu;
  EXPECT_EQ(cpu.flops_per_cycle(), 8);
  cpu.isa = {"sse2", "avx"};
  EXPECT_EQ(cpu.flops_per_cycle(), 16);
  cpu.isa = {"sse2", "avx", "avx2"};  // AVX2 without FMA
  EXPECT_EQ(cpu.flops_per_cycle(), 16);
  cpu.isa.push_back("fma");
  EXPECT_EQ(cpu.flops_per_cycle(), 32);
}

TEST(Cpu, BadOrEmptyCpuinfoGivesUnknowns) {
  CpuInfo empty = parse_cpuinfo("");
  EXPECT_EQ(empty.logical_cores, 0);
  EXPECT_TRUE(empty.model.empty());
  EXPECT_EQ(empty.peak_gflops(), 0);
  CpuInfo garbage = parse_cpuinfo("no colon here\ncpu MHz : fast\n:\n\x01\x02 : \n");
  EXPECT_EQ(garbage.mhz, 0);
  EXPECT_EQ(garbage.peak_gflops(), 0);
}

TEST(Cpu, DetectsThisMachine) {
  CpuInfo cpu = detect_cpu();
  EXPECT_GT(cpu.logical_cores, 0);
#if defined(__x86_64__)
  EXPECT_TRUE(cpu.has("sse2"));  // every x86-64 processor
  EXPECT_FALSE(cpu.model.empty());
#endif
}

#if defined(__x86_64__)
TEST(Cpu, MxcsrSetAndRestoreRoundTrip) {
  const FpState original = read_fp_state();
  ASSERT_TRUE(original.available);
  const FpState before = set_flush_denormal(true, true);
  EXPECT_EQ(before.mxcsr, original.mxcsr);
  FpState on = read_fp_state();
  EXPECT_TRUE(on.flush_to_zero);
  EXPECT_TRUE(on.denormals_are_zero);
  EXPECT_EQ(on.mxcsr, original.mxcsr | (1u << 15) | (1u << 6));
  volatile float tiny = 1e-20f;
  EXPECT_EQ(tiny * tiny, 0.0f);  // 1e-40 is denormal: flushed
  set_flush_denormal(false, true);
  on = read_fp_state();
  EXPECT_FALSE(on.flush_to_zero);
  EXPECT_TRUE(on.denormals_are_zero);
  write_mxcsr(original.mxcsr);
  const FpState back = read_fp_state();
  EXPECT_EQ(back.mxcsr, original.mxcsr);
  EXPECT_FALSE(back.flush_to_zero);
  EXPECT_NE(tiny * tiny, 0.0f);  // gradual underflow again
}

TEST(Cpu, LibTorchSetFlushDenormalSetsBothBitsOfTheCallingThread) {
  const FpState original = read_fp_state();
  ASSERT_TRUE(at::globalContext().setFlushDenormal(true));
  const FpState on = read_fp_state();
  EXPECT_TRUE(on.flush_to_zero);
  EXPECT_TRUE(on.denormals_are_zero);
  at::globalContext().setFlushDenormal(false);
  const FpState off = read_fp_state();
  EXPECT_FALSE(off.flush_to_zero);
  EXPECT_FALSE(off.denormals_are_zero);
  write_mxcsr(original.mxcsr);
}
#endif

}  // namespace
}  // namespace nanguard::env
