"""A guard attached to a run already under way (a resumed or fine-tuned model): the article's
MLP (Adam 1e-3, or plain SGD lr 0.1 with --optimizer sgd; batch 32) trained --before epochs
unguarded, then --after epochs under nanguard.Guard on MNIST. A healthy run: any incident is a false alarm. Prints the incidents, the
warnings, the batch losses' spread as the guard starts, and the test accuracy.

    /usr/bin/python3 bench/python_resumed.py --mnist data/mnist [--before 1 --after 2] [--optimizer sgd]
"""
import argparse
import math
import os
import statistics
import sys

import torch

import nanguard
from pytorch_epoch import article_mlp, cpu_model, read_idx


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default="data/mnist")
    ap.add_argument("--before", type=int, default=1)
    ap.add_argument("--after", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                    help="adam: Adam 1e-3 (has state when the guard joins); sgd: plain SGD lr 0.1 (none)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    read = lambda name: read_idx(os.path.join(args.mnist, name))
    x, y = read("train-images-idx3-ubyte").float() / 255.0, read("train-labels-idx1-ubyte").long()
    tx, ty = read("t10k-images-idx3-ubyte").float() / 255.0, read("t10k-labels-idx1-ubyte").long()
    torch.manual_seed(args.seed)
    model = article_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3) if args.optimizer == "adam" else \
        torch.optim.SGD(model.parameters(), lr=0.1)
    ce = torch.nn.functional.cross_entropy

    def closure(b):
        loss = ce(model(b[0]), b[1])
        loss.backward()
        return loss

    guard = None
    last_losses = []
    for epoch in range(args.before + args.after):
        if epoch == args.before:
            guard = nanguard.Guard(model, opt)
        order = torch.randperm(len(x))
        for i in range(len(x) // 32):
            rows = order[i * 32:(i + 1) * 32]
            b = (x[rows], y[rows])
            if guard is None:
                opt.zero_grad(set_to_none=True)
                last_losses.append(closure(b).item())
                opt.step()
            else:
                guard.step(b, closure)
    with torch.no_grad():
        accuracy = (model(tx).argmax(1) == ty).float().mean().item()
    tail = last_losses[-200:]
    logs = [math.log(v) for v in tail]
    print("python_resumed: %s, torch %s, %d epoch(s) unguarded, then %d under the guard (seed %d)"
          % (cpu_model(), torch.__version__, args.before, args.after, args.seed))
    print("  batch losses of the last 200 unguarded steps: median %.4g, range [%.4g, %.4g], "
          "standard deviation of the log-loss %.2f" % (statistics.median(tail), min(tail), max(tail),
                                                        statistics.pstdev(logs)))
    warnings = sum(1 for e in guard.events if e["kind"] == "warning")
    print("  guarded steps %d, incidents %d, warnings %d, test accuracy %.2f%%"
          % (guard.steps, len(guard.incidents), warnings, 100 * accuracy))
    for incident in guard.incidents:
        print("  incident:", incident.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
