"""Colored terminal view of an ``Attribution`` (rich markup, tokens escaped)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

if TYPE_CHECKING:  # records render themselves through this module: no runtime import back
    from unmask.attribution.record import Attribution


def attribution_text(attr: Attribution) -> str:
    """Rich markup: background intensity = normalized weight; red supports the target, blue opposes."""
    weights = attr.normalized()
    top = weights.max() if len(weights) and weights.max() > 0 else 1.0
    parts = []
    for tok, w, s in zip(attr.tokens, weights, attr.scores):
        level = int(round(255 * (1 - w / top)))
        color = f"#ff{level:02x}{level:02x}" if s >= 0 else f"#{level:02x}{level:02x}ff"
        parts.append(f"[black on {color}]{escape(tok)}[/]")
    head = (f"[bold]{attr.method}[/] target={escape(attr.target_name)} "
            f"p={attr.probabilities[attr.target]:.3f}")
    return head + "\n" + " ".join(parts)


def attribution_table(attr: Attribution, top: int | None = None) -> str:
    """Plain text (no colour): one row per token with its signed score and its share of sum |score|.

    Rows are in input order; with ``top`` only the ``top`` tokens of largest |score|, largest first.
    """
    shares = attr.normalized()
    rows = list(range(len(attr.tokens)))
    if top:
        rows = sorted(rows, key=lambda i: (-abs(attr.scores[i]), i))[:top]
    width = max([len("token"), *(len(attr.tokens[i]) for i in rows)])
    head = (f"{attr.method}: target {attr.target_name} (p={attr.probabilities[attr.target]:.3f}), "
            f"predicted label {attr.prediction}" + (f", top {len(rows)} of {len(attr.tokens)} tokens" if top else ""))
    lines = [head, f"  {'#':>3}  {'token':<{width}}  {'score':>11}  {'share':>6}"]
    lines += [f"  {i:>3}  {attr.tokens[i]:<{width}}  {attr.scores[i]:>+11.4g}  {100 * shares[i]:>5.1f}%" for i in rows]
    return "\n".join(lines)
