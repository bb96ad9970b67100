"""NaN in three training samples: the incident blames exactly their ids, the guard quarantines
them, a DataLoader with QuarantineSampler stops drawing them, and the run ends where the clean
run ends."""
import torch

import nanguard
from conftest import MLP, accuracy, blobs

BAD = [17, 230, 401]


def train(x, y, epochs=3, guarded=True):
    torch.manual_seed(0)
    model = MLP(inputs=x.shape[1], hidden=32, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = nanguard.with_ids(torch.utils.data.TensorDataset(x, y))
    guard = nanguard.Guard(model, opt) if guarded else None
    sampler = nanguard.QuarantineSampler(data, guard, seed=1)
    loader = torch.utils.data.DataLoader(data, batch_size=32, sampler=sampler)
    drawn = []

    def closure(b):
        loss = torch.nn.functional.cross_entropy(model(b[0]), b[1])
        loss.backward()
        return loss

    for _ in range(epochs):
        epoch = []
        for batch in loader:
            assert isinstance(batch, nanguard.IdSample)
            epoch.extend(batch.id.tolist())
            if guard is not None:
                guard.step(batch, closure)
            else:
                opt.zero_grad(set_to_none=True)
                closure(batch.sample)
                opt.step()
        drawn.append(epoch)
    return model, guard, sampler, drawn


def test_nan_samples_are_blamed_by_id_and_quarantined():
    x, y = blobs(n=640, features=20, classes=4, seed=5)
    clean_model, _, _, _ = train(x, y, guarded=False)
    dirty = x.clone()
    dirty[BAD[0], 3] = float("nan")
    dirty[BAD[1]] = float("nan")
    dirty[BAD[2], 0] = float("nan")
    model, guard, sampler, drawn = train(dirty, y)

    assert guard.incidents
    blamed = sorted({s for i in guard.incidents for s in i.samples})
    assert blamed == BAD
    for incident in guard.incidents:
        assert incident.cause == "bad_input_data"
        assert incident.phase == "input"
        assert "quarantine_samples" in incident.actions
    assert guard.quarantined == BAD
    # Epochs after the quarantine do not draw the samples.
    assert not set(BAD) & set(drawn[-1])
    assert len(sampler) == len(x) - len(BAD)
    assert len(drawn[-1]) == len(x) - len(BAD)
    for p in model.parameters():
        assert torch.isfinite(p).all()
    # Held-out samples of the same clusters (blobs draws the centers first from its seed).
    test_x, test_y = blobs(n=2000, features=20, classes=4, seed=5)
    test_x, test_y = test_x[640:], test_y[640:]
    assert abs(accuracy(model, test_x, test_y) - accuracy(clean_model, test_x, test_y)) <= 0.01


def test_ids_passed_to_step_and_dict_batches():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = nanguard.Guard(model, opt)
    x = torch.randn(8, 6)
    x[5, 2] = float("inf")
    y = torch.randint(0, 2, (8,))
    seen = []

    def closure(b):
        seen.append(b["target"].shape[0])
        loss = torch.nn.functional.cross_entropy(model(b["input"]), b["target"])
        loss.backward()
        return loss

    verdict = guard.step({"input": x, "target": y}, closure, ids=list(range(100, 108)))
    assert verdict.incident.samples == [105]
    assert guard.quarantined == [105]
    assert verdict.outcome == "skipped"  # the update of a batch with a NaN sample is dropped
    assert "quarantine_samples" in verdict.incident.actions
    # A later batch holding the quarantined id loses that row before the closure sees it.
    verdict = guard.step({"input": torch.randn(4, 6), "target": torch.zeros(4, dtype=torch.long)}, closure,
                         ids=torch.tensor([104, 105, 106, 107]))
    assert verdict.applied and seen[-1] == 3
