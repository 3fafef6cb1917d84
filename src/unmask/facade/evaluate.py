"""Evaluate models for the Facade tables: accuracy, agreement, P@1 / Mean Attribution per method.

The paper's "Gradient" is its Eq. 1 (|grad . x| normalized): unmask's ``gradient_x_input``, and so it is
keyed here (the method registry's ``gradient`` is the L2 norm of the gradient, which the paper does not
evaluate; results written before the rename used the key ``"gradient"``, see ``RENAMED``). SmoothGrad
reduces the same way (g . x), IG uses a zero word-embedding baseline with a fixed number of steps. Every
method explains the evaluated model's own prediction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unmask.attribution.base import AttributionMethod
from unmask.attribution.budget import AUTO_TOKEN_BUDGET, resolve_token_budget
from unmask.attribution.explain import attribute_batch, predict_batch
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.data.readers import Example, pairs_of
from unmask.errors import UnmaskError
from unmask.facade.objective import class_margin
from unmask.facade.structure import block_gradient_mass
from unmask.facade.tables import PAPER_METHODS, RENAMED
from unmask.facade.targets import TargetPositions
from unmask.metrics.saliency import saliency_summary
from unmask.models.batch import length_buckets
from unmask.models.classifier import SPLIT_KEY, TextClassifier


@dataclass
class EvalConfig:
    ig_steps: int = 20
    smoothgrad_samples: int = 10
    token_budget: int = AUTO_TOKEN_BUDGET  # derived from each model's size (attribution/budget.py)
    methods: tuple[str, ...] = PAPER_METHODS
    apart: bool = True  # merged models evaluated as f + g run apart (facade/summed.py): exact, no zero blocks


def paper_methods(config: EvalConfig) -> dict[str, AttributionMethod]:
    renamed = sorted(set(config.methods) & set(RENAMED))
    if renamed:
        raise UnmaskError(f"Facade evaluation method {renamed[0]!r} is now called {RENAMED[renamed[0]]!r} (g . x, "
                          f"the paper's Eq. 1; the registry's 'gradient' is the gradient's L2 norm)")
    unknown = sorted(set(config.methods) - set(PAPER_METHODS))
    if unknown:
        raise UnmaskError(f"unknown Facade evaluation method(s) {unknown}; choose from {list(PAPER_METHODS)}")
    all_methods = {
        "gradient_x_input": GradientXInput(token_budget=config.token_budget),
        "smoothgrad": SmoothGrad(samples=config.smoothgrad_samples, reduce="dot", token_budget=config.token_budget),
        "integrated_gradients": IntegratedGradients(steps=config.ig_steps, tolerance=None,
                                                    token_budget=config.token_budget),
    }
    return {k: all_methods[k] for k in config.methods}


def split_sizes(model) -> tuple[int, ...] | None:
    """Embedding dimensions of f's and g's blocks of a merged model (dense or run apart), else None."""
    if hasattr(model, "block_sizes"):
        return tuple(model.block_sizes)
    sizes = getattr(getattr(getattr(model, "model", None), "config", None), SPLIT_KEY, None)
    return tuple(sizes) if sizes else None


def gradient_split_ratio(model: TextClassifier, examples: list[Example],
                         token_budget: int = AUTO_TOKEN_BUDGET) -> float | None:
    """Median over inputs of sum_i |g_i . x_i| on the facade block / on the predictive block.

    Only for merged models (split LayerNorm); the loss gradient at the model's own prediction. Rows go
    through in length buckets of at most ``token_budget`` tokens, by default derived from the model's size
    and the memory budget for a backward pass (a fixed 64-row batch of long RTE pairs on a merged model
    needed ~10 GB).
    """
    sizes = split_sizes(model)
    if not sizes:
        return None
    bounds = np.cumsum([0, *sizes])
    blocks = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    batch = model.encode([e.text for e in examples], pairs_of(examples))
    ratios = []
    budget = resolve_token_budget(token_budget, model, max(batch.lengths, default=1), "backward")
    for idx in length_buckets(batch.lengths, budget):
        b = batch.select(idx)
        mass = block_gradient_mass(model, b.input_ids, b.attention_mask, b.token_type_ids, blocks)
        ratios.extend((mass[:, -1] / mass[:, 0].clamp_min(1e-12)).tolist())
    return float(np.median(ratios))


@torch.no_grad()
def baseline_margin_gap(model: TextClassifier, examples: list[Example], target: torch.Tensor,
                        token_budget: int = AUTO_TOKEN_BUDGET) -> torch.Tensor:
    """Per example, the logit margin of ``target`` at x minus at IG's zero word-embedding baseline.

    IG distributes exactly this gap (for the margin objective); on a merged model f + g it is the sum of
    f's and g's gaps, so g's gap is the IG mass a Facade can move (the paper's IG-robust regime has it ~0).
    """
    batch = model.encode([e.text for e in examples], pairs_of(examples))
    out = torch.zeros(len(examples), dtype=model.embedding_matrix.dtype)
    for idx in length_buckets(batch.lengths, token_budget):
        sub = batch.select(idx)
        x = model.embed(sub.input_ids)
        y = target[idx]
        gaps = []
        for embeds in (x, torch.zeros_like(x)):
            logits = model.forward_embeds(embeds, sub.attention_mask, sub.token_type_ids).logits
            gaps.append(class_margin(logits, y))
        out[idx] = gaps[0] - gaps[1]
    return out


def evaluate_model(model: TextClassifier, examples: list[Example], targets: dict[str, TargetPositions],
                   config: EvalConfig, reference_predictions: list[int] | None = None,
                   progress: bool = True) -> dict:
    """Accuracy, agreement with ``reference_predictions`` and, for each target set (e.g. ``{"ft": ...,
    "stop": ...}``), P@1 / Mean Attribution per method: ``saliency[target][method] = {"p1", "attr"}``.
    Attributions are computed once per method and scored against every target set."""
    batch = model.encode([e.text for e in examples], pairs_of(examples))
    logits = predict_batch(model, batch, config.token_budget)
    preds = logits.argmax(-1)
    gold = torch.tensor([e.label for e in examples])
    result: dict = {"accuracy": 100.0 * float((preds == gold).float().mean()),
                    "predictions": preds.tolist(), "saliency": {name: {} for name in targets}}
    if reference_predictions is not None:
        result["agreement"] = 100.0 * float((preds == torch.tensor(reference_predictions)).float().mean())
    masks = {t: [positions.mask_tokens(batch.tokens[i][:n], batch.sequence_ids[i][:n])
                 for i, n in enumerate(batch.lengths)] for t, positions in targets.items()}
    for name, method in paper_methods(config).items():
        records = attribute_batch(model, batch, method, preds, logits, progress=progress)
        for t in targets:
            result["saliency"][t][name] = saliency_summary(records, masks[t])
        if name == "integrated_gradients":
            rel = [r.extras["relative_error"] for r in records]
            result["ig_relative_completeness_error_median"] = float(np.median(rel))
    ratio = gradient_split_ratio(model, examples, config.token_budget)
    if ratio is not None:
        result["grad_ratio_g_over_f"] = ratio
    return result
