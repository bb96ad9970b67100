"""Repairs that reach the Python optimizer and schedule: a rollback restores the model, the
optimizer state and the RNG and keeps an lr_scheduler in step; the epsilon repair writes
param_groups."""
import math

import torch

import nanguard
from conftest import MLP, blobs

BATCH = 32


def data(steps, seed=3, features=20):
    x, y = blobs(n=steps * BATCH, features=features, classes=4, seed=seed)
    return [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(steps)]


def loss_of(model, b):
    loss = torch.nn.functional.cross_entropy(model(b[0]), b[1])
    loss.backward()
    return loss


def test_rollback_restores_state_and_keeps_the_scheduler_in_step():
    steps = 30
    torch.manual_seed(0)
    model = MLP(inputs=20, hidden=16, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.8)
    guard = nanguard.Guard(model, opt, scheduler=sched, snapshot_every=5, check_state_every=1)
    outcomes = []
    for t, (x, y) in enumerate(data(steps)):
        outcomes.append(guard.step((x, y), lambda b: loss_of(model, b)).outcome)
        if t == 12:
            # Corrupts the optimizer state after an update, as a bad memory write would: the next
            # step's state check finds it and the guard rolls back to the snapshot of step 10.
            with torch.no_grad():
                opt.state[model.fc2.weight]["exp_avg_sq"][0, 0] = float("inf")
    [incident] = guard.incidents
    assert incident.failed_check == "optimizer_state"
    assert incident.actions == ["rollback", "lr_backoff", "rerun_lost_steps"]
    # Rolled back to the snapshot of step 10, re-ran the steps it lost, then applied this one.
    assert outcomes[incident.step] == "recomputed"
    assert outcomes.count("applied") == steps - 1
    assert guard.rerun_steps == incident.step - 10
    assert any(e["action"] == "rollback" and "step 10" in e["detail"] for e in guard.events)
    for p in model.parameters():
        assert torch.isfinite(p).all()
    for state in opt.state.values():
        for v in state.values():
            assert torch.isfinite(torch.as_tensor(v)).all()
    # One schedule step per loop step, whatever happened: the schedule of a clean run, times
    # whatever backoff the guard applied.
    assert sched.last_epoch == steps
    clean_lr = 1e-2 * 0.8 ** (steps // 4)
    assert math.isclose(opt.param_groups[0]["lr"], clean_lr * guard.lr_scale, rel_tol=1e-9)


def test_rollback_with_two_param_groups_keeps_each_groups_rate():
    # The guard reads every group's rate once per step and re-runs lost steps with them.
    steps = 30
    torch.manual_seed(0)
    model = MLP(inputs=20, hidden=16, classes=4)
    opt = torch.optim.Adam([{"params": model.fc1.parameters(), "lr": 1e-2},
                            {"params": model.fc2.parameters(), "lr": 4e-3}])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.8)
    guard = nanguard.Guard(model, opt, scheduler=sched, snapshot_every=5, check_state_every=1)
    for t, b in enumerate(data(steps)):
        guard.step(b, lambda b: loss_of(model, b))
        if t == 12:
            with torch.no_grad():
                opt.state[model.fc2.weight]["exp_avg_sq"][0, 0] = float("inf")
    [incident] = guard.incidents
    assert incident.actions == ["rollback", "lr_backoff", "rerun_lost_steps"]
    assert guard.rerun_steps == incident.step - 10
    decay = 0.8 ** (steps // 4)
    assert math.isclose(opt.param_groups[0]["lr"], 1e-2 * decay * guard.lr_scale, rel_tol=1e-9)
    assert math.isclose(opt.param_groups[1]["lr"], 4e-3 * decay * guard.lr_scale, rel_tol=1e-9)
    assert guard.lr_scale < 1


def test_rollback_restores_the_rng():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = nanguard.Guard(model, opt, snapshot_every=4, check_state_every=1)
    masks = {}

    def closure(b, ctx):
        out = model(b[0])
        masks.setdefault(ctx.step, []).append((ctx.run, torch.get_rng_state()))
        loss = torch.nn.functional.cross_entropy(out, b[1])
        loss.backward()
        return loss

    for t, (x, y) in enumerate(data(12)):
        guard.step((x, y), closure)
        if t == 6:
            with torch.no_grad():
                model[0].weight[0, 0] = float("nan")
    assert guard.rerun_steps >= 1
    # A step re-run after the rollback drew the same dropout masks as its first run.
    rerun = [s for s, runs in masks.items() if any(r == "rerun" for r, _ in runs)]
    assert rerun
    for s in rerun:
        first = [st for r, st in masks[s] if r == "first"][0]
        again = [st for r, st in masks[s] if r == "rerun"][0]
        assert torch.equal(first, again), s


def test_zero_epsilon_is_repaired_in_param_groups():
    torch.manual_seed(0)
    model = MLP(inputs=20, hidden=16, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=0.0)
    guard = nanguard.Guard(model, opt)
    for x, y in data(20):
        x = x.clone()
        x[:, :3] = 0  # inputs that are always 0: their first-layer weights get a gradient of exactly 0
        guard.step((x, y), lambda b: loss_of(model, b))
    causes = [i.cause for i in guard.incidents]
    assert causes and causes[0].startswith("optimizer_setting"), causes
    assert "safe_epsilon" in guard.incidents[0].actions
    assert opt.param_groups[0]["eps"] > 0
    for p in model.parameters():
        assert torch.isfinite(p).all()


def deep_sigmoid(guarded):
    """12 sigmoid layers of 32 at N(0, 1) weights in a torch.nn.Sequential (the activations run
    in modules of their own), SGD 0.1: the gradient fades over the depth from step 0."""
    torch.manual_seed(0)
    layers, width = [], 20
    for _ in range(12):
        layers += [torch.nn.Linear(width, 32), torch.nn.Sigmoid()]
        width = 32
    model = torch.nn.Sequential(*layers, torch.nn.Linear(32, 4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.normal_(0.0, 1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = nanguard.Guard(model, opt) if guarded else None
    x, y = blobs(n=96 * BATCH + 512, features=20, classes=4, seed=3, spread=2.0)
    train = [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(96)]
    test_x, test_y = x[96 * BATCH:], y[96 * BATCH:]
    for _ in range(3):
        for b in train:
            if guard is not None:
                guard.step(b, lambda batch: loss_of(model, batch))
            else:
                opt.zero_grad(set_to_none=True)
                loss_of(model, b)
                opt.step()
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    return guard, accuracy


def test_a_vanishing_start_is_reinitialised_to_fit_each_layers_activation():
    guard, accuracy = deep_sigmoid(guarded=True)
    [incident] = guard.incidents
    assert incident.cause == "bad_initialization/vanishing_start"
    assert incident.actions[:2] == ["rollback", "reinitialize"]
    [reinit] = [e for e in guard.events if e["action"] == "reinitialize"]
    # The Sigmoid modules' activations are attributed to the Linear layers before them.
    # The first Linear reads the data (gain 1); the next reads a Sigmoid module's outputs.
    assert "0.weight: orthogonal, gain 1 (" in reinit["detail"]
    assert "2.weight: orthogonal, gain 4 after its sigmoid inputs" in reinit["detail"]
    assert "bias centred for inputs starting at 0.5" in reinit["detail"]
    _, unguarded = deep_sigmoid(guarded=False)
    print("deep sigmoid accuracy: unguarded %.3f, guarded %.3f" % (unguarded, accuracy))
    assert accuracy > unguarded + 0.2, (accuracy, unguarded)

