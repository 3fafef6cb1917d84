"""Notebook views (``_repr_html_``, ``show``), self-contained HTML, and examples/quickstart.ipynb run by nbclient."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from unmask.errors import UnmaskError
from unmask.report.notebook import View, legend_html, show

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?!data:|#)[^"'\s>]+|<script|<link|@import|url\(\s*["']?http""", re.I)


@pytest.fixture(scope="module")
def records(tiny_model):
    import unmask

    return unmask.explain(tiny_model, ["a <b>bold</b> film", "a fine film"],
                          methods=["gradient_x_input", "integrated_gradients"])


def test_record_repr_html_has_heatmap_legend_and_label_names(records):
    rec = records["integrated_gradients"][0]
    out = rec._repr_html_()
    assert out.count('class="unmask-attr"') == 1 and "unmask-legend" in out
    assert "supports the explained label" in out and "speaks against it" in out
    assert f"explains {rec.target_name}" in out and f"predicted {rec.target_name}" in out
    assert "&lt;b&gt;bold&lt;/b&gt;" in out and "<b>bold</b>" not in out  # the input text, escaped
    assert out.count("<span") - out.count("unmask-legend") >= len(rec.tokens)
    assert "completeness error" in out


def test_colours_follow_the_sign(tiny_model):
    import numpy as np

    import unmask

    rec = unmask.explain(tiny_model, ["a fine film"], methods=["gradient_x_input"])["gradient_x_input"][0]
    rec.scores = np.array([0.0, 2.0, -1.0, 0.5, 0.0])[: len(rec.tokens)]
    spans = re.findall(r'background:rgba\(([0-9,]+),([0-9.]+)\)" title="([^"]*)">', rec._repr_html_())
    assert [s[0] for s in spans[1:4]] == ["220,50,47", "38,139,210", "220,50,47"]
    assert float(spans[1][1]) == pytest.approx(1.0)  # the largest |score| is fully opaque
    assert float(spans[2][1]) == pytest.approx(0.08 + 0.92 * 0.5)


def test_show_groups_by_input_and_accepts_lists(records):
    view = show(records)
    out = view._repr_html_()
    assert out.count('class="unmask-attr"') == 4 and out.count("unmask-legend") == 1
    first, second = out.index("a &lt;b&gt;bold"), out.index("a fine film")
    assert first < out.index("integrated_gradients") < second  # both methods of input 0 before input 1
    listed = show([records["gradient_x_input"][1], records["integrated_gradients"][1]])._repr_html_()
    assert listed.count('class="unmask-attr"') == 2 and listed.count("a fine film") == 1
    assert show(records["gradient_x_input"][0])._repr_html_().count('class="unmask-attr"') == 1
    with pytest.raises(UnmaskError, match="no records"):
        show([])
    with pytest.raises(UnmaskError, match="expected Attribution records, got str"):
        show(["text"])


def test_pages_are_self_contained(records, tmp_path):
    from unmask.report.html import attributions_page
    from unmask.report.plots import faithfulness_curves, figure_to_data_uri

    page = show(records).save(tmp_path / "view.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "unmask-legend" in page
    img = f'<img src="{figure_to_data_uri(faithfulness_curves([0.1, 0.5], {"gradient": [0.2, 0.3]}))}">'
    for html_text in (page, attributions_page(records), View(img)._repr_html_()):
        assert not EXTERNAL.findall(html_text), EXTERNAL.findall(html_text)[:3]
    assert EXTERNAL.findall('<img src="https://example.org/x.png">')  # the check itself can fail
    assert not (tmp_path / "view.html.tmp").exists()


def test_legend_names_both_colours():
    text = legend_html()
    assert "rgb(220,50,47)" in text and "rgb(38,139,210)" in text


def test_quickstart_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    htmls = [o["data"]["text/html"] for o in outputs if "data" in o and "text/html" in o["data"]]
    assert len(htmls) == 2 and all("unmask-legend" in h for h in htmls)
    assert "&lt;mess&gt;" in htmls[1] and "<mess>" not in htmls[1]
    pngs = [o for o in outputs if "data" in o and "image/png" in o["data"]]
    assert len(pngs) == 2
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "quickstart.html" in printed and "completeness error" in printed


def test_notebook_and_html_page_colour_every_token_alike(records):
    from unmask.report.html import attribution_html
    from unmask.report.notebook import heatmap_html

    background = re.compile(r"background:(rgba\([^)]*\))")
    for recs in records.values():
        for rec in recs:
            page, notebook = background.findall(attribution_html(rec)), background.findall(heatmap_html(rec))
            assert page == notebook and len(page) == len(rec.tokens)
            kept = background.findall(heatmap_html(rec, show_specials=False))
            assert kept == [c for c, s in zip(page, rec.sequence_ids) if s is not None]


def test_standalone_page_names_the_labels_and_has_the_legend(records, tiny_model):
    """``explain --html`` / the demo's heatmaps: 'predicted negative', never a bare label index like 'predicted 1'."""
    import unmask
    from unmask.report.html import attribution_html, attributions_page

    names = tiny_model.label_names
    for rec in records["gradient_x_input"]:
        line = attribution_html(rec)
        assert f"predicted {names[rec.prediction]} (p=" in line and f"explains {names[rec.target]}" in line
        assert not re.search(r"predicted \d", line)
    other = 1 - records["gradient_x_input"][0].prediction
    (against,) = unmask.explain(tiny_model, ["a <b>bold</b> film"], methods=["gradient_x_input"],
                                target=other)["gradient_x_input"]
    assert f"explains {names[other]}" in attribution_html(against)
    assert f"predicted label {against.prediction}" in attribution_html(against)  # the record knows one name
    page = attributions_page(records)
    assert page.count("unmask-legend") == 1 and page.index("unmask-legend") < page.index('class="attr"')
    assert "supports the explained label" in page and "speaks against it" in page
