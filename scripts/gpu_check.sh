#!/usr/bin/env bash
# Exercises the doctor's CUDA section on a GPU machine with a PyTorch wheel (LibTorch 2.x + CUDA).
# Usage: scripts/gpu_check.sh [OUT_DIR]   (default: gpu_check_out)
# Writes OUT_DIR/doctor.json, doctor.txt and test_env.txt. It needs no network, but the build
# needs fmt, toml++, CLI11, nlohmann-json and GoogleTest headers/packages: it stops and says which
# are missing. Exit status: the doctor's (0 pass, 5 warnings, 6 failures) or 1 for a setup problem.
set -u
out=${1:-gpu_check_out}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}

prefix=$("$py" -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null) || {
  echo "gpu_check: $py cannot import torch" >&2; exit 1; }
"$py" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' | tee "$out/python_torch.txt"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "gpu_check: nvidia-smi failed (see $out/nvidia-smi.txt)" >&2

missing=()
for pair in "fmt:fmt/format.h" "tomlplusplus:toml++/toml.hpp" "CLI11:CLI/CLI.hpp" "nlohmann_json:nlohmann/json.hpp" "GTest:gtest/gtest.h"; do
  pkg=${pair%%:*}; header=${pair#*:}
  found=0
  for dir in /usr/include /usr/local/include ${EXTRA_INCLUDE:-}; do [ -e "$dir/$header" ] && found=1; done
  [ $found = 1 ] || missing+=("$pkg ($header)")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu_check: missing build dependencies: ${missing[*]}" >&2
  echo "gpu_check: install them (or point CMAKE_PREFIX_PATH / EXTRA_INCLUDE at copies) and rerun" >&2
  exit 1
fi

build="$root/build-gpu"
cmake -S "$root" -B "$build" -G Ninja -DNANGUARD_BUILD_BENCH=OFF -DNANGUARD_BUILD_EXAMPLES=OFF \
  -DCMAKE_PREFIX_PATH="$prefix" > "$out/cmake.txt" 2>&1 || { echo "gpu_check: cmake failed, see $out/cmake.txt" >&2; exit 1; }
ninja -C "$build" -j"$(nproc)" nanguard_cli test_env > "$out/build.txt" 2>&1 || {
  echo "gpu_check: build failed, see $out/build.txt" >&2; exit 1; }

"$build/test_env" > "$out/test_env.txt" 2>&1
echo "test_env exit status $?" >> "$out/test_env.txt"
"$build/nanguard" doctor > "$out/doctor.txt" 2>&1
"$build/nanguard" doctor --json > "$out/doctor.json"
status=$?
echo "gpu_check: doctor exit status $status; outputs in $out"
exit $status
