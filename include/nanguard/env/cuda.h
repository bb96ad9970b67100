// CUDA facts read at run time: LibTorch's view (torch::cuda), the CUDA runtime and driver
// libraries and NVML, all opened with dlopen. None of them is a link-time dependency: on a
// machine without them every field says "not present".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nanguard::env {

struct CudaDevice {
  int index = 0;
  std::string name;              // from the driver API, "" when unknown
  int64_t total_memory = 0;      // bytes; 0 when unknown
  int cc_major = 0, cc_minor = 0;  // compute capability; 0 when unknown
  // NVML; has_nvml false when NVML could not read this device.
  bool has_nvml = false;
  int temperature_c = -1;         // -1 when unknown
  uint64_t throttle_reasons = 0;  // NVML clocks-throttle-reasons bit mask
  std::vector<std::string> throttle_names;  // the reasons that matter: "hw_slowdown", "sw_thermal", ...
  int64_t ecc_corrected = -1;     // volatile (since boot) counts; -1 when unknown or ECC off
  int64_t ecc_uncorrected = -1;
};

struct CudaInfo {
  bool torch_available = false;   // torch::cuda::is_available()
  int torch_device_count = 0;     // torch::cuda::device_count()
  bool runtime_loaded = false;    // libcudart could be opened
  int runtime_version = 0;        // cudaRuntimeGetVersion, e.g. 12040; 0 when unknown
  bool driver_loaded = false;     // libcuda.so.1 could be opened and initialised
  int driver_version = 0;         // cuDriverGetVersion: the newest CUDA version it supports
  bool nvml_loaded = false;
  std::string nvml_driver_version;  // "550.54.15", "" when unknown
  std::vector<CudaDevice> devices;  // from the driver API (empty when it is absent)
  std::string note;                 // why a part is missing, for the report
  bool present() const { return torch_available || !devices.empty(); }
};

// Never throws: what cannot be read stays at its "unknown" value.
CudaInfo detect_cuda();
// "12.4" from 12040.
std::string cuda_version_text(int version);

}  // namespace nanguard::env
