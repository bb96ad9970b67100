"""The article's MLP on MNIST in a plain PyTorch loop under nanguard, three ways:

  clean      the guarded loop on clean data (the reference accuracy)
  nan3       NaN written into 3 training samples: which ids the incidents blame, what was
             quarantined, and the final test accuracy against the clean run's
  log_loss   the hand-written loss -(y * log(softmax(50 z))).sum(1).mean(): the first incident's
             birth op, phase, module and cause (every step it poisons is skipped until the budget
             stops the run); log_loss_stable: the same with Guard(stable_loss=...), which lets the
             guard switch to cross_entropy(50 z)

    /usr/bin/python3 bench/python_mnist.py --mnist data/mnist [--epochs 3]

Flatten, Linear 784-128 relu, Linear 10 (Glorot init), Adam 1e-3 (eps 1e-7), batch 32, pixels
scaled to [0, 1]; batches from a DataLoader over nanguard.with_ids(...) with a QuarantineSampler.
"""
import argparse
import json
import os
import sys
import time

import torch

import nanguard

BAD = [7, 123, 345]


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
    offset = 4 + 4 * len(dims)
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(dims)


class ArticleMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = torch.nn.Flatten()
        self.dense = torch.nn.Linear(784, 128)
        self.relu = torch.nn.ReLU()
        self.logits = torch.nn.Linear(128, 10)
        for m in (self.dense, self.logits):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.logits(self.relu(self.dense(self.flatten(x))))


def unsafe_loss(z, y):
    onehot = torch.nn.functional.one_hot(y, 10).to(z.dtype)
    return -(onehot * torch.log(torch.softmax(50 * z, 1))).sum(1).mean()


def train(x, y, test_x, test_y, epochs, loss_fn, stable=None):
    torch.manual_seed(0)
    model = ArticleMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss = {"fn": loss_fn}

    def switch():  # the stable_loss repair: the same loss written stably
        loss["fn"] = stable
        return True

    guard = nanguard.Guard(model, opt, stable_loss=switch if stable else None)
    data = nanguard.with_ids(torch.utils.data.TensorDataset(x, y))
    loader = torch.utils.data.DataLoader(data, batch_size=32, sampler=nanguard.QuarantineSampler(data, guard, seed=1))

    def closure(b):
        value = loss["fn"](model(b[0]), b[1])
        value.backward()
        return value

    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            if guard.step(batch, closure).stopped:
                break
        if guard.stopped:
            break
    with torch.no_grad():
        acc = (model(test_x).argmax(1) == test_y).double().mean().item()
    return guard, acc, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default="data/mnist")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    x = read_idx(os.path.join(args.mnist, "train-images-idx3-ubyte")).float().div_(255.0)
    y = read_idx(os.path.join(args.mnist, "train-labels-idx1-ubyte")).long()
    test_x = read_idx(os.path.join(args.mnist, "t10k-images-idx3-ubyte")).float().div_(255.0)
    test_y = read_idx(os.path.join(args.mnist, "t10k-labels-idx1-ubyte")).long()
    ce = torch.nn.functional.cross_entropy
    results = {}

    guard, clean_acc, secs = train(x, y, test_x, test_y, args.epochs, ce)
    results["clean"] = {"test_accuracy": clean_acc, "incidents": len(guard.incidents), "seconds": secs}

    dirty = x.clone()
    dirty[BAD[0], 14, 14] = float("nan")
    dirty[BAD[1]] = float("nan")
    dirty[BAD[2], 3, 3] = float("nan")
    guard, acc, secs = train(dirty, y, test_x, test_y, args.epochs, ce)
    blamed = sorted({s for i in guard.incidents for s in i.samples})
    results["nan3"] = {"nan_ids": BAD, "blamed": blamed, "quarantined": guard.quarantined,
                       "causes": sorted({i.cause for i in guard.incidents}), "incidents": len(guard.incidents),
                       "test_accuracy": acc, "clean_accuracy": clean_acc,
                       "within_1_point": abs(acc - clean_acc) <= 0.01, "seconds": secs}

    for name, stable in (("log_loss", None), ("log_loss_stable", lambda z, t: ce(50 * z, t))):
        guard, acc, secs = train(x, y, test_x, test_y, args.epochs, unsafe_loss, stable)
        first = guard.incidents[0] if guard.incidents else None
        results[name] = {"birth_op": first.birth_op if first else "", "phase": first.phase if first else "",
                         "module": first.module if first else "", "cause": first.cause if first else "",
                         "step": first.step if first else -1, "actions": first.actions if first else [],
                         "incidents": len(guard.incidents), "summary": guard.summary(), "test_accuracy": acc,
                         "seconds": secs}

    print("python_mnist: the article's MLP, %d epochs, PyTorch %s" % (args.epochs, torch.__version__))
    for k, v in results.items():
        print(k, json.dumps(v))
    ok = (results["nan3"]["blamed"] == BAD and results["nan3"]["within_1_point"]
          and results["log_loss"]["birth_op"] == "aten::log" and results["log_loss"]["phase"] == "forward"
          and results["log_loss"]["module"] == "logits" and results["log_loss"]["cause"] == "unsafe_loss/log_of_zero")
    print("done-when checks:", "pass" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
