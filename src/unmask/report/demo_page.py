"""The ``make demo`` report, read top to bottom: verdicts, predictions, explanations, how the facade fooled
Gradient but not IG, and what to do. Self-contained (plots embedded as data URIs), every string escaped."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from unmask.io import write_text_atomic
from unmask.report.audit_page import STYLE, audit_section, verdict_tag
from unmask.report.html import attribution_html, label_name

if TYPE_CHECKING:
    from unmask.attribution.record import Attribution

METHOD_TITLES = {"gradient_x_input": "Gradient x input (paper Eq. 1)", "smoothgrad": "SmoothGrad",
                 "integrated_gradients": "Integrated gradients"}
LEGEND = ("<p class='legend'><span style='background:rgba(220,50,47,.8);color:#fff;padding:0 .4em'>red</span> "
          "supports the predicted label, <span style='background:rgba(38,139,210,.8);color:#fff;padding:0 .4em'>"
          "blue</span> speaks against it; the stronger the colour, the larger the token's share of the "
          "attribution (|score| over the sum, the Facade paper's view). Hover a token for its value.</p>")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _verdicts(audits: dict[str, dict]) -> str:
    from unmask.audit import AuditReport

    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{verdict_tag(a['verdict'])}</td>"
                   f"<td>{a['score']:.1f}</td><td>{html.escape(a['summary'])}</td></tr>" for name, a in audits.items())
    details = "".join(audit_section(AuditReport.from_dict(a), title=f"Audit of {name}") for name, a in audits.items())
    return (f"<h2>1. The verdict</h2><table><tr><th>model</th><th>verdict</th><th>score</th><th>what it means"
            f"</th></tr>{rows}</table><p>The score is -log10 of the chance that a clean model shows evidence this "
            f"strong (calibrated on clean models only; see experiments/results/audit_zoo.md for how often the "
            f"audit is right on models it was not calibrated on).</p>{details}")


def _predictions(results: dict) -> str:
    rows = []
    for name, acc in results["accuracy"].items():
        key = name.removeprefix("merged_")
        merged = name.startswith("merged_")
        rows.append([name, _pct(acc), _pct(results["agreement"].get(key)) if merged else "-",
                     f"{results['max_logit_diff'][key]:.2g}" if merged and key in results["max_logit_diff"] else "-"])
    return ("<h2>2. What the models predict: the same thing</h2><p>The merged model is f_orig plus a small Facade "
            "network whose output is nearly uniform: its predictions agree with f_orig's, so accuracy alone "
            "cannot tell them apart.</p>"
            + _table(["model", "dev accuracy %", "agreement with f_orig %", "max |merged - (f+g)| logit"], rows))


def _fooled(results: dict) -> str:
    from unmask.report.plots import facade_bars, figure_to_data_uri

    parts = ["<h2>4. How the facade fooled Gradient but not IG</h2><p>P@1: how often a method's top token is a stop "
             "word. On f_orig stop words are rarely the most important token; on the merged model the gradient "
             "methods put them first almost always, while integrated gradients stays where it was.</p>"]
    for key in results.get("saliency", {}):
        rows = []
        for row, methods in results["saliency"][key].items():
            cells = [row]
            for m in ("gradient_x_input", "smoothgrad", "integrated_gradients"):
                got = methods.get(m) or (methods.get("gradient", {}) if m == "gradient_x_input" else {})
                cells += [_pct(got.get("p1")), _pct(got.get("attr"))]
            rows.append(cells)
        parts.append(_table(["model", "Gradient P@1", "Gradient Attr", "SmoothGrad P@1", "SmoothGrad Attr",
                             "IG P@1", "IG Attr"], rows))
    try:
        uri = figure_to_data_uri(facade_bars(results))
        parts.append(f"<img alt='P@1 and attribution on stop words per method and model' src='{uri}' "
                     "style='max-width:100%'>")
    except Exception as e:  # a plot must never cost the report; say why it is missing
        parts.append(f"<p>(plot unavailable: {html.escape(str(e))})</p>")
    return "".join(parts)


def _prediction(name: str, rec: "Attribution") -> str:
    """``name predicts <b>label</b> (p = ...)`` by label name (the record's target name, else ``label k``)."""
    return (f"{html.escape(name)} predicts <b>{html.escape(label_name(rec, rec.prediction))}</b> "
            f"(p = {rec.probabilities[rec.prediction]:.2f})")


def _heatmaps(pairs: dict[str, dict[str, list["Attribution"]]]) -> str:
    names = list(pairs)
    methods = list(next(iter(pairs.values())))
    n = len(pairs[names[0]][methods[0]])
    parts = ["<h2>3. What each method says</h2>", LEGEND]
    for i in range(n):
        first = pairs[names[0]][methods[0]][i]
        predicted = " &middot; ".join(_prediction(name, pairs[name][methods[0]][i]) for name in names)
        parts.append(f"<h3>&ldquo;{html.escape(first.text)}&rdquo;</h3><p>{predicted}</p>")
        for m in methods:
            parts.append(f"<div class='meta'><b>{html.escape(METHOD_TITLES.get(m, m))}</b></div>")
            for name in names:
                parts.append(f"<div class='meta'>{html.escape(name)}</div>{attribution_html(pairs[name][m][i])}")
    return "".join(parts)


ADVICE = ("<h2>5. What to do</h2><ul><li>Run <code>unmask audit MODEL_DIR</code> on any model you did not "
          "train yourself before you read its gradient explanations.</li><li>When the audit flags Gradient or "
          "SmoothGrad, explain the model with the methods it keeps (integrated gradients, leave-one-out, LIME, "
          "KernelSHAP): they read what actually moves the output.</li><li>A clean verdict is evidence, not proof: "
          "a manipulation that moves attribution between tokens that all matter is not detectable this way "
          "(see the limits in experiments/results/audit_zoo.md).</li></ul>")


def write_demo_report(path: str | Path, results: dict, audits: dict[str, dict],
                      heatmaps: dict[str, dict[str, list["Attribution"]]]) -> Path:
    """The report at ``path``: verdicts, predictions, heatmaps, the facade's effect (plot), advice."""
    intro = ("<p>A MiniLM sentiment classifier (f_orig) was merged with a small Facade model trained so that "
             "the merged model's gradients point at stop words while its predictions stay the same. unmask "
             "audits both models without knowing how they were built.</p>")
    body = [intro, _verdicts(audits), _predictions(results), _heatmaps(heatmaps), _fooled(results), ADVICE]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>unmask demo: a Facade hidden in an SST-2 "
            f"classifier</title><style>{STYLE}.meta{{color:#555;font-size:.85em}}.attr{{margin:.4em 0;line-height:2}}"
            f".tok{{padding:.15em .2em;margin:0 1px;border-radius:3px}}</style></head><body>"
            f"<h1>unmask demo: a Facade hidden in an SST-2 classifier</h1>{''.join(body)}</body></html>")
    return write_text_atomic(path, page)
