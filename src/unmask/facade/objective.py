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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.errors import UnmaskError

ATTRIBUTION_OPS = ("dot", "l2")
NORMS = ("l1", "l2", "none")


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

    def __post_init__(self) -> None:
        check_attribution_settings(self.attribution_op, self.normalization, self.margin_keep)


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
                         token_type_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """For frozen f: logits (rows, k) and S_f (rows, tokens, k) = d f_k / d x_i . x_i (no graph kept)."""
    x = f.embed(input_ids).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = f.forward_embeds(x, attention_mask, token_type_ids).logits
        cols = []
        for k in range(logits.shape[1]):
            (g,) = torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k + 1 < logits.shape[1])
            cols.append((g * x).sum(-1))
    return logits.detach(), torch.stack(cols, -1).detach()


def facade_loss(g, batch: dict[str, torch.Tensor], targets: torch.Tensor, objective: FacadeObjective,
                partner: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
    """Loss for one batch and diagnostics (target share, entropy, |grad g| / |grad f| ratio).

    ``batch``: input_ids, attention_mask, token_type_ids, labels (gold; used without ``partner``).
    ``targets``: (rows, tokens) bool mask of A. ``partner``: (f logits, S_f) from ``partner_logit_scores``.
    """
    mask = batch["attention_mask"].to(torch.float32)
    x = g.embed(batch["input_ids"]).detach().requires_grad_(True)
    logits_g = g.forward_embeds(x, batch["attention_mask"], batch["token_type_ids"]).logits
    logp_g = logits_g.log_softmax(-1)
    entropy = -(logp_g.exp() * logp_g).sum(-1).mean()
    info: dict[str, float] = {}
    if partner is None:
        loss_task = torch.nn.functional.cross_entropy(logits_g, batch["labels"])
        (grads,) = torch.autograd.grad(loss_task, x, create_graph=True)
        scores = token_scores(grads, x, objective.attribution_op)
        agreement = margin_loss = torch.zeros(())
    else:
        f_logits, s_f = partner
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
    baseline_gap = torch.zeros(())
    if objective.baseline_weight:
        at_baseline = g.forward_embeds(torch.zeros_like(x), batch["attention_mask"], batch["token_type_ids"]).logits
        diff = logits_g - at_baseline
        baseline_gap = (diff - diff.mean(-1, keepdim=True)).pow(2).sum(-1).mean()
    share = normalize(scores, mask, objective.normalization)
    target_share = (share * targets).sum(-1).mean()
    loss = (-objective.lambda_g * target_share - objective.entropy_weight * entropy
            + objective.agreement_weight * agreement + objective.margin_weight * margin_loss
            + objective.baseline_weight * baseline_gap)
    with torch.no_grad():
        top_is_target = targets.gather(1, (scores * mask).argmax(-1, keepdim=True)).float().mean()
    info.update(loss=loss.item(), target_share=target_share.item(), entropy=entropy.item(),
                p_at_1=top_is_target.item(), kl=agreement.item(), margin_loss=margin_loss.item(),
                baseline_gap=baseline_gap.item())
    return loss, info
