"""Agreement with Captum (an independent implementation) on a float32 tiny BERT, to 1e-4 relative.

Captum attributes to the same point as unmask: the output of the word-embedding lookup, with position
and token-type embeddings added afterwards (they are not part of the IG baseline).
"""
import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

from unmask.attribution.gradient import Gradient  # noqa: E402
from unmask.attribution.integrated_gradients import IntegratedGradients  # noqa: E402
from unmask.attribution.smoothgrad import SmoothGrad  # noqa: E402

RTOL = 1e-4


def assert_agree(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal to RTOL relative to the largest score (random tiny models give small scores)."""
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=RTOL * scale)


@pytest.fixture(scope="module", params=["single", "pair"])
def case(request, tiny_model):
    if request.param == "single":
        batch = tiny_model.encode(["a gripping , funny film .", "bad",
                                   "the plot is thin but the actors are wonderful"])
    else:
        batch = tiny_model.encode(["A man sleeps on a bench .", "Dogs bark"],
                                  ["A person rests .", "Some animals are loud at night"])
    target = torch.tensor([1, 0, 1][:len(batch)])
    return tiny_model, batch, target


def log_probs_from_embeds(model):
    def forward(embeds, attention_mask, token_type_ids):
        return model.forward_embeds(embeds, attention_mask, token_type_ids).logits.log_softmax(-1)
    return forward


def test_gradient_agrees_with_captum_saliency(case):
    model, batch, target = case
    x = model.embed(batch.input_ids).detach()
    saliency = captum_attr.Saliency(log_probs_from_embeds(model))
    g = saliency.attribute(x.clone().requires_grad_(True), target=target, abs=False,
                           additional_forward_args=(batch.attention_mask, batch.token_type_ids))
    mask = batch.attention_mask.to(g.dtype)
    expected = {"l2": g.norm(dim=-1) * mask, "dot": (g * x).sum(-1) * mask, "sum": g.sum(-1) * mask}
    for reduce, theirs in expected.items():
        ours, _ = Gradient(reduce=reduce).attribute(model, batch, target)
        if reduce == "sum":  # ~0 on BERT (LayerNorm after the embeddings): compare on the l2 scale
            torch.testing.assert_close(ours, theirs, rtol=0, atol=RTOL * float(expected["l2"].abs().max()))
        else:
            assert_agree(ours, theirs)


def test_integrated_gradients_agrees_with_captum_layer_ig(case):
    model, batch, target = case
    layer = model.model.bert.embeddings.word_embeddings
    assert layer is model.word_embeddings
    pad = model.tokenizer.pad_token_id
    # Captum's layer IG takes baselines as inputs; the [PAD] row of BERT's embedding matrix is zero
    # (padding_idx), so all-[PAD] inputs give exactly the zero baseline at the word-embedding output.
    assert model.embedding_matrix[pad].abs().max() == 0

    def forward(input_ids, attention_mask, token_type_ids):
        return model.model(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).logits.log_softmax(-1)

    lig = captum_attr.LayerIntegratedGradients(forward, layer)
    attributions, delta = lig.attribute(
        batch.input_ids, baselines=torch.full_like(batch.input_ids, pad), target=target,
        additional_forward_args=(batch.attention_mask, batch.token_type_ids),
        n_steps=50, method="gausslegendre", return_convergence_delta=True)
    theirs = attributions.sum(-1) * batch.attention_mask
    ours, extras = IntegratedGradients(steps=50, tolerance=None).attribute(model, batch, target)
    assert_agree(ours, theirs)
    # both see the same completeness gap F(x) - F(0)
    gap = torch.tensor([e["delta"] for e in extras])
    torch.testing.assert_close(theirs.sum(1) - delta.to(gap.dtype), gap, rtol=1e-4, atol=1e-6)


def test_smoothgrad_agrees_with_captum_noise_tunnel(case, monkeypatch):
    """Same unit-std draws for both; Captum's scalar stdev = our per-example std, so one example per call."""
    model, batch, target = case
    samples = 8
    method = SmoothGrad(samples=samples, noise_scale=0.01, reduce="dot")
    for row in range(len(batch)):
        sub = batch.select([row])
        x = model.embed(sub.input_ids).detach()
        std = float(method.noise_std(x, sub.attention_mask)[0])
        assert std > 0
        unit = torch.randn((samples, *x.shape[1:]), generator=torch.Generator().manual_seed(row))
        drawn = []

        def fixed_normal(mean, std_tensor, *args, **kwargs):
            # NoiseTunnel draws torch.normal(0, stdev repeated to (rows * samples, ...)), rows repeated
            # consecutively: exactly the layout of our ``noise`` argument.
            assert std_tensor.shape == unit.shape
            drawn.append(std_tensor)
            return mean + std_tensor * unit

        monkeypatch.setattr(torch, "normal", fixed_normal)
        tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(log_probs_from_embeds(model)))
        mean_grad = tunnel.attribute(x.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=samples,
                                     stdevs=std, target=target[[row]], abs=False,
                                     additional_forward_args=(sub.attention_mask, sub.token_type_ids))
        monkeypatch.undo()
        assert len(drawn) == 1 and torch.allclose(drawn[0], torch.full_like(drawn[0], std))
        for reduce, theirs in {"dot": (mean_grad * x).sum(-1), "l2": mean_grad.norm(dim=-1)}.items():
            m = SmoothGrad(samples=samples, noise_scale=0.01, reduce=reduce)
            ours, extras = m.attribute(model, sub, target[[row]], noise=unit)
            assert extras[0]["noise_std"] == pytest.approx(std)
            assert_agree(ours, theirs)
