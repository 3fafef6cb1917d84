"""Gradient methods against oracles that do not use the library's gradient code.

* ``gradient``: central finite differences of the objective w.r.t. every word-embedding dimension
  (float64 model, all perturbations of a row in one batched forward).
* ``integrated_gradients``: completeness, sum_i a_i = F(x) - F(0), with F evaluated independently; the
  error shrinks with steps and the adaptive mode meets its tolerance per example.
"""
import pytest
import torch

import unmask
from unmask.attribution.gradient import Gradient
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.attribution.integrated_gradients import IntegratedGradients

TEXTS = ["a gripping , funny film .", "bad", "the plot is thin but the actors are wonderful"]
H = 1e-6  # float64: truncation ~H^2, rounding ~1e-16 / H


def objective(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Written out here, not imported, so the oracle does not share the method's objective code."""
    picked = torch.arange(len(target))
    if kind == "logit":
        return logits[picked, target]
    return torch.log(torch.softmax(logits, -1))[picked, target]


def finite_difference_grad(model, batch, row: int, target: int, kind: str) -> torch.Tensor:
    """d objective / d word embeddings of one row, (tokens, dim), by central differences."""
    n = batch.lengths[row]
    x = model.embed(batch.input_ids[row:row + 1, :n]).detach()[0]
    dim = x.shape[-1]
    eye = torch.eye(n * dim, dtype=x.dtype).reshape(n * dim, n, dim)
    shifted = torch.cat([x + H * eye, x - H * eye])
    rows = len(shifted)
    mask = batch.attention_mask[row:row + 1, :n].expand(rows, n)
    tti = batch.token_type_ids[row:row + 1, :n].expand(rows, n)
    with torch.no_grad():
        logits = model.forward_embeds(shifted, mask, tti).logits
    values = objective(logits, torch.full((rows,), target), kind)
    plus, minus = values.split(n * dim)
    return ((plus - minus) / (2 * H)).reshape(n, dim)


def endpoint_gap(model, batch, target: torch.Tensor, kind: str) -> torch.Tensor:
    """F(x) - F(0) per row, zero baseline on word embeddings only."""
    x = model.embed(batch.input_ids).detach()
    with torch.no_grad():
        at_x = model.forward_embeds(x, batch.attention_mask, batch.token_type_ids).logits
        at_0 = model.forward_embeds(torch.zeros_like(x), batch.attention_mask, batch.token_type_ids).logits
    return objective(at_x, target, kind) - objective(at_0, target, kind)


@pytest.fixture(scope="module")
def batches(tiny_model_f64):
    single = tiny_model_f64.encode(TEXTS)
    pairs = tiny_model_f64.encode(["A man sleeps on a bench .", "Dogs bark"],
                                  ["A person rests .", "Some animals are loud at night"])
    return {"single": single, "pair": pairs}


@pytest.mark.parametrize("kind", ["log_prob", "logit"])
@pytest.mark.parametrize("inputs", ["single", "pair"])
def test_gradient_matches_central_differences(tiny_model_f64, batches, kind, inputs):
    model, batch = tiny_model_f64, batches[inputs]
    assert model.embedding_matrix.dtype == torch.float64
    target = torch.tensor([1, 0, 1][:len(batch)])
    x = model.embed(batch.input_ids).detach()
    scores = {r: Gradient(reduce=r, objective=kind).attribute(model, batch, target)[0]
              for r in ("l2", "dot", "sum")}
    for row in range(len(batch)):
        n = batch.lengths[row]
        fd = finite_difference_grad(model, batch, row, int(target[row]), kind)
        scale = fd.abs().max()
        assert scale > 1e-6, "degenerate oracle: the objective does not depend on the input"
        tol = dict(rtol=1e-6, atol=1e-6 * float(scale))
        torch.testing.assert_close(scores["l2"][row, :n], fd.norm(dim=-1), **tol)
        torch.testing.assert_close(scores["dot"][row, :n], (fd * x[row, :n]).sum(-1), **tol)
        torch.testing.assert_close(scores["sum"][row, :n], fd.sum(-1), **tol)
        # padding gets no score
        assert (scores["l2"][row, n:] == 0).all()


def test_sum_of_gradient_over_dims_vanishes_for_bert(tiny_model_f64, batches):
    """BERT applies LayerNorm to (word + position + type) embeddings, so adding c * 1 to a word embedding
    changes nothing and sum_d g_d = 0: ``reduce="sum"`` carries no signal on BERT models. Checked
    with a directional finite difference along the all-ones vector."""
    model, batch = tiny_model_f64, batches["single"]
    target = torch.tensor([1, 0, 1])
    scores = Gradient(reduce="sum").attribute(model, batch, target)[0]
    l2 = Gradient(reduce="l2").attribute(model, batch, target)[0]
    assert scores.abs().max() < 1e-9 * l2.abs().max() + 1e-15
    x = model.embed(batch.input_ids).detach()
    shifted = x.clone()
    shifted[0, 2] += 1e-3
    with torch.no_grad():
        a = model.forward_embeds(x, batch.attention_mask, batch.token_type_ids).logits
        b = model.forward_embeds(shifted, batch.attention_mask, batch.token_type_ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_gradient_x_input_is_the_directional_derivative_along_the_token(tiny_model_f64, batches):
    """g_t . x_t = d/de F(x with x_t scaled by 1 + e) at e = 0: a one-number oracle per token."""
    model, batch = tiny_model_f64, batches["pair"]
    target = torch.tensor([0, 1])
    scores = GradientXInput().attribute(model, batch, target)[0]
    x = model.embed(batch.input_ids).detach()
    for row in range(len(batch)):
        for t in range(batch.lengths[row]):
            plus, minus = x[row:row + 1].clone(), x[row:row + 1].clone()
            plus[0, t] *= 1 + H
            minus[0, t] *= 1 - H
            with torch.no_grad():
                logits = model.forward_embeds(torch.cat([plus, minus]), batch.attention_mask[row:row + 1]
                                              .expand(2, -1), batch.token_type_ids[row:row + 1].expand(2, -1)
                                              ).logits
            v = objective(logits, target[[row, row]], "log_prob")
            fd = float(v[0] - v[1]) / (2 * H)
            assert float(scores[row, t]) == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_objectives_relate_as_calculus_says(tiny_model_f64, batches):
    """loss = -log p, so its gradient flips sign; d p = p * d log p."""
    model, batch = tiny_model_f64, batches["single"]
    target = torch.tensor([0, 1, 1])  # not all predictions: any target works
    base = Gradient(reduce="dot", objective="log_prob").attribute(model, batch, target)[0]
    loss = Gradient(reduce="dot", objective="loss").attribute(model, batch, target)[0]
    prob = Gradient(reduce="dot", objective="prob").attribute(model, batch, target)[0]
    p = model.logits(batch).softmax(-1)[torch.arange(3), target]
    torch.testing.assert_close(loss, -base, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(prob, p[:, None] * base, rtol=1e-10, atol=1e-15)


# ----------------------------------------------------------------------------------- integrated gradients

def test_ig_completeness_error_is_reported_and_shrinks_with_steps(tiny_model_f64, batches):
    model, batch = tiny_model_f64, batches["single"]
    target = torch.tensor([1, 0, 1])
    gap = endpoint_gap(model, batch, target, "log_prob")
    errors = {}
    for steps in (4, 16, 64):
        scores, extras = IntegratedGradients(steps=steps, rule="riemann_left", tolerance=None).attribute(
            model, batch, target)
        err = (scores.sum(1) - gap).abs()
        reported = torch.tensor([e["completeness_error"] for e in extras], dtype=err.dtype)
        torch.testing.assert_close(reported, err, rtol=1e-9, atol=1e-15)
        torch.testing.assert_close(torch.tensor([e["delta"] for e in extras], dtype=gap.dtype), gap)
        assert all(e["steps"] == steps for e in extras)
        errors[steps] = err
    assert (errors[4] > 1e-4 * gap.abs()).all(), "model too linear for a meaningful convergence test"
    # left Riemann sums converge like 1/steps: 16x the steps, at least 8x smaller error
    assert (errors[16] < errors[4]).all() and (errors[64] < errors[16]).all()
    assert (errors[64] * 8 < errors[4]).all()
    # Gauss-Legendre with the same 4 points is far more accurate than left Riemann
    _, gl = IntegratedGradients(steps=4, tolerance=None).attribute(model, batch, target)
    assert all(e["completeness_error"] * 100 < float(r) for e, r in zip(gl, errors[4]))


def test_ig_adaptive_meets_tolerance_per_example(sharp_model):
    texts = TEXTS + ["no"]
    batch = sharp_model.encode(texts)
    target = torch.tensor([1, 0, 1, 0])
    gap = endpoint_gap(sharp_model, batch, target, "log_prob")
    tol = 1e-4
    scores, extras = IntegratedGradients(steps=1, tolerance=tol, refine="global").attribute(sharp_model, batch, target)
    steps = [e["steps"] for e in extras]
    assert len(set(steps)) > 1, f"all examples took the same steps {steps}: adaptivity untested"
    for row, e in enumerate(extras):
        err = abs(float(scores[row].sum() - gap[row]))
        assert e["completeness_error"] == pytest.approx(err, rel=1e-9, abs=1e-15)
        assert e["relative_error"] <= tol
        assert e["steps"] & (e["steps"] - 1) == 0  # doubled from 1
        # the adaptive result is exactly the fixed-step result at the steps it settled on
        fixed, _ = IntegratedGradients(steps=e["steps"], tolerance=None).attribute(
            sharp_model, batch.select([row]), target[[row]])
        n = batch.lengths[row]
        torch.testing.assert_close(scores[row, :n], fixed[0, :n], rtol=1e-10, atol=1e-14)
        assert (scores[row, n:] == 0).all()
        if e["steps"] > 1:  # it stopped at the first step count that met the tolerance
            _, before = IntegratedGradients(steps=e["steps"] // 2, tolerance=None).attribute(
                sharp_model, batch.select([row]), target[[row]])
            assert before[0]["relative_error"] > tol


def test_ig_default_tolerance_through_explain(tiny_model_f64):
    records = unmask.explain(tiny_model_f64, TEXTS, methods=["integrated_gradients"])["integrated_gradients"]
    for r in records:
        assert r.extras["relative_error"] <= 1e-3
        assert r.extras["steps"] >= 1 and r.extras["completeness_error"] >= 0
        assert r.scores.sum() == pytest.approx(r.extras["delta"], abs=1e-3 * abs(r.extras["delta"]))


def test_ig_reports_failure_when_max_steps_is_too_small(sharp_model):
    batch = sharp_model.encode(["the plot is thin but the actors are wonderful"])
    _, extras = IntegratedGradients(steps=1, max_steps=2, tolerance=1e-9).attribute(
        sharp_model, batch, torch.tensor([1]))
    assert extras[0]["steps"] == 2
    assert extras[0]["relative_error"] > 1e-9  # reported honestly, not clamped to the tolerance
