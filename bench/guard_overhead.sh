#!/usr/bin/env bash
# The guard's cheap-path overhead on the article's MNIST MLP, three ways, in one run:
#  1. wall time, guarded and unguarded steps interleaved in one process (same binary);
#  2. instructions (valgrind callgrind), the same 300 steps guarded and unguarded: stable
#     whatever else the machine is doing;
#  3. PyTorch's anomaly mode on the same model, with and without, interleaved (Python).
# Usage: bench/guard_overhead.sh   (after scripts/build.sh and scripts/setup.sh --data --bench)
set -euo pipefail
cd "$(dirname "$0")/.."
mnist=data/mnist
echo "== wall time (nanguard)"
build/bench_guard_overhead "$mnist" "${ROUNDS:-40}" 100
echo "== instructions (callgrind, 300 steps each)"
count() {
  valgrind --tool=callgrind --callgrind-out-file="$1" build/bench_guard_overhead "$mnist" 3 100 "$2" >/dev/null 2>&1
  # awk reads to the end (an early exit would break the pipe under pipefail).
  callgrind_annotate --inclusive=yes "$1" | awk '/Trainer::step_on_batch/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
tmp=$(mktemp -d)
plain=$(count "$tmp/plain.out" plain)
guarded=$(count "$tmp/guarded.out" guarded)
rm -rf "$tmp"
awk -v p="$plain" -v g="$guarded" 'BEGIN {
  printf "unguarded steps: %d instructions\nguarded steps:   %d instructions\nguard overhead: %+.2f%% instructions\n", p, g, (g / p - 1) * 100 }'
echo "== PyTorch anomaly mode (Python)"
(cd bench && /usr/bin/python3 pytorch_anomaly.py "../$mnist" 20 100)
