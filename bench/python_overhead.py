"""Per-step cost of the guard in a plain PyTorch eager loop, beside anomaly mode's.

The article's MLP (Flatten, Linear 784-128 relu, Linear 10; Adam 1e-3, batch 32) on MNIST,
trained three ways in one process: unguarded, under nanguard.Guard, and under
torch.autograd.set_detect_anomaly(True). The ways take turns in blocks of steps (in a shuffled
order each round) on one model and one optimizer, so drifts of the machine and of the model hit
all three alike. With a copy of the model per way, the same optimizer.step() took 381 us on one
copy and 431 us on another (where each copy's tensors land in memory), more than the guard
costs; and a model's step drifts as it trains (Adam's moments of rarely lit pixels decay into
float32's denormal range: 563 us at step 200, 743 us at step 3000 in a process of its own, flat
with torch.set_flush_denormal(True)). The guard installs no hooks outside replays and sampled
steps, so the unguarded steps run the model as they would without it. Prints the median step time of each and its overhead over the unguarded loop.

    /usr/bin/python3 bench/python_overhead.py --mnist data/mnist [--rounds 30 --block 50]
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

import torch

import nanguard
from pytorch_epoch import article_mlp, cpu_model, read_idx  # the benchmarks' model, MNIST reader and CPU name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default="data/mnist")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=50, help="steps per turn of one way")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args()

    x = read_idx(os.path.join(args.mnist, "train-images-idx3-ubyte")).float() / 255.0
    y = read_idx(os.path.join(args.mnist, "train-labels-idx1-ubyte")).long()
    torch.manual_seed(0)
    model = article_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    ways = {name: {"model": model, "opt": opt, "times": [], "pos": 0} for name in ("unguarded", "nanguard", "anomaly")}
    guard = nanguard.Guard(model, opt)
    ce = torch.nn.functional.cross_entropy
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))

    def next_batch(way):
        i = way["pos"] % (len(x) // 32)
        way["pos"] += 1
        rows = order[i * 32:(i + 1) * 32]
        return x[rows], y[rows]

    def run(name, steps, record):
        way = ways[name]
        model, opt, times = way["model"], way["opt"], way["times"]
        batches = [next_batch(way) for _ in range(steps)]  # gathered outside the timed region
        if name == "nanguard":
            def closure(b):
                loss = ce(model(b[0]), b[1])
                loss.backward()
                return loss
            for b in batches:
                t0 = time.perf_counter_ns()
                guard.step(b, closure)
                t1 = time.perf_counter_ns()
                if record:
                    times.append(t1 - t0)
            return
        with torch.autograd.set_detect_anomaly(name == "anomaly"):
            for b in batches:
                t0 = time.perf_counter_ns()
                opt.zero_grad(set_to_none=True)
                loss = ce(model(b[0]), b[1])
                loss.backward()
                opt.step()
                t1 = time.perf_counter_ns()
                if record:
                    times.append(t1 - t0)

    for name in ways:
        run(name, args.warmup, record=False)
    rng = random.Random(2)
    names = list(ways)
    # Per round, the ratio of each way's median step to the unguarded one's in the same round:
    # the machine's slow and fast phases (other jobs) cancel out of it.
    ratios = {name: [] for name in ways}
    for _ in range(args.rounds):
        rng.shuffle(names)
        start = {name: len(w["times"]) for name, w in ways.items()}
        for name in names:
            run(name, args.block, record=True)
        block = {name: statistics.median(w["times"][start[name]:]) for name, w in ways.items()}
        for name in ways:
            ratios[name].append(block[name] / block["unguarded"])

    median = {name: statistics.median(w["times"]) / 1e3 for name, w in ways.items()}
    print("python_overhead: the article's MLP, Adam, batch 32, PyTorch %s eager, %d threads, %s, load average %s" %
          (torch.__version__, torch.get_num_threads(), cpu_model(), " ".join("%.2f" % v for v in os.getloadavg())))
    print("  %d rounds x %d steps per way, interleaved" % (args.rounds, args.block))
    for name in ("unguarded", "nanguard", "anomaly"):
        over = 100.0 * (median[name] / median["unguarded"] - 1)
        q = statistics.quantiles(ratios[name], n=4) if len(ratios[name]) > 1 else [1, 1, 1]
        print("  %-10s median step %8.1f us   overhead %+6.1f%%   per-round overhead: median %+6.1f%% (quartiles %+.1f%%, %+.1f%%)"
              % (name, median[name], over, 100 * (statistics.median(ratios[name]) - 1), 100 * (q[0] - 1),
                 100 * (q[2] - 1)))
    print("  %s" % guard.summary())
    if args.json:
        print(json.dumps({"median_us": median, "per_round_overhead": {k: statistics.median(v) - 1 for k, v in ratios.items()},
                          "cpu": cpu_model(), "threads": torch.get_num_threads(),
                          "steps_per_way": args.rounds * args.block}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
