"""Legacy facade detector, superseded by ``unmask.audit`` (``unmask audit``): use that instead.

Kept because ``experiments/facade_detect.py`` and its committed results
(``experiments/results/facade_detection_sst2.*``) were produced with it. Why it was superseded (issue 11):
its structural check needs exact zeros between the parts, so Gaussian noise of 1e-6 x max|W| added to
every weight matrix of a merged model (the concealment the Facade paper itself proposes, section 3.3)
keeps the attack intact (max logit change 4e-4, the same agreement with f_orig and stop-word P@1) but
makes the model one connected network, and the detector reports "no facade found" (0 of 4 concealed
merges detected at noise 1e-6..1e-3); a merge written with ordinary LayerNorm is one component by
construction; and its behavioral check does not separate (Spearman of Gradient with occlusion 0.206 on
f_orig, 0.205 on the merged model). ``unmask.audit`` measures behavior against occlusion and weight
magnitudes instead (``audit/behavior.py``, ``audit/structure.py``).

Does a model's gradient come from a part that does not make its predictions? Two independent checks.

Structural (transformer classifiers): split the hidden units into independent sub-networks
(``unmask.facade.structure``). For each one measure its share of the logit margin and its share of the
Eq. 1 gradient attribution on real inputs. A sub-network that holds most of the gradient but almost none
of the margin is a facade: it shapes explanations, not predictions.

Behavioral (any model): gradient attributions of a manipulated model stop agreeing with what actually
changes the output. We compare each method's token ranking with leave-one-out occlusion (Spearman) and
report the gap between the paper's Gradient (Eq. 1, g . x: keyed ``gradient_x_input`` as everywhere else;
the registry's ``gradient`` is the L2 norm) and IG; IG is hard to manipulate this way (paper section 5.1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr

from unmask.attribution.explain import attribute_batch, predict_batch
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.leave_one_out import LeaveOneOut
from unmask.errors import UnmaskError
from unmask.facade.structure import block_gradient_mass, component_logits, hidden_components
from unmask.models.classifier import TextClassifier


@dataclass
class Component:
    size: int
    margin_share: float     # share of |logit margin| contributed, averaged over inputs
    gradient_share: float   # share of sum_i |grad_i . x_i| on this component's dims
    facade: bool


@dataclass
class Detection:
    components: list[Component]
    rank_agreement_with_occlusion: dict[str, float]
    verdict: str
    suspicious: bool
    n_inputs: int
    thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _gradient_shares(model: TextClassifier, batch, components: list[np.ndarray]) -> np.ndarray:
    per = block_gradient_mass(model, batch.input_ids, batch.attention_mask, batch.token_type_ids, components)
    return (per / per.sum(-1, keepdim=True).clamp_min(1e-30)).mean(0).numpy()


def _margin_shares(model: TextClassifier, batch, components: list[np.ndarray]) -> np.ndarray:
    parts = component_logits(model, batch.input_ids, batch.attention_mask, batch.token_type_ids, components)
    pred = parts.sum(0).argmax(-1)
    onehot = torch.nn.functional.one_hot(pred, parts.shape[-1]).bool()
    runner_up = parts.sum(0).masked_fill(onehot, float("-inf")).argmax(-1)
    rows = torch.arange(parts.shape[1])
    margin = (parts[:, rows, pred] - parts[:, rows, runner_up]).abs()  # (components, rows)
    return (margin / margin.sum(0, keepdim=True).clamp_min(1e-30)).mean(1).numpy()


def _rank_agreement(model: TextClassifier, batch, ig_steps: int) -> dict[str, float]:
    logits = predict_batch(model, batch)
    target = logits.argmax(-1)
    occl = attribute_batch(model, batch, LeaveOneOut(), target, logits)
    out = {}
    for name, method in (("gradient_x_input", GradientXInput()),
                         ("integrated_gradients", IntegratedGradients(steps=ig_steps, tolerance=None))):
        recs = attribute_batch(model, batch, method, target, logits)
        rhos = []
        for r, o in zip(recs, occl):
            keep = np.array([s is not None for s in r.sequence_ids])
            if keep.sum() >= 3:
                rho = spearmanr(np.abs(r.scores[keep]), np.abs(o.scores[keep])).statistic
                if np.isfinite(rho):
                    rhos.append(rho)
        out[name] = float(np.mean(rhos)) if rhos else float("nan")
    return out


def detect_facade(model: TextClassifier, texts: list[str], pairs: list[str | None] | None = None,
                  rel_tol: float = 1e-6, ig_steps: int = 20, facade_gradient_share: float = 0.5,
                  facade_ratio: float = 4.0, rank_gap: float = 0.3) -> Detection:
    """Audit ``model`` on ``texts``; see the module docstring. Thresholds are parameters and reported.

    A sub-network is flagged when it holds more than ``facade_gradient_share`` of the gradient
    attribution and at least ``facade_ratio`` times more gradient share than logit-margin share.
    """
    if not texts:
        raise UnmaskError("facade detection needs at least one input text")
    batch = model.encode(texts, pairs)
    comps: list[Component] = []
    try:
        parts = hidden_components(model, rel_tol)
    except UnmaskError:  # not a transformer whose layers the adapter names: the behavioral check only
        parts = None
    if parts is not None:
        if len(parts) > 1:
            g_share = _gradient_shares(model, batch, parts)
            m_share = _margin_shares(model, batch, parts)
        else:
            g_share = m_share = np.ones(1)
        comps = [Component(len(c), float(m), float(g), bool(g > facade_gradient_share and g >= facade_ratio * m))
                 for c, m, g in zip(parts, m_share, g_share)]
    agreement = _rank_agreement(model, batch, ig_steps)
    gap = agreement["integrated_gradients"] - agreement["gradient_x_input"]
    reasons = []
    if any(c.facade for c in comps):
        f = next(c for c in comps if c.facade)
        reasons.append(f"an independent sub-network of {f.size} hidden units carries {100 * f.gradient_share:.0f}% "
                       f"of the gradient attribution but {100 * f.margin_share:.1f}% of the logit margin")
    elif len(comps) > 1:
        reasons.append(f"the model splits into {len(comps)} independent sub-networks (no facade-like one)")
    if gap > rank_gap:
        reasons.append(f"Gradient x input (Eq. 1) agrees with occlusion far less than IG does (Spearman "
                       f"{agreement['gradient_x_input']:.2f} vs {agreement['integrated_gradients']:.2f})")
    suspicious = any(c.facade for c in comps) or gap > rank_gap
    verdict = ("SUSPICIOUS: " + "; ".join(reasons)) if suspicious else (
        "no facade found" + (f" ({reasons[0]})" if reasons else ""))
    return Detection(comps, agreement, verdict, suspicious, len(texts),
                     {"rel_tol": rel_tol, "facade_gradient_share": facade_gradient_share,
                      "facade_ratio": facade_ratio, "rank_gap": rank_gap})
