"""Where a method puts its attribution, read against what leave-one-out occlusion says matters.

A class-free statistic: it needs no list of suspicious positions or words, so a facade that piles its
attribution on any set of tokens whose removal barely moves the output is measured the same way.

Per input, with ``share_i = |a_i| / sum_j |a_j|`` over the content tokens (no [CLS]/[SEP]/padding) and
``imp_i = |occlusion_i| / max_j |occlusion_j|``:

- ``placed = sum_i share_i * imp_i``: how much the average attributed token matters, relative to the
  token that matters most (1 when every bit of attribution sits on the most effective token);
- ``chance = mean_i imp_i``: the same for a uniform attribution;
- ``skill = (placed - chance) / (1 - chance)``: 1 = all on the most effective token, 0 = no better than
  uniform, < 0 = attribution on tokens that matter less than the average token.

``misplacement = 1 - mean skill`` over inputs is what the audit tests (higher is more suspicious: 1 is
chance, above 1 worse than chance).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_CONTENT = 2  # inputs with fewer content tokens say nothing about placement


def placement_skill(scores: np.ndarray, occlusion: np.ndarray, content: np.ndarray) -> float | None:
    """Skill of one input's attribution (see the module docstring); ``None`` when it is undefined."""
    content = np.asarray(content, dtype=bool)
    if content.sum() < MIN_CONTENT:
        return None
    a = np.abs(np.asarray(scores, dtype=float)[content])
    o = np.abs(np.asarray(occlusion, dtype=float)[content])
    if not np.isfinite(a).all() or not np.isfinite(o).all() or a.sum() <= 0 or o.max() <= 0:
        return None
    imp = o / o.max()
    chance = float(imp.mean())
    if chance >= 1.0 - 1e-12:  # every token matters equally: no placement can be better than another
        return None
    placed = float((a / a.sum()) @ imp)
    return (placed - chance) / (1.0 - chance)


def misplacement(scores: Sequence[np.ndarray], occlusion: Sequence[np.ndarray],
                 content: Sequence[np.ndarray]) -> float:
    """``1 - mean skill`` over the inputs where skill is defined (NaN if none)."""
    skills = [s for s in (placement_skill(a, o, c) for a, o, c in zip(scores, occlusion, content))
              if s is not None]
    return float(1.0 - np.mean(skills)) if skills else float("nan")


def content_mask(sequence_ids: Sequence[int | None]) -> np.ndarray:
    """True for the tokens of the input text(s), False for [CLS], [SEP] and padding."""
    return np.array([s is not None for s in sequence_ids], dtype=bool)
