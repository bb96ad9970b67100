"""Side-by-side epoch time of the article's MNIST MLP: nanguard (C++) against PyTorch eager
(Python), interleaved in one run so both see the same machine state.
Usage: /usr/bin/python3 bench/epoch_vs_pytorch.py [--rounds N] [--epochs-per-round K]
Prints median epoch seconds of each and the ratio nanguard / PyTorch."""
import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def epochs_of(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return [float(line.split()[1]) for line in out.splitlines() if line.startswith("epoch_seconds")]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs-per-round", type=int, default=2)
    p.add_argument("--mnist", default=os.path.join(ROOT, "data", "mnist"))
    p.add_argument("--bench", default=os.path.join(ROOT, "build", "bench_epoch"))
    a = p.parse_args()
    k = str(a.epochs_per_round)
    ours, theirs = [], []
    for r in range(a.rounds):
        ours += epochs_of([a.bench, a.mnist, k])
        theirs += epochs_of(["/usr/bin/python3", os.path.join(ROOT, "bench", "pytorch_epoch.py"), a.mnist, k])
        print(f"round {r + 1}/{a.rounds}: nanguard {ours[-1]:.3f}s  pytorch {theirs[-1]:.3f}s", flush=True)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"nanguard epoch: median {mo:.3f}s  (min {min(ours):.3f}, max {max(ours):.3f}, n={len(ours)})")
    print(f"pytorch  epoch: median {mt:.3f}s  (min {min(theirs):.3f}, max {max(theirs):.3f}, n={len(theirs)})")
    print(f"ratio nanguard/pytorch: {mo / mt:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
