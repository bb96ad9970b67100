#!/usr/bin/env bash
# Builds nanguard and runs the whole test suite, then installs it and builds the standalone
# consumer in examples/ against the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j2 --timeout 300)
cmake --install build --prefix build/install >/dev/null
cmake -S examples -B build/examples -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
ninja -C build/examples
echo "examples built against the installed package: $(ls build/examples | grep -E '^(mnist_mlp|custom_loop)$' | tr '\n' ' ')"
