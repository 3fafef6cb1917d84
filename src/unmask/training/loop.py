"""One training loop for every trainer in unmask (fine-tuning, RP, Facade, DiffMask, the toy GRU).

``TrainingLoop.run`` owns what the trainers share: seeding, the progress bar, zero-grad / backward /
gradient clipping / optimizer and scheduler steps, a budget of ``max_steps``, evaluation every N steps,
at the end of each epoch and at the end of the budget, atomic checkpoints (``training/checkpoint.py``)
every N steps, at epoch ends and at the end, and resume from the last checkpoint.

Resume is exact: a checkpoint holds the modules, the optimizers (and Lookahead slow weights), the
schedulers, the torch RNG state, the step, the epoch position (epoch, batches done in it), the history,
the running metrics and the trainer's own JSON state. The batches of an epoch come from
``batches(epoch)``, which must depend only on (seed, epoch), and the loop walks every epoch to its last
batch, so a killed and resumed run takes the same steps on the same batches as an uninterrupted one and
ends bitwise equal to it.

A checkpoint records the run's ``settings`` (what it is made of apart from its budget: the trainer's
config without step budget and checkpoint cadence, data fingerprints, target; see ``run_settings``), and
resuming one written with other settings is an ``UnmaskError`` naming what changed, never a silent mix of
two runs. A larger budget continues the same run.

What differs between trainers are hooks: ``loss(batch, state)`` (the forward pass and its stats),
``before_update`` (between backward and the optimizer steps: e.g. DiffMask's gradient ascent on its
Lagrange multipliers), ``after_update`` (running metrics, clamps), ``evaluate`` and ``postfix``.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unmask.cache import canonical_json
from unmask.errors import UnmaskError
from unmask.training.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint

Stats = dict[str, float]
Observer = Callable[["LoopState"], None]
_OBSERVERS: contextvars.ContextVar[tuple[Observer, ...]] = contextvars.ContextVar("unmask_loop_observers",
                                                                                   default=())


@dataclass
class LoopState:
    """Where a run is; everything here but the two flags is saved in checkpoints.

    ``epoch`` and ``offset`` say which batch comes next: batch ``offset`` of epoch ``epoch``. After the last
    batch of an epoch they move to ``(epoch + 1, 0)`` before the hooks run, so at an epoch end ``epoch`` is
    the number of completed epochs.
    """

    step: int = 0
    epoch: int = 0
    offset: int = 0
    history: list[dict] = field(default_factory=list)
    running: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    stopped: bool = False  # set by a hook to end training early; a resumed run stays stopped
    epoch_end: bool = False  # the step just taken was the last batch of its epoch
    last_step: bool = False  # the step just taken used up the budget

    def ema(self, name: str, value: float, decay: float) -> float:
        """Exponential moving average ``running[name]`` (starts at the first value); returns it."""
        old = self.running.get(name)
        self.running[name] = value if old is None else decay * old + (1 - decay) * value
        return self.running[name]

    def stop(self) -> None:
        """End the run after this step (early stopping)."""
        self.stopped = True

    def meta(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "offset": self.offset, "history": self.history,
                "running": self.running, "extra": self.extra, "stopped": self.stopped}


class TensorStore(torch.nn.Module):
    """Named tensors saved with the checkpoint (e.g. the best weights so far); any keys load back."""

    def __init__(self) -> None:
        super().__init__()
        self._names: list[str] = []
        self._keys: list[str] = []

    def set(self, tensors: Mapping[str, torch.Tensor]) -> None:
        for name in self._names:
            delattr(self, name)
        self._names = []
        for i, (key, value) in enumerate(tensors.items()):
            self.register_buffer(f"t{i}", value.detach().clone())
            self._names.append(f"t{i}")
        self._keys = list(tensors)

    def get(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, name) for key, name in zip(self._keys, self._names)}

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:  # the original keys, not t0, t1, ...
        return {key: value.clone() for key, value in self.get().items()}

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        self.set(state_dict)
        return torch.nn.modules.module._IncompatibleKeys([], [])


@contextlib.contextmanager
def observe_steps(observer: Observer) -> Iterator[None]:
    """Call ``observer(state)`` after every completed step (after its checkpoint) of every loop run inside
    the ``with`` block: monitoring, or a test that 'kills the process' by raising after step k."""
    token = _OBSERVERS.set(_OBSERVERS.get() + (observer,))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


BUDGET_FIELDS = frozenset({"epochs", "steps", "max_steps", "checkpoint_every"})


def run_settings(config: Any, **parts: Any) -> dict:
    """A run's ``settings`` for ``TrainingLoop``: the dataclass ``config`` without its budget and checkpoint
    cadence (``BUDGET_FIELDS``), plus named ``parts`` (data fingerprints, target, ...), as plain JSON."""
    kept = {k: v for k, v in asdict(config).items() if k not in BUDGET_FIELDS}
    return json.loads(canonical_json({"config": kept, **parts}))


def _changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Names of the settings that differ (``config.<field>`` inside the config)."""
    def flat(d: Mapping[str, Any]) -> dict[str, str]:
        out = {}
        for k, v in d.items():
            items = v.items() if k == "config" and isinstance(v, Mapping) else [(None, v)]
            for sub, value in items:
                out[k if sub is None else f"{k}.{sub}"] = canonical_json(value)
        return out

    a, b = flat(old), flat(new)
    return sorted(k for k in {*a, *b} if a.get(k) != b.get(k))


def steps_for(epochs: float, batches_per_epoch: int) -> int:
    """The step budget of ``epochs`` epochs (at least one step)."""
    if not (math.isfinite(epochs) and epochs > 0):
        raise UnmaskError(f"epochs must be a positive number, got {epochs}")
    return max(1, int(epochs * batches_per_epoch))


def _split_optimizers(optimizers: Mapping[str, Any]) -> tuple[dict, dict]:
    """Checkpointed (modules, torch optimizers): a Lookahead's inner optimizer under its own name and its
    slow weights as module ``lookahead_<name>``."""
    modules, inner = {}, {}
    for name, opt in optimizers.items():
        if hasattr(opt, "optimizer") and isinstance(getattr(opt, "state", None), torch.nn.Module):
            inner[name] = opt.optimizer
            modules[f"lookahead_{name}"] = opt.state
        else:
            inner[name] = opt
    return modules, inner


def _json_state(scheduler) -> dict:
    state = scheduler.state_dict()
    try:
        return json.loads(json.dumps(state))
    except TypeError as e:
        raise UnmaskError(f"scheduler {type(scheduler).__name__} has state that cannot be checkpointed: {e}") from e


@dataclass
class TrainingLoop:
    """One training run; see the module docstring. ``run()`` returns the final ``LoopState``."""

    batches: Callable[[int], Sequence[Any]]
    loss: Callable[[Any, LoopState], tuple[torch.Tensor, Stats]]
    optimizers: Mapping[str, Any]
    modules: Mapping[str, torch.nn.Module]
    max_steps: int
    schedulers: Mapping[str, Any] = field(default_factory=dict)
    clip_params: Sequence[torch.Tensor] = ()
    clip_norm: float | None = None
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    checkpoint_at_epoch_end: bool = False
    eval_every: int | None = None
    eval_at_epoch_end: bool = False
    evaluate: Callable[[LoopState], None] | None = None
    before_update: Callable[[LoopState], None] | None = None
    after_update: Callable[[LoopState, Stats], None] | None = None
    postfix: Callable[[LoopState, Stats], Mapping[str, Any]] | None = None
    seed: int = 0
    what: str = "training"
    desc: str = "train"
    progress: bool = True
    log: Callable[[str], None] = print
    # True when ``loss`` runs backward itself (e.g. over micro-batches, to bound memory) and returns the
    # detached value: the loop then only checks it and steps the optimizers
    loss_runs_backward: bool = False
    # what the run is made of apart from its budget (``run_settings``): saved in checkpoints; a checkpoint
    # written with other settings is refused. None: not checked (and checkpoints without settings resume)
    settings: Mapping[str, Any] | None = None
    seconds: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        for name in ("max_steps", "checkpoint_every", "eval_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UnmaskError(f"{name} must be a positive integer, got {value!r}")
        if not self.optimizers:
            raise UnmaskError("the training loop needs at least one optimizer")
        if self.clip_norm is not None and not self.clip_params:
            raise UnmaskError("clip_norm is set but no parameters to clip were given")

    # ------------------------------------------------------------------ checkpoints
    def _checkpointed(self) -> tuple[dict, dict]:
        extra_modules, inner = _split_optimizers(self.optimizers)
        return {**self.modules, **extra_modules}, inner

    def _save(self, state: LoopState) -> None:
        modules, inner = self._checkpointed()
        meta = state.meta() | {"schedulers": {k: _json_state(s) for k, s in self.schedulers.items()}}
        if self.settings is not None:
            meta["settings"] = json.loads(canonical_json(self.settings))
        save_checkpoint(Path(self.checkpoint_dir), modules, inner, meta)

    def _restore(self) -> LoopState | None:
        if self.checkpoint_dir is None:
            return None
        self._check_settings()
        modules, inner = self._checkpointed()
        meta = load_checkpoint(Path(self.checkpoint_dir), modules, inner)
        if meta is None:
            return None
        for name, sched in self.schedulers.items():
            if name in meta.get("schedulers", {}):
                sched.load_state_dict(meta["schedulers"][name])
            else:  # a checkpoint from before the shared loop: replay the schedule
                with warnings.catch_warnings():  # "step() before optimizer.step()" is expected here
                    warnings.simplefilter("ignore", UserWarning)
                    for _ in range(meta["step"]):
                        sched.step()
        known = {"step", "epoch", "offset", "history", "running", "extra", "stopped", "schedulers"}
        state = LoopState(step=meta["step"], history=meta.get("history", []), running=meta.get("running") or {},
                          extra=meta.get("extra", {k: v for k, v in meta.items() if k not in known}),
                          stopped=meta.get("stopped", False))
        if "epoch" in meta:
            state.epoch, state.offset = meta["epoch"], meta["offset"]
        else:  # older checkpoints stored only the step: walk the epochs to find its position
            state.offset = state.step
            while state.offset >= (n := len(self.batches(state.epoch))):
                state.offset -= n
                state.epoch += 1
        return state

    def _check_settings(self) -> None:
        """Refuse (before restoring anything) a checkpoint written with other settings than this run's."""
        meta = read_checkpoint_meta(Path(self.checkpoint_dir))
        if self.settings is None or meta is None or "settings" not in meta:
            return
        changed = _changed_settings(meta["settings"], json.loads(canonical_json(self.settings)))
        if changed:
            raise UnmaskError(f"{self.what}: the checkpoint in {self.checkpoint_dir} was written with other "
                              f"settings (changed: {', '.join(changed)}); run with the same settings to resume it, "
                              f"or delete it (or choose another output directory) to start over")

    # ------------------------------------------------------------------ one step
    def _update(self, batch: Any, state: LoopState) -> Stats:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss, stats = self.loss(batch, state)
        if not torch.isfinite(loss.detach()).all():
            raise UnmaskError(f"{self.what}: the loss is {float(loss.detach())} at step {state.step + 1}; "
                              f"lower the learning rate")
        if not self.loss_runs_backward:
            loss.backward()
        if self.before_update is not None:
            self.before_update(state)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.clip_params, self.clip_norm)
        for opt in self.optimizers.values():
            opt.step()
        for sched in self.schedulers.values():
            sched.step()
        return {"loss": float(loss.detach()), **stats}

    def _due(self, every: int | None, at_epoch_end: bool, state: LoopState) -> bool:
        return (state.last_step or state.stopped or (at_epoch_end and state.epoch_end)
                or (every is not None and state.step % every == 0))

    def run(self) -> LoopState:
        torch.manual_seed(self.seed)
        state = self._restore()
        if state is not None:
            self.log(f"resumed {self.what} from {self.checkpoint_dir} at step {state.step}/{self.max_steps}")
        else:
            state = LoopState()
        started = time.time()
        observers = _OBSERVERS.get()
        with tqdm(total=self.max_steps, initial=min(state.step, self.max_steps), desc=self.desc,
                  disable=not self.progress) as bar:
            epoch, batches = None, []
            while state.step < self.max_steps and not state.stopped:
                if epoch != state.epoch:  # one epoch's order, computed once
                    epoch, batches = state.epoch, self.batches(state.epoch)
                    if not batches:
                        raise UnmaskError(f"{self.what}: epoch {state.epoch} has no batches")
                    if state.offset >= len(batches):
                        raise UnmaskError(f"{self.what}: the checkpoint in {self.checkpoint_dir} is at batch "
                                          f"{state.offset} of epoch {state.epoch}, which has {len(batches)} "
                                          f"batches: it was written for other data; delete it to start over")
                stats = self._update(batches[state.offset], state)
                state.step += 1
                state.offset += 1
                state.epoch_end = state.offset >= len(batches)
                if state.epoch_end:
                    state.epoch, state.offset = state.epoch + 1, 0
                state.last_step = state.step >= self.max_steps
                if self.after_update is not None:
                    self.after_update(state, stats)
                if self.evaluate is not None and self._due(self.eval_every, self.eval_at_epoch_end, state):
                    self.evaluate(state)
                bar.update(1)
                if self.postfix is not None:
                    bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v
                                     for k, v in self.postfix(state, stats).items()})
                if self.checkpoint_dir is not None and self._due(self.checkpoint_every,
                                                                 self.checkpoint_at_epoch_end, state):
                    self._save(state)
                for observer in observers:
                    observer(state)
        state.epoch_end = state.last_step = False
        self.seconds = round(time.time() - started, 1)
        return state
