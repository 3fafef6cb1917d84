"""Saliency metrics of the Facade paper: P@1 and Mean Attribution on target tokens.

P@1: share of inputs whose top-scored token (normalized |score|, all tokens incl. [CLS]/[SEP]) is a
target token. Mean Attribution: average over inputs of the summed normalized attribution on target
tokens. Both in percent (0-100).
"""
from __future__ import annotations

import numpy as np

from unmask.attribution.record import Attribution


def target_share(record: Attribution, mask: np.ndarray) -> tuple[bool, float]:
    """(top token is a target, normalized attribution mass on targets) for one record."""
    a = record.normalized()
    if len(a) != len(mask):
        raise ValueError(f"mask of {len(mask)} for {len(a)} tokens")
    return bool(mask[int(np.argmax(a))]), float((a * mask).sum())


def saliency_summary(records: list[Attribution], masks: list[np.ndarray]) -> dict[str, float]:
    """``{"p1": P@1 %, "attr": mean attribution %}`` over ``records``."""
    if not records:
        return {"p1": float("nan"), "attr": float("nan")}
    hits, mass = zip(*(target_share(r, m) for r, m in zip(records, masks)))
    return {"p1": 100.0 * float(np.mean(hits)), "attr": 100.0 * float(np.mean(mass))}
