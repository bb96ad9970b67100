"""PyTorch anomaly mode on Python equivalents of nanguard's NaN zoo scenarios.

Runs one scenario with torch.autograd.set_detect_anomaly(True) and prints one JSON line:
{"scenario", "seed", "detected", "detected_step", "op", "seconds"}; "op" is the backward
function anomaly mode names (e.g. "LogBackward0"). Scenarios without an equivalent print
{"error": "no equivalent ..."}. The numbers mirror src/zoo/scenarios.cpp (same data subset,
model, loss, optimizer, trigger); weights use Glorot init like nanguard's dense layers.

  /usr/bin/python3 zoo/python/anomaly_zoo.py --scenario Z3 --seed 0 --mnist data/mnist
"""
import argparse
import json
import re
import sys
import time

CORRUPTED = [7, 123, 345, 678, 901]
BLANK = [7, 123, 345, 678, 901, 1234]  # Z15's blank samples (Z14 blanks CORRUPTED)


def read_idx(path):
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def mlp(torch, activation):
    act = torch.nn.ReLU() if activation == "relu" else torch.nn.LeakyReLU(0.3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), act, torch.nn.Linear(128, 10))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return model


def RowReader(torch, hidden, gain):
    """h_t = sin(W_ih x_t + W_hh h_{t-1} + b) over the 28 image rows; scores = out(h) + mlp(image)."""
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight_ih = torch.nn.Parameter(torch.randn(hidden, 28) / 28 ** 0.5)
            self.weight_hh = torch.nn.Parameter(torch.empty(hidden, hidden))
            self.bias = torch.nn.Parameter(torch.zeros(hidden))
            with torch.no_grad():
                torch.nn.init.orthogonal_(self.weight_hh, gain)
            self.out = torch.nn.Linear(hidden, 10)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))

        def forward(self, images):
            x = images.reshape(len(images), 28, 28)
            inputs = x @ self.weight_ih.t() + self.bias
            h = torch.zeros(len(images), hidden)
            for t in range(28):
                h = torch.sin(torch.addmm(inputs[:, t], h, self.weight_hh.t()))
            return self.out(h) + self.mlp(images.reshape(len(images), 784))
    return Model()


def RowAttention(torch, dim):
    """Self-attention over the 28 image rows as tokens; keys whose row is blank get -inf."""
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(28, dim)
            self.position = torch.nn.Parameter(torch.randn(28, dim) * 0.1)
            self.query = torch.nn.Linear(dim, dim)
            self.key = torch.nn.Linear(dim, dim)
            self.value = torch.nn.Linear(dim, dim)
            self.out = torch.nn.Linear(28 * dim, 10)

        def forward(self, images):
            x = images.reshape(len(images), 28, 28)
            blank = (x.abs().sum(-1) == 0).unsqueeze(1)
            e = self.embed(x) + self.position
            scores = self.query(e) @ self.key(e).transpose(1, 2) / dim ** 0.5
            attention = torch.softmax(scores.masked_fill(blank, float("-inf")), -1)
            return self.out((attention @ self.value(e) + e).flatten(1))
    return Model()


def build(torch, scenario, x, clean=False):
    """Model, optimizer, loss function and training inputs of a scenario; with clean=True, of its
    clean twin (the same run with the fault removed, as src/zoo/scenarios.cpp defines it)."""
    ce = torch.nn.functional.cross_entropy
    x = x / 255.0
    if scenario == "Z1":  # raw pixels, leaky_relu, SGD lr 0.01 (twin: lr 0.001)
        model = mlp(torch, "leaky")
        return model, torch.optim.SGD(model.parameters(), lr=0.001 if clean else 0.01), ce, x * 255.0
    if scenario == "Z2":  # sine RNN(96) over the rows, recurrent weights orthogonal x1.5 (twin: x1.0), beside an MLP
        model = RowReader(torch, 96, 1.0 if clean else 1.5)
        return model, torch.optim.SGD(model.parameters(), lr=0.1), ce, x
    if scenario in ("Z3", "Z4"):
        model = mlp(torch, "relu")
        scale = 50.0 if scenario == "Z3" else 200.0
        if clean:  # stable cross-entropy on the same scaled logits
            return model, torch.optim.Adam(model.parameters(), lr=1e-3), lambda z, y: ce(z * scale, y), x
        if scenario == "Z3":  # -(y * log(softmax(50 z))).sum()
            def loss(z, y):
                p = torch.softmax(z * scale, 1)
                return -(torch.nn.functional.one_hot(y, 10).float() * torch.log(p)).sum(1).mean()
        else:  # exp(200 z) / exp(200 z).sum()
            def loss(z, y):
                e = torch.exp(z * scale)
                p = e / e.sum(1, keepdim=True)
                return -(torch.nn.functional.one_hot(y, 10).float() * torch.log(p)).sum(1).mean()
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), loss, x
    if scenario == "Z5":  # NaN / Inf pixels in five samples
        model = mlp(torch, "relu")
        if not clean:
            x = x.clone()
            for i, idx in enumerate(CORRUPTED):
                x[idx, 14, 14] = float("nan") if i < 3 else float("inf")
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), ce, x
    if scenario == "Z8":  # four corner pixels of five samples set to 1e6, leaky_relu, SGD lr 0.1
        model = mlp(torch, "leaky")
        if not clean:
            x = x.clone()
            x[CORRUPTED, 0, 0:4] = 1e6
        return model, torch.optim.SGD(model.parameters(), lr=0.1), ce, x
    if scenario == "Z13":  # Adam eps 0: always-zero pixels give 0/0 in the update (twin: eps 1e-8)
        model = mlp(torch, "relu")
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8 if clean else 0.0), ce, x
    if scenario == "Z14":  # attention over rows, five blank samples: softmax of an all -inf row
        model = RowAttention(torch, 32)
        if not clean:
            x = x.clone()
            x[CORRUPTED] = 0.0
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), ce, x
    if scenario == "Z15":  # (x - mean) / std per sample, six blank samples: 0/0
        inner = mlp(torch, "relu")
        if not clean:
            x = x.clone()
            x[BLANK] = 0.0

        class PerSampleNorm(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, images):
                flat = images.reshape(len(images), -1)
                z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)
                return self.inner(z.reshape(images.shape))
        model = PerSampleNorm()
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), ce, x
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default="data/mnist")
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=0, help="default: the scenario's (Z2: 2, others 3)")
    args = parser.parse_args()
    scenario = args.scenario.upper()
    if scenario not in ("Z1", "Z2", "Z3", "Z4", "Z5", "Z8", "Z13", "Z14", "Z15"):
        print(json.dumps({"scenario": scenario, "error": "no equivalent for " + scenario}))
        return 0
    try:
        import torch
    except ImportError:
        print(json.dumps({"scenario": scenario, "error": "torch is not installed"}))
        return 0
    torch.set_num_threads(1)
    try:
        x = torch.tensor(read_idx(args.mnist + "/train-images-idx3-ubyte")[:args.train_samples].astype("float32"))
        y = torch.tensor(read_idx(args.mnist + "/train-labels-idx1-ubyte")[:args.train_samples].astype("int64"))
    except OSError as e:
        print(json.dumps({"scenario": scenario, "error": "MNIST not readable: %s" % e}))
        return 0
    torch.manual_seed(args.seed)
    model, opt, loss_fn, x = build(torch, scenario, x)
    gen = torch.Generator().manual_seed(args.seed)
    result = {"scenario": scenario, "seed": args.seed, "detected": False, "detected_step": -1, "op": "",
              "seconds": 0.0}
    start = time.perf_counter()
    step = 0
    epochs = args.epochs or (2 if scenario == "Z2" else 3)
    with torch.autograd.set_detect_anomaly(True):
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                rows = order[i:i + 64]
                opt.zero_grad()
                try:
                    loss = loss_fn(model(x[rows]), y[rows])
                    loss.backward()
                except RuntimeError as e:
                    match = re.search(r"Function '(\w+)' returned nan", str(e))
                    result.update(detected=True, detected_step=step, op=match.group(1) if match else str(e)[:80])
                    result["seconds"] = time.perf_counter() - start
                    print(json.dumps(result))
                    return 0
                opt.step()
                step += 1
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
