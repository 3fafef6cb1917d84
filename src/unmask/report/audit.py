"""The audit report: Facade tables, detection verdicts and f_orig-vs-merged heatmaps in one HTML page."""
from __future__ import annotations

import html
from pathlib import Path

from unmask.attribution.record import Attribution
from unmask.report.html import attribution_html, page
from unmask.training.checkpoint import write_text_atomic

METHOD_TITLES = {"gradient_x_input": "Gradient (paper Eq. 1)", "smoothgrad": "SmoothGrad",
                 "integrated_gradients": "Integrated gradients"}


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def results_section(results: dict) -> str:
    parts = ["<h2>Predictions are unchanged</h2>"]
    rows = []
    for name, acc in results["accuracy"].items():
        key = name.removeprefix("merged_")
        rows.append([name, _pct(acc), _pct(results["agreement"].get(key)) if name.startswith("merged_") else "-",
                     f"{results['max_logit_diff'][key]:.2g}" if name.startswith("merged_") and key in
                     results["max_logit_diff"] else "-"])
    parts.append(_table(["model", "dev accuracy %", "agreement with f_orig %", "max |merged - (f+g)| logit"], rows))
    for key, title in (("stop", "stop words"), ("ft", "first token")):
        if key not in results["saliency"]:
            continue
        parts.append(f"<h2>Explanations are not: attribution on {title}</h2>")
        rows = []
        for row, methods in results["saliency"][key].items():
            cells = [row]
            for m in ("gradient", "smoothgrad", "integrated_gradients"):
                cells += [_pct(methods.get(m, {}).get("p1")), _pct(methods.get(m, {}).get("attr"))]
            rows.append(cells)
        parts.append(_table(["model", "Gradient P@1", "Gradient Attr", "SmoothGrad P@1", "SmoothGrad Attr",
                             "IG P@1", "IG Attr"], rows))
    return "".join(parts)


def detection_section(detections: dict[str, dict]) -> str:
    parts = ["<h2>Facade detection</h2><p>Structural: independent sub-networks with their share of the logit "
             "margin and of the gradient attribution. Behavioral: Spearman agreement of each method's token "
             "ranking with leave-one-out occlusion.</p>"]
    for name, det in detections.items():
        color = "#b00" if det["suspicious"] else "#070"
        parts.append(f"<h3>{html.escape(name)}: <span style='color:{color}'>{html.escape(det['verdict'])}"
                     f"</span></h3>")
        rows = [[str(c["size"]), _pct(100 * c["margin_share"]), _pct(100 * c["gradient_share"]),
                 "yes" if c["facade"] else "no"] for c in det["components"]]
        parts.append(_table(["hidden units", "margin share %", "gradient share %", "facade"], rows))
        agree = det["rank_agreement_with_occlusion"]
        parts.append(f"<p>Spearman with occlusion: Gradient {agree['gradient']:.2f}, IG "
                     f"{agree['integrated_gradients']:.2f} ({det['n_inputs']} inputs)</p>")
    return "".join(parts)


def heatmap_section(pairs: dict[str, dict[str, list[Attribution]]]) -> str:
    """``pairs[model_name][method] = records``: one block per input, models stacked per method."""
    names = list(pairs)
    methods = list(next(iter(pairs.values())))
    n = len(pairs[names[0]][methods[0]])
    parts = ["<h2>Heatmaps: the same predictions, different explanations</h2>"]
    for i in range(n):
        first = pairs[names[0]][methods[0]][i]
        parts.append(f"<h3>{html.escape(first.text)}</h3>")
        for m in methods:
            parts.append(f"<div class='meta'><b>{html.escape(METHOD_TITLES.get(m, m))}</b></div>")
            for name in names:
                parts.append(f"<div class='meta'>{html.escape(name)}</div>{attribution_html(pairs[name][m][i])}")
    return "".join(parts)


def write_audit_report(path: str | Path, title: str, intro: str, results: dict,
                       detections: dict[str, dict], heatmaps: dict[str, dict[str, list[Attribution]]]) -> Path:
    """Write the report atomically; returns its path."""
    body = [f"<p>{html.escape(intro)}</p>", results_section(results), detection_section(detections),
            heatmap_section(heatmaps)]
    return write_text_atomic(path, page(title, body))
