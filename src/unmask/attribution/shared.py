"""Gradient passes shared between methods requested together.

A method whose scores come from one plain forward + backward at the inputs' word embeddings (no noise, no
path points) declares that pass: ``AttributionMethod.gradient_pass(model)`` returns a ``GradientPass`` (the
objective, the resolved precision and the token budget, which fix every number the pass computes: same
chunks, same dtype) and ``from_pass`` turns its gradients into scores. ``explain`` / ``attribute_methods``
run one pass per length bucket for all methods with equal passes; a method alone runs the same pass itself,
so its scores are bitwise the same either way. Methods that do not declare one (SmoothGrad, IG, LOO, ...)
run as before.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unmask.attribution.base import AttributionMethod, gradient_chunks
from unmask.attribution.budget import is_auto
from unmask.attribution.objectives import Objective
from unmask.attribution.precision import precision_extras, resolve_precision
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier


@dataclass(frozen=True)
class PassGradients:
    """What one pass computed for a batch: the word embeddings, d objective / d embeddings (rows, tokens,
    dim; zero past each chunk's last attended token), the objective per row and the precision extras."""

    embeds: torch.Tensor
    grads: torch.Tensor
    values: torch.Tensor
    precision: dict


@dataclass(frozen=True, eq=False)
class GradientPass:
    """One forward + backward of ``objective`` at a batch's word embeddings. Two passes are equal (and
    shared) when objective, resolved precision and token budget are: they compute the same numbers."""

    objective: Objective
    precision: str  # resolved: "float32" or "bfloat16"
    token_budget: int

    def key(self) -> tuple:
        return self.objective, self.precision, "auto" if is_auto(self.token_budget) else int(self.token_budget)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GradientPass) and self.key() == other.key()

    __hash__ = None  # type: ignore[assignment]  # custom objectives need not be hashable

    def run(self, model: TextClassifier, batch: Batch, target: torch.Tensor) -> PassGradients:
        embeds = model.embed(batch.input_ids).detach()
        grads, values = gradients_at(model, embeds, batch, target, self.objective, self.token_budget,
                                     self.precision)
        return PassGradients(embeds, grads, values, precision_extras(self.precision, model))


def gradients_at(model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                 objective: Objective, token_budget: int, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(d objective / d ``embeds``, objective per row) over ``gradient_chunks`` of ``embeds`` (any point,
    e.g. noisy copies; ``batch`` supplies mask and segment ids)."""
    grads = torch.zeros_like(embeds)
    values = torch.zeros(len(embeds), dtype=embeds.dtype, device=embeds.device)
    for sl, g, val in gradient_chunks(model, embeds, batch.attention_mask, batch.token_type_ids, target,
                                      objective, token_budget, precision=precision):
        grads[sl], values[sl] = g, val
    return grads, values


class SinglePassMixin:
    """For methods whose scores come from one plain gradient pass (``self._objective``, ``self.precision``,
    ``self.token_budget``): declares it, and ``attribute`` runs it and calls the method's ``from_pass``."""

    def gradient_pass(self, model: TextClassifier) -> GradientPass:
        return GradientPass(self._objective, resolve_precision(self.precision, model), self.token_budget)

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        return self.from_pass(model, batch, self.gradient_pass(model).run(model, batch, target))


def pass_groups(model: TextClassifier, methods: Sequence[AttributionMethod]) -> list[list[int]]:
    """Indices of ``methods`` grouped so that each group can share one run: methods with equal gradient
    passes (and one model row per example) together, every other method alone; in order of first member."""
    groups: list[tuple[GradientPass | None, list[int]]] = []
    for i, method in enumerate(methods):
        gp = method.gradient_pass(model) if method.rows_per_example == 1 else None
        for other, members in groups:
            if gp is not None and gp == other:
                members.append(i)
                break
        else:
            groups.append((gp, [i]))
    return [members for _, members in groups]
