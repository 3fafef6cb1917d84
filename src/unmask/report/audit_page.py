"""Self-contained HTML for one audit report: verdict first, then per-method evidence (every string escaped)."""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unmask.audit import AuditReport

COLOURS = {"trustworthy": "#1a7f37", "reference": "#1a7f37", "suspect": "#b35900", "manipulated": "#b3001b",
           "uncalibrated": "#555"}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.45}
.banner{padding:1em 1.2em;border-radius:8px;color:#fff;font-size:1.2em}
table{border-collapse:collapse;margin:1em 0;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.tag{color:#fff;border-radius:4px;padding:.1em .45em;font-size:.9em}
small{color:#666}
"""


def verdict_tag(verdict: str) -> str:
    return (f'<span class="tag" style="background:{COLOURS.get(verdict, "#555")}">'
            f"{escape(verdict)}</span>")


def _fmt(x) -> str:
    if isinstance(x, float):
        return "-" if x != x else f"{x:.3g}"
    return escape(str(x))


def audit_section(report: "AuditReport", title: str | None = None) -> str:
    """The report as an HTML fragment (for pages that show several models)."""
    from unmask.audit.verdict import LABELS

    b = report.evidence["behavior"]
    colour = COLOURS.get(report.verdict, "#555")
    rows = []
    for name, v in report.methods.items():
        m = b["methods"].get(name, {})
        reasons = "<br>".join(escape(r) for r in v.reasons) or ("the reference (black-box)" if v.verdict ==
                                                               "reference" else "")
        rows.append(
            f"<tr><td>{escape(LABELS.get(name, name))}</td><td>{verdict_tag(v.verdict)}</td>"
            f"<td>{_fmt(v.p_value)}</td><td>{_fmt(m.get('misplacement', float('nan')))}</td>"
            f"<td>{_fmt(m.get('top1_miss', float('nan')))}</td>"
            f"<td>{_fmt(m.get('pileup', float('nan')))} {escape(m.get('pileup_class', ''))}</td>"
            f"<td>{_fmt(m.get('top1_pileup', float('nan')))} {escape(m.get('top1_pileup_class', ''))}</td>"
            f"<td>{_fmt(m.get('content_top1', float('nan')))} "
            f"{escape(', '.join(m.get('content_top1_words', [])[:4]))}</td>"
            f"<td>{_fmt(m.get('aopc_comprehensiveness', float('nan')))}</td><td>{reasons}</td></tr>")
    s = report.evidence.get("structure") or {}
    structure = (f"coupling of the best split of the hidden units: {_fmt(s.get('coupling'))} "
                 "(about 1 for an ordinary network, far below 1 for nearly independent sub-networks)"
                 if s.get("coupling") is not None else escape(s.get("note", "not run")))
    return f"""
<h2>{escape(title or report.model)}</h2>
<div class="banner" style="background:{colour}">Verdict: <b>{escape(report.verdict.upper())}</b> &middot;
score {report.score:.1f} (a clean model looks like this with probability {report.p_value:.2g})</div>
<p>{escape(report.summary)}</p>
<table><tr><th>method</th><th>verdict</th><th>p</th><th title="1 - placement skill against occlusion: 0 = all
on the most effective token, 1 = chance, above 1 = on tokens that matter less than average">misplacement</th>
<th>top-1 miss</th><th>pile-up (class)</th><th title="share of inputs whose top token is in the class, minus the
share whose most effective token (occlusion) is">top-1 pile-up (class)</th><th title="share of inputs whose
top token is on a content word the method tops at least 3 more times than occlusion does">repeated content
words</th>
<th>AOPC comp.</th><th>evidence</th></tr>{''.join(rows)}</table>
<p><small>Model-level: the gradient predicts masking changes {_fmt(10 ** b['magnitude_ratio'])}x the actual
ones (log10 {_fmt(b['magnitude_ratio'])}); first-order correlation miss {_fmt(b['first_order_miss'])};
structure: {structure}. Random-order AOPC {_fmt(next(iter(b['methods'].values()), {}).get('aopc_random',
float('nan')))}, occlusion's {_fmt(next(iter(b['methods'].values()), {}).get('aopc_reference', float('nan')))}.
{b['n_inputs']} inputs, {report.seconds:.0f} s. Calibrated on clean models{_cal_n(report)}:
{escape(', '.join(report.calibration.get('models', [])))}.
{escape(report.calibration.get('note', ''))}</small></p>"""


def _cal_n(report: "AuditReport") -> str:
    n = report.calibration.get("n_inputs")
    return f" ({n} inputs each)" if n else ""


def audit_html(report: "AuditReport") -> str:
    """A complete self-contained page (no external assets)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>unmask audit: {escape(report.model)}</title>"
            f"<style>{STYLE}</style></head><body><h1>unmask audit</h1>{audit_section(report)}"
            "<h3>How to read this</h3><p>Each explanation method is checked against what actually moves the "
            "model's output: deleting or masking the tokens it calls important (comprehensiveness), the occlusion "
            "effect of its top token (top-1 miss: 0 = it found the most effective token), and whether it piles "
            "attribution on a class of words (first word, stop words, punctuation, a frequent word) that occlusion "
            "says does not matter. p is the chance that a clean model shows evidence this strong, from the "
            "calibration on clean models. Leave-one-out is the black-box reference a gradient manipulation cannot "
            "steer.</p></body></html>")
