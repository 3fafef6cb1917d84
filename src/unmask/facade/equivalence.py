"""Check that a merged model computes f + g: logits, predictions, and the split embedding gradients.

The gradient check uses the merged model's cross-entropy loss on its own prediction (the quantity the
Facade attribution differentiates). Its gradient w.r.t. the merged word embeddings must equal
``[J_f^T v, J_g^T v]`` with ``v = dloss/dlogits`` of the merged model, i.e. f's and g's embedding
gradients for the same upstream vector, concatenated along the hidden axis.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from unmask.attribution.budget import AUTO_TOKEN_BUDGET, resolve_token_budget
from unmask.errors import UnmaskError
from unmask.models.batch import Batch, length_buckets
from unmask.models.classifier import TextClassifier

TOKEN_BUDGET = AUTO_TOKEN_BUDGET  # from the merged model's size (a fixed 4096 needed ~2.7 GB on MiniLM + g)


def _embedding_grad(model: TextClassifier, batch: Batch, upstream: torch.Tensor | None):
    """(logits, d(upstream . logits)/d word embeddings); ``upstream=None`` takes the CE loss on argmax."""
    embeds = model.embed(batch.input_ids).detach().requires_grad_(True)
    logits = model.forward_embeds(embeds, batch.attention_mask, batch.token_type_ids).logits
    if upstream is None:
        upstream = (logits.softmax(-1) - torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1])).detach()
    (grad,) = torch.autograd.grad((logits * upstream.to(logits.dtype)).sum(), embeds)
    mask = batch.attention_mask.unsqueeze(-1).to(grad.dtype)
    return logits.detach(), grad * mask, upstream


def check_merge(f: TextClassifier, g: TextClassifier, merged: TextClassifier, texts: list[str],
                pairs: list[str | None] | None = None, token_budget: int = TOKEN_BUDGET,
                progress: bool | None = None) -> dict:
    """Equivalence numbers of ``merged`` against ``f`` and ``g`` on ``texts`` (and ``pairs``).

    Returns ``max_logit_diff`` (max |merged - (f + g)|), ``agreement`` (percent of inputs where merged
    and f predict the same label), ``max_grad_diff`` (max |grad_merged - [grad_f, grad_g]|, padding
    excluded), ``max_grad_abs`` (scale of that gradient), ``grad_norm_ratio`` (median over inputs of
    |grad_g| / |grad_f|), and ``n``.
    """
    if not texts:
        raise UnmaskError("check_merge needs at least one text")
    h_f = f.embedding_matrix.shape[1]
    h_g = g.embedding_matrix.shape[1]
    if merged.embedding_matrix.shape[1] != h_f + h_g:
        raise UnmaskError(f"merged hidden size {merged.embedding_matrix.shape[1]} is not f's {h_f} + g's {h_g}")
    batch = merged.encode(texts, pairs)
    token_budget = resolve_token_budget(token_budget, merged, width=int(max(batch.lengths)))
    groups = length_buckets(batch.lengths, token_budget)
    if progress is None:
        progress = len(texts) > 256
    max_logit = max_grad = max_abs = 0.0
    agree = 0
    ratios = []
    for idx in tqdm(groups, desc="merge check", unit="batch", disable=not progress):
        part = batch.select(idx)
        lm, gm, v = _embedding_grad(merged, part, None)
        lf, gf, _ = _embedding_grad(f, part, v)
        lg, gg, _ = _embedding_grad(g, part, v)
        max_logit = max(max_logit, (lm - (lf + lg)).abs().max().item())
        agree += (lm.argmax(-1) == lf.argmax(-1)).sum().item()
        max_grad = max(max_grad, (gm - torch.cat([gf, gg.to(gf.dtype)], -1)).abs().max().item())
        max_abs = max(max_abs, gm.abs().max().item())
        ratios.append(gg.flatten(1).norm(dim=1) / gf.flatten(1).norm(dim=1).clamp_min(1e-30))
    return {"n": len(texts), "max_logit_diff": max_logit, "agreement": 100.0 * agree / len(texts),
            "max_grad_diff": max_grad, "max_grad_abs": max_abs,
            "grad_norm_ratio": torch.cat(ratios).median().item()}
