#include "nanguard/env/blas.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nanguard::env {
namespace {

TEST(Blas, ClassifiesKnownLibraries) {
  EXPECT_EQ(classify_blas_path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"), "openblas");
  EXPECT_EQ(classify_blas_path("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"), "reference");
  EXPECT_EQ(classify_blas_path("/opt/intel/lib/libmkl_rt.so"), "mkl");
  EXPECT_EQ(classify_blas_path("/usr/lib/libblis.so.4"), "blis");
}

TEST(Blas, DetectsTheLibraryLibTorchLoaded) {
  // Force a matmul so the BLAS library is certainly mapped.
  auto a = torch::ones({64, 64});
  (void)a.mm(a);
  BlasInfo info = detect_blas();
  EXPECT_NE(info.name, "unknown") << "no BLAS library found among the loaded objects";
  EXPECT_FALSE(info.path.empty());
}

TEST(Blas, DetectionFollowsTheLibraryThatProvidesSgemm) {
  auto a = torch::ones({16, 16});
  (void)a.mm(a);
  const std::string provider = sgemm_provider();
  ASSERT_FALSE(provider.empty()) << "sgemm_ is not bound in this process";
  const BlasInfo info = detect_blas();
  EXPECT_EQ(info.path, provider);
  EXPECT_EQ(info.name, classify_blas_path(provider));
}

}  // namespace
}  // namespace nanguard::env
