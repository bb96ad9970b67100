// Everything here is loaded with dlopen: the library must build and run without CUDA, and the
// same binary must report on a machine that has it. The few entry points are declared by hand
// with the C types of the public CUDA / NVML headers (enums and handles as int / void*).
#include "nanguard/env/cuda.h"

#include <cstring>
#include <string>
#include <vector>

#include <dlfcn.h>
#include <link.h>

#include <torch/cuda.h>

namespace nanguard::env {
namespace {

using IntOut = int (*)(int*);
using CuInit = int (*)(unsigned);
using CuDeviceGet = int (*)(int*, int);
using CuDeviceGetName = int (*)(char*, int, int);
using CuDeviceTotalMem = int (*)(size_t*, int);
using CuDeviceGetAttribute = int (*)(int*, int, int);
using CuDeviceGetPciBusId = int (*)(char*, int, int);
constexpr int kCcMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kCcMinor = 76;

using NvmlDevice = void*;
using NvmlVoid = int (*)();
using NvmlByIndex = int (*)(unsigned, NvmlDevice*);
using NvmlByPci = int (*)(const char*, NvmlDevice*);
using NvmlTemperature = int (*)(NvmlDevice, int, unsigned*);
using NvmlThrottle = int (*)(NvmlDevice, unsigned long long*);
using NvmlEcc = int (*)(NvmlDevice, int, int, unsigned long long*);
using NvmlDriverVersion = int (*)(char*, unsigned);

template <typename F>
F sym(void* lib, const char* name) {
  return lib ? reinterpret_cast<F>(dlsym(lib, name)) : nullptr;
}

int find_loaded(struct dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (out->empty() && info->dlpi_name && std::strstr(info->dlpi_name, "libcudart")) *out = info->dlpi_name;
  return 0;
}

// The runtime LibTorch already mapped (pip wheels keep it in site-packages), else the usual names.
void* open_cudart() {
  std::string loaded;
  dl_iterate_phdr(find_loaded, &loaded);
  if (!loaded.empty()) {
    if (void* h = dlopen(loaded.c_str(), RTLD_LAZY | RTLD_LOCAL)) return h;
  }
  for (const char* name : {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"}) {
    if (void* h = dlopen(name, RTLD_LAZY | RTLD_LOCAL)) return h;
  }
  return nullptr;
}

const char* throttle_name(unsigned bit) {
  switch (bit) {
    case 0x4: return "sw_power_cap";
    case 0x8: return "hw_slowdown";
    case 0x20: return "sw_thermal";
    case 0x40: return "hw_thermal";
    case 0x80: return "hw_power_brake";
    default: return nullptr;  // idle, application clocks, sync boost: not a health problem
  }
}

void read_nvml(CudaInfo& info, const std::vector<std::string>& bus_ids) {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!lib) {
    info.note += "NVML (libnvidia-ml.so.1) not found. ";
    return;
  }
  auto init = sym<NvmlVoid>(lib, "nvmlInit_v2");
  auto shutdown = sym<NvmlVoid>(lib, "nvmlShutdown");
  if (!init || init() != 0) {
    info.note += "NVML could not be initialised. ";
    return;  // the library stays mapped: unloading NVML after a failed init is not worth the risk
  }
  info.nvml_loaded = true;
  char version[96] = {};
  if (auto v = sym<NvmlDriverVersion>(lib, "nvmlSystemGetDriverVersion"); v && v(version, sizeof version) == 0)
    info.nvml_driver_version = version;
  auto by_index = sym<NvmlByIndex>(lib, "nvmlDeviceGetHandleByIndex_v2");
  auto by_pci = sym<NvmlByPci>(lib, "nvmlDeviceGetHandleByPciBusId_v2");
  auto temperature = sym<NvmlTemperature>(lib, "nvmlDeviceGetTemperature");
  auto throttle = sym<NvmlThrottle>(lib, "nvmlDeviceGetCurrentClocksThrottleReasons");
  if (!throttle) throttle = sym<NvmlThrottle>(lib, "nvmlDeviceGetCurrentClocksEventReasons");
  auto ecc = sym<NvmlEcc>(lib, "nvmlDeviceGetTotalEccErrors");
  for (size_t i = 0; i < info.devices.size(); ++i) {
    CudaDevice& d = info.devices[i];
    NvmlDevice h = nullptr;
    // CUDA ordinals and NVML indices differ under CUDA_VISIBLE_DEVICES: match by PCI bus id.
    bool ok = by_pci && i < bus_ids.size() && !bus_ids[i].empty() && by_pci(bus_ids[i].c_str(), &h) == 0;
    if (!ok) ok = by_index && by_index(static_cast<unsigned>(d.index), &h) == 0;
    if (!ok) continue;
    d.has_nvml = true;
    unsigned t = 0;
    if (temperature && temperature(h, 0 /* NVML_TEMPERATURE_GPU */, &t) == 0) d.temperature_c = static_cast<int>(t);
    unsigned long long reasons = 0;
    if (throttle && throttle(h, &reasons) == 0) {
      d.throttle_reasons = reasons;
      for (unsigned bit = 1; bit <= 0x100; bit <<= 1) {
        if ((reasons & bit) && throttle_name(bit)) d.throttle_names.emplace_back(throttle_name(bit));
      }
    }
    unsigned long long count = 0;
    // memory error type 0 corrected / 1 uncorrected; counter type 0 volatile (since boot).
    if (ecc && ecc(h, 0, 0, &count) == 0) d.ecc_corrected = static_cast<int64_t>(count);
    if (ecc && ecc(h, 1, 0, &count) == 0) d.ecc_uncorrected = static_cast<int64_t>(count);
  }
  if (shutdown) shutdown();
}

}  // namespace

std::string cuda_version_text(int version) {
  if (version <= 0) return "";
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

namespace {

CudaInfo read_cuda() {
  CudaInfo info;
  try {
    info.torch_available = torch::cuda::is_available();
    info.torch_device_count = static_cast<int>(torch::cuda::device_count());
  } catch (const std::exception& e) {
    info.note += std::string("torch::cuda failed: ") + e.what() + ". ";
  }

  if (void* rt = open_cudart()) {
    info.runtime_loaded = true;
    if (auto v = sym<IntOut>(rt, "cudaRuntimeGetVersion"); v && v(&info.runtime_version) != 0)
      info.runtime_version = 0;
  } else {
    info.note += "CUDA runtime (libcudart) not found. ";
  }

  void* drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!drv) {
    info.note += "CUDA driver (libcuda.so.1) not found. ";
    return info;
  }
  auto cu_init = sym<CuInit>(drv, "cuInit");
  if (!cu_init || cu_init(0) != 0) {
    info.note += "cuInit failed (no device or driver not loaded). ";
    return info;
  }
  info.driver_loaded = true;
  if (auto v = sym<IntOut>(drv, "cuDriverGetVersion"); v && v(&info.driver_version) != 0) info.driver_version = 0;
  auto count_fn = sym<IntOut>(drv, "cuDeviceGetCount");
  auto get = sym<CuDeviceGet>(drv, "cuDeviceGet");
  auto get_name = sym<CuDeviceGetName>(drv, "cuDeviceGetName");
  auto total_mem = sym<CuDeviceTotalMem>(drv, "cuDeviceTotalMem_v2");
  auto attribute = sym<CuDeviceGetAttribute>(drv, "cuDeviceGetAttribute");
  auto bus_id = sym<CuDeviceGetPciBusId>(drv, "cuDeviceGetPCIBusId");
  int count = 0;
  if (!count_fn || count_fn(&count) != 0) count = 0;
  std::vector<std::string> bus_ids;
  for (int i = 0; i < count; ++i) {
    CudaDevice d;
    d.index = i;
    int dev = 0;
    if (!get || get(&dev, i) != 0) continue;
    char name[256] = {};
    if (get_name && get_name(name, sizeof name, dev) == 0) d.name = name;
    size_t bytes = 0;
    if (total_mem && total_mem(&bytes, dev) == 0) d.total_memory = static_cast<int64_t>(bytes);
    if (attribute) {
      if (attribute(&d.cc_major, kCcMajor, dev) != 0) d.cc_major = 0;
      if (attribute(&d.cc_minor, kCcMinor, dev) != 0) d.cc_minor = 0;
    }
    char bus[64] = {};
    bus_ids.emplace_back(bus_id && bus_id(bus, sizeof bus, dev) == 0 ? bus : "");
    info.devices.push_back(std::move(d));
  }
  if (!info.devices.empty()) read_nvml(info, bus_ids);
  return info;
}

}  // namespace

CudaInfo detect_cuda() {
  CudaInfo info = read_cuda();
  while (!info.note.empty() && info.note.back() == ' ') info.note.pop_back();
  return info;
}

}  // namespace nanguard::env
