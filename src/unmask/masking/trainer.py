"""Train a ``DiffMask`` over a data set: progress bar, checkpoints, resume, evaluation, save / load.

Each step draws one layer (uniformly from ``layers``), samples gates for a batch, reruns the frozen model
on the masked input / states and takes one step of Lookahead RMSprop on probes and baselines (descent)
and on that layer's Lagrange multiplier (ascent, clamped to ``[0, multiplier_max]``).
"""
from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unmask.cache import settings_fingerprint
from unmask.errors import UnmaskError
from unmask.io import write_json_atomic
from unmask.masking.adapters import MaskableModel
from unmask.masking.diffmask import DiffMask, kl_divergence
from unmask.masking.lookahead import Lookahead
from unmask.training.batches import epoch_batches
from unmask.training.loop import LoopState, TrainingLoop, run_settings

WEIGHTS = "diffmask.safetensors"
SPEC = "diffmask.json"


@dataclass
class DiffMaskTrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr_gates: float = 3e-4
    lr_multipliers: float = 0.3
    lr_baselines: float | None = None  # None: same as lr_gates
    lookahead_k: int = 5
    lookahead_alpha: float = 0.5
    warmup_steps: int = 200  # linear warm-up of the probe / baseline learning rates (released code: 200)
    centered: bool = True  # centered RMSprop for probes and baselines (as in the released code)
    layers: list[int] | None = None
    checkpoint_every: int = 100
    log_every: int = 25
    seed: int = 0

    def check(self, num_layers: int) -> list[int]:
        """Validate and return the trained layers."""
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UnmaskError(f"{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise UnmaskError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("lr_gates", "lr_multipliers", "lr_baselines"):
            value = getattr(self, name)
            if name == "lr_baselines" and value is None:
                continue
            if not (math.isfinite(value) and value > 0):
                raise UnmaskError(f"{name} must be a positive number, got {value}")
        layers = list(range(num_layers + 1)) if self.layers is None else list(self.layers)
        if not layers:
            raise UnmaskError("no layers to train")
        for k in layers:
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= num_layers:
                raise UnmaskError(f"layer index must be an integer in 0..{num_layers}, got {k!r}")
        return sorted(set(layers))


@dataclass
class _Running:
    values: dict[str, dict[str, float]] = field(default_factory=dict)

    def update(self, layer: int, stats: dict[str, float], decay: float = 0.95) -> None:
        cur = self.values.setdefault(str(layer), {})
        for k, v in stats.items():
            cur[k] = v if k not in cur else decay * cur[k] + (1 - decay) * v


def make_optimizers(diffmask: DiffMask, config: DiffMaskTrainConfig) -> tuple[Lookahead, Lookahead]:
    probe_params = list(diffmask.probes.parameters())
    lr_baselines = config.lr_gates if config.lr_baselines is None else config.lr_baselines
    gates = Lookahead(torch.optim.RMSprop([{"params": probe_params, "lr": config.lr_gates, "base_lr": config.lr_gates},
                                           {"params": list(diffmask.baselines), "lr": lr_baselines,
                                            "base_lr": lr_baselines}],
                                          lr=config.lr_gates, centered=config.centered),
                      config.lookahead_k, config.lookahead_alpha)
    multipliers = Lookahead(torch.optim.RMSprop([diffmask.multipliers], lr=config.lr_multipliers),
                            config.lookahead_k, config.lookahead_alpha)
    return gates, multipliers


def train_diffmask(diffmask: DiffMask, adapter: MaskableModel, items: Sequence[Any], out: str | Path,
                   config: DiffMaskTrainConfig = DiffMaskTrainConfig(), dev_items: Sequence[Any] | None = None,
                   info: dict | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict:
    """Train ``diffmask`` in place on ``items`` (collated by ``adapter``); resumes from ``out/checkpoint``.

    Writes ``out/diffmask.safetensors`` + ``out/diffmask.json`` (spec, ``info``, metrics) at the end.
    """
    if not items:
        raise UnmaskError("no training data for DiffMask")
    layers = config.check(diffmask.num_layers)
    if adapter.num_layers != diffmask.num_layers:
        raise UnmaskError(f"model has layers 0..{adapter.num_layers}, DiffMask has 0..{diffmask.num_layers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    frozen = [(p, p.requires_grad) for p in _model_params(adapter)]
    for p, _ in frozen:
        p.requires_grad_(False)  # the analysed model stays fixed; no weight gradients needed
    try:
        result = _train_loop(diffmask, adapter, items, out, config, layers, progress, log)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    if dev_items:
        result["dev"] = evaluate_diffmask(diffmask, adapter, dev_items, layers, config.batch_size,
                                          progress=progress)
    save_diffmask(diffmask, out, info=info, metrics=result)
    return result


def _train_loop(diffmask: DiffMask, adapter: MaskableModel, items: Sequence[Any], out: Path,
                config: DiffMaskTrainConfig, layers: list[int], progress: bool,
                log: Callable[[str], None]) -> dict:
    """The shared training loop with DiffMask's specifics as hooks: a layer drawn per step from
    (seed, step), learning-rate warm-up, gradient ascent on the multipliers and their clamp."""
    opt_gates, opt_mult = make_optimizers(diffmask, config)
    lengths = adapter.lengths(items)

    def loss(index: list[int], state: LoopState) -> tuple[torch.Tensor, dict[str, float]]:
        layer = random.Random(config.seed * 1000003 + state.step).choice(layers)
        batch = adapter.collate([items[i] for i in index])
        states = adapter.states(batch)
        diffmask.init_baselines(adapter, states)
        diffmask.train()
        warm = min(1.0, (state.step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        for group in opt_gates.optimizer.param_groups:
            group["lr"] = group["base_lr"] * warm
        parts = diffmask.lagrangian(adapter, batch, states, layer)
        return parts["loss"], {"layer": layer, **{k: float(parts[k]) for k in ("kl", "l0", "sampled_kept")}}

    def ascend_multipliers(state: LoopState) -> None:
        diffmask.multipliers.grad.neg_()  # gradient ascent on the multipliers

    def after_update(state: LoopState, stats: dict[str, float]) -> None:
        diffmask.clamp_multipliers()
        _Running(state.running).update(stats["layer"], {k: stats[k] for k in ("kl", "l0", "sampled_kept")})

    def record(state: LoopState) -> None:
        state.history.append({"step": state.step, "running": json.loads(json.dumps(state.running)),
                              "multipliers": diffmask.multipliers.detach().tolist()})

    def postfix(state: LoopState, stats: dict[str, float]) -> dict:
        return {"layer": stats["layer"], "kl": f"{stats['kl']:.3f}", "l0": f"{stats['l0']:.3f}",
                "lam": f"{float(diffmask.multipliers[stats['layer']].detach()):.2f}"}

    loop = TrainingLoop(
        batches=lambda epoch: epoch_batches(lengths, config.batch_size, config.seed, epoch),
        loss=loss, optimizers={"gates": opt_gates, "multipliers": opt_mult}, modules={"diffmask": diffmask},
        max_steps=config.steps, checkpoint_dir=out / "checkpoint", checkpoint_every=config.checkpoint_every,
        eval_every=config.log_every, evaluate=record, before_update=ascend_multipliers, after_update=after_update,
        postfix=postfix, seed=config.seed, what="DiffMask", desc=f"diffmask {diffmask.mode}", progress=progress,
        log=log, settings=run_settings(config, mode=diffmask.mode, layers=layers, items=_items_fingerprint(items)))
    state = loop.run()
    return {"steps": state.step, "layers": layers, "config": asdict(config), "train_items": len(items),
            "multipliers": diffmask.multipliers.detach().tolist(), "running": state.running,
            "history": state.history, "seconds_this_run": loop.seconds}


def _items_fingerprint(items: Sequence[Any]) -> str:
    """Fingerprint of the training items (texts, examples, indices); their count when they are not JSON-able."""
    try:
        return settings_fingerprint(list(items))
    except TypeError:
        return f"{len(items)} items"


def _model_params(adapter: MaskableModel) -> list[torch.nn.Parameter]:
    return list(adapter.parameters())


@torch.no_grad()
def evaluate_diffmask(diffmask: DiffMask, adapter: MaskableModel, items: Sequence[Any],
                      layers: Sequence[int] | None = None, batch_size: int = 32, seed: int = 0,
                      progress: bool = False) -> dict[str, dict[str, float]]:
    """Per layer, averaged over examples: expected share of positions kept (``expected_kept``), share kept by
    sampled and by deterministic gates, KL(original || masked) with sampled and deterministic gates, and the
    share of examples whose predicted label survives deterministic masking (``agreement_deterministic``)."""
    diffmask.eval()
    layers = list(range(diffmask.num_layers + 1)) if layers is None else [diffmask.check_layer(k) for k in layers]
    sums = {k: {} for k in layers}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for s in tqdm(range(0, len(items), batch_size), desc="evaluate diffmask", disable=not progress, leave=False):
            batch = adapter.collate(list(items[s:s + batch_size]))
            states = adapter.states(batch)
            mask = states.mask.to(states.logits.dtype)
            count = mask.sum(1)
            for k in layers:
                keep = diffmask.keep_probability(states, k)
                sampled = diffmask.sample_gates(states, k)
                det = diffmask.deterministic_gates(states, k)
                det_logits = diffmask.masked_logits(adapter, batch, states, k, det)
                row = {
                    "expected_kept": (keep * mask).sum(1) / count,
                    "sampled_kept": ((sampled > 0) * mask).sum(1) / count,
                    "deterministic_kept": ((det > 0) * mask).sum(1) / count,
                    "kl_sampled": kl_divergence(states.logits,
                                                diffmask.masked_logits(adapter, batch, states, k, sampled)),
                    "kl_deterministic": kl_divergence(states.logits, det_logits),
                    "agreement_deterministic": (det_logits.argmax(-1) == states.logits.argmax(-1)).to(mask.dtype),
                }
                for name, v in row.items():
                    sums[k][name] = sums[k].get(name, 0.0) + float(v.sum())
    return {str(k): {name: v / len(items) for name, v in row.items()} for k, row in sums.items()}


def save_diffmask(diffmask: DiffMask, out: str | Path, info: dict | None = None, metrics: dict | None = None) -> Path:
    """``out/diffmask.safetensors`` (weights) and ``out/diffmask.json`` (spec, info, metrics), atomically."""
    from safetensors.torch import save_file

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (WEIGHTS + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in diffmask.state_dict().items()}, str(tmp))
    tmp.replace(d / WEIGHTS)
    write_json_atomic(d / SPEC, {"spec": diffmask.spec(), "info": info or {}, "metrics": metrics or {}})
    return d


def load_diffmask(directory: str | Path) -> tuple[DiffMask, dict]:
    """A trained DiffMask and its saved JSON (``spec``, ``info``, ``metrics``)."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / SPEC).is_file() or not (d / WEIGHTS).is_file():
        raise UnmaskError(f"{d}: not a trained DiffMask directory (needs {SPEC} and {WEIGHTS}; "
                          f"train one with `unmask diffmask train`)")
    saved = json.loads((d / SPEC).read_text())
    diffmask = DiffMask(**saved["spec"])
    diffmask.load_state_dict(load_file(str(d / WEIGHTS)))
    return diffmask.eval(), saved
