#!/usr/bin/env bash
# The article's example: a Keras-style MLP on real MNIST for 10 epochs, written to runs/mnist_mlp.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data
scripts/build.sh nanguard_cli   # the CLI only: the tests and benchmarks are not needed here
build/nanguard fit examples/mnist_mlp.toml --out runs/mnist_mlp "$@"
