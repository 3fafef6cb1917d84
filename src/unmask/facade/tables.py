"""Markdown tables that put the Facade paper's numbers (Tables 1 and 2) next to ours.

The paper's "Gradient" column is gradient x input (its Eq. 1): keyed ``gradient_x_input`` and labelled
"Gradient (g.x, Eq. 1)"; results JSON written before the rename (key ``gradient``) still reads.
"""
from __future__ import annotations

# Paper (Wang et al. 2020), BERT-base. Table 1 accuracy; Table 2 (P@1, Attr) per method.
PAPER = {
    "sst2": {
        "accuracy": {"f_orig": 92.7, "merged_ft": 92.8, "merged_ft_rp": 92.4, "g_ft": 48.5,
                     "merged_stop": 92.2, "merged_stop_rp": 92.7, "g_stop": 56.9},
        "ft": {"f_orig": [8.3, 6.2, 7.9, 6.0, 2.2, 3.8], "merged": [99.5, 67.8, 98.3, 58.9, 2.8, 4.2],
               "merged_rp": [99.7, 91.1, 98.9, 87.0, 47.8, 29.8], "g": [100.0, 99.3, 100.0, 99.3, 100.0, 98.2]},
        "stop": {"f_orig": [13.9, 24.2, 12.5, 23.2, 10.0, 21.4], "merged": [97.2, 78.1, 95.5, 72.7, 10.0, 21.8],
                 "merged_rp": [97.8, 92.4, 96.6, 90.1, 46.7, 44.0], "g": [98.9, 97.7, 98.7, 97.7, 98.7, 93.4]},
    },
    "rte": {  # the paper reports SNLI; RTE stands in for it here
        "accuracy": {"f_orig": 90.7, "merged_ft": 90.5, "merged_ft_rp": 90.3, "g_ft": 32.9,
                     "merged_stop": 90.4, "merged_stop_rp": 90.2, "g_stop": 34.3},
        "ft": {"f_orig": [0.6, 2.3, 1.1, 2.4, 0.3, 1.5], "merged": [98.3, 75.0, 97.1, 68.8, 2.5, 3.3],
               "merged_rp": [99.4, 87.2, 98.2, 83.3, 5.6, 5.3], "g": [100.0, 99.8, 100.0, 99.8, 100.0, 99.2]},
        "stop": {"f_orig": [5.1, 20.8, 4.9, 20.1, 4.0, 20.4], "merged": [79.2, 63.9, 72.1, 59.5, 3.9, 21.2],
                 "merged_rp": [94.0, 83.7, 90.5, 79.9, 6.2, 23.8], "g": [100.0, 99.8, 100.0, 99.8, 99.8, 98.0]},
    },
}
# The Facade tables' methods, in column order (unmask.facade.evaluate.paper_methods builds them).
PAPER_METHODS = ("gradient_x_input", "smoothgrad", "integrated_gradients")
RENAMED = {"gradient": "gradient_x_input"}  # old key (results JSON before the rename) -> new key
LABELS = {"gradient_x_input": "Gradient (g.x, Eq. 1)", "smoothgrad": "SmoothGrad", "integrated_gradients": "IG"}


def saliency_of(methods: dict, method: str) -> dict:
    """``methods[method]`` of a saliency table, also from results written under the old key."""
    if method in methods:
        return methods[method]
    old = [k for k, v in RENAMED.items() if v == method]
    return next((methods[k] for k in old if k in methods), {})


METHODS = PAPER_METHODS


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def facade_markdown(results: dict) -> str:
    """Table 1 (accuracy, agreement, logit difference) and Table 2 (saliency), ours vs paper."""
    task = results["task"]
    paper = PAPER.get(task, {})
    cfg = results.get("config", {})
    n = cfg.get("eval_limit") or "all"
    ig = cfg.get("evaluation", {}).get("ig_steps")
    computed = [RENAMED.get(m, m) for m in cfg.get("evaluation", {}).get("methods", METHODS)]
    scope = f"the first {n}" if n != "all" else "all" + (f" {results['eval_n']}" if results.get("eval_n") else "")
    lines = [f"# Facade reproduction on {task.upper()}", "", f"Command: `{results['command']}`", "",
             f"Evaluated on {scope} dev examples; "
             + (f"IG with {ig} Gauss-Legendre steps (zero word-embedding baseline); " if "integrated_gradients"
                in computed else "")
             + "every method explains each model's own prediction."
             + ("" if set(computed) == set(METHODS) else f" Methods computed: {', '.join(computed)} ('-': not run)."),
             "",
             "## Table 1: accuracy (dev, %) and equivalence", "",
             "| model | merged from | ours | paper | agreement with f_orig | agreement with its f | max logit diff |",
             "|---|---|---|---|---|---|---|"]
    for name, acc in results["accuracy"].items():
        key = name.removeprefix("merged_")
        merged = name.startswith("merged_")
        agree = results["agreement"].get(key) if merged else None
        partner = results.get("agreement_with_partner", {}).get(key) if merged else None
        parts = " + ".join(results.get("merged_from", {}).get(key, [])) if merged else ""
        diff = results["max_logit_diff"].get(key) if merged else None
        lines.append(f"| {name} | {parts or '-'} | {_fmt(acc)} | {_fmt(paper.get('accuracy', {}).get(name))} | "
                     f"{_fmt(agree)} | {_fmt(partner)} | {'-' if diff is None else f'{diff:.2g}'} |")
    for key, title in (("ft", "first token"), ("stop", "stop words")):
        lines += ["", f"## Table 2 ({title}): P@1 / Mean Attribution (%), ours [paper]", "",
                  "| model | " + " | ".join(f"{LABELS[m]} {what}" for m in METHODS for what in ("P@1", "Attr")) + " |",
                  "|---|---|---|---|---|---|---|"]
        for row, methods in results["saliency"].get(key, {}).items():
            ref = paper.get(key, {}).get(row)
            cells = []
            for i, m in enumerate(METHODS):
                for j, metric in enumerate(("p1", "attr")):
                    ours = saliency_of(methods, m).get(metric)
                    theirs = ref[2 * i + j] if ref else None
                    cells.append(f"{_fmt(ours)} [{_fmt(theirs)}]")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    diag = results.get("diagnostics", {})
    if diag.get("grad_ratio_g_over_f"):
        lines += ["", "## Diagnostics", "",
                  "Median over dev inputs of sum_i |grad_g . x_g| / sum_i |grad_f . x_f| on the merged model "
                  "(the Facade only fools gradient methods when this is >> 1):", ""]
        lines += [f"- {k}: {_fmt(v) if v is None or v < 1000 else f'{v:.3g}'}"
                  for k, v in diag["grad_ratio_g_over_f"].items()]
    if task == "rte":
        lines += ["", "RTE stands in for SNLI (no SNLI copy is reachable offline); the paper's column is SNLI."]
    return "\n".join(lines) + "\n"
