#!/usr/bin/env bash
# The guard's cost in a data-parallel step of the article's MNIST MLP, 2 processes on loopback
# (gloo), batch 32 per rank, Adam 1e-3, in one table:
#  1. nanguard (C++): (a) the unguarded step, (b) the guard without the vote (gradients averaged
#     in the closure), (c) the guard with the vote (set_consensus), interleaved in blocks in the
#     same pair of processes, and (e) the guard with the vote in an all-reduce of its own; the
#     guard's overhead is c vs a, the vote's cost c vs b, the vote apart e vs b;
#  2. PyTorch's DistributedDataParallel (Python) on the same model and data, run after it (its
#     own pair of processes, so it is not interleaved with 1).
# Both sides run THREADS intra-op threads per process (torch.set_num_threads / torch::
# set_num_threads, and OMP_NUM_THREADS). Default 1: on the 2-core dev machine (busy with a build)
# 2 ranks x 2 threads oversubscribed the cores and pytorch_ddp.py's median step went from ~3.9 ms
# at 1 thread to ~72 ms at 2; measure again with THREADS=2 on a machine with 4+ cores.
# Usage: bench/dist_overhead.sh   (after scripts/build.sh and scripts/setup.sh --data)
#        ROUNDS=20 BLOCK=50 THREADS=1 bench/dist_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mnist=data/mnist
rounds=${ROUNDS:-20}
block=${BLOCK:-50}
threads=${THREADS:-1}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== nanguard (C++): unguarded, guard without the vote, guard with the vote (in the gradient all-reduce, or apart), interleaved"
build/bench_dist_overhead "$mnist" "$rounds" "$block" "$threads" >"$tmp/cpp.txt"
grep -v '^row' "$tmp/cpp.txt"
echo "== PyTorch DistributedDataParallel (Python)"
/usr/bin/python3 bench/pytorch_ddp.py --mnist "$mnist" --rounds "$rounds" --block "$block" --threads "$threads" >"$tmp/py.txt"
grep -v '^row' "$tmp/py.txt"
echo "== median step time: 2 ranks on loopback (gloo), batch 32 per rank, $threads thread(s) per rank, $rounds x $block steps"
grep -h '^row' "$tmp/cpp.txt" "$tmp/py.txt" | awk -F'\t' '
  { label[NR] = $2; r0[NR] = $3; r1[NR] = $4 }
  END {
    printf "%-24s %12s %12s %14s\n", "step", "rank 0 (us)", "rank 1 (us)", "vs (a), rank 0"
    for (i = 1; i <= NR; ++i)
      printf "%-24s %12.1f %12.1f %+13.2f%%\n", label[i], r0[i], r1[i], (r0[i] / r0[1] - 1) * 100
    if (NR >= 4)
      printf "guard overhead (c vs a): %+.2f%%   vote cost (c vs b): %+.2f%%   vote apart (e vs b): %+.2f%%   (rank 0 medians)\n",
             (r0[3] / r0[1] - 1) * 100, (r0[3] / r0[2] - 1) * 100, (r0[4] / r0[2] - 1) * 100
  }'
