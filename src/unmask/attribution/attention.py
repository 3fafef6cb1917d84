"""Attention as attribution: raw [CLS] attention of one layer, or attention rollout (Abnar & Zuidema 2020).

Attention weights say where the model looked, not why it decided (Jain & Wallace 2019); unmask offers
them for comparison with gradient methods, not as an explanation of record.
"""
from __future__ import annotations

import torch

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, AttributionMethod, check_choice, register
from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

MODES = ("raw", "rollout")


@register
class Attention(AttributionMethod):
    """``mode="raw"``: attention from [CLS] at ``layer`` (default last), averaged over heads (or ``head``).
    ``mode="rollout"``: product over layers of 0.5 * A + 0.5 * I (head-averaged, rows renormalized),
    read at the [CLS] row. Scores are non-negative and target-independent.
    """

    name = "attention"

    def __init__(self, mode: str = "raw", layer: int = -1, head: int | None = None,
                 token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        super().__init__(token_budget)
        self.mode = check_choice(mode, MODES, "attention mode")
        self.layer, self.head = layer, head

    @torch.no_grad()
    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        out = model.forward_embeds(model.embed(batch.input_ids), batch.attention_mask,
                                   batch.token_type_ids, output_attentions=True)
        maps = out.attentions  # layers x (rows, heads, T, T)
        if not maps:
            raise UnmaskError(f"{model.name} does not return attention weights")
        n_layers, n_heads = len(maps), maps[0].shape[1]
        if not -n_layers <= self.layer < n_layers:
            raise UnmaskError(f"layer {self.layer} out of range for a {n_layers}-layer model")
        if self.head is not None and not 0 <= self.head < n_heads:
            raise UnmaskError(f"head {self.head} out of range for {n_heads} heads")
        if self.mode == "raw":
            a = maps[self.layer]
            a = a[:, self.head] if self.head is not None else a.mean(1)
            scores = a[:, 0, :]
        else:
            width = batch.input_ids.shape[1]
            eye = torch.eye(width, dtype=maps[0].dtype)
            rollout = eye.expand(len(batch), width, width)
            for a in maps:
                a = 0.5 * a.mean(1) + 0.5 * eye
                a = a / a.sum(-1, keepdim=True)
                rollout = a @ rollout
            scores = rollout[:, 0, :]
        return scores * batch.attention_mask, [{} for _ in range(len(batch))]


@register
class AttentionRollout(Attention):
    """Attention rollout (``attention`` with ``mode="rollout"``)."""

    name = "attention_rollout"

    def __init__(self, token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        super().__init__(mode="rollout", token_budget=token_budget)
