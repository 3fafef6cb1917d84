"""Method interface, registry, and the batched gradient engine every gradient method shares."""
from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch

from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

OBJECTIVES = ("log_prob", "logit", "prob", "loss")
REDUCTIONS = ("dot", "l2", "sum")
DEFAULT_TOKEN_BUDGET = 8192

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
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        raise NotImplementedError


def objective_values(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-row scalar a gradient method differentiates: log p(target) by default."""
    if kind == "log_prob":
        return logits.log_softmax(-1).gather(1, target[:, None])[:, 0]
    if kind == "loss":
        return -logits.log_softmax(-1).gather(1, target[:, None])[:, 0]
    if kind == "logit":
        return logits.gather(1, target[:, None])[:, 0]
    if kind == "prob":
        return logits.softmax(-1).gather(1, target[:, None])[:, 0]
    raise UnmaskError(f"unknown objective {kind!r}; choose one of {', '.join(OBJECTIVES)}")


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


def gradient_chunks(model: TextClassifier, embeds: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None, target: torch.Tensor, objective: str,
                    token_budget: int) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, d objective / d embeds, objective)`` over row chunks of at most ``token_budget`` tokens.

    ``embeds`` is (rows, tokens, dim); one forward + backward per chunk, never one per row.
    """
    rows, width = embeds.shape[:2]
    step = max(1, token_budget // max(width, 1))
    for start in range(0, rows, step):
        sl = slice(start, min(rows, start + step))
        x = embeds[sl].detach().requires_grad_(True)
        tti = token_type_ids[sl] if token_type_ids is not None else None
        with torch.enable_grad():
            logits = model.forward_embeds(x, attention_mask[sl], tti).logits
            values = objective_values(logits, target[sl], objective)
            (grads,) = torch.autograd.grad(values.sum(), x)
        yield sl, grads, values.detach()


def zero_padding(scores: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return scores * attention_mask.to(scores.dtype)
