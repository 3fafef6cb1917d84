"""Regularized predictive model (Facade paper Eq. 5): lambda_rp * CE + sum_j |grad_xj L . x_j|.

Fine-tuning f with this loss shrinks its input gradients so that a merged Facade dominates them.
"""
from __future__ import annotations

import torch

from unmask.models.classifier import TextClassifier
from unmask.training.finetune import LossFn


def regularized_loss(lambda_rp: float = 3.0) -> LossFn:
    """A ``train_classifier`` loss: ``lambda_rp`` x mean CE + mean over rows of sum_j |dL/dx_j . x_j|."""

    def loss_fn(model: TextClassifier, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = model.embed(batch["input_ids"])
        logits = model.forward_embeds(x, batch["attention_mask"], batch["token_type_ids"]).logits
        per_row = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
        (grads,) = torch.autograd.grad(per_row.sum(), x, create_graph=True)
        penalty = ((grads * x).sum(-1).abs() * batch["attention_mask"]).sum(-1).mean()
        return lambda_rp * per_row.mean() + penalty, logits

    return loss_fn
