"""Jupyter views: ``Attribution._repr_html_`` and ``show(records)``, heatmaps with a colour legend.

Everything is inline HTML and CSS (no script, no external asset), so the same markup is a self-contained
page (``View.to_html()`` / ``View.save(path)``). Every model string passes through ``html.escape``.
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from unmask.errors import UnmaskError
from unmask.report.html import heat_cells, label_name, legend_html, token_colour  # noqa: F401  (API)

if TYPE_CHECKING:  # records render themselves through this module: no runtime import back
    from unmask.attribution.record import Attribution

    Records = Union[Attribution, Sequence[Attribution], Mapping[str, Sequence[Attribution]]]

FONT = "font-family:system-ui,sans-serif"
BOX = "line-height:2;margin:.4em 0"
TOKEN = "padding:.1em .2em;margin:0 1px;border-radius:3px;white-space:pre"
META = "color:#555;font-size:.85em"


def _is_record(x) -> bool:
    return all(hasattr(x, a) for a in ("tokens", "scores", "normalized", "method", "target_name"))


def heatmap_html(attr: Attribution, show_specials: bool = True) -> str:
    """One record as a row of coloured tokens with its method, explained label and prediction."""
    spans = []
    for tok, w, s, colour, special in heat_cells(attr, show_specials):
        title = html.escape(f"{tok}: {w:.3f} of |attribution| (raw {s:+.4g})", quote=True)
        grey = "color:#888;" if special else ""
        spans.append(f'<span style="{TOKEN};{grey}background:{colour}" title="{title}">{html.escape(tok)}</span>')
    probs = np.asarray(attr.probabilities, dtype=float)
    meta = (f"<b>{html.escape(attr.method)}</b> · explains {html.escape(attr.target_name)} · predicted "
            f"{html.escape(label_name(attr, attr.prediction))} (p={probs[attr.prediction]:.3f})")
    extra = attr.extras.get("completeness_error") if isinstance(attr.extras, dict) else None
    if isinstance(extra, (int, float)):
        meta += f" · completeness error {extra:.1e}"
    return (f'<div class="unmask-attr" style="{BOX}"><div style="{META}">{meta}</div>'
            f'{"".join(spans)}</div>')


def _input_title(attr: Attribution) -> str:
    text = html.escape(attr.text)
    if attr.pair is not None:
        text += f' <span style="{META}">||</span> {html.escape(attr.pair)}'
    return f'<div style="font-weight:600;margin-top:.8em">{text}</div>'


def record_html(attr: Attribution) -> str:
    """What ``Attribution._repr_html_`` shows: the input, the heatmap, the legend."""
    return f'<div style="{FONT}">{_input_title(attr)}{heatmap_html(attr)}{legend_html()}</div>'


class View:
    """HTML heatmaps for Jupyter (``_repr_html_``) that also save as a self-contained page."""

    def __init__(self, body: str, title: str = "unmask explanations") -> None:
        self.body = body
        self.title = title

    def _repr_html_(self) -> str:
        return f'<div style="{FONT}">{self.body}{legend_html()}</div>'

    def to_html(self) -> str:
        """A complete standalone page (inline CSS only)."""
        t = html.escape(self.title)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title></head>"
                f"<body style='margin:2em;max-width:70em;{FONT}'><h1>{t}</h1>"
                f"{self._repr_html_()}</body></html>")

    def save(self, path: str | Path) -> Path:
        from unmask.io import write_text_atomic

        return write_text_atomic(path, self.to_html())


def show(records: Records, title: str = "unmask explanations") -> View:
    """A notebook view of one record, a list of records, or ``explain``'s ``{method: [records]}``.

    A dict is grouped by input (one row per method under each input); a list keeps its order and
    starts a new input heading whenever the input changes.
    """
    if _is_record(records):
        records = [records]
    if isinstance(records, Mapping):
        lists = {m: list(v) for m, v in records.items()}
        if not lists:
            raise UnmaskError("show: no records given")
        sizes = {len(v) for v in lists.values()}
        if len(sizes) != 1:
            raise UnmaskError(f"show: the methods have different numbers of records ({sorted(sizes)})")
        ordered = [recs[i] for i in range(sizes.pop()) for recs in lists.values()]
    else:
        ordered = list(records)
    if not ordered:
        raise UnmaskError("show: no records given")
    bad = [type(r).__name__ for r in ordered if not _is_record(r)]
    if bad:
        raise UnmaskError(f"show: expected Attribution records, got {bad[0]}")
    parts, last = [], None
    for rec in ordered:
        key = (rec.text, rec.pair)
        if key != last:
            parts.append(_input_title(rec))
            last = key
        parts.append(heatmap_html(rec))
    return View("".join(parts), title)
