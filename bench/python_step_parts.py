"""Where the guard's cost lies in a Python step: the article's MLP (Adam, batch 32) unguarded,
under a disabled Guard (enabled=False: the wrapper and the C++ round trip only) and under the
default Guard, interleaved in blocks of 5 steps in one process on one model and optimizer (as in
python_overhead.py: copies of the model differ in speed by more than the guard costs). Per way,
the median of the whole step, of the closure's forward and backward, and of optimizer.step();
"rest" is the median step minus both (zero_grad, the wrapper, the checks).

    /usr/bin/python3 bench/python_step_parts.py --mnist data/mnist
"""
import argparse
import os
import random
import statistics
import sys
import time

import torch

import nanguard
from pytorch_epoch import article_mlp, cpu_model, read_idx

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--mnist", default="data/mnist")
ap.add_argument("--rounds", type=int, default=300)
args = ap.parse_args()
torch.set_num_threads(1)
x = read_idx(os.path.join(args.mnist, "train-images-idx3-ubyte")).float() / 255.0
y = read_idx(os.path.join(args.mnist, "train-labels-idx1-ubyte")).long()
torch.manual_seed(0)
base = article_mlp()
ce = torch.nn.functional.cross_entropy
ways = {}
o = torch.optim.Adam(base.parameters(), lr=1e-3, eps=1e-7)
for name, opts in {"plain": None, "disabled": {"enabled": False}, "default": {}}.items():
    ways[name] = dict(m=base, o=o, g=nanguard.Guard(base, o, **opts) if opts is not None else None, fb=[], st=[], tot=[], pos=0)
def run(w, steps, rec):
    m, o, g = w["m"], w["o"], w["g"]
    def closure(b):
        a = time.perf_counter_ns()
        loss = ce(m(b[0]), b[1]); loss.backward()
        if rec: w["fb"].append(time.perf_counter_ns() - a)
        return loss
    step0 = o.step
    def timed_step(*args, **kw):
        a = time.perf_counter_ns(); r = step0(*args, **kw)
        if rec: w["st"].append(time.perf_counter_ns() - a)
        return r
    o.step = timed_step
    for _ in range(steps):
        i = w["pos"] % 1800; w["pos"] += 1; b = (x[i*32:(i+1)*32], y[i*32:(i+1)*32])
        a = time.perf_counter_ns()
        if g is None:
            o.zero_grad(set_to_none=True); closure(b); o.step()
        else:
            g.step(b, closure)
        if rec: w["tot"].append(time.perf_counter_ns() - a)
    o.step = step0
for w in ways.values(): run(w, 50, False)
rng = random.Random(2); names = list(ways)
for _ in range(args.rounds):
    rng.shuffle(names)
    for n in names: run(ways[n], 5, True)
print("python_step_parts: %s, torch %s, 1 thread, %d rounds x 5 steps per way (median us)" %
      (cpu_model(), torch.__version__, args.rounds))
for n, w in ways.items():
    fb, st, tot = (statistics.median(w[k]) / 1e3 for k in ("fb", "st", "tot"))
    print("%-9s total %7.1f  fwd+bwd %7.1f  opt.step %7.1f  rest %6.1f" % (n, tot, fb, st, tot - fb - st))
