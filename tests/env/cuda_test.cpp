#include "nanguard/env/cuda.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

namespace nanguard::env {
namespace {

TEST(Cuda, VersionText) {
  EXPECT_EQ(cuda_version_text(12040), "12.4");
  EXPECT_EQ(cuda_version_text(11080), "11.8");
  EXPECT_EQ(cuda_version_text(13000), "13.0");
  EXPECT_EQ(cuda_version_text(0), "");
  EXPECT_EQ(cuda_version_text(-3), "");
}

TEST(Cuda, DetectionNeverThrowsAndAgreesWithLibTorch) {
  CudaInfo info;
  ASSERT_NO_THROW(info = detect_cuda());
  EXPECT_EQ(info.torch_available, torch::cuda::is_available());
  EXPECT_EQ(info.torch_device_count, static_cast<int>(torch::cuda::device_count()));
  if (!torch::cuda::is_available() && info.devices.empty()) {
    EXPECT_FALSE(info.present());
    EXPECT_FALSE(info.note.empty()) << "an absent CUDA must say what was missing";
  }
  for (const auto& d : info.devices) {
    EXPECT_GE(d.index, 0);
    if (!d.has_nvml) {
      EXPECT_EQ(d.temperature_c, -1);
    }
  }
}

TEST(Cuda, ReadsTheDevices_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const CudaInfo info = detect_cuda();
  EXPECT_TRUE(info.present());
  EXPECT_TRUE(info.runtime_loaded);
  EXPECT_GT(info.runtime_version, 0);
  EXPECT_TRUE(info.driver_loaded);
  EXPECT_GT(info.driver_version, 0);
  ASSERT_FALSE(info.devices.empty());
  for (const auto& d : info.devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.total_memory, int64_t{1} << 30);
    EXPECT_GE(d.cc_major, 3);
    if (d.has_nvml) {
      EXPECT_GT(d.temperature_c, 0);
      EXPECT_LT(d.temperature_c, 130);
    }
  }
  if (info.nvml_loaded) {
    EXPECT_FALSE(info.nvml_driver_version.empty());
  }
}

}  // namespace
}  // namespace nanguard::env
