#!/usr/bin/env bash
# Builds nanguard and runs the whole test suite (with MNIST, so the zoo's Z0/Z3/Z5 run), then
# installs it, builds the standalone consumer in examples/ against the installed package and
# runs its scenario of its own through the zoo's harness.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data
scripts/build.sh
(cd build && ctest --output-on-failure -j2 --timeout 300)
cmake --install build --prefix build/install >/dev/null
cmake -S examples -B build/examples -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
ninja -C build/examples
echo "examples built against the installed package: $(ls build/examples | grep -E '^(mnist_mlp|custom_loop|zoo_custom_scenario)$' | tr '\n' ' ')"
build/examples/zoo_custom_scenario
