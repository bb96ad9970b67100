"""Gate-bias initialisations of Z12's LSTM, trained in PyTorch on Z12's data and schedule.

LSTM(32) over the 28 image rows and a linear read-out of its last hidden state, on the first
6000 MNIST training images (0-1 pixels), Adam 5e-3, batch 64, 3 epochs; test accuracy on the
first 2000 test images, per seed. The weights are PyTorch's default draw in every row; only the
two bias vectors differ. docs/guard.md ("A bad initialisation") quotes its table.

  /usr/bin/python3 bench/lstm_bias_init.py --mnist data/mnist
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_epoch import cpu_model  # noqa: E402
from sigmoid_init import load, train_and_test  # noqa: E402

HIDDEN = 32


class Reader(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(28, HIDDEN, batch_first=True)
        self.out = torch.nn.Linear(HIDDEN, 10)

    def forward(self, images):
        h, _ = self.lstm(images.reshape(len(images), 28, 28))
        return self.out(h[:, -1])


def set_biases(model, scheme, seed):
    with torch.no_grad():
        for name, b in model.lstm.named_parameters():
            if not name.startswith("bias"):
                continue
            if scheme == "redrawn":  # the default range again, from another draw (what the repair did before)
                gen = torch.Generator().manual_seed(seed + 1000 + (name == "bias_hh_l0"))
                b.copy_(torch.rand(b.shape, generator=gen).mul(2).sub(1).mul(HIDDEN ** -0.5))
            elif scheme == "forget_one":  # zeros, the forget gate (second block) at 1 over both biases
                b.zero_()
                b[HIDDEN:2 * HIDDEN] = 0.5


def accuracy(scheme, seed, data):
    torch.manual_seed(seed)
    model = Reader()
    set_biases(model, scheme, seed)
    return train_and_test(model, torch.optim.Adam(model.parameters(), lr=5e-3), seed, data)


SCHEMES = ("default", "redrawn", "forget_one")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", default="data/mnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = (load(args.mnist, "train", 6000), load(args.mnist, "test", 2000))
    print(f"# {cpu_model()}, torch {torch.__version__}; test accuracy % per seed")
    print("| biases | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |")
    print("|---|" + "---|" * args.seeds)
    for scheme in args.schemes.split(","):
        if scheme not in SCHEMES:
            sys.exit(f"lstm_bias_init.py: unknown scheme '{scheme}' (expected one of {', '.join(SCHEMES)})")
        accs = [accuracy(scheme, s, data) for s in range(args.seeds)]
        print(f"| {scheme} | " + " | ".join(f"{a:.1f}" for a in accs) + " |", flush=True)


if __name__ == "__main__":
    main()
