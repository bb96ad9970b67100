// Which BLAS library LibTorch is really calling. Debian's LibTorch goes through the
// libblas.so.3 alternative: with only the reference BLAS installed it trains about 6x slower.
#pragma once

#include <string>

namespace nanguard::env {

struct BlasInfo {
  std::string name;  // "openblas", "reference", "mkl", "blis", "atlas" or "unknown"
  std::string path;  // resolved path of the loaded library, "" when none was found
  bool is_reference() const { return name == "reference"; }
};

// The library sgemm_ binds to, else the shared libraries loaded in this process.
BlasInfo detect_blas();

// The resolved path of the library that provides sgemm_ to this process ("" when none).
std::string sgemm_provider();

// Classifies a resolved library path (exposed for tests).
std::string classify_blas_path(const std::string& resolved_path);

// Logs a warning (through the log sink) when reference BLAS is in use. Returns the info.
BlasInfo warn_if_reference_blas();

}  // namespace nanguard::env
