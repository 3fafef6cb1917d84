"""Captum the way its documentation shows it (one example per call) and batched (16 per call, padded).

Every configuration differentiates the same objective as unmask: log p(target) at the output of the
word-embedding lookup. Scores come back as one numpy array per sentence (padding dropped).
"""
from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerIntegratedGradients, NoiseTunnel, Saliency

from bench_common import Inputs
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

BATCH = 16
IG_STEPS = 50
SG_SAMPLES = 10
SG_SCALE = 0.01


def _from_embeds(model: TextClassifier):
    def forward(embeds, attention_mask, token_type_ids):
        return model.forward_embeds(embeds, attention_mask, token_type_ids).logits.log_softmax(-1)
    return forward


def _from_ids(model: TextClassifier):
    def forward(input_ids, attention_mask, token_type_ids):
        return model.model(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).logits.log_softmax(-1)
    return forward


def reference_ids(model: TextClassifier, batch: Batch) -> torch.Tensor:
    """Captum's BERT tutorial baseline: [CLS] [PAD] ... [PAD] [SEP] (padding stays [PAD])."""
    tok = model.tokenizer
    ref = torch.full_like(batch.input_ids, tok.pad_token_id)
    ref[:, 0] = tok.cls_token_id
    for r, n in enumerate(batch.lengths):
        ref[r, n - 1] = tok.sep_token_id
    return ref


def _groups(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


def _split(scores: torch.Tensor, batch: Batch) -> list[np.ndarray]:
    return [scores[r, :n].detach().numpy().copy() for r, n in enumerate(batch.lengths)]


# ------------------------------------------------------------------------------------------ gradient
def gradient(model: TextClassifier, inputs: Inputs, per_call: int) -> dict:
    """Saliency (abs=False), token score = L2 norm of the gradient, like unmask's default."""
    saliency = Saliency(_from_embeds(model))
    out: list[np.ndarray] = []
    batches = inputs.singles if per_call == 1 else [inputs.batch.select(g)
                                                     for g in _groups(len(inputs.texts), per_call)]
    start = 0
    for b in batches:
        x = model.embed(b.input_ids).detach().requires_grad_(True)
        t = inputs.targets[start:start + len(b)]
        g = saliency.attribute(x, target=t, abs=False,
                               additional_forward_args=(b.attention_mask, b.token_type_ids))
        out += _split(g.norm(dim=-1), b)
        start += len(b)
    return {"scores": out}


# ------------------------------------------------------------------------------------ smoothgrad
def smoothgrad(model: TextClassifier, inputs: Inputs, per_call: int, seed: int = 0) -> dict:
    """NoiseTunnel(Saliency) smoothgrad, 10 samples, stdev = 0.01 (max - min) of the call's embeddings;
    token score = mean gradient . clean embedding (unmask's default). One per call, the stdev is exactly
    unmask's per-example std; batched, Captum takes one stdev per call (computed over its rows).
    ``torch.manual_seed(seed + first row)`` before each call makes the noise reproducible.
    """
    tunnel = NoiseTunnel(Saliency(_from_embeds(model)))
    out: list[np.ndarray] = []
    stds: list[float] = []
    batches = inputs.singles if per_call == 1 else [inputs.batch.select(g)
                                                     for g in _groups(len(inputs.texts), per_call)]
    start = 0
    for b in batches:
        x = model.embed(b.input_ids).detach()
        valid = b.attention_mask.bool()[..., None].expand_as(x)
        std = SG_SCALE * float(x[valid].max() - x[valid].min())
        torch.manual_seed(seed + start)
        t = inputs.targets[start:start + len(b)]
        g = tunnel.attribute(x.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=SG_SAMPLES,
                             stdevs=std, target=t, abs=False,
                             additional_forward_args=(b.attention_mask, b.token_type_ids))
        out += _split((g * x).sum(-1), b)
        stds += [std] * len(b)
        start += len(b)
    return {"scores": out, "stds": stds}


def smoothgrad_noise(shape: tuple[int, ...], std: float, seed: int) -> torch.Tensor:
    """The unit-std draws NoiseTunnel made for a call seeded with ``seed`` (its torch.normal call)."""
    torch.manual_seed(seed)
    std_t = torch.tensor(std).repeat(shape)
    return torch.normal(0, std_t) / std


# ----------------------------------------------------------------------------- integrated gradients
def integrated_gradients(model: TextClassifier, inputs: Inputs, per_call: int, n_steps: int = IG_STEPS) -> dict:
    """LayerIntegratedGradients on the word-embedding layer, n_steps=50 (Gauss-Legendre, Captum's
    default), the tutorial's [CLS] [PAD].. [SEP] reference, with the convergence delta (as the tutorial).
    """
    lig = LayerIntegratedGradients(_from_ids(model), model.word_embeddings)
    out: list[np.ndarray] = []
    rel: list[float] = []
    batches = inputs.singles if per_call == 1 else [inputs.batch.select(g)
                                                     for g in _groups(len(inputs.texts), per_call)]
    start = 0
    for b in batches:
        t = inputs.targets[start:start + len(b)]
        attr, delta = lig.attribute(b.input_ids, baselines=reference_ids(model, b), target=t,
                                    additional_forward_args=(b.attention_mask, b.token_type_ids),
                                    n_steps=n_steps, return_convergence_delta=True)
        scores = attr.sum(-1) * b.attention_mask
        gap = scores.sum(1) - delta
        rel += (delta.abs() / gap.abs().clamp_min(1e-12)).tolist()
        out += _split(scores, b)
        start += len(b)
    return {"scores": out, "relative_error": rel}


RUNNERS = {"gradient": gradient, "smoothgrad": smoothgrad, "integrated_gradients": integrated_gradients}
