"""The article's MNIST MLP in PyTorch eager, the same way nanguard trains it: data in one
in-memory tensor, batches gathered by index, Glorot-uniform init, Adam(lr=1e-3, eps=1e-7),
batch 32, cross-entropy through log-softmax. Prints one line per epoch: "epoch_seconds <s>".
Usage: /usr/bin/python3 bench/pytorch_epoch.py MNIST_DIR EPOCHS"""
import struct
import sys
import time

import torch


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return torch.frombuffer(bytearray(data[4 + 4 * rank:]), dtype=torch.uint8).reshape(dims)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def article_mlp(log_softmax=False):
    """The article's MLP with Keras's initialisation (Glorot-uniform weights, zero biases);
    log_softmax=True ends it in LogSoftmax, for nll_loss."""
    layers = [torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)]
    if log_softmax:
        layers.append(torch.nn.LogSoftmax(dim=1))
    model = torch.nn.Sequential(*layers)
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return model


def main():
    folder, epochs = sys.argv[1], int(sys.argv[2])
    x = read_idx(f"{folder}/train-images-idx3-ubyte").float().div_(255.0)
    y = read_idx(f"{folder}/train-labels-idx1-ubyte").long()
    torch.manual_seed(0)
    model = article_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    n = x.shape[0]
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(n, generator=g)
        start = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64)
        for b in range(0, n, 32):
            idx = order[b:b + 32]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        seconds = time.perf_counter() - start
        print(f"epoch_seconds {seconds} loss {total.item() / n}", flush=True)


if __name__ == "__main__":
    main()
