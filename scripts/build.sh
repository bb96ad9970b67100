#!/usr/bin/env bash
# Configures and builds nanguard in Release into build/ (the CLI is build/nanguard).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
ninja -C build
