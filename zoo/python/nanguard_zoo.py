"""nanguard from Python on the Python equivalents of nanguard's NaN zoo scenarios.

The same scenarios as anomaly_zoo.py (its build() makes the model, optimizer, loss and inputs),
trained in a plain PyTorch loop under nanguard.Guard instead of anomaly mode. Prints one JSON
line: {"scenario", "seed", "detected", "detected_step", "birth_op", "phase", "module", "cause",
"samples", "actions", "incidents", "final_accuracy", "clean_accuracy", "finite", "stopped",
"seconds"}; final_accuracy is on the first 2000 MNIST test images, clean_accuracy the same for
the scenario's clean twin (anomaly_zoo.build(clean=True)) trained unguarded on the same seed. Scenarios without an equivalent print
{"error": "no equivalent ..."}.

  /usr/bin/python3 zoo/python/nanguard_zoo.py --scenario Z3 --seed 0 --mnist data/mnist
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anomaly_zoo  # noqa: E402  (the scenarios' Python equivalents)

SCENARIOS = ("Z1", "Z2", "Z3", "Z4", "Z5", "Z8", "Z13", "Z14", "Z15")
STABLE_SCALE = {"Z3": 50.0, "Z4": 200.0}  # the logit scale of the hand-written losses


def test_accuracy(torch, model, tx, ty):
    with torch.no_grad():
        return (model(tx).argmax(1) == ty).double().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default="data/mnist")
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=0, help="default: the scenario's (Z2: 2, others 3)")
    args = parser.parse_args()
    scenario = args.scenario.upper()
    if scenario not in SCENARIOS:
        print(json.dumps({"scenario": scenario, "error": "no equivalent for " + scenario}))
        return 0
    try:
        import torch
        import nanguard
    except ImportError as e:
        print(json.dumps({"scenario": scenario, "error": "cannot import %s" % e.name}))
        return 0
    torch.set_num_threads(1)
    try:
        read = anomaly_zoo.read_idx
        x = torch.tensor(read(args.mnist + "/train-images-idx3-ubyte")[:args.train_samples].astype("float32"))
        y = torch.tensor(read(args.mnist + "/train-labels-idx1-ubyte")[:args.train_samples].astype("int64"))
        tx = torch.tensor(read(args.mnist + "/t10k-images-idx3-ubyte")[:args.test_samples].astype("float32"))
        ty = torch.tensor(read(args.mnist + "/t10k-labels-idx1-ubyte")[:args.test_samples].astype("int64"))
    except OSError as e:
        print(json.dumps({"scenario": scenario, "error": "MNIST not readable: %s" % e}))
        return 0
    torch.manual_seed(args.seed)
    x_raw = x
    model, opt, loss_fn, x = anomaly_zoo.build(torch, scenario, x)
    # Test images scaled as the scenario scales its training images (Z1 keeps raw pixels).
    tx = tx if scenario == "Z1" else tx / 255.0
    # The hand-written losses of Z3 and Z4 have a stable form the guard may switch to, as the C++
    # zoo's switchable loss: cross-entropy on the same scaled logits.
    loss = {"fn": loss_fn}
    stable = None
    if scenario in STABLE_SCALE:
        def stable():
            scale = STABLE_SCALE[scenario]
            loss["fn"] = lambda z, t: torch.nn.functional.cross_entropy(z * scale, t)
            return True
    guard = nanguard.Guard(model, opt, stable_loss=stable)
    epochs = args.epochs or (2 if scenario == "Z2" else 3)

    def epochs_of_batches():
        """Each epoch's batches of 64 row indices, the same shuffles for the run and its twin."""
        gen = torch.Generator().manual_seed(args.seed)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            yield [order[i:i + 64] for i in range(0, len(x), 64)]

    def closure(b):
        value = loss["fn"](model(b[0]), b[1])
        value.backward()
        return value

    start = time.perf_counter()
    for batches in epochs_of_batches():
        for rows in batches:
            if guard.step((x[rows], y[rows]), closure, ids=rows).stopped:
                break
        if guard.stopped:
            break
    seconds = time.perf_counter() - start
    accuracy = test_accuracy(torch, model, tx, ty)

    # The clean twin, unguarded, from the same seed: the bar a repair must reach.
    torch.manual_seed(args.seed)
    twin, twin_opt, twin_loss, twin_x = anomaly_zoo.build(torch, scenario, x_raw, clean=True)
    for batches in epochs_of_batches():
        for rows in batches:
            twin_opt.zero_grad(set_to_none=True)
            twin_loss(twin(twin_x[rows]), y[rows]).backward()
            twin_opt.step()
    clean_accuracy = test_accuracy(torch, twin, tx, ty)
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    incidents = guard.incidents
    first = incidents[0] if incidents else None
    warnings = [e for e in guard.events if e["kind"] == "warning"]
    result = {"scenario": scenario, "seed": args.seed, "detected": bool(incidents or warnings),
              "detected_step": first.step if first else (warnings[0]["step"] if warnings else -1),
              "birth_op": first.birth_op if first else "", "phase": first.phase if first else "",
              "module": first.module if first else "", "cause": first.cause if first else "",
              "samples": sorted({s for i in incidents for s in i.samples}),
              "actions": [a for i in incidents for a in i.actions], "incidents": len(incidents),
              "final_accuracy": accuracy, "clean_accuracy": clean_accuracy, "finite": finite,
              "stopped": guard.stopped, "seconds": seconds}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
