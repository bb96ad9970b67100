#!/usr/bin/env bash
# Builds nanguard against the LibTorch 2.x with CUDA that ships inside PyTorch's wheel and
# exercises what needs a GPU: the *_CUDA tests, the doctor's CUDA section, a guarded fit on
# the GPU and the guard's overhead there. Meant for a GPU machine without network access:
# the Debian packages the build needs (fmt, toml++, CLI11, nlohmann-json, GoogleTest, zlib,
# protobuf) may be given as .deb files in DEBS_DIR and are unpacked into a private prefix.
#   scripts/gpu_check.sh OUT_DIR [DEBS_DIR] [MNIST_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [DEBS_DIR] [MNIST_DIR]}
debs=${2:-}
mnist=$(cd "${3:-data/mnist}" && pwd)
mkdir -p "$out"
log() { echo "== $*"; }

log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$out/nvidia-smi.csv"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
# The distribution's compiler: a toolchain GCC may default to the pre-C++11 string ABI, which
# the packages' libraries (fmt, GoogleTest) and LibTorch 2.x do not use.
cxx=${NANGUARD_CXX:-/usr/bin/g++}
echo "CXX=${CXX:-unset}; using $cxx: $($cxx --version | head -1)"; cmake --version | head -1

prefix_path=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
if [ -n "$debs" ]; then
  deps=/tmp/nanguard-deps
  mkdir -p "$deps"
  for f in "$debs"/*.deb; do dpkg -x "$f" "$deps"; done
  prefix_path="$prefix_path;$deps/usr"
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export PATH="$deps/usr/bin:$PATH"
fi
cuda_root=$(dirname "$(dirname "$(command -v nvcc)")")

log "configure + build (LibTorch from the wheel)"
start=$(date +%s)
# PyTorch's wheel ships its own fmt and protobuf headers in torch/include (an -isystem folder):
# -I puts the packages' headers, which match their libraries, ahead of them.
extra_flags=""
[ -n "$debs" ] && extra_flags="-I$deps/usr/include"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix_path" \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CUDA_HOST_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$extra_flags" \
  -DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc" \
  -DNANGUARD_BUILD_EXAMPLES=ON > "$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
ninja -C build-gpu -j"$(nproc)" -k 0 > "$out/build.log" 2>&1
build_rc=$?
echo "build rc $build_rc in $(( $(date +%s) - start )) s"
[ "$build_rc" = 0 ] || grep -E "error|FAILED" "$out/build.log" | head -40

log "tests (CPU tests under LibTorch 2.x, and the *_CUDA ones)"
export NANGUARD_MNIST_DIR="$mnist"
(cd build-gpu && OMP_NUM_THREADS=2 ctest -j8 --timeout 300 --output-on-failure > "$out/ctest.log" 2>&1; tail -25 "$out/ctest.log")
(cd build-gpu && ctest -R _CUDA -V 2>&1 | grep -E "^\[|OK|FAILED|SKIPPED|Passed|Failed" | head -40)

log "doctor"
build-gpu/nanguard doctor > "$out/doctor.txt" 2>&1; echo "doctor exit $?"; cat "$out/doctor.txt"
build-gpu/nanguard doctor --json > "$out/doctor.json" 2>/dev/null

log "guarded fit of the article's MLP on the GPU (2 epochs)"
build-gpu/nanguard fit examples/mnist_mlp.toml --device cuda --epochs 2 --out /tmp/gpu-run --quiet 2>&1 | tail -5
cp /tmp/gpu-run/summary.json "$out/gpu_fit_summary.json" 2>/dev/null

log "guard overhead: on the GPU, and on this machine's CPU with one thread (as on a 2-core machine)"
if [ -x build-gpu/bench_guard_overhead ]; then
  build-gpu/bench_guard_overhead "$mnist" 20 100 both cuda 2>&1 | tee "$out/overhead_cuda.txt"
  OMP_NUM_THREADS=1 build-gpu/bench_guard_overhead "$mnist" 40 100 both cpu 2>&1 | tee "$out/overhead_cpu_1thread.txt"
fi
