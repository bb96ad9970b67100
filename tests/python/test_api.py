"""The package's surface: version and docstrings, the check/apply API, closures that raise,
write_report, and a clear error for every bad argument."""
import functools
import json
import math
import os
import weakref

import pytest
import torch

import nanguard


def small():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def ce(model):
    def closure(b):
        loss = torch.nn.functional.cross_entropy(model(b[0]), b[1])
        loss.backward()
        return loss
    return closure


def test_version_and_docstrings():
    assert isinstance(nanguard.__version__, str) and nanguard.__version__.count(".") == 2
    for obj in (nanguard, nanguard.Guard, nanguard.Guard.step, nanguard.Guard.check, nanguard.Guard.apply,
                nanguard.Incident, nanguard.with_ids, nanguard.QuarantineSampler, nanguard.scope):
        assert obj.__doc__ and len(obj.__doc__.strip()) > 20, obj
    assert issubclass(nanguard.TrainingStopped, RuntimeError)


def test_check_apply_api_with_a_transient_nan():
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    kinds = []
    for t in range(6):
        b = guard.begin_step(batch(seed=t), closure=ce(model))
        loss = torch.nn.functional.cross_entropy(model(b[0]), b[1])
        loss.backward()
        if t == 3:
            model[0].bias.grad[0] = float("inf")
        d = guard.check(loss)
        kinds.append(d.kind)
        if d.kind == "incident":
            assert d.incident.cause == "transient_fault"
            assert d.plan
        v = guard.apply(d)
        assert v.applied or v.skipped
    assert kinds == ["update", "update", "update", "incident", "update", "update"]
    assert guard.steps == 6 and len(guard.incidents) == 1


def test_check_apply_without_closure_diagnoses_from_evidence():
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    x, y = batch()
    x[2, 1] = float("nan")
    b = guard.begin_step((x, y), ids=list(range(8)))
    loss = torch.nn.functional.cross_entropy(model(b[0]), b[1])
    loss.backward()
    d = guard.check(loss)
    assert d.kind == "incident" and d.incident.samples == [2]
    assert "quarantine_samples" in d.plan
    v = guard.apply(d)
    assert v.outcome == "skipped"
    assert v.incident.actions[0] == "quarantine_samples"
    assert guard.quarantined == [2]
    for p in model.parameters():
        assert torch.isfinite(p).all()


def test_exception_from_an_op_on_nan_is_an_incident():
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    x, y = batch()
    x[0] = float("nan")

    def closure(b):
        p = torch.sigmoid(model(b[0])[:, 0])
        loss = torch.nn.functional.binary_cross_entropy(p, (b[1] > 0).float())  # raises on NaN
        loss.backward()
        return loss

    verdict = guard.step((x, y), closure, ids=list(range(8)))
    assert verdict.incident is not None
    assert verdict.incident.failed_check == "exception"
    assert verdict.incident.samples == [0]


def test_other_exceptions_pass_through_unchanged():
    model, opt = small()
    guard = nanguard.Guard(model, opt)

    class Mine(Exception):
        pass

    def closure(b):
        raise Mine("from the loop")

    with pytest.raises(Mine, match="from the loop"):
        guard.step(batch(), closure)
    # The guard is usable afterwards.
    assert guard.step(batch(), ce(model)).applied


def test_write_report_writes_the_cli_run_folder(tmp_path):
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    history = []
    for epoch in range(2):
        for t in range(4):
            x, y = batch(seed=epoch * 4 + t)
            if epoch == 1 and t == 2:
                x[1, 0] = float("nan")
            guard.step((x, y), ce(model), ids=list(range(t * 8, t * 8 + 8)))
        history.append({"loss": 1.0 / (epoch + 1), "accuracy": 0.5 + 0.1 * epoch})
    out = tmp_path / "run"
    html = guard.write_report(out, history=history, name="py-run", seed=0)
    assert os.path.exists(html) and html.endswith("report.html")
    for f in ("events.jsonl", "summary.json", "history.csv", "report.html"):
        assert (out / f).exists(), f
    lines = [json.loads(l) for l in (out / "events.jsonl").read_text().splitlines()]
    assert [l["kind"] for l in lines] == [e["kind"] for e in guard.events]
    assert lines[0]["kind"] == "incident" and lines[0]["samples"] == [17]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == "py-run" and summary["seed"] == 0 and summary["front_end"] == "python"
    assert summary["guard"]["incidents"] == 1 and summary["epochs"] == 2
    text = (out / "report.html").read_text()
    assert "py-run" in text and "bad_input_data" in text


BAD_GUARDS = [
    (lambda m, o: nanguard.Guard("model", o), "model must be a torch.nn.Module"),
    (lambda m, o: nanguard.Guard(m, "sgd"), "optimizer must be a torch.optim.Optimizer"),
    (lambda m, o: nanguard.Guard(m, o, snapshot_evry=10), "unknown option 'snapshot_evry'"),
    (lambda m, o: nanguard.Guard(m, o, snapshot_every="10"), "snapshot_every must be an int, got str"),
    (lambda m, o: nanguard.Guard(m, o, replay=1), "replay must be a bool, got int"),
    (lambda m, o: nanguard.Guard(m, o, lr_factor="x"), "lr_factor must be a number"),
    (lambda m, o: nanguard.Guard(m, o, snapshot_capacity=0), "snapshot_capacity must be >= 1"),
    (lambda m, o: nanguard.Guard(m, o, lr_factor=2.0), "lr_factor"),
    (lambda m, o: nanguard.Guard(m, o, scheduler=object()), "scheduler must be a torch.optim.lr_scheduler"),
    (lambda m, o: nanguard.Guard(m, torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)),
     "not a trainable parameter of the model"),
    (lambda m, o: nanguard.Guard(torch.nn.ReLU(), o), "no parameter that requires grad"),
]


@pytest.mark.parametrize("make,message", BAD_GUARDS)
def test_bad_construction_is_a_value_error(make, message):
    model, opt = small()
    with pytest.raises(ValueError, match=message):
        make(model, opt)


def test_bad_step_arguments_are_value_errors(tmp_path):
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    x, y = batch()
    with pytest.raises(ValueError, match="closure must be callable"):
        guard.step((x, y), "loss")
    with pytest.raises(ValueError, match="must hold a tensor"):
        guard.step(["a", "b"], ce(model))
    with pytest.raises(ValueError, match="one id per sample: 8 samples"):
        guard.step((x, y), ce(model), ids=[1, 2, 3])
    with pytest.raises(ValueError, match="ids must be integers"):
        guard.step((x, y), ce(model), ids=torch.zeros(8))
    with pytest.raises(ValueError, match="return the loss as a tensor, got float"):
        guard.step((x, y), lambda b: 1.0)
    with pytest.raises(ValueError, match="call begin_step"):
        guard.check(torch.tensor(1.0))
    with pytest.raises(ValueError, match="expected the Decision"):
        guard.apply("update")
    with pytest.raises(ValueError, match=r"history\[0\] must be a dict"):
        guard.write_report(tmp_path / "r", history=[1.0])
    with pytest.raises(ValueError, match="must be JSON"):
        guard.write_report(tmp_path / "r", note=float("nan"))
    with pytest.raises(ValueError, match="with_ids: the dataset must have __getitem__"):
        nanguard.with_ids(3)
    with pytest.raises(ValueError, match="QuarantineSampler: data_source"):
        nanguard.QuarantineSampler("x")
    with pytest.raises(ValueError, match="scope: the name"):
        nanguard.scope("")
    # The guard still trains after every refused call.
    assert guard.step((x, y), ce(model)).applied


def test_io_errors_are_runtime_errors(tmp_path):
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    guard.step(batch(), ce(model))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="file"):
        guard.write_report(blocker / "run")


def test_verdict_and_summary():
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    v = guard.step(batch(), ce(model))
    assert v.outcome == "applied" and math.isfinite(v.loss) and v.incident is None
    assert "1 steps, 1 applied" in guard.summary()


def test_closure_context_is_passed_to_two_required_parameters_only():
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    got = []

    def with_ctx(b, ctx):
        got.append(ctx.run)
        return ce(model)(b)

    def with_default(b, m=model):  # the second parameter is not the context
        got.append(m is model)
        return ce(m)(b)

    class Loop:
        def closure(self, b):
            got.append("method")
            return ce(model)(b)

    guard.step(batch(), with_ctx)
    guard.step(batch(), with_default)
    guard.step(batch(), Loop().closure)
    guard.step(batch(), lambda b, ctx: (got.append(ctx.step), ce(model)(b))[1])
    # A callable that is not a function: asked each time, here both ways in turn.
    guard.step(batch(), functools.partial(lambda tag, b: (got.append(tag), ce(model)(b))[1], "partial"))
    guard.step(batch(), functools.partial(lambda b, ctx: (got.append(ctx.run), ce(model)(b))[1]))
    guard.step(batch(), with_ctx)  # the same code as the first step's, after others
    assert got == ["first", True, "method", 3, "partial", "first", "first"]


def test_closures_made_each_step_are_not_kept():
    # A new partial (or lambda with defaults) each step, holding a tensor of its own: the guard
    # remembers whether such closures take a context without keeping them or what they hold.
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    alive = []
    for t in range(40):
        extra = torch.zeros(1000)
        alive.append(weakref.ref(extra))
        if t % 2:
            closure = functools.partial(lambda e, b: ce(model)(b) + 0 * e.sum(), extra)
        else:
            closure = lambda b, e=extra: ce(model)(b) + 0 * e.sum()  # noqa: E731
        guard.step(batch(seed=t), closure)
        del extra, closure
    held = [t for t, r in enumerate(alive) if r() is not None]
    assert held in ([], [39]), held


@pytest.mark.parametrize("snapshot_every", [0, 10])
def test_batches_no_replay_can_reach_are_let_go(snapshot_every):
    # The front end keeps each step's batch for replays and re-runs, only while the guard's own
    # memory of batches reaches it: without periodic snapshots, the last two.
    model, opt = small()
    guard = nanguard.Guard(model, opt, snapshot_every=snapshot_every)
    alive = []
    for t in range(100):
        x, y = batch(seed=t)
        alive.append(weakref.ref(x))
        guard.step((x, y), ce(model))
        del x, y
    held = [i for i, r in enumerate(alive) if r() is not None]
    assert len(held) <= (18 if snapshot_every == 0 else 27), held
    assert held and held[-1] == 99


def test_a_guard_held_by_its_own_loop_object_is_collected():
    # The closure is the loop's bound method: loop -> guard -> (C++) -> closure -> loop is a
    # cycle only Python's collector can break, so the C++ side must not hold the closure.
    import gc

    class Loop:
        def __init__(self):
            self.model, self.opt = small()
            self.guard = nanguard.Guard(self.model, self.opt)

        def closure(self, b):
            loss = torch.nn.functional.cross_entropy(self.model(b[0]), b[1])
            loss.backward()
            return loss

    loop = Loop()
    for t in range(3):
        loop.guard.step(batch(seed=t), loop.closure)
    model = weakref.ref(loop.model)
    del loop
    gc.collect()
    assert model() is None


def test_a_negative_view_loss_keeps_its_sign():
    model, opt = small()
    guard = nanguard.Guard(model, opt)
    x, y = batch()

    def closure(b):
        s = model(b[0]).sum()
        loss = torch.complex(s, s).conj().imag  # -s, as a float32 view with the neg bit
        loss.backward()
        return loss

    with torch.no_grad():
        expected = -model(x).sum().item()
    verdict = guard.step((x, y), closure)
    assert math.isclose(verdict.loss, expected, rel_tol=1e-6)
