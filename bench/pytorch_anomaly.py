"""PyTorch's anomaly mode on the article's MNIST MLP: training steps with and without
torch.autograd.detect_anomaly, interleaved in blocks in one process (same model, batches by
index, Adam eps 1e-7, batch 32). Prints median step time of each and the overhead.
Usage: /usr/bin/python3 bench/pytorch_anomaly.py MNIST_DIR [ROUNDS] [STEPS_PER_BLOCK]"""
import statistics
import sys
import time
import warnings

import torch

from pytorch_epoch import read_idx


def main():
    folder = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    block = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    warnings.filterwarnings("ignore")  # anomaly mode warns once that it is slow
    x = read_idx(f"{folder}/train-images-idx3-ubyte").float().div_(255.0)
    y = read_idx(f"{folder}/train-labels-idx1-ubyte").long()

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                    torch.nn.Linear(128, 10))
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

    plain, anomaly = make(), make()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    times = {"plain": [], "anomaly": []}
    nxt = 0

    def run(name, model, opt):
        nonlocal nxt
        with torch.autograd.set_detect_anomaly(name == "anomaly"):
            for _ in range(block):
                idx = order[(nxt * 32) % 59968:(nxt * 32) % 59968 + 32]
                nxt += 1
                start = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
                loss.backward()
                opt.step()
                times[name].append(time.perf_counter() - start)

    for r in range(rounds):
        pair = [("plain", *plain), ("anomaly", *anomaly)]
        for name, model, opt in (pair if r % 2 == 0 else pair[::-1]):
            run(name, model, opt)
    mp, ma = statistics.median(times["plain"]), statistics.median(times["anomaly"])
    print(f"pytorch step:                 median {mp * 1e6:.1f} us ({len(times['plain'])} steps)")
    print(f"pytorch step, anomaly mode:   median {ma * 1e6:.1f} us ({len(times['anomaly'])} steps)")
    print(f"anomaly mode overhead: {(ma / mp - 1) * 100:+.2f}% of the median step")


if __name__ == "__main__":
    main()
