"""Metrics of the Facade paper's perturbation and bias studies (Table 4, Figure 3, Table 5).

- Stop % / All Stop % (Table 4): share of the reduced segment's word pieces that are stop words (NLTK,
  exact lowercase match; averaged over inputs) and share of inputs reduced to stop words only.
- HotFlip flips (Figure 3): histogram of the number of flips that changed the prediction, mean flips
  (over inputs that flipped), share of all inputs flipped by exactly one token.
- Gender attribution (Table 5): mean normalized attribution (Eq. 1) of gendered tokens over all their
  occurrences, and its relative difference to the mean attribution of any token.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from unmask.attribution.record import Attribution
from unmask.data.readers import stopwords
from unmask.data.shortcut import GENDER_WORDS
from unmask.errors import UnmaskError
from unmask.perturbation.record import PerturbationResult


def stop_share(tokens: Sequence[str], stops: Iterable[str] | None = None) -> float:
    """Share of ``tokens`` (word pieces) that are stop words; 0 for no tokens."""
    stops = stopwords() if stops is None else frozenset(stops)
    if not tokens:
        return 0.0
    return sum(t.lower() in stops for t in tokens) / len(tokens)


def reduction_stop_metrics(results: Sequence[PerturbationResult], stops: Iterable[str] | None = None) -> dict:
    """``stop_pct`` and ``all_stop_pct`` (Table 4) over input-reduction results, plus sizes."""
    if not results:
        raise UnmaskError("no input-reduction results to summarize")
    stops = stopwords() if stops is None else frozenset(stops)
    shares, all_stop, lengths = [], [], []
    for r in results:
        toks = r.segment_tokens()
        share = stop_share(toks, stops)
        shares.append(share)
        all_stop.append(bool(toks) and share == 1.0)
        lengths.append(len(toks))
    return {"stop_pct": 100.0 * float(np.mean(shares)), "all_stop_pct": 100.0 * float(np.mean(all_stop)),
            "n": len(results), "mean_reduced_length": float(np.mean(lengths))}


def flip_histogram(results: Sequence[PerturbationResult], max_bin: int = 16) -> dict:
    """HotFlip summary: ``histogram`` maps "1".."max_bin" flips (and "more") to counts of inputs whose
    prediction changed after that many flips; "not_flipped" counts inputs never flipped."""
    if not results:
        raise UnmaskError("no HotFlip results to summarize")
    if max_bin < 1:
        raise UnmaskError(f"max_bin must be >= 1, got {max_bin}")
    hist = {str(k): 0 for k in range(1, max_bin + 1)}
    hist["more"] = 0
    hist["not_flipped"] = 0
    flips = []
    for r in results:
        if not r.success:
            hist["not_flipped"] += 1
            continue
        flips.append(r.num_changes)
        hist[str(r.num_changes) if r.num_changes <= max_bin else "more"] += 1
    n = len(results)
    return {"mean_flips": float(np.mean(flips)) if flips else None,
            "one_flip_pct": 100.0 * sum(f == 1 for f in flips) / n,
            "flipped_pct": 100.0 * len(flips) / n,
            "histogram": hist, "n": n, "n_flipped": len(flips)}


def gender_attribution(attributions: Sequence[Attribution], words: Iterable[str] = GENDER_WORDS) -> dict:
    """Mean normalized attribution of gendered tokens vs. of all tokens (pooled over occurrences).

    ``relative_pct`` = 100 * (gender / average_token - 1), the paper's number in parentheses. The
    average runs over every token the normalization runs over ([CLS] and [SEP] included).
    """
    if not attributions:
        raise UnmaskError("no attributions to summarize")
    words = frozenset(w.lower() for w in words)
    gender, every = [], []
    for a in attributions:
        norm = a.normalized()
        every.extend(norm.tolist())
        gender.extend(float(v) for t, s, v in zip(a.tokens, a.sequence_ids, norm)
                      if s is not None and t.lower() in words)
    avg = float(np.mean(every))
    g = float(np.mean(gender)) if gender else None
    return {"gender_attribution": g, "average_token": avg,
            "relative_pct": 100.0 * (g / avg - 1.0) if g is not None and avg > 0 else None,
            "n_gender_tokens": len(gender), "n_tokens": len(every), "n_inputs": len(attributions)}
