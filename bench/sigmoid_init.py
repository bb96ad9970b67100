"""Initialisations of Z7's deep sigmoid MLP, trained in PyTorch on Z7's data and schedule.

20 sigmoid layers of 64 and a linear output on the first 6000 MNIST training images (0-1
pixels), SGD, batch 64, 3 epochs; test accuracy on the first 2000 test images, per seed.
--depth, --width and --lr try the same initialisations on other stacks.
docs/guard.md ("vanishing start") quotes its table.

  /usr/bin/python3 bench/sigmoid_init.py --mnist data/mnist
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_epoch import cpu_model, read_idx  # noqa: E402

DEPTH, WIDTH = 20, 64


def load(mnist, split, n):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(mnist, f"{prefix}-images-idx3-ubyte"))[:n].float().div(255).reshape(n, -1)
    y = read_idx(os.path.join(mnist, f"{prefix}-labels-idx1-ubyte"))[:n].long()
    return x, y


def build(activation):
    layers, d = [], 28 * 28
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(d, WIDTH), activation()]
        d = WIDTH
    layers.append(torch.nn.Linear(d, 10))
    return torch.nn.Sequential(*layers)


def orthogonal(gain):
    return lambda w: torch.nn.init.orthogonal_(w, gain=gain)


def glorot(gain):
    return lambda w: torch.nn.init.xavier_uniform_(w, gain=gain)


# name -> (first layer's weight init, hidden, output layer's, centre the biases of layers reading
# a sigmoid)
SCHEMES = {
    "normal": (lambda w: w.normal_(0, 1),) * 3 + (False,),
    "glorot": (glorot(1.0),) * 3 + (False,),
    "glorot4": (glorot(4.0),) * 3 + (False,),
    "glorot4_centred": (glorot(4.0),) * 3 + (True,),
    "orthogonal4": (orthogonal(4.0),) * 3 + (False,),
    "orthogonal3_centred": (orthogonal(3.0),) * 3 + (True,),
    "orthogonal4_centred": (orthogonal(4.0),) * 3 + (True,),
    "orthogonal5_centred": (orthogonal(5.0),) * 3 + (True,),
    # A gain by the activation after each weight: 4 up to the last sigmoid, Glorot for the output.
    "gain_after": (orthogonal(4.0), orthogonal(4.0), glorot(1.0), True),
    # What nanguard's reinitialize does (init_inspection.h): a gain by the activation before each
    # weight, 1 for the first (it reads the pixels), 4 for every weight reading a sigmoid.
    "repair": (orthogonal(1.0), orthogonal(4.0), orthogonal(4.0), True),
}


def initialise(model, scheme):
    first, hidden, output, centred = SCHEMES[scheme]
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, layer in enumerate(linears):
            (first if i == 0 else output if layer is linears[-1] else hidden)(layer.weight)
            layer.bias.zero_()
            if centred and i > 0:  # its inputs are sigmoid outputs, which start at 0.5
                layer.bias.copy_(-0.5 * layer.weight.sum(1))


def accuracy(scheme, seed, data, lr, relu_he=False):
    torch.manual_seed(seed)
    model = build(torch.nn.ReLU if relu_he else torch.nn.Sigmoid)
    if relu_he:
        for m in model:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.kaiming_normal_(m.weight)
                torch.nn.init.zeros_(m.bias)
    else:
        initialise(model, scheme)
    opt = torch.optim.SGD(model.parameters(), lr=lr / 10 if relu_he else lr)
    return train_and_test(model, opt, seed, data)


def train_and_test(model, opt, seed, data):
    """The zoo's schedule (3 epochs, batch 64, shuffled by `seed`); the test accuracy in %."""
    (x, y), (tx, ty) = data
    gen = torch.Generator().manual_seed(seed)
    for _ in range(3):
        perm = torch.randperm(x.size(0), generator=gen)
        for b in range(0, x.size(0), 64):
            idx = perm[b:b + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return 100.0 * (model(tx).argmax(1) == ty).float().mean().item()


def main():
    global DEPTH, WIDTH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", default="data/mnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--depth", type=int, default=DEPTH, help="sigmoid layers (Z7: 20)")
    ap.add_argument("--width", type=int, default=WIDTH, help="units per layer (Z7: 64)")
    ap.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (Z7: 0.1; relu_he gets a tenth)")
    ap.add_argument("--schemes", default=",".join(SCHEMES) + ",relu_he")
    args = ap.parse_args()
    DEPTH, WIDTH = args.depth, args.width
    torch.set_num_threads(1)
    data = (load(args.mnist, "train", 6000), load(args.mnist, "test", 2000))
    print(f"# {cpu_model()}, torch {torch.__version__}; {DEPTH} sigmoid layers of {WIDTH}, SGD lr {args.lr:g}; "
          "test accuracy % per seed")
    print("| scheme | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |")
    print("|---|" + "---|" * args.seeds)
    for scheme in args.schemes.split(","):
        if scheme != "relu_he" and scheme not in SCHEMES:
            sys.exit(f"sigmoid_init.py: unknown scheme '{scheme}' (expected one of {', '.join(SCHEMES)}, relu_he)")
        accs = [accuracy(scheme, s, data, args.lr, relu_he=scheme == "relu_he") for s in range(args.seeds)]
        print(f"| {scheme} | " + " | ".join(f"{a:.1f}" for a in accs) + " |", flush=True)


if __name__ == "__main__":
    main()
