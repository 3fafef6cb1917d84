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
