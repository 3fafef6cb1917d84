"""Universal adversarial triggers (Wallace et al. 2019).

A k-token phrase is inserted at the start of one segment of every input of a class (the text for single
sentences, the hypothesis for pairs). Each iteration takes a batch of inputs, averages the gradient of
the objective over the batch at the trigger's word embeddings, ranks every vocabulary token per trigger
position by the first-order gain e_w . g (top ``candidates``), then runs a left-to-right beam search
over positions that scores the candidate triggers exactly on the batch, keeping the ``beam_size`` best.
Untargeted: maximize the loss on the source class; targeted: maximize log p(target).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET
from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier
from unmask.perturbation.gradients import embedding_gradients
from unmask.perturbation.record import TriggerResult
from unmask.perturbation.tokens import TokenRow, candidate_vocab, check_segment, encode_rows, logits_rows


def _with_trigger(rows: list[TokenRow], trigger: Sequence[int], segment: int) -> tuple[list[TokenRow], list[list[int]]]:
    out, where = [], []
    for r in rows:
        row, pos = r.insert_front(segment, list(trigger))
        out.append(row)
        where.append(pos)
    return out, where


def _objective(logits: torch.Tensor, label: int, target: int | None) -> torch.Tensor:
    """Per-row value to maximize: CE on ``label`` (untargeted) or log p(``target``)."""
    logp = logits.log_softmax(-1)
    return logp[:, target] if target is not None else -logp[:, label]


def _score_triggers(model: TextClassifier, triggers: list[tuple[int, ...]], rows: list[TokenRow], segment: int,
                    label: int, target: int | None, token_budget: int) -> list[float]:
    """Mean objective of each trigger over ``rows``, all (trigger, row) pairs batched together."""
    flat: list[TokenRow] = []
    for t in triggers:
        flat.extend(_with_trigger(rows, t, segment)[0])
    values = _objective(logits_rows(model, flat, token_budget), label, target)
    return values.view(len(triggers), len(rows)).mean(1).tolist()


def _check(model: TextClassifier, rows: list[TokenRow], segment: int | None, length: int) -> int:
    segment = (1 if rows[0].has_pair else 0) if segment is None else segment
    check_segment(segment, rows[0].has_pair)
    longest = max(len(r) for r in rows) + length
    if longest > model.max_length:
        raise UnmaskError(f"an input plus the {length}-token trigger has {longest} tokens, over the model's "
                          f"limit of {model.max_length}")
    return segment


def search_trigger(model: TextClassifier, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                   label: int | str, target: int | str | None = None, length: int = 3,
                   segment: int | None = None, beam_size: int = 1, candidates: int = 40, iterations: int = 10,
                   batch_size: int = 32, init_token: str = "the", allow_subwords: bool = False,
                   allow_punctuation: bool = False, seed: int = 0, token_budget: int = DEFAULT_TOKEN_BUDGET,
                   progress: bool = False) -> TriggerResult:
    """Search a trigger on ``texts`` (inputs of class ``label``); see the module doc for the algorithm.

    ``segment``: where the trigger goes (default: 0 for single sentences, 1 = hypothesis for pairs).
    Each iteration uses the next ``batch_size`` inputs of a seeded shuffle (cycling).
    """
    for name, value in (("length", length), ("beam_size", beam_size), ("candidates", candidates),
                        ("iterations", iterations), ("batch_size", batch_size)):
        if value < 1:
            raise UnmaskError(f"{name} must be >= 1, got {value}")
    if isinstance(texts, str):
        texts = [texts]
    rows = encode_rows(model, list(texts), list(pairs) if pairs is not None else None)
    segment = _check(model, rows, segment, length)
    label = model.label_index(label)
    target = model.label_index(target) if target is not None else None
    if target == label:
        raise UnmaskError(f"target {model.label_names[target]!r} equals the source class; pick another label")
    init = model.tokenizer.convert_tokens_to_ids(init_token)
    if init is None or init == model.tokenizer.unk_token_id:
        raise UnmaskError(f"init_token {init_token!r} is not a single token of the model's vocabulary")
    objective = "log_prob" if target is not None else "loss"
    obj_label = target if target is not None else label
    allowed = candidate_vocab(model, allow_subwords, allow_punctuation)
    embedding = model.embedding_matrix.detach()
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    trigger = (init,) * length
    history: list[dict] = []
    value = float("nan")
    bar = tqdm(range(iterations), desc="trigger search", disable=not progress, leave=False)
    for it in bar:
        take = [order[(it * batch_size + j) % len(order)] for j in range(min(batch_size, len(order)))]
        base = [rows[i] for i in take]
        trig_rows, where = _with_trigger(base, trigger, segment)
        grads = embedding_gradients(model, trig_rows, [obj_label] * len(base), objective, token_budget)
        avg = torch.stack([g[pos] for g, pos in zip(grads, where)]).mean(0)  # (length, dim)
        gain = (avg.to(embedding.dtype) @ embedding.T).masked_fill(~allowed[None, :], float("-inf"))
        cands = gain.topk(min(candidates, int(allowed.sum())), dim=-1).indices.tolist()
        scored = dict(zip([trigger], _score_triggers(model, [trigger], base, segment, label, target,
                                                     token_budget)))
        beam = [trigger]
        for p in range(length):
            new = list(dict.fromkeys(b[:p] + (c,) + b[p + 1:] for b in beam for c in cands[p]))
            new = [t for t in new if t not in scored]
            if new:
                scored.update(zip(new, _score_triggers(model, new, base, segment, label, target, token_budget)))
            beam = sorted(scored, key=lambda t: -scored[t])[:beam_size]
        trigger = beam[0]
        value = scored[trigger]
        tokens = model.tokenizer.convert_ids_to_tokens(list(trigger))
        history.append({"iteration": it + 1, "tokens": tokens, "token_ids": list(trigger), "objective": value})
        bar.set_postfix(trigger=" ".join(tokens), objective=f"{value:.3f}")
    bar.close()
    params = {"length": length, "beam_size": beam_size, "candidates": candidates, "iterations": iterations,
              "batch_size": batch_size, "init_token": init_token, "allow_subwords": allow_subwords,
              "allow_punctuation": allow_punctuation, "seed": seed, "search_inputs": len(rows),
              "objective": "loss on source class" if target is None else "log p(target)"}
    return TriggerResult(tokens=model.tokenizer.convert_ids_to_tokens(list(trigger)), token_ids=list(trigger),
                         source_label=label, target_label=target, segment=segment, label_names=model.label_names,
                         history=history, objective=value, params=params)


def evaluate_trigger(model: TextClassifier, trigger: TriggerResult | Sequence[int], texts: Sequence[str],
                     pairs: Sequence[str] | None = None, *, label: int | str | None = None,
                     target: int | str | None = None, segment: int | None = None,
                     token_budget: int = DEFAULT_TOKEN_BUDGET) -> dict:
    """Success rate on held-out inputs of class ``label`` (by default the trigger's own settings);
    stored in ``trigger.evaluation`` when a ``TriggerResult`` is given.

    ``success_pct``: among inputs the model predicts as ``label`` without the trigger, the share whose
    prediction changes (untargeted) or becomes ``target``. ``accuracy_before`` / ``accuracy_after``: share
    of all given inputs predicted as ``label`` without / with the trigger.
    """
    if isinstance(trigger, TriggerResult):
        ids = trigger.token_ids
        label = trigger.source_label if label is None else label
        target = trigger.target_label if target is None else target
        segment = trigger.segment if segment is None else segment
    else:
        ids = [int(t) for t in trigger]
    if not ids:
        raise UnmaskError("the trigger is empty")
    if label is None:
        raise UnmaskError("give the class of the held-out inputs (label)")
    label = model.label_index(label)
    target = model.label_index(target) if target is not None else None
    if isinstance(texts, str):
        texts = [texts]
    rows = encode_rows(model, list(texts), list(pairs) if pairs is not None else None)
    segment = _check(model, rows, segment, len(ids))
    before = logits_rows(model, rows, token_budget).argmax(-1)
    after = logits_rows(model, _with_trigger(rows, ids, segment)[0], token_budget).argmax(-1)
    keep = before == label
    hit = (after != label) if target is None else (after == target)
    n = int(keep.sum())
    out = {"n": n, "n_total": len(rows),
           "success_pct": 100.0 * float(hit[keep].float().mean()) if n else None,
           "accuracy_before": 100.0 * float((before == label).float().mean()),
           "accuracy_after": 100.0 * float((after == label).float().mean())}
    if isinstance(trigger, TriggerResult):
        trigger.evaluation = out
    return out
