"""Escaped HTML heatmaps for ``Attribution`` records (every token passes through ``html.escape``)."""
from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # records render themselves through this module: no runtime import back
    from unmask.attribution.record import Attribution

STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
.attr{margin:.6em 0;line-height:2}.tok{padding:.15em .2em;margin:0 1px;border-radius:3px}
.meta{color:#555;font-size:.85em}.sep{color:#999}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
</style>"""


POSITIVE, NEGATIVE = "220,50,47", "38,139,210"  # red supports the explained label, blue speaks against it


def token_colour(weight: float, signed: float) -> str:
    """Red for support of the target, blue against; alpha grows with the weight (0..1)."""
    alpha = min(1.0, 0.08 + 0.92 * max(0.0, weight))
    return f"rgba({POSITIVE if signed >= 0 else NEGATIVE},{alpha:.3f})"


def heat_cells(attr: Attribution, show_specials: bool = True) -> Iterator[tuple[str, float, float, str, bool]]:
    """(token, share of |attribution|, raw score, colour, is special) per shown token: the one weighting of
    every heatmap (this module's and the notebook's), normalized |scores| rescaled to a maximum of 1."""
    weights = attr.normalized()
    top = float(weights.max()) if len(weights) and weights.max() > 0 else 1.0
    for tok, w, s, seq in zip(attr.tokens, weights, attr.scores, attr.sequence_ids):
        if seq is None and not show_specials:
            continue
        yield tok, float(w), float(s), token_colour(float(w) / top, float(s)), seq is None


def label_name(attr: Attribution, index: int) -> str:
    """The name of label ``index`` as far as the record knows it: its target's name, else ``label <index>``."""
    return attr.target_name if index == attr.target else f"label {index}"


def legend_html() -> str:
    """What the colours mean (inline styles only: fits a notebook cell and a standalone page)."""
    swatch = "display:inline-block;width:1.1em;height:.9em;vertical-align:middle;border-radius:2px;margin:0 .3em"
    return (f'<div class="unmask-legend" style="color:#555;font-size:.85em;margin:.3em 0">'
            f'<span style="{swatch};background:rgb({POSITIVE})"></span>supports the explained label '
            f'<span style="{swatch};background:rgb({NEGATIVE})"></span>speaks against it; darker = larger '
            f"share of |attribution| in the row (rescaled to its maximum); unsigned methods (gradient L2 norm, "
            f"attention) use only the first colour; grey text = [CLS]/[SEP]</div>")


def attribution_html(attr: Attribution, show_specials: bool = True) -> str:
    """One record as a line of colored tokens (classes styled by ``STYLE``); labels by name."""
    spans = []
    for tok, w, s, colour, special in heat_cells(attr, show_specials):
        title = html.escape(f"{tok}: {w:.3f} (raw {s:+.4g})", quote=True)
        spans.append(f'<span class="{"tok sep" if special else "tok"}" style="background:{colour}" '
                     f'title="{title}">{html.escape(tok)}</span>')
    p = attr.probabilities[attr.prediction]
    meta = html.escape(f"{attr.method} | explains {attr.target_name} | predicted "
                       f"{label_name(attr, attr.prediction)} (p={p:.3f})")
    return f'<div class="attr"><div class="meta">{meta}</div>{"".join(spans)}</div>'


def page(title: str, body: Iterable[str]) -> str:
    """A complete standalone HTML page."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"{STYLE}</head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")


def attributions_page(records: dict[str, list[Attribution]], title: str = "unmask explanations") -> str:
    """All methods for each input, grouped by input, under the colour legend."""
    n = len(next(iter(records.values()))) if records else 0
    body = [legend_html()]
    for i in range(n):
        first = next(iter(records.values()))[i]
        text = first.text if first.pair is None else f"{first.text} || {first.pair}"
        body.append(f"<h3>{html.escape(text)}</h3>")
        body.extend(attribution_html(recs[i]) for recs in records.values())
    return page(title, body)
