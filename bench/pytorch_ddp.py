"""PyTorch's own DistributedDataParallel on the article's MNIST MLP, 2 processes on loopback (gloo):
the reference for bench_dist_overhead's data-parallel step.

Flatten, Linear 784-128 relu, Linear 10 with log-softmax and nll_loss (sparse categorical
cross-entropy), Glorot-uniform weights and zero biases from seed 0 (DDP broadcasts rank 0's),
Adam(lr=1e-3, eps=1e-7), batch 32 per rank: global batch i of one shuffled order (64 samples) is
split in two and each rank trains on its half, as nanguard's BatchLoader::set_shard does. Steps
run in blocks (a barrier starts each, as in bench_dist_overhead), after one unrecorded block.
A step is zero_grad, forward, backward (DDP all-reduces the gradients during it), optimizer step.
Prints every rank's median step time; the line starting "row\\t" is for bench/dist_overhead.sh.

    /usr/bin/python3 bench/pytorch_ddp.py --mnist data/mnist [--rounds 20 --block 50 --threads 1]
"""
import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_epoch import article_mlp, cpu_model, read_idx  # noqa: E402  (the benchmarks' model, MNIST reader, CPU name)

WORLD = 2
BATCH = 32


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, port, args):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    x = read_idx(os.path.join(args.mnist, "train-images-idx3-ubyte")).float().div_(255.0)
    y = read_idx(os.path.join(args.mnist, "train-labels-idx1-ubyte")).long()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(article_mlp(log_softmax=True))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    steps_per_epoch = len(x) // (WORLD * BATCH)
    nll = torch.nn.functional.nll_loss
    times = []
    pos = 0

    def run_block(record):
        nonlocal pos
        dist.barrier()
        for _ in range(args.block):
            i = pos % steps_per_epoch
            pos += 1
            rows = order[i * WORLD * BATCH + rank * BATCH:i * WORLD * BATCH + (rank + 1) * BATCH]
            xb, yb = x.index_select(0, rows), y.index_select(0, rows)  # outside the timed region
            t0 = time.perf_counter_ns()
            opt.zero_grad(set_to_none=True)
            loss = nll(model(xb), yb)
            loss.backward()
            opt.step()
            t1 = time.perf_counter_ns()
            if record:
                times.append((t1 - t0) / 1e3)

    run_block(record=False)
    for _ in range(args.rounds):
        run_block(record=True)
    dist.barrier()
    q = statistics.quantiles(times, n=10)
    stats = torch.zeros(WORLD, 3, dtype=torch.float64)
    stats[rank] = torch.tensor([statistics.median(times), q[0], q[-1]], dtype=torch.float64)
    dist.all_reduce(stats)
    # The replicas must still agree (DDP keeps them in step).
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    spread = flat.clone()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    same = bool(torch.equal(spread, flat))
    agree = torch.tensor([1 if same else 0])
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)
    if rank == 0:
        print("pytorch_ddp: the article's MLP, Adam 1e-3, batch %d per rank, %d ranks on loopback (gloo), "
              "%d thread(s) per rank, PyTorch %s, %s" % (BATCH, WORLD, args.threads, torch.__version__, cpu_model()))
        print("  %d rounds x %d steps (after one unrecorded block); %d recorded steps per rank"
              % (args.rounds, args.block, len(times)))
        print("  (d) PyTorch DDP        " + "".join(
            "  rank %d: median %7.1f us (p10 %7.1f, p90 %7.1f)" % (r, *stats[r].tolist()) for r in range(WORLD)))
        print("  checks: ranks hold the same weights: %s" % ("yes" if agree.item() else "NO"))
        print("row\t(d) PyTorch DDP\t" + "\t".join("%.1f" % stats[r, 0].item() for r in range(WORLD)), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default="data/mnist")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=50, help="steps per block")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads of each rank")
    args = parser.parse_args()
    args.mnist = os.path.abspath(args.mnist)
    mp.spawn(worker, args=(free_port(), args), nprocs=WORLD, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
