"""Localization from Python: the op tracer sees the ops Python runs, forward hooks name the
modules, and the diagnosis names the cause."""
import logging

import pytest
import torch

import nanguard
from conftest import MLP


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def unsafe_loss(z, y):
    """The article's hand-written cross-entropy on sharpened logits: softmax underflows to 0."""
    onehot = torch.nn.functional.one_hot(y, 10).to(z.dtype)
    return -(onehot * torch.log(torch.softmax(50 * z, 1))).sum(1).mean()


def test_log_of_softmax_names_aten_log_forward_and_the_layer(caplog):
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = images()
    with torch.no_grad():
        assert not torch.isfinite(unsafe_loss(model(x[:32]), y[:32])), "precondition: the loss goes NaN"
    guard = nanguard.Guard(model, opt)

    def closure(b):
        loss = unsafe_loss(model(b[0]), b[1])
        loss.backward()
        return loss

    with caplog.at_level(logging.INFO, logger="nanguard"):
        verdict = guard.step((x[:32], y[:32]), closure)
    incident = verdict.incident
    assert incident is not None
    assert incident.birth_op == "aten::log"
    assert incident.phase == "forward"
    assert incident.module == "fc2"  # the layer whose output z the loss read
    assert incident.module_ran_in == ""  # the log itself runs in the loop's loss code
    assert incident.cause == "unsafe_loss/log_of_zero"
    assert 0 < incident.confidence <= 1
    assert "log" in incident.explanation
    assert incident.suggestion
    assert incident.actions and incident.outcome
    assert not verdict.applied
    assert any("aten::log" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # Nothing of the replay's hooks stays on the model.
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks
    d = incident.to_dict()
    assert d["birth_op"] == "aten::log" and d["module"] == "fc2" and d["cause"] == "unsafe_loss/log_of_zero"
    for p in model.parameters():
        assert torch.isfinite(p).all()


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.sqrt(self.proj(x))  # negative inputs: NaN


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(8, 8), Block())
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_incident_names_the_nested_module_path():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = nanguard.Guard(model, opt)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))

    def closure(b):
        loss = torch.nn.functional.cross_entropy(model(b[0]), b[1])
        loss.backward()
        return loss

    verdict = guard.step((x, y), closure)
    assert verdict.incident.birth_op == "aten::sqrt"
    assert verdict.incident.phase == "forward"
    assert verdict.incident.module == "encoder.1"
    assert verdict.incident.module_ran_in == "encoder.1"
    assert verdict.incident.cause.startswith("unsafe_loss/sqrt_of_negative")


def test_scope_names_a_region_of_loop_code():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = nanguard.Guard(model, opt)

    def closure(b):
        z = model(b)
        with nanguard.scope("loss"):
            loss = torch.log(torch.relu(z) * 0).mean()  # log(0) = -inf
        loss.backward()
        return loss

    verdict = guard.step(torch.randn(8, 4), closure)
    assert verdict.incident.birth_op == "aten::log"
    assert verdict.incident.module_ran_in == "loss"


def test_hooks_only_on_replays_and_sampled_steps():
    model = MLP(inputs=4, hidden=4, classes=2)
    guard = nanguard.Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), monitor_sample_every=4)
    seen = []

    def closure(b):
        seen.append(sum(len(m._forward_pre_hooks) for m in model.modules()))
        loss = model(b).sum()
        loss.backward()
        return loss

    for _ in range(6):
        assert guard.step(torch.randn(4, 4), closure).applied
    # Steps 0 and 4 are the monitor's sampled steps (activations named by module): one hook per
    # module (flatten, fc1, relu, fc2); the others run with none.
    assert seen == [4, 0, 0, 0, 4, 0]


def test_monitor_warnings_name_the_python_module():
    torch.manual_seed(0)
    model = MLP(inputs=6, hidden=8, classes=2)
    with torch.no_grad():
        model.fc1.bias.fill_(-100.0)  # every hidden unit dead
    guard = nanguard.Guard(model, torch.optim.SGD(model.parameters(), lr=0.01), divergence=False)

    def closure(b):
        loss = torch.nn.functional.cross_entropy(model(b), torch.zeros(len(b), dtype=torch.long))
        loss.backward()
        return loss

    guard.step(torch.randn(16, 6), closure)
    dead = [e for e in guard.events if e["kind"] == "warning" and e["cause"] == "dying_relu"]
    assert dead and dead[0]["module"] == "relu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_model_on_the_gpu():
    torch.manual_seed(0)
    model = MLP().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    guard = nanguard.Guard(model, opt)
    x, y = images()
    x, y = x.cuda(), y.cuda()

    def closure(b):
        loss = unsafe_loss(model(b[0]), b[1])
        loss.backward()
        return loss

    verdict = guard.step((x[:32], y[:32]), closure)
    assert verdict.incident.birth_op == "aten::log"
    assert verdict.incident.cause == "unsafe_loss/log_of_zero"


def test_stable_loss_repairs_the_unsafe_loss():
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = images(n=320)
    loss_fn = {"f": unsafe_loss}

    def switch():
        loss_fn["f"] = lambda z, t: torch.nn.functional.cross_entropy(50 * z, t)
        return True

    guard = nanguard.Guard(model, opt, stable_loss=switch)

    def closure(b):
        loss = loss_fn["f"](model(b[0]), b[1])
        loss.backward()
        return loss

    verdicts = [guard.step((x[i:i + 32], y[i:i + 32]), closure) for i in range(0, 320, 32)]
    first = verdicts[0].incident
    assert first.cause == "unsafe_loss/log_of_zero"
    assert "stable_loss" in first.actions
    assert verdicts[0].applied  # recomputed with the stable loss
    assert all(v.applied and v.incident is None for v in verdicts[1:])
    assert len(guard.incidents) == 1


def test_stable_loss_must_be_callable():
    model = MLP(inputs=4, hidden=4, classes=2)
    with pytest.raises(ValueError, match="stable_loss must be callable"):
        nanguard.Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), stable_loss="log_softmax")
