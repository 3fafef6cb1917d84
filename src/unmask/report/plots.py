"""Plots for the experiments and the report (matplotlib ``Figure`` objects rendered by Agg; no screen needed).

Every function returns a ``matplotlib.figure.Figure`` and, given ``path``, also writes it as a PNG
(atomically). Figures are built without pyplot: no global backend switch, nothing to close, safe in
threads (the server) and shown inline by Jupyter when returned from a cell. ``figure_to_data_uri`` embeds a figure in a self-contained HTML page.

Inputs are the shapes the experiments write:
- ``facade_bars``: ``experiments/results/facade_sst2.json`` (``saliency[target][model][method] = {p1, attr}``;
  the old key ``gradient`` is read as ``gradient_x_input``, as ``unmask.facade.tables`` does)
- ``hotflip_histogram``: ``experiments/results/perturbation_sst2.json`` (``hotflip[model].histogram``)
- ``diffmask_kept``: ``experiments/results/diffmask_sst2.json`` (``models[m].diffmask[mode].dev[layer]``)
- ``score_heatmap``: one row of per-token scores per name (e.g. methods against the ground truth)
- ``faithfulness_curves``: fractions + one value list per method
- ``audit_roc``: detector scores + 0/1 labels (1 = manipulated)
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from unmask.errors import UnmaskError
from unmask.facade.tables import RENAMED, saliency_of
from unmask.io import write_bytes_atomic

METHOD_TITLES = {"gradient": "Gradient", "gradient_x_input": "Gradient x input", "smoothgrad": "SmoothGrad",
                 "integrated_gradients": "IG", "leave_one_out": "Leave-one-out", "attention": "Attention",
                 "attention_rollout": "Attention rollout", "lime": "LIME", "kernel_shap": "KernelSHAP"}
TARGET_TITLES = {"ft": "first token", "stop": "stop words"}
METRIC_TITLES = {"p1": "P@1 (%)", "attr": "mean attribution (%)"}


def _subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5.0, 3.5), squeeze: bool = True):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` via a temporary file and rename."""
    return write_bytes_atomic(path, figure_png(fig, dpi))


def figure_to_data_uri(fig: Figure, dpi: int = 110) -> str:
    """``data:image/png;base64,...`` for an ``<img src>`` in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi)).decode("ascii")


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _need(mapping: Mapping, key: str, what: str):
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise UnmaskError(f"{what}: no {key!r} entry")
    return mapping[key]


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    """One cluster of bars per group, one bar (with its value) per series."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(x, groups)


def facade_bars(results: Mapping, targets: Sequence[str] | None = None, metrics: Sequence[str] = ("p1", "attr"),
                models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                path: str | Path | None = None) -> Figure:
    """P@1 / mean attribution on the target tokens, bars per method, clusters per model (Facade Table 1).

    Method keys go through ``unmask.facade.tables.RENAMED`` and are read with ``saliency_of``, as the
    Facade tables do: results written before the rename keep gradient x input (the paper's Eq. 1) under
    ``gradient``, which is drawn as gradient x input, never as the L2-norm gradient (a Facade evaluation
    refuses the key ``gradient``, so it cannot mean the L2 norm there).
    """
    saliency = _need(results, "saliency", "Facade results")
    targets = list(targets or saliency)
    if not targets:
        raise UnmaskError("Facade results: 'saliency' is empty")
    for m in metrics:
        if m not in METRIC_TITLES:
            raise UnmaskError(f"unknown metric {m!r}; choose from {', '.join(METRIC_TITLES)}")
    fig, axes = _subplots(len(targets), len(metrics), figsize=(5.2 * len(metrics), 3.4 * len(targets)),
                             squeeze=False)
    for i, target in enumerate(targets):
        rows = _need(saliency, target, "Facade results 'saliency'")
        names = list(models or rows)
        meths = list(dict.fromkeys(RENAMED.get(m, m) for m in (methods or next(iter(rows.values())))))
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            series = {METHOD_TITLES.get(m, m): [float(saliency_of(rows[n], m).get(metric, np.nan)) for n in names]
                      for m in meths}
            _grouped_bars(ax, names, series)
            ax.set_ylim(0, 105)
            ax.set_ylabel(METRIC_TITLES[metric])
            ax.set_title(f"{METRIC_TITLES[metric].split(' (')[0]} on {TARGET_TITLES.get(target, target)}")
            ax.legend(fontsize=8)
    return _finish(fig, path)


def hotflip_histogram(results: Mapping, models: Sequence[str] | None = None, percent: bool = True,
                      bins: Sequence[str] | None = None, labels: Mapping[str, str] | None = None,
                      title: str = "HotFlip", xlabel: str = "flips until the prediction changed",
                      path: str | Path | None = None) -> Figure:
    """How many flips HotFlip needed to change the prediction, per model (bins 1..16, more, not flipped).

    ``bins`` picks and orders the bins (default: all of the first model's), ``labels`` renames models in the
    legend; models whose entry is empty (not run) are left out. Percentages are of each model's ``n``.
    """
    hot = _need(results, "hotflip", "perturbation results")
    names = [n for n in (models or hot) if _need(hot, n, "perturbation results 'hotflip'")]
    if not names:
        raise UnmaskError("perturbation results: no model has HotFlip results")
    bins = [str(b) for b in (bins or _need(hot[names[0]], "histogram", f"HotFlip results of {names[0]}"))]
    series = {}
    for n in names:
        hist = _need(hot[n], "histogram", f"HotFlip results of {n}")
        counts = np.array([float(hist.get(b, 0)) for b in bins])
        total = float(hot[n].get("n", counts.sum())) or 1.0
        series[n] = list(100 * counts / total if percent else counts)
    fig, ax = _subplots(figsize=(min(11.0, 3.0 + 0.45 * len(bins)), 3.4))
    width = 0.8 / len(names)
    x = np.arange(len(bins))
    for k, (n, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=(labels or {}).get(n, n))
    long = any(len(b) > 2 for b in bins)
    ax.set_xticks(x, [b.replace("_", " ") for b in bins], rotation=45 if long else 0, ha="right" if long else "center",
                  fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of inputs" if percent else "inputs")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def _heatmap(ax, rows: np.ndarray, tokens: Sequence[str], names: Sequence[str]) -> None:
    """Scores in [0, 1] as a white-to-red grid: one row per name, one column per token."""
    ax.imshow(rows, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    long = any(len(str(t)) > 2 for t in tokens)
    ax.set_xticks(range(len(tokens)), [str(t) for t in tokens], rotation=70 if long else 0,
                  fontsize=7 if long else None)
    ax.set_yticks(range(len(names)), [str(n) for n in names])


def diffmask_kept(results: Mapping, modes: Sequence[str] = ("input", "hidden"),
                  stat: str | Sequence[str] = "expected_kept", models: Sequence[str] | None = None,
                  example: Mapping[str, Mapping[str, tuple[Sequence[str], Mapping]]] | None = None,
                  path: str | Path | None = None) -> Figure:
    """DiffMask's kept share per layer (0 = embeddings), one line per model (and stat), one panel per mode.

    Several ``stat`` names (e.g. expected and deterministic) draw one line each, the first solid, the others
    dashed. ``example`` (model -> mode -> (tokens, {layer: P(keep) per token})) adds one row per model below:
    the gates of one input as a layer x token heatmap. Models without a mode are left out of its panel.
    """
    entries = _need(results, "models", "DiffMask results")
    names = list(models or entries)
    stats = [stat] if isinstance(stat, str) else list(stat)
    rows = [n for n in names if example and example.get(n)]
    fig, axes = _subplots(1 + len(rows), len(modes), figsize=(6.0 * len(modes), 3.4 + 3.2 * len(rows)),
                          squeeze=False)
    for col, mode in enumerate(modes):
        ax = axes[0][col]
        drawn = 0
        for n in names:
            dm = _need(entries[n], "diffmask", f"DiffMask results of {n}").get(mode)
            if not dm:
                continue
            dev = _need(dm, "dev", f"DiffMask {mode} results of {n}")
            layers = sorted(dev, key=int)
            for j, st in enumerate(stats):
                label = n if len(stats) == 1 else f"{n} {st.removesuffix('_kept').replace('_', ' ')}"
                ax.plot([int(l) for l in layers], [100 * float(_need(dev[l], st, f"DiffMask {mode} layer {l} of {n}"))
                                                   for l in layers],
                        marker="o" if j == 0 else "x", linestyle="-" if j == 0 else "--", label=label)
            drawn += 1
        if not drawn:
            raise UnmaskError(f"DiffMask results: no model has {mode!r} gates")
        ax.set_ylim(0, 105)
        ax.set_xlabel("layer (0 = embedding output)")
        ax.set_ylabel(f"{stats[0].replace('_', ' ')} (%)" if len(stats) == 1 else "share of tokens kept (%)")
        ax.set_title(f"DiffMask {mode} gates (share kept per layer)")
        ax.legend(fontsize=7)
        for row, n in enumerate(rows, start=1):
            ax = axes[row][col]
            if mode not in example[n]:
                ax.axis("off")
                continue
            tokens, keep = example[n][mode]
            layers = sorted(keep, key=int)
            _heatmap(ax, np.stack([np.asarray(keep[l], dtype=float) for l in layers]), tokens, layers)
            ax.set_ylabel("layer")
            ax.set_title(f"{n}, {mode} gates: P(keep)", fontsize=9)
    return _finish(fig, path)


def score_heatmap(rows: Mapping[str, Sequence[float]], tokens: Sequence[str], title: str | None = None,
                  scale_rows: bool = False, path: str | Path | None = None) -> Figure:
    """Per-token scores in [0, 1], one row per name (white 0 to red 1); ``scale_rows`` divides each by its max."""
    if not rows:
        raise UnmaskError("heatmap: no rows given")
    mat = []
    for name, values in rows.items():
        v = np.asarray(values, dtype=float)
        if v.shape != (len(tokens),):
            raise UnmaskError(f"heatmap row {name!r} has {v.size} values for {len(tokens)} tokens")
        mat.append(v / max(float(v.max()), 1e-12) if scale_rows else v)
    fig, ax = _subplots(figsize=(1 + 0.55 * len(tokens), 0.45 * len(rows) + 1.2))
    _heatmap(ax, np.stack(mat), tokens, list(rows))
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def faithfulness_curves(fractions: Sequence[float], curves: Mapping[str, Sequence[float]],
                        ylabel: str = "comprehensiveness", title: str | None = None,
                        path: str | Path | None = None) -> Figure:
    """One line per method (e.g. comprehensiveness vs the fraction of top tokens removed), AOPC in the legend."""
    x = np.asarray(fractions, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise UnmaskError("faithfulness curves: give a non-empty list of fractions")
    if not curves:
        raise UnmaskError("faithfulness curves: no method curves given")
    fig, ax = _subplots(figsize=(5.2, 3.6))
    for name, values in curves.items():
        y = np.asarray(values, dtype=float)
        if y.shape != x.shape:
            raise UnmaskError(f"faithfulness curve of {name!r} has {len(y)} values for {len(x)} fractions")
        ax.plot(x, y, marker="o", label=f"{METHOD_TITLES.get(name, name)} (AOPC {y.mean():.3f})")
    ax.set_xlabel("fraction of tokens")
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def roc_points(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """False / true positive rates over all thresholds (high score = positive) and the AUC.

    The AUC is the Mann-Whitney probability that a positive outscores a negative (ties count half).
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    if s.shape != y.shape or s.ndim != 1:
        raise UnmaskError(f"ROC: {s.size} scores for {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise UnmaskError("ROC: labels must be 0 (clean) or 1 (manipulated)")
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise UnmaskError("ROC: need at least one positive and one negative label")
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    tpr = np.array([(pos >= t).mean() for t in thresholds])
    fpr = np.array([(neg >= t).mean() for t in thresholds])
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return fpr, tpr, float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def audit_roc(scores: Sequence[float] | Mapping[str, Sequence[float]], labels: Sequence[int],
              title: str = "audit ROC", path: str | Path | None = None) -> Figure:
    """ROC of detector scores against 0/1 labels; one curve per score set, its AUC in the legend."""
    sets = dict(scores) if isinstance(scores, Mapping) else {"audit": scores}
    fig, ax = _subplots(figsize=(4.4, 4.2))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance (AUC 0.500)")
    for name, s in sets.items():
        fpr, tpr, auc = roc_points(s, labels)
        ax.plot(fpr, tpr, marker=".", label=f"{name} (AUC {auc:.3f})")
    ax.set_xlabel("false positive rate (clean models flagged)")
    ax.set_ylabel("true positive rate (manipulated models flagged)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, path)
