#!/usr/bin/env bash
# Configures and builds nanguard in Release into build/ (the CLI is build/nanguard).
#   scripts/build.sh                everything: library, CLI, tests, benchmarks, examples
#   scripts/build.sh nanguard_cli   only the named targets and what they need
# Arguments starting with -D are passed to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake_args=()
targets=()
for arg in "$@"; do
  case "$arg" in
    -D*) cmake_args+=("$arg") ;;
    *) targets+=("$arg") ;;
  esac
done
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" >/dev/null
ninja -C build "${targets[@]}"
