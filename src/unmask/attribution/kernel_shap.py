"""KernelSHAP (Lundberg and Lee 2017): Shapley values as a weighted regression on feature coalitions."""
from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

from unmask.attribution.base import register
from unmask.attribution.coalitions import CoalitionMethod, Design

FULL, EMPTY = 0, 1  # rows of every design: the input itself and the fully perturbed input


def shapley_kernel(features: int, size: int) -> float:
    """Weight of one coalition of ``size`` out of ``features``: (M - 1) / (C(M, s) s (M - s))."""
    return (features - 1) / (comb(features, size) * size * (features - size))


def shap_coalitions(features: int, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(z, weights)`` of at most ``samples`` distinct coalitions (neither empty nor full), as the shap
    package chooses them: coalition sizes s and M - s are paired; sizes are taken in order of kernel
    mass (1 and M-1 first) and enumerated completely while the budget covers them, each subset at its
    exact kernel weight; the remaining budget is sampled, sizes drawn by their kernel mass and each draw
    paired with its complement (antithetic), repeated draws adding weight. The sampled rows share the
    kernel mass of the sizes not enumerated. With samples >= 2^M - 2 every coalition is enumerated and
    the result is the exact Shapley value.
    """
    m = features
    if m < 2:
        return np.zeros((0, m), dtype=bool), np.zeros(0)
    sizes = (m - 1 + 1) // 2           # sizes 1..ceil((M-1)/2); size s also stands for M - s
    paired = (m - 1) // 2             # sizes whose complement size differs
    mass = np.array([(m - 1) / (s * (m - s)) for s in range(1, sizes + 1)])
    mass[:paired] *= 2
    mass /= mass.sum()
    rows: list[np.ndarray] = []
    weights: list[float] = []
    left = min(samples, 2 ** m - 2) if m < 63 else samples
    remaining = mass.copy()
    full_sizes = 0
    for s in range(1, sizes + 1):
        count = comb(m, s) * (2 if s <= paired else 1)
        if left * remaining[s - 1] / count < 1.0 - 1e-8:
            break
        full_sizes += 1
        left -= count
        if remaining[s - 1] < 1.0:
            remaining /= 1.0 - remaining[s - 1]
        w = mass[s - 1] / comb(m, s) / (2 if s <= paired else 1)
        for idx in combinations(range(m), s):
            z = np.zeros(m, dtype=bool)
            z[list(idx)] = True
            rows.append(z)
            weights.append(w)
            if s <= paired:
                rows.append(~z)
                weights.append(w)
    fixed = len(rows)
    if full_sizes < sizes and left > 0:
        p = mass[full_sizes:].copy()
        p[:max(paired - full_sizes, 0)] /= 2  # each paired draw adds two rows
        p /= p.sum()
        seen: dict[bytes, int] = {}
        draws = rng.choice(len(p), size=4 * left, p=p) + full_sizes + 1
        ranks = np.argsort(rng.random((len(draws), m)), axis=1)
        for size, order in zip(draws.tolist(), ranks):
            if left <= 0:
                break
            z = np.zeros(m, dtype=bool)
            z[order[:size]] = True
            for cand in ((z, ~z) if size <= paired else (z,)):
                key = cand.tobytes()
                if key in seen:
                    weights[seen[key]] += 1.0
                elif left > 0:
                    seen[key] = len(rows)
                    rows.append(cand)
                    weights.append(1.0)
                    left -= 1
        sampled = np.asarray(weights[fixed:])
        weights[fixed:] = (sampled * mass[full_sizes:].sum() / sampled.sum()).tolist()
    return np.asarray(rows, dtype=bool).reshape(-1, m), np.asarray(weights, dtype=np.float64)


def constrained_wls(z: np.ndarray, y: np.ndarray, w: np.ndarray, total: float) -> np.ndarray:
    """min sum_i w_i (y_i - z_i . phi)^2 subject to sum phi = total (efficiency), by eliminating the
    last feature: phi_M = total - sum_{j<M} phi_j (as the shap package solves it)."""
    m = z.shape[1]
    if m == 0:
        return np.zeros(0)
    if m == 1 or len(z) == 0:
        return np.full(m, total / m)
    zf = z.astype(np.float64)
    x = zf[:, :-1] - zf[:, -1:]
    target = y - zf[:, -1] * total
    root = np.sqrt(w)
    head = np.linalg.lstsq(x * root[:, None], target * root, rcond=None)[0]
    return np.append(head, total - head.sum())


@register
class KernelShap(CoalitionMethod):
    """KernelSHAP: the Shapley kernel on ``samples`` distinct coalitions (chosen as the shap package
    does, see ``shap_coalitions``) plus the input itself and the fully perturbed input, whose values are
    enforced exactly: scores sum to F(x) - F(empty) (``efficiency_gap`` reports the float residue).
    Token score = the feature's Shapley value; with ``granularity="word"`` split evenly over its pieces.
    """

    name = "kernel_shap"
    aliases = ("kernelshap", "shap")

    def design(self, features: int, rng: np.random.Generator) -> Design:
        z, w = shap_coalitions(features, self.samples, rng)
        ends = np.stack([np.ones(features, dtype=bool), np.zeros(features, dtype=bool)])
        return Design(np.concatenate([ends, z]), np.concatenate([[np.inf, np.inf], w]))

    def fit(self, design: Design, values: np.ndarray) -> tuple[np.ndarray, dict]:
        fx, f0 = float(values[FULL]), float(values[EMPTY])
        z, y, w = design.z[2:], values[2:] - f0, design.weights[2:]
        phi = constrained_wls(z, y, w, fx - f0)
        extra = {"objective_value": fx, "empty_value": f0, "efficiency_gap": float(phi.sum() - (fx - f0))}
        if len(z):
            share = w / w.sum()
            pred = z.astype(np.float64) @ phi
            total = float(share @ (y - share @ y) ** 2)
            extra["r2"] = 1.0 - float(share @ (y - pred) ** 2) / total if total > 0 else 1.0
        else:
            extra["r2"] = 1.0
        return phi, extra
