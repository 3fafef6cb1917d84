"""The experiments draw their figures through ``unmask.report.plots`` (one plotting code path): each plotting
entry point, given tiny hand-made results, calls the shared function and writes a valid PNG."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from unmask.report import plots

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"exp_{name}", REPO / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def calls(monkeypatch):
    """Wrap the shared plotting functions to record how the experiments call them."""
    seen = []
    for name in ("hotflip_histogram", "diffmask_kept", "score_heatmap", "faithfulness_curves", "facade_bars"):
        real = getattr(plots, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            fig = _real(*args, **kwargs)
            seen.append((_name, args, kwargs, fig))
            return fig
        monkeypatch.setattr(plots, name, wrapper)
    return seen


def _png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 2000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_perturbation_hotflip_plot(tmp_path, calls):
    exp = load("perturbation")
    hist = {**{str(k): 0 for k in range(1, 17)}, "more": 0, "not_flipped": 0}
    res = {"hotflip": {"f_orig": {"histogram": {**hist, "1": 6, "2": 3, "not_flipped": 1}, "n": 10,
                                  "mean_flips": 1.33},
                       "merged_ft": {"histogram": {**hist, "1": 2, "3": 7, "more": 1}, "n": 10, "mean_flips": 2.6},
                       "merged_stop": None}}
    png = tmp_path / "perturbation_sst2_hotflip.png"
    assert exp.plot("sst2", res, png) is True
    _png(png)
    [(name, _, kwargs, fig)] = calls
    assert name == "hotflip_histogram" and kwargs["path"] == png
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(1, 17)]  # > 16 omitted
    heights = [round(b.get_height(), 6) for b in ax.patches]
    assert heights[:3] == [60.0, 30.0, 0.0] and heights[16:19] == [20.0, 0.0, 70.0]  # % of n, per model
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "f_orig (mean 1.3, not flipped 1)", "merged_ft (mean 2.6, not flipped 0)"]
    assert ax.get_title() == "HotFlip on SST2"
    assert exp.plot("sst2", {"hotflip": {"f_orig": None}}, tmp_path / "none.png") is False
    assert not (tmp_path / "none.png").exists()


def test_diffmask_sst2_plot(tmp_path, calls):
    exp = load("diffmask_sst2")
    tokens = ["[CLS]", "it", "all", "feels", "[SEP]"]
    rng = np.random.default_rng(0)

    def entry(modes):
        dev = {str(k): {"expected_kept": 1 - 0.1 * k, "deterministic_kept": 1.0} for k in range(3)}
        recs = {mode: {k: [SimpleNamespace(tokens=tokens, scores=rng.uniform(size=5)) for _ in range(2)]
                       for k in range(3)} for mode in modes}
        return {"diffmask": {m: {"dev": dev} for m in modes}, "_records": recs}

    results = {"original": entry(("input", "hidden")), "merged_stop": entry(("input",))}
    png = tmp_path / "diffmask_sst2.png"
    exp.plot(png, results, example=1)
    _png(png)
    [(name, _, kwargs, fig)] = calls
    assert name == "diffmask_kept" and kwargs["path"] == png
    assert len(fig.axes) == 6  # (kept lines + 2 models' heatmaps) x (input, hidden)
    top = fig.axes[0]
    assert [t.get_text() for t in top.get_legend().get_texts()] == [
        "original expected", "original deterministic", "merged_stop expected", "merged_stop deterministic"]
    np.testing.assert_allclose(top.get_lines()[0].get_ydata(), [100, 90, 80])
    assert len(fig.axes[1].get_lines()) == 2  # merged_stop has no hidden gates: only the original's lines
    heat = fig.axes[2].get_images()[0].get_array()  # original, input gates, example 1
    np.testing.assert_allclose(heat, np.stack([results["original"]["_records"]["input"][k][1].scores
                                               for k in range(3)]))
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == tokens
    assert not fig.axes[5].axison  # merged_stop, hidden: nothing to show


def test_diffmask_toy_plot(tmp_path, calls):
    exp = load("diffmask_toy")
    data = SimpleNamespace(lengths=np.array([4]), sequences=np.array([[4, 1, 7, 4, 0, 0]]),
                           queries=np.array([[7, 4]]))
    rows = {"IG, layer 1": np.array([0.2, 0.1, 0.4, 0.0, 9.0, 9.0]),
            "ground truth": np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])}
    png = tmp_path / "diffmask_toy.png"
    exp.plot_example(png, data, 0, rows)
    _png(png)
    [(name, _, kwargs, fig)] = calls
    assert name == "score_heatmap" and kwargs["path"] == png and kwargs["scale_rows"]
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), [[0.5, 0.25, 1.0, 0.0], [1, 0, 1, 1]])  # padding cut
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "1", "7", "4"]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows)
    assert ax.get_title() == "query: more 7 than 4? (rows scaled to max 1)"


def test_faithfulness_sst2_plot(tmp_path, calls):
    exp = load("faithfulness_sst2")
    fractions = [0.01, 0.1, 0.5]

    def model(ig, grad):
        return {"mode": "remove", "rank_by": "signed",
                "random": {"faithfulness": {"fractions": fractions, "comprehensiveness": [0.0, 0.05, 0.1]}},
                "methods": {"integrated_gradients": {"faithfulness": {"fractions": fractions, "comprehensiveness": ig}},
                            "gradient_x_input": {"faithfulness": {"fractions": fractions,
                                                                  "comprehensiveness": grad}}}}

    results = {"n": 10, "models": {"f_orig": model([0.2, 0.4, 0.6], [0.1, 0.2, 0.3]),
                                   "merged_stop": model([0.2, 0.4, 0.6], [0.0, None, 0.05]),
                                   "broken": {"methods": {}, "random": {}}}}  # no per-fraction values: no figure
    prefix = str(tmp_path / "faith")
    written = exp.plot(results, prefix)
    assert written == [tmp_path / "faith_f_orig.png", tmp_path / "faith_merged_stop.png"]
    for png in written:
        _png(png)
    assert [c[0] for c in calls] == ["faithfulness_curves"] * 2
    _, args, kwargs, fig = calls[0]
    assert list(args[0]) == fractions and kwargs["title"].startswith("f_orig: comprehensiveness")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "IG (AOPC 0.400)", "Gradient x input (AOPC 0.200)", "random ordering (AOPC 0.050)"]
    random_line = ax.get_lines()[2]
    np.testing.assert_allclose(random_line.get_ydata(), [0.0, 0.05, 0.1])
    assert random_line.get_linestyle() == "--"
    assert np.isnan(calls[1][3].axes[0].get_lines()[1].get_ydata()[1])  # JSON null drawn as a gap

    import json

    (tmp_path / "faith.json").write_text(json.dumps(results))
    for png in written:
        png.unlink()
    assert exp.main(["--plot-only", "--out", prefix]) == 0  # redraw from the JSON, no model loaded
    assert all(png.is_file() for png in written) and len(calls) == 4
    with pytest.raises(SystemExit, match="not found"):
        exp.main(["--plot-only", "--out", str(tmp_path / "missing")])


def test_facade_reproduce_plot(tmp_path, calls, monkeypatch):
    exp = load("facade_reproduce")
    monkeypatch.setattr(exp, "RESULTS", tmp_path)
    results = {"task": "sst2", "saliency": {  # written before the rename: "gradient" is gradient x input
        "ft": {"f_orig": {"gradient": {"p1": 7.3, "attr": 5.7}, "integrated_gradients": {"p1": 5.3, "attr": 4.9}},
               "merged": {"gradient": {"p1": 99.7, "attr": 68.9}, "integrated_gradients": {"p1": 9.7, "attr": 8.3}}},
        "stop": {"f_orig": {"gradient": {"p1": 20.7, "attr": 26.3}, "integrated_gradients": {"p1": 17.0, "attr": 24.6}},
                 "merged": {"gradient": {"p1": 88.7, "attr": 70.1}, "integrated_gradients": {"p1": 17.3, "attr": 24.9}}}}}
    png = tmp_path / "facade.png"
    assert exp.plot(results, png) == png
    _png(png)
    [(name, args, _, fig)] = calls
    assert name == "facade_bars" and args[0] is results
    assert len(fig.axes) == 4 and not any(ax.get_legend() for ax in fig.axes)  # one legend for the figure
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Gradient x input", "IG"]
    assert sorted(round(b.get_height(), 1) for b in fig.axes[0].patches) == [5.3, 7.3, 9.7, 99.7]

    import json

    (tmp_path / "facade_sst2.json").write_text(json.dumps(results))
    assert exp.main(["--task", "sst2", "--plot-only"]) == 0  # redraw from the JSON: nothing trained
    _png(tmp_path / "facade_sst2.png")
    assert len(calls) == 2
    with pytest.raises(SystemExit, match="facade_rte_x.json not found"):
        exp.main(["--task", "rte", "--suffix", "x", "--plot-only"])
