#!/usr/bin/env bash
# Builds nanguard and runs the whole test suite (with MNIST, so the zoo's Z0/Z3/Z5 run), installs
# the Python package (import nanguard) and runs its pytest suite (tests/python), then installs the
# C++ package, builds the standalone consumer in examples/ against the installed package and runs
# its scenario of its own through the zoo's harness and its GAN loop.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data
scripts/build.sh
(cd build && ctest --output-on-failure -j2 --timeout 300)
# The Python package: installed into Debian python3's site folder (the python component, which a
# plain install leaves out), imported from outside the repository, then its pytest suite.
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo cmake --install build --component python
(cd / && /usr/bin/python3 -c "import nanguard; print('import nanguard', nanguard.__version__, 'from', nanguard.__file__)")
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/python
cmake --install build --prefix build/install >/dev/null
build/install/bin/nanguard --help >/dev/null  # the installed CLI finds the installed library
# A user of the package needs LibTorch and nothing else. The package asks for Torch only and its
# target's link interface names nothing else (this also covers protobuf, which Debian's LibTorch
# config asks for itself), and the consumer is configured with find_package of the libraries
# nanguard links privately disabled.
pkg=build/install/lib/cmake/nanguard
if grep -n 'find_dependency' "$pkg/nanguardConfig.cmake" | grep -v 'find_dependency(Torch)' ||
   grep -nE 'INTERFACE_LINK_LIBRARIES.*(fmt|nlohmann|toml|ZLIB|protobuf)' "$pkg/nanguardTargets.cmake"; then
  echo "test.sh: the installed package asks for more than LibTorch" >&2; exit 1
fi
cmake -S examples -B build/examples -G Ninja -DCMAKE_BUILD_TYPE=Release --no-warn-unused-cli \
  -DCMAKE_PREFIX_PATH="$PWD/build/install" \
  -DCMAKE_DISABLE_FIND_PACKAGE_fmt=ON -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_tomlplusplus=ON -DCMAKE_DISABLE_FIND_PACKAGE_ZLIB=ON >/dev/null
ninja -C build/examples
echo "examples built against the installed package: $(ls build/examples | grep -E '^(mnist_mlp|custom_loop|zoo_custom_scenario|gan)$' | tr '\n' ' ')"
build/examples/zoo_custom_scenario
# A GAN under one guard: survives a NaN record and a saturating loss, and must have learned.
build/examples/gan
