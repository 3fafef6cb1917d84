"""Vanilla gradient (Simonyan et al. 2014): d objective / d word embedding, reduced per token."""
from __future__ import annotations

import torch

from unmask.attribution.base import (DEFAULT_TOKEN_BUDGET, REDUCTIONS, AttributionMethod, ObjectiveMixin,
                                     check_choice, check_precision, reduce_tokens, register, zero_padding)
from unmask.attribution.objectives import Objective
from unmask.attribution.precision import precision_extras
from unmask.attribution.shared import PassGradients, SinglePassMixin, gradients_at
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier


@register
class Gradient(SinglePassMixin, ObjectiveMixin, AttributionMethod):
    """Gradient of the objective at the word embeddings; token score ||g|| by default.

    ``reduce="dot"`` gives g.x, the Facade paper's / AllenNLP's "Gradient" (same as gradient_x_input).
    ``objective``: a name (``attribution.objectives``) or a callable (model output, target) -> per-row values.
    ``precision``: ``"auto"`` (bf16 autocast only where native and measured faster), ``"float32"`` or
    ``"bfloat16"``; the one used is in each record's ``extras["precision"]``.
    Requested together with methods of the same pass (objective, precision, token budget; e.g.
    gradient_x_input), it shares one forward + backward with them (``attribution.shared``).
    """

    name = "gradient"
    aliases = ("saliency", "vanilla_gradient")

    def __init__(self, reduce: str = "l2", objective: "str | Objective" = "log_prob",
                 token_budget: int = DEFAULT_TOKEN_BUDGET, precision: str = "auto") -> None:
        super().__init__(token_budget)
        self.reduce = check_choice(reduce, REDUCTIONS, "reduction")
        self.set_objective(objective)
        self.precision = check_precision(precision)

    def from_pass(self, model: TextClassifier, batch: Batch,
                  shared: PassGradients) -> tuple[torch.Tensor, list[dict]]:
        scores = zero_padding(self.reduce_dims(shared.grads, shared.embeds), batch.attention_mask)
        return scores, [{"objective_value": float(v), **shared.precision} for v in shared.values]

    def dim_attributions(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch, target: torch.Tensor,
                         precision: str | None = None) -> tuple[torch.Tensor, list[dict]]:
        """(rows, tokens, dim) gradients at ``embeds`` (any point, e.g. noisy copies) and per-row extras;
        ``precision`` overrides the method's own (``None``: ``self.precision``)."""
        precision = check_precision(self.precision if precision is None else precision)
        grads, values = gradients_at(model, embeds, batch, target, self._objective, self.token_budget, precision)
        used = precision_extras(precision, model)
        return grads, [{"objective_value": float(v), **used} for v in values]

    def reduce_dims(self, dims: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Token scores from per-dimension gradients and the input they are reduced with."""
        return reduce_tokens(dims, embeds, self.reduce)

    def attribute_embeds(self, model: TextClassifier, embeds: torch.Tensor, batch: Batch,
                         target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Scores at given word embeddings (``batch`` supplies mask and segment ids)."""
        dims, extras = self.dim_attributions(model, embeds, batch, target)
        return zero_padding(self.reduce_dims(dims, embeds), batch.attention_mask), extras
