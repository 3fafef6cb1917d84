"""LIME (Ribeiro et al. 2016) for text: a weighted ridge surrogate fitted on random coalitions of features."""
from __future__ import annotations

import numpy as np

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, register
from unmask.attribution.coalitions import CoalitionMethod, Design
from unmask.errors import UnmaskError

DEFAULT_KERNEL_WIDTH = 0.25  # the lime package's text default: width 25 on 100 x cosine distance


def lime_coalitions(features: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """The lime package's text sampling (``LimeTextExplainer``): row 0 keeps everything; every other row
    removes a number of features drawn uniformly from 1..features (all of them included, as lime's
    ``randint(1, doc_size + 1)``), the removed features chosen uniformly."""
    z = np.ones((samples, features), dtype=bool)
    if samples < 2 or features == 0:
        return z
    n = samples - 1
    removed = rng.integers(1, features + 1, size=n)
    ranks = np.argsort(np.argsort(rng.random((n, features)), axis=1), axis=1)
    z[1:] = ranks >= removed[:, None]
    return z


def exponential_kernel(z: np.ndarray, kernel_width: float) -> np.ndarray:
    """exp(-d^2 / (2 w^2)) with d the cosine distance between each coalition and the all-ones vector,
    1 - sqrt(|z| / features) (the empty coalition is at distance 1)."""
    features = z.shape[1]
    if features == 0:
        return np.ones(len(z))
    d = 1.0 - np.sqrt(z.sum(1) / features)
    return np.exp(-(d ** 2) / (2.0 * kernel_width ** 2))


def weighted_ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float
                   ) -> tuple[np.ndarray, float, float]:
    """``(coef, intercept, weighted R^2)`` of min sum_i w_i (y_i - b - x_i.c)^2 + alpha |c|^2 (the
    intercept is not penalized; the same solution as sklearn's ``Ridge(alpha).fit(x, y, sample_weight=w)``)."""
    share = w / w.sum()
    x_mean, y_mean = share @ x, float(share @ y)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (w[:, None] * xc) + alpha * np.eye(x.shape[1])
    coef = np.linalg.lstsq(gram, xc.T @ (w * yc), rcond=None)[0] if x.shape[1] else np.zeros(0)
    intercept = y_mean - float(x_mean @ coef)
    residual = float(share @ (y - intercept - x @ coef) ** 2)
    total = float(share @ yc ** 2)
    return coef, intercept, (1.0 - residual / total) if total > 0 else 1.0


@register
class Lime(CoalitionMethod):
    """LIME: ``samples`` coalitions (the first is the input itself) drawn as the lime package draws
    them, weighted by the exponential kernel on cosine distance (``kernel_width``, default 0.25 = lime's
    25 on its x100 distance; Captum's ``get_exp_kernel_similarity_function`` has the same form), and a
    weighted ridge fit with intercept (``alpha`` 1.0 as lime's default ``Ridge``). Token score = the
    feature's coefficient; with ``granularity="word"`` split evenly over the word's pieces.
    """

    name = "lime"

    def __init__(self, samples: int = 500, seed: int = 0, granularity: str = "token",
                 perturbation: str = "remove", objective: str = "log_prob",
                 kernel_width: float = DEFAULT_KERNEL_WIDTH, alpha: float = 1.0,
                 token_budget: int = DEFAULT_TOKEN_BUDGET, precision: str = "auto") -> None:
        super().__init__(samples, seed, granularity, perturbation, objective, token_budget, precision)
        if not kernel_width > 0:
            raise UnmaskError(f"kernel_width must be positive, got {kernel_width}")
        if not alpha >= 0:
            raise UnmaskError(f"alpha (ridge penalty) must be >= 0, got {alpha}")
        self.kernel_width, self.alpha = float(kernel_width), float(alpha)

    def design(self, features: int, rng: np.random.Generator) -> Design:
        z = lime_coalitions(features, self.samples, rng)
        return Design(z, exponential_kernel(z, self.kernel_width))

    def fit(self, design: Design, values: np.ndarray) -> tuple[np.ndarray, dict]:
        coef, intercept, r2 = weighted_ridge(design.z.astype(np.float64), values, design.weights, self.alpha)
        return coef, {"objective_value": float(values[0]), "intercept": intercept, "r2": r2}
