"""SmoothGrad as a wrapper (NoiseTunnel): the registered method is unchanged, any gradient method can be smoothed."""
import hashlib

import numpy as np
import pytest
import torch

import unmask
from unmask.attribution.base import gradient_chunks, reduce_tokens
from unmask.attribution.gradient import Gradient
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.smoothgrad import NoiseTunnel, SmoothGrad
from unmask.errors import UnmaskError

TEXTS = ["a gripping , funny film .", "the plot is thin", "bad"]


def old_smoothgrad(model, batch, target, samples=10, noise_scale=0.01, reduce="dot", seed=0):
    """The implementation before the wrapper (commit cdc8648), kept verbatim as the oracle."""
    embeds = model.embed(batch.input_ids).detach()
    n = samples
    valid = batch.attention_mask.bool()[..., None].expand_as(embeds)
    hi = embeds.masked_fill(~valid, float("-inf")).amax(dim=(1, 2))
    lo = embeds.masked_fill(~valid, float("inf")).amin(dim=(1, 2))
    std = noise_scale * (hi - lo)
    rows, width, dim = embeds.shape
    noise = torch.zeros((rows * n, width, dim), dtype=embeds.dtype)
    for r, length in enumerate(batch.lengths):
        ids = batch.input_ids[r, :length].to(torch.int64).numpy().tobytes()
        digest = hashlib.blake2b(ids, digest_size=8, key=str(seed).encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        noise[r * n:(r + 1) * n, :length] = torch.randn((n, length, dim), generator=gen, dtype=embeds.dtype)
    noisy = embeds.repeat_interleave(n, 0) + noise * std.repeat_interleave(n)[:, None, None]
    rep = batch.repeat(n)
    mean_grad = torch.zeros_like(embeds)
    for sl, grads, _ in gradient_chunks(model, noisy, rep["attention_mask"], rep["token_type_ids"],
                                        target.repeat_interleave(n), "log_prob", 2048):
        mean_grad.index_add_(0, torch.arange(sl.start, sl.stop) // n, grads / n)
    return reduce_tokens(mean_grad, embeds, reduce) * batch.attention_mask


@pytest.mark.parametrize("reduce", ["dot", "l2"])
def test_registered_smoothgrad_equals_the_old_implementation(tiny_model, reduce):
    batch = tiny_model.encode(TEXTS)
    target = torch.tensor([0, 1, 1])
    new, extras = SmoothGrad(reduce=reduce, seed=3).attribute(tiny_model, batch, target)
    old = old_smoothgrad(tiny_model, batch, target, reduce=reduce, seed=3)
    torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    assert set(extras[0]) >= {"noise_std", "mean_objective_value"}


def test_wrapping_gradient_x_input_is_smoothgrad(tiny_model):
    a = unmask.explain(tiny_model, TEXTS, methods=[SmoothGrad()])["smoothgrad"]
    b = unmask.explain(tiny_model, TEXTS, methods=[SmoothGrad(base=GradientXInput())])["smoothgrad"]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.scores, y.scores, atol=1e-7)


def test_batch_invariance(tiny_model):
    sg = SmoothGrad(base=IntegratedGradients(steps=4, tolerance=None), samples=4)
    both = unmask.explain(tiny_model, TEXTS, methods=[sg])["smoothgrad"]
    alone = unmask.explain(tiny_model, TEXTS[1:2], methods=[sg])["smoothgrad"]
    np.testing.assert_allclose(both[1].scores, alone[0].scores, atol=1e-6)


def test_noise_tunnel_over_ig_averages_ig_at_noisy_points(tiny_model_f64):
    """Oracle: IG run by hand on each noisy copy, averaged; completeness holds per noisy copy."""
    model = tiny_model_f64
    batch = model.encode(TEXTS[:2])
    target = torch.tensor([1, 0])
    ig = IntegratedGradients(steps=8, tolerance=None)
    tunnel = NoiseTunnel(ig, samples=4, noise_scale=0.05, seed=1)
    got, extras = tunnel.attribute(model, batch, target)
    embeds = model.embed(batch.input_ids).detach()
    noise = tunnel.example_noise(batch, embeds)
    std = tunnel.noise_std(embeds, batch.attention_mask)
    for r in range(2):
        sub = batch.select([r])
        total = torch.zeros(sub.input_ids.shape[1], dtype=torch.float64)
        for s in range(4):
            x = embeds[r:r + 1, :sub.input_ids.shape[1]] + noise[r * 4 + s, :sub.input_ids.shape[1]] * std[r]
            scores, ex = ig.attribute_embeds(model, x, sub, target[r:r + 1])
            total += scores[0] / 4
        torch.testing.assert_close(got[r, :len(total)], total, rtol=0, atol=1e-10)
    assert extras[0]["mean_completeness_error"] < 1e-2


def test_antithetic_pairs_and_exactness_on_linear_models(tiny_model):
    sg = SmoothGrad(noise="antithetic", samples=4)
    batch = tiny_model.encode(TEXTS[:1])
    noise = sg.example_noise(batch, tiny_model.embed(batch.input_ids).detach())
    torch.testing.assert_close(noise[1], -noise[0])
    torch.testing.assert_close(noise[3], -noise[2])
    assert not torch.equal(noise[0], noise[2])
    with pytest.raises(UnmaskError, match="samples must be even"):
        SmoothGrad(noise="antithetic", samples=5)
    with pytest.raises(UnmaskError, match="unknown noise"):
        SmoothGrad(noise="uniform")


def test_antithetic_cancels_the_odd_part():
    """On a quadratic objective the gradient is linear in x: antithetic pairs give the clean gradient exactly."""
    from types import SimpleNamespace

    from unmask.models.batch import Batch

    class Quadratic:  # F(x) = sum x^2 (the 'logit' of class 0): gradient 2x, linear in x
        name = "quadratic"

        def embed(self, ids):
            return (ids.to(torch.float64)[..., None] * torch.tensor([1.0, -0.5], dtype=torch.float64))

        def forward_embeds(self, x, mask, tti=None):
            return SimpleNamespace(logits=torch.stack([(x ** 2).sum((1, 2)), torch.zeros(len(x), dtype=x.dtype)], 1))

    ids = torch.tensor([[1, 2, 3]])
    batch = Batch(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=None, tokens=[["a"] * 3],
                  word_ids=[[0, 1, 2]], sequence_ids=[[0, 0, 0]], words=[(["a", "b", "c"],)], texts=["a b c"])
    model, target = Quadratic(), torch.tensor([0])
    clean, _ = Gradient(reduce="dot", objective="logit").attribute(model, batch, target)
    anti, _ = SmoothGrad(noise="antithetic", samples=2, noise_scale=0.5, objective="logit").attribute(model, batch, target)
    gauss, _ = SmoothGrad(noise="gaussian", samples=2, noise_scale=0.5, objective="logit").attribute(model, batch, target)
    torch.testing.assert_close(anti, clean, rtol=0, atol=1e-12)
    assert (gauss - clean).abs().max() > 1e-3


def test_bad_wrapper_arguments(tiny_model):
    from unmask.attribution.leave_one_out import LeaveOneOut

    with pytest.raises(UnmaskError, match="cannot run on noisy embeddings"):
        NoiseTunnel(LeaveOneOut())
    with pytest.raises(UnmaskError, match="cannot run on noisy embeddings"):
        NoiseTunnel(IntegratedGradients(), average="gradients")
    with pytest.raises(UnmaskError, match="precision"):
        NoiseTunnel(IntegratedGradients(), precision="bfloat16")
