"""The speed options of the gradient engine keep their accuracy contracts.

- IG ``refine="local"`` (composite Gauss-Legendre, worst panel bisected): meets the completeness
  tolerance per example, reports its true error, equals an independent composite-quadrature oracle,
  is batch-invariant and token-budget-invariant.
- Path rows built chunk by chunk (``PathRows``) give the same IG as materialized rows.
- SmoothGrad ``precision="bfloat16"``: close to float32 with the same noise; bad precision is an error.
"""
import numpy as np
import pytest
import torch

import unmask
from unmask.attribution.base import PathRows, gradient_chunks, objective_values
from unmask.attribution.integrated_gradients import IntegratedGradients, path_points
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.errors import UnmaskError

TEXTS = ["a gripping , funny film .", "bad", "the plot is thin but the actors are wonderful", "no"]


def objective(model, x, batch, row, target):
    logits = model.forward_embeds(x, batch.attention_mask[[row]].expand(len(x), -1),
                                  batch.token_type_ids[[row]].expand(len(x), -1)).logits
    return objective_values(logits, target[[row]].expand(len(x)), "log_prob")


def composite_oracle(model, batch, row, target, edges, k):
    """sum over panels [a, b] of k-point Gauss-Legendre of g(alpha x) . x, one gradient at a time."""
    x = model.embed(batch.input_ids[[row]]).detach()
    nodes, weights = path_points(k, "gausslegendre")
    total = torch.zeros(x.shape[1], dtype=x.dtype)
    for a, b in zip(edges[:-1], edges[1:]):
        for t, w in zip(nodes, weights):
            xi = (x * (a + (b - a) * t)).requires_grad_(True)
            (g,) = torch.autograd.grad(objective(model, xi, batch, row, target).sum(), xi)
            total += (b - a) * w * (g[0] * x[0]).sum(-1)
    return total


def test_local_refinement_meets_tolerance_and_reports_true_error(sharp_model):
    batch = sharp_model.encode(TEXTS)
    target = torch.tensor([1, 0, 1, 0])
    tol = 1e-4
    scores, extras = IntegratedGradients(steps=4, tolerance=tol, refine="local").attribute(sharp_model, batch, target)
    x = sharp_model.embed(batch.input_ids).detach()
    steps = []
    for row, e in enumerate(extras):
        n = batch.lengths[row]
        with torch.no_grad():
            ends = objective(sharp_model, torch.stack([x[row, :n], torch.zeros_like(x[row, :n])]),
                             batch.select([row]), 0, target[[row]])
        gap = float(ends[0] - ends[1])
        assert e["delta"] == pytest.approx(gap, rel=1e-9)
        err = abs(float(scores[row].sum()) - gap)
        assert e["completeness_error"] == pytest.approx(err, rel=1e-9, abs=1e-15)
        assert e["relative_error"] <= tol
        assert e["steps"] == 4 + 8 * (e["panels"] - 1)  # each bisection: 2 new panels of 4 points
        assert (scores[row, n:] == 0).all()
        steps.append(e["steps"])
    assert len(set(steps)) > 1 and max(steps) > 4, f"no example needed refinement: {steps}"


def test_local_refinement_equals_composite_quadrature_oracle(sharp_model):
    """With tolerance=None: uniform panels; the result is the composite rule computed point by point."""
    batch = sharp_model.encode(TEXTS[:3])
    target = torch.tensor([1, 0, 1])
    scores, extras = IntegratedGradients(steps=9, tolerance=None, refine="local", panel_points=3).attribute(
        sharp_model, batch, target)
    for row in range(3):
        n = batch.lengths[row]
        sub = batch.select([row])
        oracle = composite_oracle(sharp_model, sub, 0, target[[row]], np.linspace(0, 1, 4), 3)
        torch.testing.assert_close(scores[row, :n], oracle[:n], rtol=1e-9, atol=1e-12)
        assert extras[row]["steps"] == 9 and extras[row]["panels"] == 3


def test_local_refinement_is_batch_and_budget_invariant(sharp_model):
    def run(texts, budget):
        m = IntegratedGradients(steps=4, tolerance=1e-4, refine="local", token_budget=budget)
        return unmask.explain(sharp_model, texts, methods=[m])["integrated_gradients"]

    together = run(TEXTS, 10**6)
    chunked = run(TEXTS, 7)
    for i, text in enumerate(TEXTS):
        alone = run([text], 10**6)[0]
        for other in (together[i], chunked[i]):
            assert other.extras["steps"] == alone.extras["steps"]
            np.testing.assert_allclose(other.scores, alone.scores, rtol=1e-9,
                                       atol=1e-9 * np.abs(alone.scores).max())


def test_local_refinement_respects_max_steps(sharp_model):
    batch = sharp_model.encode(["the plot is thin but the actors are wonderful"])
    _, extras = IntegratedGradients(steps=4, tolerance=1e-12, max_steps=12, refine="local").attribute(
        sharp_model, batch, torch.tensor([1]))
    assert extras[0]["steps"] <= 12
    assert extras[0]["relative_error"] > 1e-12  # reported, not clamped


def test_path_rows_match_materialized_rows(tiny_model_f64):
    batch = tiny_model_f64.encode(TEXTS)
    x = tiny_model_f64.embed(batch.input_ids).detach()
    example = torch.arange(len(TEXTS)).repeat_interleave(3)
    alpha = torch.tensor([0.1, 0.5, 0.9]).repeat(len(TEXTS))
    lazy = PathRows(x, example, alpha)
    full = x[example] * alpha.to(x.dtype)[:, None, None]
    assert lazy.shape == full.shape
    torch.testing.assert_close(lazy[slice(2, 7)], full[2:7], rtol=0, atol=0)
    target = torch.ones(len(example), dtype=torch.long)
    mask, types = batch.attention_mask[example], batch.token_type_ids[example]
    got = torch.cat([g for _, g, _ in gradient_chunks(tiny_model_f64, lazy, mask, types, target, "log_prob", 50)])
    want = torch.cat([g for _, g, _ in gradient_chunks(tiny_model_f64, full, mask, types, target, "log_prob", 50)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_smoothgrad_bfloat16_is_close_to_float32_with_the_same_noise(tiny_model):
    batch = tiny_model.encode(TEXTS)
    target = torch.tensor([1, 0, 1, 0])
    fp32 = SmoothGrad(samples=4, precision="float32")  # not "auto": that may pick bf16 on this CPU
    noise = fp32.example_noise(batch, tiny_model.embed(batch.input_ids).detach())
    ours, _ = fp32.attribute(tiny_model, batch, target, noise=noise)
    bf16, _ = SmoothGrad(samples=4, precision="bfloat16").attribute(tiny_model, batch, target, noise=noise)
    assert bf16.dtype == ours.dtype == torch.float32
    scale = float(ours.abs().max())
    assert float((bf16 - ours).abs().max()) < 0.05 * scale
    assert not torch.equal(bf16, ours)  # it did run in bf16


@pytest.mark.parametrize("kwargs", [{"refine": "both"}, {"refine": "local", "rule": "riemann_left"},
                                    {"panel_points": 0}])
def test_bad_ig_options_are_errors(kwargs):
    with pytest.raises(UnmaskError):
        IntegratedGradients(**kwargs)


def test_bad_precision_is_an_error():
    with pytest.raises(UnmaskError, match="precision"):
        SmoothGrad(precision="float16")


def test_default_refinement_is_local_only_where_it_keeps_the_requested_rule():
    """Local bisection by default with a tolerance (same guarantee, fewer evaluations); a fixed-step call stays
    one Gauss-Legendre rule with ``steps`` points (Captum's), and step counts that are not whole panels or
    other rules keep global doubling, so the first pass never spends more than ``steps`` evaluations."""
    assert IntegratedGradients().refine == "local"
    assert IntegratedGradients(tolerance=None).refine == "global"
    assert IntegratedGradients(steps=6).refine == "global"
    assert IntegratedGradients(steps=12, panel_points=6).refine == "local"
    assert IntegratedGradients(rule="riemann_trapezoid").refine == "global"
    assert IntegratedGradients(refine="global").refine == "global"
