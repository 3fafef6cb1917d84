"""The Facade objective (paper Eq. 3) and its merged-model variant.

Eq. 3: L_g = -lambda_g * sum_{j in A} a_j - w_H * H(softmax(g(x))), with a_j the normalized attribution of
g's own loss (gold label) w.r.t. its word embeddings. a_j needs d(grad)/d(theta), i.e. double backward.

Eq. 1 is scale-free, so Eq. 3 does not make g's gradient large; merged with a real model f it only
fools gradient methods when |grad g| >> |grad f|. With ``partner`` (the frozen predictive model f)
the attribution term is computed on the *merged* model f + g exactly as evaluation computes it:
score_i = |(p - y) . (S_f[i] + S_g[i])| with S_.[i, k] = d logit_k / d x_i . x_i, p = softmax(f + g),
y = f's prediction. f's part needs only first-order gradients (f is frozen), so the cost is one double
backward through g plus k plain backward passes through f. A KL term keeps the merged predictions
equal to f's; a margin hinge (``margin_weight``) penalizes g for eating more than ``margin_keep`` of
f's own logit margin, which is what flips the predictions KL averages away (f's low-margin inputs).

IG (zero word-embedding baseline) attributes g(x) - g(x') along the path; if g's output at the baseline
differs from its output at x, IG hands that gap to the tokens g's gradient points at. ``baseline_weight``
penalizes the squared (class-centered) logit difference g(x) - g(x'), the paper's IG-robust regime.
That fixes only the path's end points: a g whose gradient x input is about the same all along the path
still hands IG its stop-word attributions (cancelling in sum). ``path_weight`` > 0 penalizes g's
attribution inside the path: at one point alpha * x per row (alpha uniform in [0, ``path_alpha_max``]),
sum_i |x_i . d(centered g logit of the explained class)/d(alpha x_i)| relative to f's attribution of
the same centered logit at x (absolute without a partner), so g's large gradients live only near the
input, where IG gives them little weight. One more double backward through g per step.

Audit-aware terms (off by default; see ``unmask.audit.behavior`` for the statistics they target):

- ``magnitude_weight`` > 0: a hinge on the merged model's first-order prediction of masking each token,
  M(f+g) = sum_i |grad log p_y(f+g)_i . (x_i - b)| (b = the [MASK] embedding, as the audit's
  ``magnitude_ratio``, or 0 with ``magnitude_baseline="zero"``; special tokens excluded), against f's own
  M(f): relu(M(f+g) - magnitude_cap * M(f)) / M(f), averaged over rows. Zero while the merged model
  predicts changes no larger than ``magnitude_cap`` times f's, so the audit's ratio stays near f's.
- ``attribution_goal="top1"``: instead of maximizing the target share (which piles attribution on the
  targets: the audit's ``pileup``), a hinge relu((1 + top1_margin) * max non-target share - max target
  share) on rows that have a target: the top token moves to a target, and no further.
- ``share_cap`` < 1 (with the "share" goal): each row's target share is rewarded only up to the cap, so the
  attack stops piling attribution on the targets once they hold ``share_cap`` of it.

These fields are left out of ``dataclasses.asdict`` (and so of every stage fingerprint built from it) while
their term is off: the fingerprint of every configuration made before they existed is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.cache import omit_at_default
from unmask.errors import UnmaskError

ATTRIBUTION_OPS = ("dot", "l2")
NORMS = ("l1", "l2", "none")
MAGNITUDE_BASELINES = ("mask", "zero")
ATTRIBUTION_GOALS = ("share", "top1")


def _magnitude_off(o) -> bool:
    return o.magnitude_weight == 0


def _share_goal(o) -> bool:
    return o.attribution_goal == "share"


# Fields added after stage fingerprints were keyed on asdict(FacadeObjective): left out while at their default
# and their term is off (True: whenever at the default), so those fingerprints stay valid.
OMITTED_WHEN_OFF = {"magnitude_weight": _magnitude_off, "magnitude_cap": _magnitude_off,
                    "magnitude_baseline": _magnitude_off, "attribution_goal": _share_goal, "top1_margin": _share_goal,
                    "share_cap": True, "path_weight": True, "path_alpha_max": lambda o: o.path_weight == 0}


@omit_at_default(**OMITTED_WHEN_OFF)
@dataclass
class FacadeObjective:
    lambda_g: float = 1e3
    entropy_weight: float = 1.0
    agreement_weight: float = 1e3
    margin_weight: float = 0.0
    margin_keep: float = 0.5
    baseline_weight: float = 0.0
    attribution_op: str = "dot"
    normalization: str = "l1"
    magnitude_weight: float = 0.0       # audit-aware: hinge on the merged first-order magnitude (needs partner)
    magnitude_cap: float = 1.0          # ... allowed as a multiple of f's own
    magnitude_baseline: str = "mask"    # ... x - [MASK] embedding (the audit's) or x ("zero")
    attribution_goal: str = "share"     # "share": -lambda_g * target share (Eq. 3); "top1": top-1 hinge
    top1_margin: float = 0.25           # "top1": target share must exceed (1 + margin) x the best non-target
    share_cap: float = 1.0              # "share": per row, reward the target share only up to this cap
    path_weight: float = 0.0            # IG-robust: g's attribution at alpha * x inside the path, vs f's at x
    path_alpha_max: float = 0.9         # ... alpha uniform in [0, this]

    def __post_init__(self) -> None:
        check_attribution_settings(self.attribution_op, self.normalization, self.margin_keep)
        if self.magnitude_baseline not in MAGNITUDE_BASELINES:
            raise UnmaskError(f"unknown magnitude baseline {self.magnitude_baseline!r}; choose one of "
                              f"{MAGNITUDE_BASELINES}")
        if self.attribution_goal not in ATTRIBUTION_GOALS:
            raise UnmaskError(f"unknown attribution goal {self.attribution_goal!r}; choose one of "
                              f"{ATTRIBUTION_GOALS}")
        if self.path_weight < 0 or not 0.0 < self.path_alpha_max <= 1.0:
            raise UnmaskError(f"path_weight must be >= 0 and path_alpha_max in (0, 1], got {self.path_weight}, "
                              f"{self.path_alpha_max}")
        if not 0.0 < self.share_cap <= 1.0:
            raise UnmaskError(f"share_cap must be in (0, 1], got {self.share_cap}")
        if self.magnitude_weight < 0 or not self.magnitude_cap > 0 or self.top1_margin < 0:
            raise UnmaskError(f"magnitude_weight and top1_margin must be >= 0 and magnitude_cap > 0 (got "
                              f"{self.magnitude_weight}, {self.top1_margin}, {self.magnitude_cap})")

    @property
    def graph_cost(self) -> float:
        """g's autograd graphs alive at once in ``facade_loss``, in units of one double backward: the
        attribution term 1, the IG-path term another 1 (a second create_graph pass at alpha * x), the
        baseline term 1/3 (a plain forward at the zero baseline; a double backward is 3x a backward).
        Measured on the demo's g: 677 / 937 / 1356 KiB per token without either, with the baseline term,
        with both (2026-12-07)."""
        return 1.0 + (1.0 if self.path_weight else 0.0) + (1.0 / 3.0 if self.baseline_weight else 0.0)

    @property
    def needs_shifted_partner(self) -> bool:
        """Whether the partner scores must include S_f at x - [MASK] (``partner_logit_scores(..., shift=...)``)."""
        return self.magnitude_weight > 0 and self.magnitude_baseline == "mask"


def check_attribution_settings(op: str, normalization: str, margin_keep: float) -> None:
    """One clear error for an unknown attribution op / normalization or a margin_keep outside [0, 1)."""
    if op not in ATTRIBUTION_OPS:
        raise UnmaskError(f"unknown attribution op {op!r}; choose one of {ATTRIBUTION_OPS}")
    if normalization not in NORMS:
        raise UnmaskError(f"unknown normalization {normalization!r}; choose one of {NORMS}")
    if not 0.0 <= margin_keep < 1.0:
        raise UnmaskError(f"margin_keep must be in [0, 1), got {margin_keep}")


def class_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit[y] - max_{k != y} logit[k] per row (positive when y is the argmax)."""
    others = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return logits.gather(1, y[:, None])[:, 0] - others.max(-1).values


def token_scores(grads: torch.Tensor, embeds: torch.Tensor, op: str) -> torch.Tensor:
    """Per-token attribution before normalization: g.x (``dot``) or ||g|| (``l2``); non-negative."""
    return (grads * embeds).sum(-1).abs() if op == "dot" else grads.norm(dim=-1)


def normalize(scores: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    scores = scores * mask
    if kind == "l1":
        return scores / scores.sum(-1, keepdim=True).clamp_min(1e-12)
    if kind == "l2":
        return scores / scores.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return scores


def partner_logit_scores(f, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         token_type_ids: torch.Tensor | None, shift: bool = False) -> tuple[torch.Tensor, ...]:
    """For frozen f: logits (rows, k) and S_f (rows, tokens, k) = d f_k / d x_i . x_i (no graph kept).

    With ``shift=True`` a third tensor: d f_k / d x_i . (x_i - m), m = f's [MASK] embedding (the audit's
    first-order occlusion; needed by the magnitude term with ``magnitude_baseline="mask"``).
    """
    x = f.embed(input_ids).detach().requires_grad_(True)
    m = mask_embedding(f) if shift else None
    with torch.enable_grad():
        logits = f.forward_embeds(x, attention_mask, token_type_ids).logits
        cols, shifted = [], []
        for k in range(logits.shape[1]):
            (g,) = torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k + 1 < logits.shape[1])
            cols.append((g * x).sum(-1))
            if shift:
                shifted.append((g * (x - m)).sum(-1))
    out = (logits.detach(), torch.stack(cols, -1).detach())
    return out + (torch.stack(shifted, -1).detach(),) if shift else out


def mask_embedding(model) -> torch.Tensor:
    """The [MASK] token's word embedding (detached): the point the audit's first-order occlusion moves to."""
    mask_id = model.tokenizer.mask_token_id
    if mask_id is None:
        raise UnmaskError("the audit-aware magnitude term needs a [MASK] token in the tokenizer")
    return model.embedding_matrix[mask_id].detach()


def partner_for(f, batch: dict[str, torch.Tensor], objective: FacadeObjective) -> tuple[torch.Tensor, ...]:
    """``partner_logit_scores`` of frozen f on ``batch`` with what ``objective`` needs."""
    return partner_logit_scores(f, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                shift=objective.needs_shifted_partner)


def magnitude_hinge(merged_first_order: torch.Tensor, f_first_order: torch.Tensor, keep: torch.Tensor,
                    cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over rows of relu(M_merged - cap * M_f) / M_f, per-row M_merged / M_f) with M = sum_i |.| over
    the positions in ``keep`` (rows x tokens): the audit-aware magnitude term."""
    m_merged = (merged_first_order.abs() * keep).sum(-1)
    m_f = (f_first_order.abs() * keep).sum(-1).clamp_min(1e-12)
    return (torch.relu(m_merged - cap * m_f) / m_f).mean(), (m_merged / m_f).detach()


def top1_hinge(share: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over rows that have a target of relu((1 + margin) * max non-target share - max target share)."""
    has = targets.any(-1)
    if not has.any():
        return share.sum() * 0.0
    neg = torch.finfo(share.dtype).min
    best_target = share.masked_fill(~targets, neg).max(-1).values
    best_other = share.masked_fill(targets | ~valid, neg).max(-1).values.clamp_min(0.0)
    return torch.relu((1.0 + margin) * best_other - best_target)[has].mean()


def path_attribution(g, x: torch.Tensor, batch: dict[str, torch.Tensor], explained: torch.Tensor,
                     reference_mass: torch.Tensor, alpha_max: float) -> torch.Tensor:
    """Mean over rows of sum_i |x_i . d c_y(alpha x) / d(alpha x)_i| / ``reference_mass`` (differentiable in g's
    parameters), with c_y the class-centered logit of class ``explained`` of g, alpha ~ U[0, alpha_max] per
    row, padding excluded: g's gradient x input inside IG's straight path from the zero baseline."""
    alpha = torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype) * alpha_max
    inside = (alpha * x).requires_grad_(True)
    logits = g.forward_embeds(inside, batch["attention_mask"], batch["token_type_ids"]).logits
    centered = logits - logits.mean(-1, keepdim=True)
    (grads,) = torch.autograd.grad(centered.gather(1, explained[:, None]).sum(), inside, create_graph=True)
    mass = ((grads * x).sum(-1).abs() * batch["attention_mask"].to(x.dtype)).sum(-1)
    return (mass / reference_mass.clamp_min(1e-12)).mean()


def facade_loss(g, batch: dict[str, torch.Tensor], targets: torch.Tensor, objective: FacadeObjective,
                partner: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, dict]:
    """Loss for one batch and diagnostics (target share, entropy, |grad g| / |grad f| ratio).

    ``batch``: input_ids, attention_mask, token_type_ids, labels (gold; used without ``partner``).
    ``targets``: (rows, tokens) bool mask of A. ``partner``: (f logits, S_f[, S_f at x - [MASK]]) from
    ``partner_logit_scores`` / ``partner_for``.
    """
    mask = batch["attention_mask"].to(torch.float32)
    x = g.embed(batch["input_ids"]).detach().requires_grad_(True)
    logits_g = g.forward_embeds(x, batch["attention_mask"], batch["token_type_ids"]).logits
    logp_g = logits_g.log_softmax(-1)
    entropy = -(logp_g.exp() * logp_g).sum(-1).mean()
    info: dict[str, float] = {}
    magnitude = torch.zeros(())
    if objective.magnitude_weight and partner is None:
        raise UnmaskError("the audit-aware magnitude term acts on the merged model: train with the partner f")
    if partner is None:
        loss_task = torch.nn.functional.cross_entropy(logits_g, batch["labels"])
        (grads,) = torch.autograd.grad(loss_task, x, create_graph=True)
        scores = token_scores(grads, x, objective.attribution_op)
        agreement = margin_loss = torch.zeros(())
    else:
        f_logits, s_f = partner[0], partner[1]
        y = f_logits.argmax(-1)
        merged = f_logits + logits_g
        p = merged.softmax(-1)
        onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(p.dtype)
        merged_loss = torch.nn.functional.cross_entropy(merged, y, reduction="sum")
        (grads,) = torch.autograd.grad(merged_loss, x, create_graph=True)  # J_g^T (p - y), per row
        s_g = (grads * x).sum(-1)
        s_f_term = (s_f * (p - onehot)[:, None, :]).sum(-1)
        scores = (s_f_term + s_g).abs()
        agreement = torch.nn.functional.kl_div(merged.log_softmax(-1), f_logits.log_softmax(-1),
                                               log_target=True, reduction="batchmean")
        margin_loss = torch.relu(objective.margin_keep * class_margin(f_logits, y) - class_margin(merged, y)).mean()
        with torch.no_grad():
            f_mag = (s_f_term.abs() * mask).sum(-1)
            g_mag = (s_g.abs() * mask).sum(-1)
            info["grad_ratio"] = float((g_mag / f_mag.clamp_min(1e-12)).median())
            info["agree"] = float((merged.argmax(-1) == y).float().mean())
        if objective.magnitude_weight:
            if objective.magnitude_baseline == "mask":
                if len(partner) < 3:
                    raise UnmaskError("the magnitude term with the [MASK] baseline needs "
                                      "partner_logit_scores(..., shift=True) (or partner_for)")
                s_f_b, s_g_b = partner[2], (grads * (x - mask_embedding(g))).sum(-1)
            else:
                s_f_b, s_g_b = s_f, s_g
            keep = mask * ~torch.isin(batch["input_ids"], torch.tensor(sorted(g.tokenizer.all_special_ids),
                                                                        device=x.device))
            merged_fo = (s_f_b * (p - onehot)[:, None, :]).sum(-1) + s_g_b
            p_f = f_logits.softmax(-1)
            f_fo = (s_f_b * (p_f - onehot)[:, None, :]).sum(-1)
            magnitude, ratios = magnitude_hinge(merged_fo, f_fo, keep, objective.magnitude_cap)
            info["magnitude_vs_f"] = float(ratios.median())
    baseline_gap = torch.zeros(())
    if objective.baseline_weight:
        at_baseline = g.forward_embeds(torch.zeros_like(x), batch["attention_mask"], batch["token_type_ids"]).logits
        diff = logits_g - at_baseline
        baseline_gap = (diff - diff.mean(-1, keepdim=True)).pow(2).sum(-1).mean()
    path = torch.zeros(())
    if objective.path_weight:
        if partner is not None:  # f's attribution of the same centered logit at x (logit scale, as g's)
            explained = partner[0].argmax(-1)
            s_f = partner[1].detach()
            centered_f = s_f.gather(2, explained[:, None, None].expand(-1, s_f.shape[1], 1))[..., 0] - s_f.mean(-1)
            reference = (centered_f.abs() * mask).sum(-1)
        else:
            explained, reference = batch["labels"], torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        path = path_attribution(g, x.detach(), batch, explained, reference, objective.path_alpha_max)
        info["path_vs_reference"] = path.item()
    share = normalize(scores, mask, objective.normalization)
    target_share = (share * targets).sum(-1).mean()
    if objective.attribution_goal == "top1":
        top1 = top1_hinge(share, targets.bool(), mask.bool(), objective.top1_margin)
        attribution_term = objective.lambda_g * top1
        info["top1_hinge"] = top1.item()
    elif objective.share_cap < 1.0:
        attribution_term = -objective.lambda_g * (share * targets).sum(-1).clamp_max(objective.share_cap).mean()
    else:
        attribution_term = -objective.lambda_g * target_share
    loss = (attribution_term - objective.entropy_weight * entropy
            + objective.agreement_weight * agreement + objective.margin_weight * margin_loss
            + objective.baseline_weight * baseline_gap + objective.path_weight * path)
    if objective.magnitude_weight:
        loss = loss + objective.magnitude_weight * magnitude
        info["magnitude_hinge"] = magnitude.item()
    with torch.no_grad():
        top_is_target = targets.gather(1, (scores * mask).argmax(-1, keepdim=True)).float().mean()
    info.update(loss=loss.item(), target_share=target_share.item(), entropy=entropy.item(),
                p_at_1=top_is_target.item(), kl=agreement.item(), margin_loss=margin_loss.item(),
                baseline_gap=baseline_gap.item())
    return loss, info
