"""First-order occlusion: g_i . (x_i - m), the gradient's prediction of replacing token i by [MASK]."""
from __future__ import annotations

import torch

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, AttributionMethod, ObjectiveMixin, check_precision
from unmask.attribution.objectives import Objective
from unmask.attribution.shared import PassGradients, SinglePassMixin
from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier


class FirstOrderOcclusion(SinglePassMixin, ObjectiveMixin, AttributionMethod):
    """Token score g . (x - e_[MASK]), 0 at special tokens and padding: the linearization of leave-one-out
    with [MASK]. Float32 by default (a measurement the audit calibrates). It needs the same gradient pass
    as ``gradient`` / ``gradient_x_input`` at equal settings and shares it when requested with them. Not
    registered as a user-facing method: the audit's magnitude check uses it."""

    name = "first_order_occlusion"

    def __init__(self, objective: "str | Objective" = "log_prob", token_budget: int = DEFAULT_TOKEN_BUDGET,
                 precision: str = "float32") -> None:
        super().__init__(token_budget)
        self.set_objective(objective)
        self.precision = check_precision(precision)

    def from_pass(self, model: TextClassifier, batch: Batch,
                  shared: PassGradients) -> tuple[torch.Tensor, list[dict]]:
        mask_id = model.tokenizer.mask_token_id
        if mask_id is None:
            raise UnmaskError("the magnitude check needs a [MASK] token in the tokenizer")
        m = model.embedding_matrix[mask_id].detach()
        content = (~batch.special_mask()).to(shared.grads.dtype)  # special_mask is True at padding too
        scores = (shared.grads * (shared.embeds - m)).sum(-1) * content
        return scores, [{"objective_value": float(v), **shared.precision} for v in shared.values]
