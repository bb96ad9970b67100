"""nanguard: keeps PyTorch training finite.

The guard checks every step at the cost of one pass over the gradients and one host sync. When a
loss or gradient goes NaN or Inf, it replays the step under an op tracer to find the op that
created the first non-finite value (``aten::log`` in module ``fc2``, phase ``forward``),
diagnoses the cause (bad input samples, an unsafe loss, a learning rate too high, ...) and
repairs the run: skips the update, quarantines the samples, rolls back to a snapshot, backs off
the learning rate. The same C++ guard as nanguard's command-line tool and LibTorch API.

    import nanguard
    guard = nanguard.Guard(model, optimizer)
    for batch in loader:
        verdict = guard.step(batch, lambda b: compute_loss_and_backward(b))
        if verdict.incident:
            print(verdict.incident.summary)
        if verdict.stopped:
            break

The closure computes the loss and runs backward; it must not call zero_grad or the optimizer's
step (the guard does both), and it may run more than once for one batch (a replay, a recompute,
the re-run of a step a rollback lost).

Errors: ValueError for bad arguments, RuntimeError for I/O and internal errors
(nanguard.TrainingStopped, a RuntimeError, when the guard has stopped a run on purpose).
"""
import torch  # noqa: F401  (first: the extension uses torch's tensor types)

from . import _nanguard
from ._data import IdDataset, IdSample, QuarantineSampler, with_ids
from ._guard import Decision, Guard, Incident, StepContext, Verdict, scope

__version__ = _nanguard.__version__
TrainingStopped = _nanguard.TrainingStopped

__all__ = [
    "Decision",
    "Guard",
    "IdDataset",
    "IdSample",
    "Incident",
    "QuarantineSampler",
    "StepContext",
    "TrainingStopped",
    "Verdict",
    "scope",
    "with_ids",
    "__version__",
]
