"""Integrated gradients (Sundararajan et al. 2017) on word embeddings, zero baseline.

Steps and rows of all examples go through the model batched; path points are built chunk by chunk.
With ``tolerance`` set, steps adapt per example until the completeness error
|sum_i a_i - (F(x) - F(x'))| is at most ``tolerance`` x |F(x) - F(x')|, in one of two ways:

- ``refine="global"``: all Gauss-Legendre points are doubled (steps, 2 steps, 4 steps, ...)
  for the examples still over the tolerance; the result is the fixed-step result at the count reached.
- ``refine="local"`` (default with a tolerance, the Gauss-Legendre rule and ``steps`` a multiple of
  ``panel_points``, as the defaults 16 and 4): composite Gauss-Legendre, ``panel_points`` points per panel of the path
  (``steps`` rounded up to whole panels at the start). The objective is also evaluated (forward only)
  at the panel ends, so each panel's own completeness error |F(b) - F(a) - its quadrature| is known
  exactly; each round bisects the worst panel of every example whose panels' absolute errors still sum
  to more than the tolerance (so its completeness error is within it too), within ``max_steps``
  gradient evaluations. Fine-tuned classifiers switch sharply somewhere on the path; this puts the
  points there instead of everywhere (on SST-2 MiniLM: ~33 evaluations per sentence vs 41-128).

Without a tolerance the default is one Gauss-Legendre rule with ``steps`` points (Captum's). Both refinements
bound the completeness error, which is a sum over tokens: per-token errors are larger (first 64 SST-2 dev
sentences, tolerance 1e-3, against a 256-point reference: median 4.6e-4 local, 1.9e-4 global, 2.2e-5 for
Captum's fixed 50 points; ``bench/bench_ig_accuracy.py``). For token-level accuracy like Captum-50's, use
tolerance 3e-5 (about 68 evaluations per sentence there).

The error is reported per example either way (``steps`` = gradient evaluations used). ``precision``
(``"auto"``: bf16 autocast only where native and measured faster, ``attribution.precision``) applies to
the path gradients only: F(x), F(x') and the panel ends are float32 forwards, so the completeness error is
measured in float32; the precision used is in ``extras["precision"]``. With a ``tolerance``, ``"auto"``
takes bf16 only if its measured gradient error is within the tolerance (``resolve_precision(max_error=)``).
"""
from __future__ import annotations

import numpy as np
import torch

from unmask.attribution.base import (DEFAULT_TOKEN_BUDGET, AttributionMethod, ObjectiveMixin, PathRows, check_choice,
                                     check_precision, gradient_chunks, objective_chunks, register, zero_padding)
from unmask.attribution.objectives import Objective
from unmask.attribution.precision import precision_extras, resolve_precision
from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
REFINEMENTS = ("global", "local")


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
class IntegratedGradients(ObjectiveMixin, AttributionMethod):
    """Token score sum_d (x - x')_d * integral of the gradient along the straight path from x' = 0."""

    name = "integrated_gradients"
    aliases = ("ig", "integrated_gradient")
    # path rows are made chunk by chunk (PathRows), so a bucket's memory does not grow with the steps:
    # buckets are sized by tokens alone and the token budget bounds each forward
    rows_per_example = 1

    def __init__(self, steps: int = 16, rule: str = "gausslegendre", tolerance: float | None = 1e-3,
                 max_steps: int = 256, objective: "str | Objective" = "log_prob",
                 token_budget: int = DEFAULT_TOKEN_BUDGET, refine: str | None = None, panel_points: int = 4,
                 precision: str = "auto") -> None:
        super().__init__(token_budget)
        self.precision = check_precision(precision)
        if steps < 1:
            raise UnmaskError(f"steps must be >= 1, got {steps}")
        if tolerance is not None and tolerance <= 0:
            raise UnmaskError(f"tolerance must be positive or None, got {tolerance}")
        if panel_points < 1:
            raise UnmaskError(f"panel_points must be >= 1, got {panel_points}")
        self.steps, self.max_steps, self.tolerance = steps, max(max_steps, steps), tolerance
        self.rule = check_choice(rule, RULES, "integration rule")
        self.set_objective(objective)
        if refine is None:  # local bisection where it applies (faster at the same tolerance), else global
            local = tolerance is not None and self.rule == "gausslegendre" and steps % panel_points == 0
            refine = "local" if local else "global"
        self.refine = check_choice(refine, REFINEMENTS, "refinement")
        if self.refine == "local" and self.rule != "gausslegendre":
            raise UnmaskError(f"refine='local' uses composite Gauss-Legendre panels, not rule {rule!r}")
        self.panel_points = panel_points

    # ------------------------------------------------------------------------------------ shared
    def _path_gradients(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                        example: torch.Tensor, alpha: torch.Tensor):
        """``gradient_chunks`` over the path points (example[r], alpha[r]), built chunk by chunk."""
        tti = batch.token_type_ids[example] if batch.token_type_ids is not None else None
        return gradient_chunks(model, PathRows(embeds, example, alpha), batch.attention_mask[example], tti,
                               target[example], self._objective, self.token_budget,
                               precision=resolve_precision(self.precision, model, self.tolerance))

    def _objective_at(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                      example: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """F(alpha x) for the pairs (example[r], alpha[r]), forward only."""
        tti = batch.token_type_ids[example] if batch.token_type_ids is not None else None
        return objective_chunks(model, PathRows(embeds, example, alpha), batch.attention_mask[example], tti,
                                target[example], self._objective, self.token_budget)

    def _endpoint_values(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch,
                         target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(x), F(x')) per example, forward only, x and x' = 0 together."""
        rows = len(batch)
        example = torch.arange(rows).repeat(2)
        alpha = torch.cat([torch.ones(rows), torch.zeros(rows)])
        values = self._objective_at(model, embeds, batch, target, example, alpha)
        return values[:rows], values[rows:]

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        return self.attribute_embeds(model, model.embed(batch.input_ids).detach(), batch, target)

    def attribute_embeds(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch,
                         target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """IG from a zero baseline to given word embeddings (``batch`` supplies mask and segment ids)."""
        f_x, f_baseline = self._endpoint_values(model, embeds, batch, target)
        gap = f_x - f_baseline
        if self.refine == "local":
            scores, used, panels = self._attribute_local(model, embeds, batch, target, f_x, f_baseline)
        else:
            scores, used = self._attribute_global(model, embeds, batch, target, gap)
            panels = None
        error = (scores.sum(1) - gap).abs()
        extras = [{"steps": int(s), "completeness_error": float(e), "delta": float(d),
                   "relative_error": float(e / max(abs(float(d)), 1e-12))}
                  for s, e, d in zip(used, error, gap)]
        if panels is not None:
            for ex, p in zip(extras, panels):
                ex["panels"] = int(p)
        used_precision = precision_extras(self.precision, model, self.tolerance)
        for ex in extras:
            ex.update(used_precision)
        return scores, extras

    # ----------------------------------------------------------------------- global doubling
    def _integrate(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                   steps: int) -> torch.Tensor:
        """Token attributions (rows, tokens) with a fixed number of path points."""
        alphas, weights = path_points(steps, self.rule)
        alphas_t = torch.tensor(alphas, dtype=embeds.dtype)
        weights_t = torch.tensor(weights, dtype=embeds.dtype, device=embeds.device)
        rows = len(batch)
        example = torch.arange(rows).repeat_interleave(steps)
        total = torch.zeros_like(embeds)
        for sl, grads, _ in self._path_gradients(model, embeds, batch, target, example, alphas_t.repeat(rows)):
            idx = torch.arange(sl.start, sl.stop)
            total.index_add_(0, idx // steps, grads * weights_t[idx % steps][:, None, None])
        return (total * embeds).sum(-1)

    def _attribute_global(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                          gap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        return scores, used

    # ----------------------------------------------------------------------- local refinement
    def _attribute_local(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                         f_x: torch.Tensor, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Composite Gauss-Legendre with exact per-panel errors; bisect each example's worst panel per round."""
        rows, width = batch.input_ids.shape
        k = self.panel_points
        nodes, weights = (torch.tensor(v, dtype=embeds.dtype) for v in path_points(k, "gausslegendre"))
        first = -(-self.steps // k)  # initial panels per example
        edges = torch.linspace(0, 1, first + 1, dtype=torch.float64)
        # panels as flat tensors: owner example, ends a < b, objective at both ends
        owner = torch.arange(rows).repeat_interleave(first)
        a, b = edges[:-1].repeat(rows), edges[1:].repeat(rows)
        end_values = torch.zeros(rows, first + 1, dtype=embeds.dtype)
        if self.tolerance is not None and first > 1:  # interior panel ends, forward only
            ex = torch.arange(rows).repeat_interleave(first - 1)
            inner = self._objective_at(model, embeds, batch, target, ex, edges[1:-1].repeat(rows))
            end_values[:, 1:-1] = inner.view(rows, first - 1)
        end_values[:, 0], end_values[:, -1] = f0, f_x
        gap = f_x - f0
        fa, fb = end_values[:, :-1].reshape(-1), end_values[:, 1:].reshape(-1)
        contrib = self._panel_contributions(model, embeds, batch, target, owner, a, b, nodes, weights)
        used = torch.full((rows,), first * k)
        active = torch.ones(len(owner), dtype=torch.bool)
        allowed = self.tolerance * gap.abs().clamp_min(1e-8) if self.tolerance is not None else None
        while allowed is not None:
            err = (contrib.sum(1) - (fb - fa)).abs()
            err_sum = torch.zeros(rows, dtype=err.dtype).index_add_(0, owner, err * active)
            todo_examples = (err_sum > allowed) & (used + 2 * k <= self.max_steps)
            # bisect each unfinished example's worst panel (one per round: the fewest evaluations)
            masked = torch.where(active & todo_examples[owner], err, torch.full_like(err, -1.0))
            worst = torch.full((rows,), -1.0, dtype=err.dtype).scatter_reduce(0, owner, masked, "amax")
            hits = (active & todo_examples[owner] & (masked == worst[owner])).nonzero().flatten()
            if len(hits) == 0:
                break
            first_hit = torch.full((rows,), len(owner), dtype=torch.long).scatter_reduce(0, owner[hits], hits, "amin")
            parents = first_hit[first_hit < len(owner)]  # one panel per example, even on exact ties
            mid = (a[parents] + b[parents]) / 2
            f_mid = self._objective_at(model, embeds, batch, target, owner[parents], mid)
            child_owner = owner[parents].repeat(2)
            child_a = torch.cat([a[parents], mid])
            child_b = torch.cat([mid, b[parents]])
            child_fa = torch.cat([fa[parents], f_mid])
            child_fb = torch.cat([f_mid, fb[parents]])
            child_contrib = self._panel_contributions(model, embeds, batch, target, child_owner, child_a, child_b,
                                                      nodes, weights)
            active[parents] = False
            used.index_add_(0, owner[parents], torch.full((len(parents),), 2 * k))
            owner, a, b = torch.cat([owner, child_owner]), torch.cat([a, child_a]), torch.cat([b, child_b])
            fa, fb = torch.cat([fa, child_fa]), torch.cat([fb, child_fb])
            contrib = torch.cat([contrib, child_contrib])
            active = torch.cat([active, torch.ones(len(child_owner), dtype=torch.bool)])
        scores = torch.zeros(rows, width, dtype=embeds.dtype).index_add_(0, owner[active], contrib[active])
        panels = torch.zeros(rows, dtype=torch.long).index_add_(0, owner[active], torch.ones_like(owner[active]))
        return zero_padding(scores, batch.attention_mask), used, panels

    def _panel_contributions(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                             owner: torch.Tensor, a: torch.Tensor, b: torch.Tensor, nodes: torch.Tensor,
                             weights: torch.Tensor) -> torch.Tensor:
        """(panels, tokens): each panel's Gauss-Legendre estimate of its part of every token's score."""
        k = len(nodes)
        length = (b - a).to(embeds.dtype)
        alpha = (a.to(embeds.dtype)[:, None] + length[:, None] * nodes[None]).flatten()
        weight = (length[:, None] * weights[None]).flatten()
        example = owner.repeat_interleave(k)
        out = torch.zeros(len(owner), embeds.shape[1], dtype=embeds.dtype)
        for sl, grads, _ in self._path_gradients(model, embeds, batch, target, example, alpha):
            per_node = (grads * embeds[example[sl]]).sum(-1) * weight[sl, None]
            out.index_add_(0, torch.arange(sl.start, sl.stop) // k, per_node)
        return out
