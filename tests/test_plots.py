"""Plots render from small dicts in the experiments' result shapes and write non-empty PNGs."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from unmask.errors import UnmaskError
from unmask.report import plots


def _png(path) -> tuple[int, int]:
    assert path.stat().st_size > 2000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _legend(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


FACADE = {"saliency": {
    "stop": {"f_orig": {"gradient": {"p1": 20.7, "attr": 26.3}, "integrated_gradients": {"p1": 17.0, "attr": 24.6}},
             "merged": {"gradient": {"p1": 88.7, "attr": 70.1}, "integrated_gradients": {"p1": 17.3, "attr": 24.9}}},
    "ft": {"f_orig": {"gradient": {"p1": 7.3, "attr": 5.7}, "integrated_gradients": {"p1": 5.3, "attr": 4.9}},
           "merged": {"gradient": {"p1": 99.7, "attr": 68.9}, "integrated_gradients": {"p1": 9.7, "attr": 8.3}}}}}


def test_facade_bars(tmp_path):
    fig = plots.facade_bars(FACADE, path=tmp_path / "facade.png")
    _png(tmp_path / "facade.png")
    assert len(fig.axes) == 4  # 2 targets x (P@1, attr)
    heights = sorted(round(b.get_height(), 1) for b in fig.axes[0].patches)
    assert heights == sorted([20.7, 88.7, 17.0, 17.3])  # stop-word P@1 of both methods and models
    assert _legend(fig)[:2] == ["Gradient x input", "IG"]  # FACADE is old-style: "gradient" is g.x (Eq. 1)
    with pytest.raises(UnmaskError, match="no 'saliency' entry"):
        plots.facade_bars({"accuracy": {}})


def test_facade_bars_reads_the_old_gradient_key_as_gradient_x_input():
    """Facade results written before the rename keep gradient x input under "gradient": the legend must not
    call it the L2-norm "Gradient"; a file with both keys is read by the new one (as the Facade tables do)."""
    old = {"saliency": {"stop": {"f_orig": {"gradient": {"p1": 20.7, "attr": 26.3}},
                                 "merged": {"gradient": {"p1": 88.7, "attr": 70.1}}}}}
    for kwargs in ({}, {"methods": ["gradient"]}):
        fig = plots.facade_bars(old, **kwargs)
        labels = _legend(fig)
        assert labels == ["Gradient x input", "Gradient x input"] and plots.METHOD_TITLES["gradient"] not in labels
        assert sorted(round(b.get_height(), 1) for b in fig.axes[0].patches) == [20.7, 88.7]
    both = {"saliency": {"stop": {"f_orig": {"gradient": {"p1": 1.0}, "gradient_x_input": {"p1": 2.0}}}}}
    fig = plots.facade_bars(both, metrics=("p1",))
    assert _legend(fig) == ["Gradient x input"] and [b.get_height() for b in fig.axes[0].patches] == [2.0]


def test_hotflip_histogram(tmp_path):
    res = {"hotflip": {"f_orig": {"histogram": {"1": 6, "2": 3, "more": 0, "not_flipped": 1}, "n": 10},
                       "merged": {"histogram": {"1": 2, "2": 8, "more": 0, "not_flipped": 0}, "n": 10}}}
    fig = plots.hotflip_histogram(res, path=tmp_path / "hf.png")
    _png(tmp_path / "hf.png")
    heights = [round(b.get_height(), 6) for b in fig.axes[0].patches]
    assert heights == [60.0, 30.0, 0.0, 10.0, 20.0, 80.0, 0.0, 0.0]  # percent of n, per model in order


def test_diffmask_kept(tmp_path):
    dev = {str(k): {"expected_kept": 1 - 0.1 * k} for k in range(3)}
    res = {"models": {"original": {"diffmask": {"input": {"dev": dev}, "hidden": {"dev": dev}}},
                      "merged_stop": {"diffmask": {"input": {"dev": dev}, "hidden": {"dev": dev}}}}}
    fig = plots.diffmask_kept(res, path=tmp_path / "dm.png")
    _png(tmp_path / "dm.png")
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(line.get_ydata(), [100, 90, 80])


def test_faithfulness_curves(tmp_path):
    fig = plots.faithfulness_curves([0.01, 0.1, 0.5], {"integrated_gradients": [0.1, 0.2, 0.6], "random": [0, 0, 0.3]},
                                    path=tmp_path / "faith.png")
    _png(tmp_path / "faith.png")
    assert _legend(fig) == ["IG (AOPC 0.300)", "random (AOPC 0.100)"]
    with pytest.raises(UnmaskError, match="has 2 values for 3 fractions"):
        plots.faithfulness_curves([0.01, 0.1, 0.5], {"gradient": [0.1, 0.2]})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_audit_roc_auc_equals_sklearn(tmp_path, seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = np.round(labels * 0.8 + rng.normal(size=40), 1)  # rounding makes ties
    fig = plots.audit_roc({"detector": scores, "noise": rng.normal(size=40)}, labels, path=tmp_path / "roc.png")
    _png(tmp_path / "roc.png")
    legend = _legend(fig)
    auc = float(re.search(r"detector \(AUC ([0-9.]+)\)", " ".join(legend)).group(1))
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=5e-4)
    fpr, tpr, exact = plots.roc_points(scores, labels)
    assert exact == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.trapezoid(tpr, fpr) == pytest.approx(exact, abs=1e-12)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1


def test_audit_roc_rejects_one_class():
    with pytest.raises(UnmaskError, match="at least one positive and one negative"):
        plots.audit_roc([0.1, 0.2], [1, 1])


def test_data_uri_is_a_png():
    import base64

    uri = plots.figure_to_data_uri(plots.faithfulness_curves([0.1, 0.2], {"gradient": [0.3, 0.4]}))
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_heatmap_and_bad_shapes(tmp_path):
    fig = plots.score_heatmap({"IG": [0.2, 0.4, 0.1], "truth": [1, 0, 1]}, ["4", "1", "7"], title="q",
                              scale_rows=True, path=tmp_path / "heat.png")
    _png(tmp_path / "heat.png")
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), [[0.5, 1, 0.25], [1, 0, 1]])
    with pytest.raises(UnmaskError, match="has 2 values for 3 tokens"):
        plots.score_heatmap({"IG": [0.2, 0.4]}, ["4", "1", "7"])
    with pytest.raises(UnmaskError, match="no model has 'hidden' gates"):
        plots.diffmask_kept({"models": {"original": {"diffmask": {"input": {"dev": {"0": {"expected_kept": 1}}}}}}})
    with pytest.raises(UnmaskError, match="no model has HotFlip results"):
        plots.hotflip_histogram({"hotflip": {"f_orig": None}})
