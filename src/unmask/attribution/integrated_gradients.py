"""Integrated gradients (Sundararajan et al. 2017) on word embeddings, zero baseline.

Steps and rows of all examples go through the model batched. With ``tolerance`` set, steps adapt per
example: Gauss-Legendre points are doubled only for the examples whose completeness error
|sum_i a_i - (F(x) - F(x'))| still exceeds ``tolerance`` x |F(x) - F(x')|. The error is reported per
example either way.
"""
from __future__ import annotations

import numpy as np
import torch

from unmask.attribution.base import (DEFAULT_TOKEN_BUDGET, OBJECTIVES, AttributionMethod, check_choice,
                                     gradient_chunks, objective_values, register, zero_padding)
from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def path_points(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation coefficients alpha in [0, 1] and their quadrature weights (summing to 1)."""
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return (x + 1) / 2, w / 2
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise UnmaskError("riemann_trapezoid needs at least 2 steps")
        alphas = np.linspace(0, 1, steps)
        w = np.full(steps, 1 / (steps - 1))
        w[[0, -1]] /= 2
        return alphas, w
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (np.arange(steps) + offset) / steps, np.full(steps, 1 / steps)


@register
class IntegratedGradients(AttributionMethod):
    """Token score sum_d (x - x')_d * integral of the gradient along the straight path from x' = 0."""

    name = "integrated_gradients"
    aliases = ("ig", "integrated_gradient")

    def __init__(self, steps: int = 16, rule: str = "gausslegendre", tolerance: float | None = 1e-3,
                 max_steps: int = 256, objective: str = "log_prob",
                 token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        super().__init__(token_budget)
        if steps < 1:
            raise UnmaskError(f"steps must be >= 1, got {steps}")
        if tolerance is not None and tolerance <= 0:
            raise UnmaskError(f"tolerance must be positive or None, got {tolerance}")
        self.steps, self.max_steps, self.tolerance = steps, max(max_steps, steps), tolerance
        self.rule = check_choice(rule, RULES, "integration rule")
        self.objective = check_choice(objective, OBJECTIVES, "objective")
        self.rows_per_example = steps

    def _integrate(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                   steps: int) -> torch.Tensor:
        """Token attributions (rows, tokens) with a fixed number of path points."""
        alphas, weights = path_points(steps, self.rule)
        alphas_t = torch.tensor(alphas, dtype=embeds.dtype)
        weights_t = torch.tensor(weights, dtype=embeds.dtype)
        scaled = (embeds[:, None] * alphas_t[None, :, None, None]).flatten(0, 1)
        rep = batch.repeat(steps)
        total = torch.zeros_like(embeds)
        for sl, grads, _ in gradient_chunks(model, scaled, rep["attention_mask"], rep["token_type_ids"],
                                            target.repeat_interleave(steps), self.objective,
                                            self.token_budget):
            idx = torch.arange(sl.start, sl.stop)
            total.index_add_(0, idx // steps, grads * weights_t[idx % steps][:, None, None])
        return (total * embeds).sum(-1)

    def _endpoint_gap(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch,
                      target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            both = torch.cat([embeds, torch.zeros_like(embeds)])
            rep = batch.repeat(1)
            cat = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
            logits = model.forward_embeds(both, cat(rep["attention_mask"]), cat(rep["token_type_ids"])).logits
            values = objective_values(logits, torch.cat([target, target]), self.objective)
        return values[: len(batch)] - values[len(batch):]

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        embeds = model.embed(batch.input_ids).detach()
        gap = self._endpoint_gap(model, embeds, batch, target)
        scores = self._integrate(model, embeds, batch, target, self.steps)
        scores = zero_padding(scores, batch.attention_mask)
        used = torch.full((len(batch),), self.steps)
        error = (scores.sum(1) - gap).abs()
        steps = self.steps
        while self.tolerance is not None and steps < self.max_steps:
            todo = (error > self.tolerance * gap.abs().clamp_min(1e-8)).nonzero().flatten().tolist()
            if not todo:
                break
            steps = min(steps * 2, self.max_steps)
            sub = batch.select(todo)
            width = sub.input_ids.shape[1]
            redo = zero_padding(self._integrate(model, embeds[todo, :width], sub, target[todo], steps),
                                sub.attention_mask)
            scores[todo] = 0.0
            scores[todo, :width] = redo
            used[todo] = steps
            error[todo] = (redo.sum(1) - gap[todo]).abs()
        extras = [{"steps": int(s), "completeness_error": float(e), "delta": float(d),
                   "relative_error": float(e / max(abs(float(d)), 1e-12))}
                  for s, e, d in zip(used, error, gap)]
        return scores, extras
