"""Amortized DiffMask explanations: one forward pass of the model per input, then the probes.

For a ``TextClassifier``, ``explain_diffmask`` returns the usual ``Attribution`` records, one list per
requested layer. A record's scores are the probabilities that each token's gate is non-zero (kept):
in input mode "token i is needed given what layers 0..k know", in hidden mode "layer k's state at
token i is needed". DiffMask preserves the whole output distribution, so ``target`` is the prediction.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, AttributionMethod
from unmask.attribution.record import Attribution
from unmask.errors import UnmaskError
from unmask.masking.adapters import ClassifierAdapter, MaskableModel, ModelStates
from unmask.masking.diffmask import DiffMask
from unmask.models.batch import Batch, length_buckets
from unmask.models.classifier import TextClassifier


@torch.no_grad()
def keep_probabilities(diffmask: DiffMask, adapter: MaskableModel, inputs) -> tuple[torch.Tensor, ModelStates]:
    """(B, L + 1, T) keep probabilities of every layer and the model states, from one forward pass."""
    states = adapter.states(inputs)
    diffmask.check_states(states)
    return diffmask.keep_all_layers(states), states


def _layers(diffmask: DiffMask, layers: Sequence[int] | int | None) -> list[int]:
    if layers is None:
        return list(range(diffmask.num_layers + 1))
    if isinstance(layers, int):
        layers = [layers]
    if not layers:
        raise UnmaskError("no layers asked for")
    return [diffmask.check_layer(k) for k in layers]


def explain_diffmask(diffmask: DiffMask, model: TextClassifier, texts: str | Sequence[str],
                     pairs: Sequence[str | None] | None = None, layers: Sequence[int] | int | None = None,
                     token_budget: int = DEFAULT_TOKEN_BUDGET) -> dict[int, list[Attribution]]:
    """``{layer: [Attribution per text]}`` for the asked layers (default: all)."""
    if isinstance(texts, str):
        texts = [texts]
    layers = _layers(diffmask, layers)
    adapter = ClassifierAdapter(model)
    batch = model.encode(list(texts), list(pairs) if pairs is not None else None)
    records: dict[int, list[Attribution | None]] = {k: [None] * len(batch) for k in layers}
    name = f"diffmask_{diffmask.mode}"
    for idx in length_buckets(batch.lengths, token_budget):
        sub = batch.select(idx)
        keep, states = keep_probabilities(diffmask, adapter, sub)
        probs = states.logits.softmax(-1)
        for j, i in enumerate(idx):
            n = batch.lengths[i]
            pred = int(probs[j].argmax())
            for k in layers:
                scores = keep[j, k, :n].double().numpy()
                records[k][i] = Attribution(
                    tokens=batch.tokens[i][:n], scores=scores, method=name, target=pred,
                    target_name=model.label_names[pred], prediction=pred, probabilities=probs[j].tolist(),
                    word_ids=batch.word_ids[i][:n], sequence_ids=batch.sequence_ids[i][:n],
                    words=batch.words[i], text=batch.texts[i], pair=batch.pairs[i] if batch.pairs else None,
                    params={"layer": k, "mode": diffmask.mode, "eps": diffmask.eps},
                    extras={"layer": k, "expected_kept": float(scores.mean())})
    return records  # type: ignore[return-value]


class DiffMaskAttribution(AttributionMethod):
    """A trained DiffMask at one layer as an ``AttributionMethod`` (usable in ``unmask.explain``).

    Not registered by name: it needs trained probes. Scores are keep probabilities; ``target`` is ignored.
    """

    def __init__(self, diffmask: DiffMask, layer: int, token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        super().__init__(token_budget)
        self._diffmask = diffmask
        self.layer = diffmask.check_layer(layer)
        self.mode = diffmask.mode
        self.name = f"diffmask_{diffmask.mode}"

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        keep, _ = keep_probabilities(self._diffmask, ClassifierAdapter(model), batch)
        scores = keep[:, self.layer]
        return scores, [{"layer": self.layer, "expected_kept": float(s[: n].mean())}
                        for s, n in zip(scores, batch.lengths)]
