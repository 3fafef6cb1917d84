"""``explain``: texts -> batch -> each method -> ``Attribution`` records (the one way through)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, AttributionMethod, get_method
from unmask.attribution.record import Attribution
from unmask.attribution.shared import pass_groups
from unmask.errors import UnmaskError
from unmask.models.adapter import ensure_supported
from unmask.models.batch import Batch, length_buckets
from unmask.models.classifier import TextClassifier


def predict_batch(model: TextClassifier, batch: Batch, token_budget: int = DEFAULT_TOKEN_BUDGET) -> torch.Tensor:
    """Logits for every row, computed in length buckets."""
    out = torch.zeros(len(batch), model.num_labels, dtype=model.embedding_matrix.dtype)
    for idx in length_buckets(batch.lengths, token_budget):
        out[idx] = model.logits(batch.select(idx))
    return out


def resolve_targets(model: TextClassifier, target, predictions: torch.Tensor) -> torch.Tensor:
    """``None`` -> predictions; one label (index or name) for all rows; or one label per row."""
    if target is None:
        return predictions.clone()
    if isinstance(target, (list, tuple)):
        if len(target) != len(predictions):
            raise UnmaskError(f"got {len(target)} targets for {len(predictions)} inputs")
        return torch.tensor([model.label_index(t) for t in target])
    return torch.full_like(predictions, model.label_index(target))


def attribute_batch(model: TextClassifier, batch: Batch, method: AttributionMethod, target: torch.Tensor,
                    logits: torch.Tensor, progress: bool = False) -> list[Attribution]:
    """Run one method over a tokenized batch, bucketed by length; returns records in input order."""
    return attribute_methods(model, batch, [method], target, logits, progress)[0]


def attribute_methods(model: TextClassifier, batch: Batch, methods: Sequence[AttributionMethod],
                      target: torch.Tensor, logits: torch.Tensor, progress: bool = False) -> list[list[Attribution]]:
    """Run several methods over a tokenized batch, bucketed by length; records per method, in input order.
    Methods that declare equal gradient passes share one pass per bucket (``attribution.shared``); their
    scores are bitwise those of each method run alone."""
    out: list[list[Attribution]] = [[] for _ in methods]
    for group in pass_groups(model, methods):
        for i, records in zip(group, _attribute_group(model, batch, [methods[i] for i in group], target,
                                                      logits, progress)):
            out[i] = records
    return out


def _attribute_group(model: TextClassifier, batch: Batch, methods: list[AttributionMethod], target: torch.Tensor,
                     logits: torch.Tensor, progress: bool) -> list[list[Attribution]]:
    """One method, or methods sharing one gradient pass (same token budget, one row per example)."""
    first = methods[0]
    records: list[list[Attribution | None]] = [[None] * len(batch) for _ in methods]
    probs = logits.softmax(-1)
    bar = tqdm(total=len(batch), desc="+".join(m.name for m in methods), disable=not progress, leave=False)
    for idx in length_buckets(batch.lengths, first.token_budget, first.rows_per_example):
        sub = batch.select(idx)
        if len(methods) == 1:
            results = [first.attribute(model, sub, target[idx])]
        else:
            shared = first.gradient_pass(model).run(model, sub, target[idx])
            results = [m.from_pass(model, sub, shared) for m in methods]
        for method, out, (scores, extras) in zip(methods, records, results):
            for j, i in enumerate(idx):
                out[i] = _record(model, batch, i, scores[j], extras[j], method, int(target[i]), probs[i])
        bar.update(len(idx))
    bar.close()
    return records  # type: ignore[return-value]


def _record(model: TextClassifier, batch: Batch, i: int, scores: torch.Tensor, extras: dict,
            method: AttributionMethod, target: int, probs: torch.Tensor) -> Attribution:
    n = batch.lengths[i]
    return Attribution(
        tokens=batch.tokens[i][:n], scores=scores[:n].detach().numpy(), method=method.name,
        target=target, target_name=model.label_names[target], prediction=int(probs.argmax()),
        probabilities=probs.tolist(), word_ids=batch.word_ids[i][:n], sequence_ids=batch.sequence_ids[i][:n],
        words=batch.words[i], text=batch.texts[i], pair=batch.pairs[i] if batch.pairs else None,
        params=method.params, extras=extras)


def explain(model: TextClassifier, texts: str | Sequence[str], methods: Sequence[str | AttributionMethod]
            | str = ("gradient",), pairs: Sequence[str | None] | None = None, target=None,
            token_budget: int = DEFAULT_TOKEN_BUDGET, on_too_long: str = "truncate",
            progress: bool = False) -> dict[str, list[Attribution]]:
    """Explain ``texts`` (optionally sentence pairs) with each method; ``{method: [Attribution, ...]}``.

    ``target``: ``None`` (the model's prediction), a label index or name, or one per text.
    Methods given by name use their defaults with ``token_budget``; pass instances to set parameters.
    Keys are method names, in the given order; the same method with different parameters gets one key
    per instance (``integrated_gradients(steps=8)``, see ``method_keys``); the same method with the same
    parameters twice (e.g. ``"leave_one_out"`` and its alias ``"loo"``) is an error. Methods that need the
    same gradient pass (e.g. ``gradient`` and ``gradient_x_input`` at equal settings) share one.
    """
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(pairs, str):
        pairs = [pairs]
    if isinstance(methods, (str, AttributionMethod)):
        methods = [methods]
    if not methods:
        raise UnmaskError("no attribution method given")
    instances = [get_method(m, token_budget=token_budget) if isinstance(m, str) else m for m in methods]
    keys = method_keys(instances, [m if isinstance(m, str) else m.name for m in methods])
    batch = model.encode(list(texts), list(pairs) if pairs is not None else None, on_too_long=on_too_long)
    ensure_supported(model, texts, pairs)  # after encode: the inputs themselves are checked first
    logits = predict_batch(model, batch, token_budget)
    targets = resolve_targets(model, target, logits.argmax(-1))
    return dict(zip(keys, attribute_methods(model, batch, instances, targets, logits, progress)))


def _same(a: AttributionMethod, b: AttributionMethod) -> bool:
    """Same class and every attribute equal (objects such as a trained DiffMask compare by identity)."""
    if a is b:
        return True
    va, vb = vars(a), vars(b)
    if type(a) is not type(b) or va.keys() != vb.keys():
        return False
    for k in va:
        try:
            if not (va[k] is vb[k] or bool(va[k] == vb[k])):
                return False
        except (TypeError, ValueError, RuntimeError):  # e.g. multi-element tensors
            return False
    return True


def method_keys(instances: Sequence[AttributionMethod], specs: Sequence[str]) -> list[str]:
    """Result keys: the method's name when it is unique, else the name with the parameters that differ
    within its group (``integrated_gradients(steps=8)``), numbered (``#1``, ``#2``) if those are equal
    too. The same method twice with the same parameters (also via an alias) is an ``UnmaskError``."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(instances):
        groups.setdefault(m.name, []).append(i)
    keys = [m.name for m in instances]
    for name, idx in groups.items():
        if len(idx) == 1:
            continue
        for a, i in enumerate(idx):
            for j in idx[a + 1:]:
                if _same(instances[i], instances[j]):
                    raise UnmaskError(f"method {name!r} given twice with the same parameters (as {specs[i]!r} "
                                      f"and {specs[j]!r}); give it once")
        params = [{k: v for k, v in instances[i].params.items() if k != "rows_per_example"} for i in idx]
        differing = [k for k in params[0] if any(p.get(k) != params[0][k] for p in params)]
        differing += [k for p in params for k in p if k not in params[0] and k not in differing]
        for i, p in zip(idx, params):
            keys[i] = f"{name}({', '.join(f'{k}={p.get(k)}' for k in differing)})" if differing else name
        for key in {keys[i] for i in idx}:
            clash = [i for i in idx if keys[i] == key]
            if len(clash) > 1:
                for n, i in enumerate(clash, 1):
                    keys[i] = f"{key}#{n}"
    return keys
