"""Agreement between attributions: per-example rank correlation of |scores| over non-special tokens.

``agreement_matrix`` compares every pair of methods on the same inputs (the mean over examples of
Spearman's rho, Kendall's tau-b, or the top-k overlap); the randomization sanity checks use the same
per-example statistics to compare a model's attributions with those of its randomized copies.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau, pearsonr, spearmanr

from unmask.attribution.record import Attribution
from unmask.errors import UnmaskError

STATISTICS = ("spearman", "kendall", "top_k", "pearson")


def candidate_mask(record: Attribution) -> np.ndarray:
    """True at the record's non-special tokens (both segments of a pair)."""
    return np.array([s is not None for s in record.sequence_ids], dtype=bool)


def _top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    k = min(k, len(a))
    top = lambda v: set(np.argsort(-v, kind="stable")[:k].tolist())  # noqa: E731
    return len(top(a) & top(b)) / k


def correlation(a: np.ndarray, b: np.ndarray, statistic: str = "spearman", k: int = 5) -> float:
    """One statistic between two score vectors; NaN where it is undefined (fewer than 2 values, or a
    constant vector for the rank correlations)."""
    if statistic == "top_k":
        return _top_k_overlap(a, b, k) if len(a) else float("nan")
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    fn = {"spearman": spearmanr, "kendall": kendalltau, "pearson": pearsonr}[statistic]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(a, b).statistic)


def _check_statistic(statistic: str, k: int) -> None:
    if statistic not in STATISTICS:
        raise UnmaskError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    if statistic == "top_k" and (not isinstance(k, int) or k < 1):
        raise UnmaskError(f"k must be a positive integer, got {k!r}")


def paired_correlations(first: Sequence[Attribution], second: Sequence[Attribution],
                        statistic: str = "spearman", absolute: bool = True, k: int = 5) -> np.ndarray:
    """Per-example ``statistic`` between two lists of records of the same inputs (|scores| by default),
    over non-special tokens; NaN where undefined."""
    _check_statistic(statistic, k)
    if len(first) != len(second):
        raise UnmaskError(f"cannot compare {len(first)} records with {len(second)}")
    out = np.full(len(first), np.nan)
    for i, (a, b) in enumerate(zip(first, second)):
        if list(a.tokens) != list(b.tokens):
            raise UnmaskError(f"record #{i}: the two attributions are over different tokens "
                              f"({a.method} on {a.text!r}, {b.method} on {b.text!r})")
        keep = candidate_mask(a)
        sa, sb = a.scores[keep], b.scores[keep]
        if absolute:
            sa, sb = np.abs(sa), np.abs(sb)
        out[i] = correlation(sa, sb, statistic, k)
    return out


def nan_mean(values: np.ndarray) -> float:
    """Mean over the defined (finite) values; NaN if there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def agreement_matrix(records_by_method: dict[str, Sequence[Attribution]], statistic: str = "spearman",
                     k: int = 5) -> tuple[list[str], np.ndarray]:
    """``(names, matrix)``: mean per-example agreement of |scores| between every pair of methods.

    ``statistic``: ``spearman``, ``kendall`` (tau-b), ``top_k`` (share of the top ``k`` tokens two
    methods have in common) or ``pearson``. Examples where a statistic is undefined (a constant score
    vector) are left out of that pair's mean; the diagonal is 1.
    """
    _check_statistic(statistic, k)
    if not records_by_method:
        raise UnmaskError("no methods to compare")
    names = list(records_by_method)
    sizes = {len(v) for v in records_by_method.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise UnmaskError(f"every method needs records of the same inputs; got "
                          f"{', '.join(f'{n}: {len(v)}' for n, v in records_by_method.items())}")
    matrix = np.eye(len(names))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            value = nan_mean(paired_correlations(records_by_method[a], records_by_method[b], statistic, k=k))
            matrix[i, j] = matrix[j, i] = value
    return names, matrix
