"""The floor: the batched forward + backward passes a method needs at minimum, in plain torch.

Rows are grouped by length (``length_buckets``) and cut into chunks of at most ``token_budget`` padded
tokens by the same planner unmask uses (``row_chunks``: each chunk runs only up to its own longest row,
so the floor pays no padding a smarter plan could avoid); each chunk is one forward and one backward
to the word embeddings, nothing else (no accumulation of results, no endpoint forwards, no bookkeeping).
"""
from __future__ import annotations

import torch

from bench_common import Inputs
from unmask.attribution.base import row_chunks
from unmask.models.batch import length_buckets
from unmask.models.classifier import TextClassifier


def floor(model: TextClassifier, inputs: Inputs, rows_per_example: int, token_budget: int) -> dict:
    batch, targets = inputs.batch, inputs.targets
    alphas = torch.linspace(1.0 / rows_per_example, 1.0, rows_per_example)
    for idx in length_buckets(batch.lengths, token_budget, rows_per_example):
        sub = batch.select(idx)
        embeds = model.embed(sub.input_ids).detach()
        # n path points / noisy copies per example (IG's scaling; the cost of SmoothGrad's noise is alike)
        rows = (embeds[:, None] * alphas[None, :, None, None]).flatten(0, 1)
        mask = sub.attention_mask.repeat_interleave(rows_per_example, 0)
        types = sub.token_type_ids.repeat_interleave(rows_per_example, 0)
        target = targets[idx].repeat_interleave(rows_per_example)
        for sl, width in row_chunks(mask, token_budget):
            x = rows[sl, :width].requires_grad_(True)
            logits = model.forward_embeds(x, mask[sl, :width], types[sl, :width]).logits
            value = logits.log_softmax(-1).gather(1, target[sl, None]).sum()
            torch.autograd.grad(value, x)
    return {}
