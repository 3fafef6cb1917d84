"""Method interface, registry, and the batched gradient engine every gradient method shares."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import torch

from unmask.attribution.budget import AUTO_TOKEN_BUDGET, is_auto, resolve_token_budget
from unmask.attribution.objectives import CLASS_OBJECTIVES, NAMED, Objective, objective_name, resolve_objective
from unmask.attribution.precision import PRECISIONS, resolve_precision
from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

if TYPE_CHECKING:
    from unmask.attribution.shared import GradientPass, PassGradients

OBJECTIVES = CLASS_OBJECTIVES  # named objectives of the logits alone; see attribution/objectives.py for all
REDUCTIONS = ("dot", "l2", "sum")
# default token budget: derived per model and chunk width from its size and a memory cap (attribution/budget.py);
# as an int it is 2048 padded tokens per forward, measured fastest on a 2-core CPU (bench/results.md)
DEFAULT_TOKEN_BUDGET = AUTO_TOKEN_BUDGET

METHODS: dict[str, type["AttributionMethod"]] = {}


def register(cls: type["AttributionMethod"]) -> type["AttributionMethod"]:
    """Class decorator: make a method available by its ``name``."""
    METHODS[cls.name] = cls
    for alias in cls.aliases:
        METHODS[alias] = cls
    return cls


def get_method(spec: "str | AttributionMethod", **params) -> "AttributionMethod":
    """A method instance from a name (``"integrated_gradients"``) or an instance (returned as is)."""
    if isinstance(spec, AttributionMethod):
        return spec
    if spec not in METHODS:
        known = ", ".join(sorted({c.name for c in METHODS.values()}))
        raise UnmaskError(f"unknown method {spec!r}; choose from {known}")
    return METHODS[spec](**params)


class AttributionMethod:
    """One attribution method. Subclasses set ``name`` and implement ``attribute``.

    ``attribute`` gets a tokenized batch and a target label per row and returns token scores
    (rows x tokens, zero at padding) plus per-row extras (e.g. IG's completeness error).
    Methods never tokenize and never know which task they run on.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    rows_per_example: int = 1

    def __init__(self, token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        if token_budget < 1:
            raise UnmaskError(f"token_budget must be positive, got {token_budget}")
        self.token_budget = token_budget

    @property
    def params(self) -> dict:
        return {k: "auto" if k == "token_budget" and is_auto(v) else v
                for k, v in vars(self).items() if not k.startswith("_")}

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        raise NotImplementedError

    def gradient_pass(self, model: TextClassifier) -> "GradientPass | None":
        """The one plain gradient pass this method's scores come from, if any (``attribution.shared``):
        methods requested together with equal passes share it."""
        return None

    def from_pass(self, model: TextClassifier, batch: Batch,
                  shared: "PassGradients") -> tuple[torch.Tensor, list[dict]]:
        """Scores and per-row extras from the pass ``gradient_pass`` declares, run on ``batch``."""
        raise NotImplementedError(f"{self.name} declares no gradient pass")


def objective_values(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-row scalar of a named logits objective (``OBJECTIVES``): log p(target) by default."""
    if kind not in OBJECTIVES:
        raise UnmaskError(f"unknown objective {kind!r}; choose one of {', '.join(OBJECTIVES)}")
    return NAMED[kind](logits, target)


class ObjectiveMixin:
    """``self.objective`` (a name, for records) and ``self._objective`` (the callable) from a name or callable."""

    def set_objective(self, spec: "str | Objective") -> None:
        self._objective = resolve_objective(spec)
        self.objective = objective_name(spec)


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise UnmaskError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def reduce_tokens(grads: torch.Tensor, embeds: torch.Tensor, kind: str) -> torch.Tensor:
    """Token scores from per-dimension gradients: g.x (``dot``), ||g|| (``l2``) or sum_d g (``sum``)."""
    if kind == "dot":
        return (grads * embeds).sum(-1)
    if kind == "l2":
        return grads.norm(dim=-1)
    if kind == "sum":
        return grads.sum(-1)
    raise UnmaskError(f"unknown reduction {kind!r}; choose one of {', '.join(REDUCTIONS)}")


def check_precision(precision: str) -> str:
    return check_choice(precision, PRECISIONS, "precision")


def _autocast(precision: str, device_type: str):
    """bfloat16: matrix products in bf16 (oneDNN on CPUs with AVX512-BF16), the rest in float32.
    ``precision`` is resolved already (``attribution.precision.resolve_precision``), never ``"auto"``."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def row_chunks(attention_mask: torch.Tensor, token_budget: int) -> Iterator[tuple[slice, int]]:
    """``(rows, width)``: consecutive rows whose count x ``width`` stays within ``token_budget``, where
    ``width`` is the last position any of them attends to. Trailing padding shared by a chunk is cut
    off, so rows sorted by length (as buckets are) pad only to their chunk's longest row; a chunk of at
    least a quarter of the budget also ends where one more row would make over 1/8 of it padding.
    """
    rows, full = attention_mask.shape
    if rows == 0:
        return
    attended = attention_mask.bool()
    last = torch.where(attended.any(1), full - attended.flip(1).int().argmax(1), 0).tolist()
    start = 0
    while start < rows:
        width, used, stop = max(last[start], 1), max(last[start], 1), start + 1
        while stop < rows:
            wider, count = max(width, last[stop]), stop + 1 - start
            if wider * count > token_budget:
                break
            if width * (count - 1) * 4 >= token_budget and (wider * count - used - last[stop]) * 8 > wider * count:
                break
            width, used, stop = wider, used + last[stop], stop + 1
        yield slice(start, stop), width
        start = stop


def gradient_chunks(model: TextClassifier, embeds: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None, target: torch.Tensor, objective: "str | Objective",
                    token_budget: int, precision: str = "float32"
                    ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, d objective / d embeds, objective)`` over row chunks of at most ``token_budget`` tokens.

    ``embeds`` is (rows, tokens, dim), or anything with ``.shape`` whose ``[rows]`` slice gives those
    rows (e.g. ``PathRows``: rows made chunk by chunk, never all at once). One forward + backward per
    chunk, never one per row; trailing padding common to a chunk is not run (its gradient is zero).
    ``precision="bfloat16"`` runs the model under bf16 autocast; objective and gradients stay float32;
    ``"auto"`` resolves per model (``attribution.precision``). The default ``token_budget``
    (``DEFAULT_TOKEN_BUDGET``) is derived from the model's size at this width (``attribution.budget``).
    ``objective``: a name or a callable (model output, target) -> per-row values (``attribution.objectives``).
    """
    objective_fn = resolve_objective(objective)
    full = embeds.shape[1]
    precision = resolve_precision(precision, model)
    token_budget = resolve_token_budget(token_budget, model, full, "backward")
    for sl, width in row_chunks(attention_mask, token_budget):
        x_full = embeds[sl].detach()
        x = x_full[:, :width].requires_grad_(True)
        tti = token_type_ids[sl, :width] if token_type_ids is not None else None
        with torch.enable_grad():
            with _autocast(precision, x.device.type):
                output = model.forward_embeds(x, attention_mask[sl, :width], tti)
            values = objective_fn(output, target[sl]).to(x.dtype)
            (grads,) = torch.autograd.grad(values.sum(), x)
        if width < full:
            grads = torch.cat([grads, grads.new_zeros(grads.shape[0], full - width, grads.shape[2])], 1)
        yield sl, grads, values.detach()


def objective_chunks(model: TextClassifier, embeds: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None, target: torch.Tensor, objective: "str | Objective",
                     token_budget: int) -> torch.Tensor:
    """Objective values (rows,) without gradients, in chunks of at most ``token_budget`` tokens."""
    objective_fn = resolve_objective(objective)
    token_budget = resolve_token_budget(token_budget, model, embeds.shape[1], "forward")
    out = []
    with torch.no_grad():
        for sl, width in row_chunks(attention_mask, token_budget):
            tti = token_type_ids[sl, :width] if token_type_ids is not None else None
            output = model.forward_embeds(embeds[sl][:, :width], attention_mask[sl, :width], tti)
            out.append(objective_fn(output, target[sl]))
    return torch.cat(out) if out else torch.zeros(0, dtype=embeds.dtype)


class PathRows:
    """Rows ``embeds[example[r]] * alpha[r]`` (straight-line path points from a zero baseline), built
    only for the slice asked for: IG never holds all (examples x steps) scaled copies in memory.
    """

    def __init__(self, embeds: torch.Tensor, example: torch.Tensor, alpha: torch.Tensor) -> None:
        self.embeds, self.example, self.alpha = embeds, example, alpha.to(embeds.device, embeds.dtype)
        self.shape = (len(example), *embeds.shape[1:])

    def __getitem__(self, sl: slice) -> torch.Tensor:
        return self.embeds[self.example[sl]] * self.alpha[sl, None, None]


def zero_padding(scores: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return scores * attention_mask.to(scores.dtype)
