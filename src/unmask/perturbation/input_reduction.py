"""Input reduction (Feng et al. 2018), with beam search as in AllenNLP Interpret.

Repeatedly remove the word piece with the smallest |attribution| from one segment, as long as the
model keeps its original prediction. The default attribution is the Facade paper's Gradient: g . x of
the loss on the predicted label at the word embeddings (Eq. 1; normalization does not change the order).

With beam size k, each kept input proposes the removal of its k least important pieces; children that
keep the prediction survive (duplicates once). ``rank="attribution"`` (default) keeps the first k
survivors in proposal order (parent order, then ascending |attribution|), as AllenNLP Interpret's beam
does, so the search is steered by the attribution alone (the setting the Facade paper evaluates).
``rank="confidence"`` keeps the k children with the highest probability of the original
prediction instead (a signal from the model's output, not its gradient). The search ends when no child
keeps the prediction (or the segment is down to ``min_tokens``); the result is the first input of the
last surviving beam. [CLS] and [SEP] are never removed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, AttributionMethod, get_method
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier
from unmask.perturbation.gradients import attribute_rows
from unmask.perturbation.record import PerturbationResult, Step
from unmask.perturbation.tokens import TokenRow, check_segment, encode_rows, predict_rows, row_tokens


RANKS = ("attribution", "confidence")


@dataclass(frozen=True)
class _State:
    row: TokenRow
    history: tuple[Step, ...]
    probability: float


def resolve_method(method: str | AttributionMethod | None, token_budget: int) -> AttributionMethod:
    """``None`` -> the paper's Gradient (g . x of the loss on the prediction)."""
    if method is None:
        return GradientXInput(objective="loss", token_budget=token_budget)
    if isinstance(method, str):
        return get_method(method, token_budget=token_budget)
    if isinstance(method, AttributionMethod):
        return method
    raise UnmaskError(f"method must be a method name or an AttributionMethod, not {type(method).__name__}")


def reduce_inputs(model: TextClassifier, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None,
                  *, beam_size: int = 1, segment: int = 0, method: str | AttributionMethod | None = None,
                  min_tokens: int = 1, max_steps: int | None = None, rank: str = "attribution",
                  token_budget: int = DEFAULT_TOKEN_BUDGET, on_too_long: str = "truncate",
                  progress: bool = False) -> list[PerturbationResult]:
    """Reduce every input; all beams of all inputs are scored together, one batch per step.

    ``segment``: 0 reduces the text (the premise for pairs, as the Facade paper does), 1 the pair text.
    ``max_steps`` bounds the number of removals (``None``: until the prediction would change).
    ``rank``: how a beam keeps its k children, ``"attribution"`` (AllenNLP) or ``"confidence"``.
    """
    if rank not in RANKS:
        raise UnmaskError(f"unknown beam rank {rank!r}; choose one of {', '.join(RANKS)}")
    if beam_size < 1:
        raise UnmaskError(f"beam_size must be >= 1, got {beam_size}")
    if min_tokens < 1:
        raise UnmaskError(f"min_tokens must be >= 1 (a reduced input keeps a token), got {min_tokens}")
    if max_steps is not None and max_steps < 1:
        raise UnmaskError(f"max_steps must be >= 1 or None, got {max_steps}")
    texts = [texts] if isinstance(texts, str) else list(texts)
    pairs = [pairs] if isinstance(pairs, str) else pairs
    rows = encode_rows(model, texts, pairs, on_too_long)
    check_segment(segment, rows[0].has_pair)
    scorer = resolve_method(method, token_budget)
    start = predict_rows(model, rows, token_budget)
    orig = start.argmax(-1).tolist()
    beams = {i: [_State(r, (), float(start[i, orig[i]]))] for i, r in enumerate(rows)}
    results: dict[int, PerturbationResult] = {}
    params = {"beam_size": beam_size, "segment": segment, "method": scorer.name, "method_params": scorer.params,
              "min_tokens": min_tokens, "max_steps": max_steps, "rank": rank}

    def finish(i: int, state: _State, stopped: str) -> None:
        results[i] = PerturbationResult(
            kind="input_reduction", text=texts[i], pair=pairs[i] if pairs is not None else None,
            segment=segment, label_names=model.label_names, original_tokens=row_tokens(model, rows[i]),
            original_prediction=orig[i], original_probability=float(start[i, orig[i]]),
            final_tokens=row_tokens(model, state.row), final_segments=list(state.row.segments),
            final_prediction=orig[i], final_probability=state.probability, steps=list(state.history),
            success=True, stopped=stopped, params=params)

    bar = tqdm(total=len(rows), desc=f"input reduction (beam {beam_size})", disable=not progress, leave=False)
    depth = 0
    while beams:
        flat = [(i, s) for i, states in beams.items() for s in states]
        scores = attribute_rows(model, scorer, [s.row for _, s in flat], [orig[i] for i, _ in flat])
        children: list[tuple[int, _State, int]] = []
        child_rows: list[TokenRow] = []
        seen: set[tuple[int, tuple[int, ...]]] = set()
        for (i, s), sc in zip(flat, scores):
            pos = s.row.positions(segment)
            if len(pos) > min_tokens:
                for p in sorted(pos, key=lambda p: (abs(float(sc[p])), p))[:beam_size]:
                    row = s.row.remove(p)
                    if (i, row.ids) not in seen:  # the same removals in another order: score once
                        seen.add((i, row.ids))
                        children.append((i, s, p))
                        child_rows.append(row)
        probs = predict_rows(model, child_rows, token_budget) if child_rows else torch.zeros(0, 1)
        depth += 1
        kept: dict[int, dict[tuple[int, ...], _State]] = {}
        proposed: set[int] = set()
        for (i, s, p), row, pr in zip(children, child_rows, probs):
            proposed.add(i)
            pred = int(pr.argmax())
            if pred != orig[i]:
                continue
            step = Step(tokens=row_tokens(model, row), prediction=pred, probability=float(pr[orig[i]]),
                        change={"removed": model.tokenizer.convert_ids_to_tokens(s.row.ids[p]), "position": p})
            kept.setdefault(i, {})[row.ids] = _State(row, s.history + (step,), float(pr[orig[i]]))
        for i in list(beams):
            survivors = list(kept.get(i, {}).values())  # proposal order
            if rank == "confidence":
                survivors.sort(key=lambda st: -st.probability)
            if not survivors:
                finish(i, beams.pop(i)[0], "prediction_changed" if i in proposed else "min_tokens")
                bar.update(1)
            elif max_steps is not None and depth >= max_steps:
                finish(i, survivors[0], "max_steps")
                beams.pop(i)
                bar.update(1)
            else:
                beams[i] = survivors[:beam_size]
    bar.close()
    return [results[i] for i in range(len(rows))]
