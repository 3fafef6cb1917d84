"""Batched scores and gradients over id rows (length-bucketed; one forward/backward per bucket)."""
from __future__ import annotations

import torch

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, AttributionMethod, gradient_chunks
from unmask.models.batch import length_buckets
from unmask.models.classifier import TextClassifier
from unmask.perturbation.tokens import TokenRow, batch_from_rows


def attribute_rows(model: TextClassifier, method: AttributionMethod, rows: list[TokenRow],
                   targets: list[int]) -> list[torch.Tensor]:
    """Token scores of ``method`` for every row (unpadded, one tensor per row)."""
    out: list[torch.Tensor | None] = [None] * len(rows)
    lengths = [len(r) for r in rows]
    for idx in length_buckets(lengths, method.token_budget, method.rows_per_example):
        batch = batch_from_rows(model, [rows[i] for i in idx])
        scores, _ = method.attribute(model, batch, torch.tensor([targets[i] for i in idx]))
        for j, i in enumerate(idx):
            out[i] = scores[j, :lengths[i]].detach().float()
    return out  # type: ignore[return-value]


def embedding_gradients(model: TextClassifier, rows: list[TokenRow], targets: list[int],
                        objective: str = "loss", token_budget: int = DEFAULT_TOKEN_BUDGET
                        ) -> list[torch.Tensor]:
    """d objective / d word embedding, (tokens, dim) per row; ``objective`` as in ``objective_values``."""
    out: list[torch.Tensor | None] = [None] * len(rows)
    lengths = [len(r) for r in rows]
    for idx in length_buckets(lengths, token_budget):
        batch = batch_from_rows(model, [rows[i] for i in idx])
        embeds = model.embed(batch.input_ids).detach()
        target = torch.tensor([targets[i] for i in idx])
        for sl, grads, _ in gradient_chunks(model, embeds, batch.attention_mask, batch.token_type_ids,
                                            target, objective, token_budget):
            for j in range(sl.start, sl.stop):
                out[idx[j]] = grads[j - sl.start, :lengths[idx[j]]].detach()
    return out  # type: ignore[return-value]
