"""Leave-one-out / occlusion (Li et al. 2016): drop in the objective when a token is masked."""
from __future__ import annotations

import torch

from unmask.attribution.base import (DEFAULT_TOKEN_BUDGET, OBJECTIVES, AttributionMethod, check_choice,
                                     objective_values, register)
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

REPLACEMENTS = ("mask", "unk", "pad", "zero")


@register
class LeaveOneOut(AttributionMethod):
    """Score of token i = F(x) - F(x with token i replaced); specials are never occluded (score 0).

    ``replace``: the [MASK] token (default), [UNK], [PAD], or a zero embedding. All occluded copies of
    all rows run as batched forwards (no gradients).
    """

    name = "leave_one_out"
    aliases = ("occlusion", "loo")

    def __init__(self, replace: str = "mask", objective: str = "log_prob",
                 token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        super().__init__(token_budget)
        self.replace = check_choice(replace, REPLACEMENTS, "replacement")
        self.objective = check_choice(objective, OBJECTIVES, "objective")
        self.rows_per_example = 16  # a typical sentence's token count, for bucketing

    def _replacement(self, model: TextClassifier) -> torch.Tensor:
        if self.replace == "zero":
            return torch.zeros(model.embedding_matrix.shape[1])
        tok = model.tokenizer
        tid = {"mask": tok.mask_token_id, "unk": tok.unk_token_id, "pad": tok.pad_token_id}[self.replace]
        return model.embedding_matrix[tid].detach()

    @torch.no_grad()
    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        embeds = model.embed(batch.input_ids)
        rows, width, _ = embeds.shape
        occludable = (~batch.special_mask()) & batch.attention_mask.bool()
        pos = occludable.nonzero().tolist()  # (row, token) pairs to occlude
        base = objective_values(model.forward_embeds(embeds, batch.attention_mask,
                                                     batch.token_type_ids).logits, target, self.objective)
        scores = torch.zeros(rows, width, dtype=embeds.dtype)
        fill = self._replacement(model)
        step = max(1, self.token_budget // width)
        for start in range(0, len(pos), step):
            chunk = pos[start:start + step]
            r = torch.tensor([p[0] for p in chunk])
            t = torch.tensor([p[1] for p in chunk])
            x = embeds[r].clone()
            x[torch.arange(len(chunk)), t] = fill
            tti = batch.token_type_ids[r] if batch.token_type_ids is not None else None
            vals = objective_values(model.forward_embeds(x, batch.attention_mask[r], tti).logits,
                                    target[r], self.objective)
            scores[r, t] = base[r] - vals
        return scores, [{"objective_value": float(v)} for v in base]
