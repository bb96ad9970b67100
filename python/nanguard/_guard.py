"""The Guard for Python loops, over the C++ guard in _nanguard.

How a Python step reaches the C++ guard: the guard's batch is (x, rows, ids) where x is the
batch's input tensor (its first floating tensor: the one whose rows the guard screens for NaN and
outliers), rows the row positions 0..n-1 and ids the samples' dataset ids. When the guard drops
quarantined samples it drops their rows, and the closure wrapper takes the same rows from every
tensor of the Python batch. Batches are remembered by the guard's step, so a replay or the
re-run of a step a rollback lost gets the batch of that step.

The step's common path runs in C++ (_nanguard's Guard.step and begin_step: finding x, keeping
the batch, calling the closure); it calls back into this class for the rest: _prepare (other
batches, ids), _closure_wants_context, _take_rows (quarantined rows), _call_closure (closures
that take a StepContext, and runs that name modules) and _step_scheduler.
"""
import copy
import functools
import inspect
import json
import logging
import os
import weakref

import torch

from . import _nanguard as _core
from ._data import IdSample

_log = logging.getLogger("nanguard")

_SNAPSHOT_TOKENS_KEPT = 16  # scheduler states kept for snapshots, besides the first one


class StepContext:
    """Which run of a step's closure this is.

    run: 'first' (the step as the loop gives it), 'replay' (re-run under the op tracer to
    localize an incident; its update is not kept), 'recompute' (re-run from the pre-step state
    as a repair) or 'rerun' (a step a rollback lost, re-run with the repaired settings).
    step: the guard's step the batch belongs to. traced: the op tracer records this run."""

    __slots__ = ("run", "step", "traced")

    def __init__(self, run, step, traced):
        self.run = run
        self.step = step
        self.traced = traced

    def __repr__(self):
        return "StepContext(run=%r, step=%d, traced=%r)" % (self.run, self.step, self.traced)


class Incident:
    """A failed check with its localization, diagnosis and the repairs applied.

    birth_op: the op that created the first non-finite value ('aten::log'; '' when none did:
      the values came in with the batch, the parameters or the optimizer state).
    phase: 'forward', 'backward', 'optimizer' or 'input'.
    module: the module path of the birth op ('encoder.layers.2.attn'). For an op of loss code
      written outside every module, the module that ran last before it: the layer whose output
      the loss read. module_ran_in is the module the op itself ran in ('' for loss code).
    samples: dataset ids blamed. cause: 'unsafe_loss/log_of_zero', ... with its confidence in
    [0, 1], explanation and suggestion; causes: every cause considered, best first.
    actions: the repair actions applied, outcome: their result ('skipped', 'rolled_back', ...).
    """

    def __init__(self, record):
        self._record = dict(record)
        self.step = record["step"]
        self.birth_op = record["birth_op"]
        self.phase = record["phase"]
        self.module_ran_in = record["birth_module"]
        self.module = self.module_ran_in or _input_module(record)
        self.backward_node = record["backward_node"]
        self.samples = list(record["samples"])
        self.cause = record["cause"]
        self.confidence = record["confidence"]
        self.explanation = record["explanation"]
        self.suggestion = record["suggestion"]
        self.causes = [dict(c) for c in record["causes"]]
        self.actions = list(record["actions"])
        self.outcome = record["outcome"]
        self.failed_check = record["failed_check"]
        self.birth_reason = record["birth_reason"]
        self.summary = record["summary"]

    def to_dict(self):
        """Every field as plain Python values (JSON-serialisable)."""
        d = copy.deepcopy(self._record)
        d["module"] = self.module
        d["module_ran_in"] = self.module_ran_in
        del d["birth_module"]
        return d

    def __repr__(self):
        where = self.birth_op or "no op"
        if self.module:
            where += " in " + self.module
        return "Incident(step=%d, cause=%r, %s, phase=%r, samples=%r)" % (
            self.step, self.cause, where, self.phase, self.samples)

    def __str__(self):
        return self.summary


def _input_module(record):
    """For a forward birth outside every module: the module of the latest op before it."""
    if record["phase"] != "forward" or not record["birth_op"]:
        return ""
    for op in reversed(record["preceding_ops"]):
        if op["module"] and op["phase"] == "forward":
            return op["module"]
    return ""


class Verdict:
    """What became of one step: outcome 'applied', 'skipped', 'rolled_back', 'recomputed' or
    'stopped'; loss: the applied step's loss (NaN when none); incident: an Incident or None."""

    __slots__ = ("outcome", "loss", "incident")

    def __init__(self, outcome, loss, incident):
        self.outcome = outcome
        self.loss = loss
        self.incident = incident

    @property
    def applied(self):
        return self.outcome in ("applied", "recomputed")

    @property
    def skipped(self):
        return self.outcome == "skipped"

    @property
    def stopped(self):
        return self.outcome == "stopped"

    def __repr__(self):
        return "Verdict(outcome=%r, loss=%r, incident=%r)" % (self.outcome, self.loss, self.incident)


class Decision:
    """What check() decided: kind 'update' (healthy), 'incident' (repair with plan) or 'skip'.
    Pass it to apply()."""

    __slots__ = ("_decision", "_incident")

    def __init__(self, decision):
        self._decision = decision
        self._incident = None

    @property
    def kind(self):
        return self._decision.kind

    @property
    def step(self):
        return self._decision.step

    @property
    def loss(self):
        return self._decision.loss

    @property
    def grad_norm(self):
        return self._decision.grad_norm

    @property
    def plan(self):
        return self._decision.plan

    @property
    def incident(self):
        """The incident, investigated and diagnosed (its actions are filled in by apply())."""
        if self._incident is None:
            record = self._decision.incident
            self._incident = Incident(record) if record is not None else None
        return self._incident

    def __repr__(self):
        return "Decision(kind=%r, step=%d, loss=%r, plan=%r)" % (self.kind, self.step, self.loss, self.plan)


class _Scopes:
    """The module path the op tracer attributes ops to, set by forward hooks during replays."""

    def __init__(self):
        self.stack = []

    def enter(self, name, *_):
        self.stack.append(name)
        _core.set_scope(name)

    def leave(self, *_):
        if self.stack:
            self.stack.pop()
        _core.set_scope(self.stack[-1] if self.stack else None)

    def reset(self):
        self.stack.clear()
        _core.set_scope(None)


_scopes = _Scopes()


class scope:
    """Attributes the ops of a with-block to a named region (nested in the module that runs):

        with nanguard.scope("loss"):
            loss = my_loss(z, y)

    Outside a replay the op tracer is off and the name only costs a push and a pop."""

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError("nanguard.scope: the name must be a non-empty string, got %r" % (name,))
        self.name = name

    def __enter__(self):
        parent = _scopes.stack[-1] if _scopes.stack else ""
        _scopes.enter(parent + "." + self.name if parent else self.name)
        return self

    def __exit__(self, *_):
        _scopes.leave()
        return False


def _wants_context(fn):
    """Whether the closure takes (batch, ctx) rather than (batch): two required positional
    parameters (a second one with a default value, `lambda b, m=model: ...`, is not the context)."""
    code = getattr(fn, "__code__", None)
    if code is not None and getattr(fn, "__defaults__", 0) != 0:  # a plain function or lambda
        required = code.co_argcount - len(fn.__defaults__ or ()) - (1 if inspect.ismethod(fn) else 0)
        return required >= 2
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [p for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is inspect.Parameter.empty]
    return len(required) >= 2


def _primary(batch):
    """The batch's first floating tensor with a sample dimension (else its first tensor)."""
    # The common batches first: a tensor, or (x, y) with x a floating tensor.
    head = batch[0] if type(batch) in (tuple, list) and batch else batch
    if type(head) in (torch.Tensor, torch.nn.Parameter) and head.dim() > 0 and head.is_floating_point():
        return head
    first = None
    stack = [batch]
    while stack:
        item = stack.pop(0)
        if isinstance(item, torch.Tensor):
            if item.dim() == 0:
                continue
            if item.is_floating_point():
                return item
            if first is None:
                first = item
        elif isinstance(item, dict):
            stack[0:0] = list(item.values())
        elif isinstance(item, (tuple, list)):
            stack[0:0] = list(item)
    return first


def _take(batch, rows, n):
    """The rows of every part of the batch whose first dimension is the sample's."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() >= 1 and batch.shape[0] == n:
            return batch.index_select(0, rows.to(batch.device))
        return batch
    if isinstance(batch, dict):
        return type(batch)((k, _take(v, rows, n)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_take(v, rows, n) for v in batch))
    if isinstance(batch, (tuple, list)):
        if len(batch) == n and not any(isinstance(v, (torch.Tensor, dict, tuple, list)) for v in batch):
            return type(batch)(batch[i] for i in rows.tolist())  # per-sample plain values
        return type(batch)(_take(v, rows, n) for v in batch)
    return batch


class Guard:
    """Guards a PyTorch training loop: detects, localizes, diagnoses and repairs NaN, Inf and
    divergence.

        guard = nanguard.Guard(model, optimizer, scheduler=None, **options)
        verdict = guard.step(batch, closure)        # closure(batch) or closure(batch, ctx)

    model: a torch.nn.Module (its trainable parameters and buffers are snapshotted; forward hooks
    on its modules name them in incidents, installed only for replays and the monitor's sampled
    steps). optimizer: any
    torch.optim.Optimizer over the model's parameters whose state is tensors (SGD, Adam, AdamW,
    RMSprop, Adagrad, ...): learning-rate and epsilon repairs write its param_groups.
    scheduler: an lr_scheduler the guard steps once per step (skipped ones included, and again
    for steps a rollback re-runs), restored with each snapshot, so it stays in step; do not call
    its step() yourself. stable_loss: a callable that switches the loop's loss to its stable form
    (a hand-written log(softmax(z)) to log_softmax or cross_entropy) and returns True, or False
    when it cannot; with it an unsafe loss is repaired by the stable_loss action instead of
    skipping every step it poisons.

    Options (keyword arguments): enabled, snapshot_every (100), snapshot_capacity (3),
    check_state_every (50), rerun_lost_steps (True), kept_batch_bytes, replay (True),
    repair (True), history (64), keep_initial_snapshot (True), monitor (True),
    monitor_sample_every (200), monitor_activations (True), divergence (True), and the repair
    budget: max_rollbacks (5), rollback_window (1000), max_incidents (50),
    max_consecutive_skips (20), lr_factor (0.1), lr_floor (1e-7), clip_norm (0: automatic).

    Events (incidents, repairs, warnings) go to the logging module's "nanguard" logger.
    """

    def __init__(self, model, optimizer, scheduler=None, stable_loss=None, **options):
        if not isinstance(model, torch.nn.Module):
            raise ValueError("nanguard.Guard: model must be a torch.nn.Module, got " + type(model).__name__)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError("nanguard.Guard: optimizer must be a torch.optim.Optimizer, got "
                             + type(optimizer).__name__)
        if scheduler is not None:
            if not all(hasattr(scheduler, a) for a in ("step", "state_dict", "load_state_dict")):
                raise ValueError("nanguard.Guard: scheduler must be a torch.optim.lr_scheduler, got "
                                 + type(scheduler).__name__)
            if getattr(scheduler, "optimizer", optimizer) is not optimizer:
                raise ValueError("nanguard.Guard: the scheduler schedules another optimizer than the guard's")
        if stable_loss is not None and not callable(stable_loss):
            raise ValueError("nanguard.Guard: stable_loss must be callable (it switches the loop's loss to its "
                             "stable form), got " + type(stable_loss).__name__)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("nanguard.Guard: the model has no parameter that requires grad")
        trainable = {id(p) for _, p in named}
        for g, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                if id(p) not in trainable:
                    raise ValueError(
                        "nanguard.Guard: the optimizer's param_groups[%d] holds a tensor of shape %s that is not a "
                        "trainable parameter of the model; give the guard the model the optimizer trains"
                        % (g, tuple(p.shape)))
        self._model = model
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._stable_loss = stable_loss
        self._loss_stable = False
        self._scheduler_states = {}
        self._next_token = 0
        capacity = options.get("snapshot_capacity", 3)
        self._snapshot_capacity = capacity if isinstance(capacity, int) else 3
        self._wants_cache = {}
        self._wants_weak = weakref.WeakKeyDictionary()
        self._open_step = None
        self._modules = [(name, m) for name, m in model.named_modules() if name]
        # The core keeps each step's batch and closure while a replay or re-run may need them,
        # and calls back _prepare, _closure_wants_context, _take_rows and _call_closure.
        self._core = _core.Guard([n for n, _ in named], [p for _, p in named],
                                 [b for _, b in model.named_buffers()], optimizer, options, self,
                                 stable_loss is not None, scheduler is not None)

    # ---- the step ----

    def step(self, batch, closure, ids=None):
        """Runs one guarded step: the closure (forward, loss, backward), the check, then the
        optimizer step or the repair of an incident. Returns a Verdict.

        batch: a tensor, a tuple/list or a dict of tensors (dimension 0 is the sample), or an
        IdSample batch from nanguard.with_ids. ids: the samples' dataset ids (a sequence or an
        int64 tensor of one id per sample), when the batch does not carry them.
        closure(batch) or closure(batch, ctx): computes the loss from the batch alone, runs
        backward and returns the loss; no zero_grad, no optimizer step. A closure with two
        required parameters receives a StepContext as the second (which run this is)."""
        outcome, loss, record = self._core.step(batch, closure, ids)
        return Verdict(outcome, loss, Incident(record) if record is not None else None)

    def begin_step(self, batch, closure=None, ids=None):
        """The lower API, for loops that own their step: prepares a step and returns the batch to
        train on (quarantined samples dropped). Then compute the loss, run backward and call
        check(loss), then apply(decision). The closure, when given, lets the guard replay and
        repair the step; without it incidents are diagnosed from their evidence only."""
        batch, rows, n, self._open_step = self._core.begin_step(batch, closure, ids)
        return batch if rows is None else _take(batch, rows, n)

    def check(self, loss):
        """After backward: the cheap check (one host sync); on a failure the incident is
        replayed, diagnosed and a repair planned. Returns a Decision for apply()."""
        if self._open_step is None:
            raise ValueError("nanguard.Guard.check: call begin_step(batch) before the forward pass")
        if loss is not None and not isinstance(loss, torch.Tensor):
            raise ValueError("nanguard.Guard.check: loss must be a tensor, got " + type(loss).__name__)
        return Decision(self._core.check(loss if loss is not None else torch.Tensor()))

    def check_exception(self, error):
        """After an exception from the step's forward or backward: a Decision when the op that
        raised read non-finite values (an incident); otherwise the exception is re-raised."""
        if self._open_step is None:
            raise ValueError("nanguard.Guard.check_exception: call begin_step(batch) first")
        if not isinstance(error, BaseException):
            raise ValueError("nanguard.Guard.check_exception: expected an exception, got " + type(error).__name__)
        decision = self._core.check_exception("%s: %s" % (type(error).__name__, error))
        if decision is None:
            self._finish_open()
            raise error
        return Decision(decision)

    def apply(self, decision):
        """Carries the decision out: the optimizer step, or the repair of the incident."""
        if not isinstance(decision, Decision):
            raise ValueError("nanguard.Guard.apply: expected the Decision check() returned, got "
                             + type(decision).__name__)
        if self._open_step is None:
            raise ValueError("nanguard.Guard.apply: no step is open (begin_step, check, then apply)")
        try:
            outcome, loss, record = self._core.apply(decision._decision)
        finally:
            self._finish_open()
        return Verdict(outcome, loss, Incident(record) if record is not None else None)

    def _finish_open(self):
        step = self._open_step
        self._open_step = None
        self._core.finish_step(step)

    # ---- results ----

    @property
    def incidents(self):
        """Every incident so far, as Incident objects."""
        return [Incident(r) for r in self._core.incidents()]

    @property
    def events(self):
        """Every event (incident, action, warning) as a dict, as events.jsonl holds them."""
        return self._core.events()

    @property
    def quarantined(self):
        """Quarantined sample ids, ascending."""
        return self._core.quarantined()

    @property
    def steps(self):
        return self._core.steps()

    @property
    def applied_steps(self):
        return self._core.applied_steps()

    @property
    def skipped_steps(self):
        return self._core.skipped_steps()

    @property
    def rerun_steps(self):
        return self._core.rerun_steps()

    @property
    def stopped(self):
        return self._core.stopped()

    @property
    def lr_scale(self):
        """The multiplier the guard applied to the learning rate (1 until an lr backoff)."""
        return self._core.lr_scale()

    @property
    def clip_norm(self):
        """The gradient-norm clipping the guard enabled (0: off)."""
        return self._core.clip_norm()

    def summary(self):
        """The run so far in one line of plain words."""
        return self._core.summary().strip()

    def write_report(self, directory, history=None, name=None, **summary):
        """Writes the run folder nanguard's CLI writes: events.jsonl, history.csv/.json and
        loss.svg (from history: one dict of numbers per epoch, e.g. {"loss": .., "accuracy": ..}),
        monitor.csv, summary.json (with the keyword arguments added) and report.html. Returns the
        path of report.html."""
        if not isinstance(directory, (str, os.PathLike)):
            raise ValueError("nanguard.Guard.write_report: the folder must be a path, got " + type(directory).__name__)
        directory = os.fspath(directory)
        epochs = []
        for i, logs in enumerate(history or []):
            if not isinstance(logs, dict):
                raise ValueError("nanguard.Guard.write_report: history[%d] must be a dict of numbers, got %s"
                                 % (i, type(logs).__name__))
            row = []
            for k, v in logs.items():
                if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError("nanguard.Guard.write_report: history[%d][%r] must map a name to a number, got %s"
                                     % (i, k, type(v).__name__))
                row.append((k, float(v)))
            epochs.append(row)
        record = {"name": name or os.path.basename(os.path.normpath(directory)),
                  "front_end": "python",
                  "environment": {"torch": torch.__version__, "libtorch": _core.libtorch_version,
                                  "threads": torch.get_num_threads()}}
        try:
            record.update(summary)
            text = json.dumps(record, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError("nanguard.Guard.write_report: the summary's values must be JSON (finite numbers, "
                             "strings, lists, dicts): %s" % e) from None
        return self._core.write_report(directory, epochs, text)

    # ---- internals ----

    def _prepare(self, batch, ids):
        if isinstance(batch, IdSample):
            if ids is not None:
                raise ValueError("nanguard.Guard.step: the batch carries its ids (nanguard.with_ids); do not pass ids too")
            ids = batch.id
            batch = batch.sample
        x = _primary(batch)
        if x is None:
            raise ValueError("nanguard.Guard.step: the batch must hold a tensor whose first dimension is the sample "
                             "(a tensor, a tuple/list or a dict of tensors), got " + type(batch).__name__)
        n = x.shape[0]
        ids_t = None
        if ids is not None:
            try:
                ids_t = torch.as_tensor(ids)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError("nanguard.Guard.step: ids must be a sequence or tensor of ints, got "
                                 + type(ids).__name__) from None
            if ids_t.is_floating_point() or ids_t.is_complex() or ids_t.dtype == torch.bool:
                raise ValueError("nanguard.Guard.step: ids must be integers, got dtype " + str(ids_t.dtype))
            if ids_t.dim() != 1 or ids_t.shape[0] != n:
                raise ValueError("nanguard.Guard.step: ids must hold one id per sample: %d samples, ids of shape %s"
                                 % (n, tuple(ids_t.shape)))
            if ids_t.dtype != torch.int64:
                ids_t = ids_t.to(torch.int64)
        return batch, x, ids_t, n

    def _closure_wants_context(self, closure):
        # A function is known by its code, its number of defaults and whether it is bound (all the
        # answer rests on; none keeps an object alive), any other callable by a weak reference:
        # a loop that makes a new partial or lambda each step must not pile them up here.
        if hasattr(closure, "__code__") and hasattr(closure, "__defaults__"):
            key = (closure.__code__, len(closure.__defaults__ or ()), inspect.ismethod(closure))
            cache = self._wants_cache
        else:
            key, cache = closure, self._wants_weak
        try:
            wants = cache.get(key)
        except TypeError:  # unhashable, or no weak reference to it
            return _wants_context(closure)
        if wants is None:
            wants = cache[key] = _wants_context(closure)
        return wants

    @staticmethod
    def _take_rows(batch, rows, n):
        return _take(batch, rows, n)

    def _call_closure(self, fn, batch, named, run, step, traced):
        """The closure's run with a StepContext (when it takes one) and, when named, forward
        hooks that name the module every op runs in (a traced replay, or a step whose
        activations the monitor samples)."""
        call = (lambda: fn(batch, StepContext(run, step, traced))) if self._closure_wants_context(fn) \
            else (lambda: fn(batch))
        if not named:
            return call()
        handles = []
        try:
            for name, module in self._modules:
                handles.append(module.register_forward_pre_hook(functools.partial(_scopes.enter, name)))
                handles.append(module.register_forward_hook(_scopes.leave))
            return call()
        finally:
            for h in handles:
                h.remove()
            _scopes.reset()

    def _step_scheduler(self):
        # The schedule runs on the learning rate without the guard's backoff, which is applied on top.
        scale = self._core.lr_scale()
        groups = self._optimizer.param_groups
        if scale != 1.0:
            for g in groups:
                g["lr"] = g["lr"] / scale
        self._scheduler.step()
        if scale != 1.0:
            for g in groups:
                g["lr"] = g["lr"] * scale

    # Hooks the C++ guard calls.

    def _on_event(self, e):
        kind = e["kind"]
        if kind == "incident":
            where = ""
            if e["op"]:
                where = ", born in %s%s" % (e["op"], " (%s)" % e["module"] if e["module"] else "")
            # A finite divergence (every value finite) is named as such, not as a non-finite value.
            what = "divergence (all values finite)" if e["detail"] == "divergence" else \
                "non-finite " + (e["detail"] or "values")
            _log.warning("step %d: %s - %s (%.0f%%)%s: %s", e["step"], what, e["cause"],
                         100 * e["confidence"], where, e["explanation"])
        elif kind == "action":
            _log.info("step %d: repair %s - %s", e["step"], e["action"], e["detail"])
        else:
            _log.warning("step %d: warning %s: %s", e["step"], e["cause"], e["explanation"])

    def _on_quarantine(self, ids):
        _log.info("quarantined samples %s", ids)

    def _save_extra(self):
        if self._scheduler is None:
            return None
        token = self._next_token
        self._next_token += 1
        self._scheduler_states[token] = copy.deepcopy(self._scheduler.state_dict())
        # The ring's snapshots and the investigator's scratch ones: the first (kept) and the latest.
        old = token - _SNAPSHOT_TOKENS_KEPT - self._snapshot_capacity
        for t in [t for t in self._scheduler_states if 0 < t < old]:
            del self._scheduler_states[t]
        return [float(token)]

    def _load_extra(self, extra):
        if self._scheduler is None or not extra:
            return
        state = self._scheduler_states.get(int(extra[0]))
        if state is not None:
            self._scheduler.load_state_dict(copy.deepcopy(state))

    def _use_stable_loss(self):
        switched = self._stable_loss()
        switched = True if switched is None else bool(switched)
        if switched:
            self._loss_stable = True
            _log.info("switched the loss to its stable form")
        return switched

    def _loss_is_stable(self):
        return self._loss_stable

    def _on_rerun_step_applied(self):
        if self._scheduler is not None:
            self._step_scheduler()
