"""Vanilla gradient (Simonyan et al. 2014): d objective / d word embedding, reduced per token."""
from __future__ import annotations

import torch

from unmask.attribution.base import (DEFAULT_TOKEN_BUDGET, OBJECTIVES, REDUCTIONS, AttributionMethod,
                                     check_choice, gradient_chunks, reduce_tokens, register, zero_padding)
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier


@register
class Gradient(AttributionMethod):
    """Gradient of the objective at the word embeddings; token score ||g|| by default.

    ``reduce="dot"`` gives g.x, the Facade paper's / AllenNLP's "Gradient" (same as gradient_x_input).
    """

    name = "gradient"
    aliases = ("saliency", "vanilla_gradient")

    def __init__(self, reduce: str = "l2", objective: str = "log_prob",
                 token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        super().__init__(token_budget)
        self.reduce = check_choice(reduce, REDUCTIONS, "reduction")
        self.objective = check_choice(objective, OBJECTIVES, "objective")

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        embeds = model.embed(batch.input_ids).detach()
        scores = torch.zeros(embeds.shape[:2], dtype=embeds.dtype)
        values = torch.zeros(len(batch), dtype=embeds.dtype)
        for sl, grads, val in gradient_chunks(model, embeds, batch.attention_mask, batch.token_type_ids,
                                              target, self.objective, self.token_budget):
            scores[sl] = reduce_tokens(grads, embeds[sl], self.reduce)
            values[sl] = val
        return zero_padding(scores, batch.attention_mask), [{"objective_value": float(v)} for v in values]
