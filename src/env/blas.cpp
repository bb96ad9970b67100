#include "nanguard/env/blas.h"

#include <filesystem>
#include <vector>

#include <dlfcn.h>
#include <link.h>

#include "nanguard/core/log.h"

namespace nanguard::env {
namespace {

bool contains(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

int collect(struct dl_phdr_info* info, size_t, void* data) {
  auto* paths = static_cast<std::vector<std::string>*>(data);
  if (info->dlpi_name && info->dlpi_name[0]) paths->emplace_back(info->dlpi_name);
  return 0;
}

}  // namespace

std::string classify_blas_path(const std::string& p) {
  if (contains(p, "openblas")) return "openblas";
  if (contains(p, "mkl")) return "mkl";
  if (contains(p, "blis")) return "blis";
  if (contains(p, "atlas")) return "atlas";
  // Debian installs the Netlib reference implementation as .../blas/libblas.so.3.
  if (contains(p, "/blas/libblas.so") || contains(p, "libblas.so")) return "reference";
  return "unknown";
}

std::string sgemm_provider() {
  // What the dynamic linker binds LibTorch's sgemm_ calls to: the first library in the global
  // lookup order that defines it (both OpenBLAS and the reference BLAS may be mapped at once).
  void* sym = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info where{};
  if (!sym || !dladdr(sym, &where) || !where.dli_fname) return "";
  std::error_code ec;
  const std::string resolved = std::filesystem::canonical(where.dli_fname, ec).string();
  return ec ? std::string(where.dli_fname) : resolved;
}

BlasInfo detect_blas() {
  const std::string provider = sgemm_provider();
  if (!provider.empty() && classify_blas_path(provider) != "unknown") return BlasInfo{classify_blas_path(provider), provider};
  std::vector<std::string> loaded;
  dl_iterate_phdr(collect, &loaded);
  BlasInfo info{"unknown", ""};
  for (const auto& path : loaded) {
    std::error_code ec;
    const std::string resolved = std::filesystem::canonical(path, ec).string();
    const std::string& p = ec ? path : resolved;
    const auto file = std::filesystem::path(p).filename().string();
    const bool is_blas = contains(file, "blas") || contains(file, "mkl_rt") || contains(file, "libmkl");
    if (!is_blas || contains(file, "cublas")) continue;
    const std::string name = classify_blas_path(p);
    // A vendor library wins over the reference one if both are mapped.
    if (info.name == "unknown" || info.name == "reference") info = BlasInfo{name, p};
  }
  return info;
}

BlasInfo warn_if_reference_blas() {
  BlasInfo info = detect_blas();
  if (info.is_reference()) {
    log_warning("LibTorch is calling the reference BLAS (" + info.path +
                "): training runs about 6x slower. Install an optimised BLAS, e.g. "
                "`apt-get install libopenblas0-pthread`.");
  }
  return info;
}

}  // namespace nanguard::env
