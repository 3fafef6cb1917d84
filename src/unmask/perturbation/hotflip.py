"""HotFlip (Ebrahimi et al. 2018) as AllenNLP Interpret runs it (and the Facade paper uses it).

Each round: take the gradient of the loss on the original prediction at the word embeddings; pick the
not-yet-flipped word piece with the largest gradient norm; replace it with the vocabulary token that
most increases the loss to first order, argmax_w (e_w - e_old) . g. Repeat until the prediction changes
or the budget (``max_flips``) or the eligible positions run out. Specials, bracketed placeholders,
punctuation and continuation pieces (WordPiece '##x', byte-level BPE pieces without 'Ġ': the adapter's
sub-word convention, ``models/subwords.py``) are never inserted unless allowed. All active inputs share one
gradient batch and one prediction batch per round.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET
from unmask.data.readers import stopwords
from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier
from unmask.perturbation.gradients import embedding_gradients
from unmask.perturbation.record import PerturbationResult, Step
from unmask.perturbation.tokens import (TokenRow, candidate_vocab, check_segment, encode_rows, predict_rows,
                                        row_tokens)


def hotflip(model: TextClassifier, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None,
            *, max_flips: int | None = None, segment: int | None = None, stop_words_only: bool = False,
            allow_subwords: bool = False, allow_punctuation: bool = False,
            token_budget: int = DEFAULT_TOKEN_BUDGET, on_too_long: str = "truncate",
            progress: bool = False) -> list[PerturbationResult]:
    """Attack every input; one ``PerturbationResult`` each, ``steps`` = the flips in order.

    ``segment``: ``None`` flips any word piece, 0 only the text (premise), 1 only the pair text.
    ``stop_words_only``: flip only positions holding an (NLTK) stop word, as the Facade paper does for NLI.
    """
    if max_flips is not None and max_flips < 1:
        raise UnmaskError(f"max_flips (the flip budget) must be >= 1 or None, got {max_flips}")
    texts = [texts] if isinstance(texts, str) else list(texts)
    pairs = [pairs] if isinstance(pairs, str) else pairs
    rows = encode_rows(model, texts, pairs, on_too_long)
    if segment is not None:
        check_segment(segment, rows[0].has_pair)
    allowed = candidate_vocab(model, allow_subwords, allow_punctuation)
    stops = stopwords()
    vocab_tokens = model.tokenizer.convert_ids_to_tokens
    start = predict_rows(model, rows, token_budget)
    orig = start.argmax(-1).tolist()
    params = {"max_flips": max_flips, "segment": segment, "stop_words_only": stop_words_only,
              "allow_subwords": allow_subwords, "allow_punctuation": allow_punctuation}

    def eligible(i: int, row: TokenRow, done: set[int]) -> list[int]:
        pos = [p for p, s in enumerate(row.segments) if s is not None and (segment is None or s == segment)]
        pos = [p for p in pos if p not in done]
        if stop_words_only:
            pos = [p for p in pos if vocab_tokens(rows[i].ids[p]).lower() in stops]
        return pos

    state: dict[int, tuple[TokenRow, list[Step], set[int], float]] = {
        i: (r, [], set(), float(start[i, orig[i]])) for i, r in enumerate(rows)}
    results: dict[int, PerturbationResult] = {}

    def finish(i: int, flipped: bool, stopped: str) -> None:
        row, steps, _, prob = state.pop(i)
        results[i] = PerturbationResult(
            kind="hotflip", text=texts[i], pair=pairs[i] if pairs is not None else None, segment=segment,
            label_names=model.label_names, original_tokens=row_tokens(model, rows[i]),
            original_prediction=orig[i], original_probability=float(start[i, orig[i]]),
            final_tokens=row_tokens(model, row), final_segments=list(row.segments),
            final_prediction=steps[-1].prediction if steps else orig[i], final_probability=prob,
            steps=steps, success=flipped, stopped=stopped, params=params)

    embedding = model.embedding_matrix.detach()
    bar = tqdm(total=len(rows), desc="hotflip", disable=not progress, leave=False)
    while state:
        for i in [i for i, (row, _, done, _) in state.items() if not eligible(i, row, done)]:
            finish(i, False, "no_positions")
            bar.update(1)
        if not state:
            break
        active = list(state)
        grads = embedding_gradients(model, [state[i][0] for i in active], [orig[i] for i in active],
                                    "loss", token_budget)
        picks, vecs = [], []
        for i, g in zip(active, grads):
            row, _, done, _ = state[i]
            pos = eligible(i, row, done)
            norms = g[pos].norm(dim=-1)
            p = pos[int(norms.argmax())]
            picks.append(p)
            vecs.append(g[p].to(embedding.dtype))
        g = torch.stack(vecs)
        old = torch.tensor([state[i][0].ids[p] for i, p in zip(active, picks)])
        gain = g @ embedding.T - (embedding[old] * g).sum(-1, keepdim=True)
        gain = gain.masked_fill(~allowed[None, :], float("-inf"))
        gain[torch.arange(len(active)), old] = float("-inf")
        new_ids = gain.argmax(-1).tolist()
        new_rows = [state[i][0].replace(p, t) for i, p, t in zip(active, picks, new_ids)]
        probs = predict_rows(model, new_rows, token_budget)
        for i, p, t, o, row, pr in zip(active, picks, new_ids, old.tolist(), new_rows, probs):
            _, steps, done, _ = state[i]
            pred = int(pr.argmax())
            steps.append(Step(tokens=row_tokens(model, row), prediction=pred, probability=float(pr[orig[i]]),
                              change={"position": p, "old": vocab_tokens(o), "new": vocab_tokens(t)}))
            state[i] = (row, steps, done | {p}, float(pr[orig[i]]))
            if pred != orig[i]:
                finish(i, True, "prediction_changed")
                bar.update(1)
            elif max_flips is not None and len(steps) >= max_flips:
                finish(i, False, "budget")
                bar.update(1)
    bar.close()
    return [results[i] for i in range(len(rows))]
