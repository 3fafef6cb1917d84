"""The demo report reads top to bottom (issue 16 item 5), checked on tiny models in seconds: the verdict first,
then predictions, heatmaps with the legend and label names, the facade plot, the advice; self-contained."""
from __future__ import annotations

import re

import pytest

import unmask
from unmask.report.demo_page import write_demo_report

METHODS = ["gradient_x_input", "smoothgrad", "integrated_gradients"]
SECTIONS = ["1. The verdict", "2. What the models predict", "3. What each method says",
            "4. How the facade fooled Gradient but not IG", "5. What to do"]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?!data:|#)[^"'\s>]+|<script|<link|@import|url\(\s*["']?http""", re.I)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from unmask.audit import audit
    from unmask.models.tiny import tiny_classifier

    models = {}
    for name, seed in (("f_orig", 0), ("merged", 3)):
        m = tiny_classifier(seed=seed)
        m.model.config.id2label = {0: "negative", 1: "positive"}
        m.model.config.label2id = {"negative": 0, "positive": 1}
        models[name] = m
    texts = ["a gripping , funny film .", "the plot is a <script>mess</script> ."]
    audit_texts = ["a fine film .", "a dull film .", "it moves .", "flat and long ."]
    audits = {"f_orig": audit(models["f_orig"], audit_texts, structure=False).to_dict(),
              "merged (f_orig + stop-word facade)": audit(models["merged"], audit_texts, structure=False).to_dict()}
    heatmaps = {name: unmask.explain(m, texts, methods=METHODS) for name, m in models.items()}
    cell = {"gradient_x_input": {"p1": 15.5, "attr": 20.0}, "smoothgrad": {"p1": 14.0, "attr": 19.0},
            "integrated_gradients": {"p1": 19.5, "attr": 22.0}}
    fooled = {**cell, "gradient_x_input": {"p1": 83.5, "attr": 60.0}}
    results = {"accuracy": {"f_orig": 88.0, "merged_stop": 87.5}, "agreement": {"stop": 99.5},
               "max_logit_diff": {"stop": 2e-5}, "saliency": {"stop": {"f_orig": cell, "merged": fooled}}}
    path = write_demo_report(tmp_path_factory.mktemp("demo") / "audit_report.html", results, audits, heatmaps)
    return path.read_text(encoding="utf-8"), audits, heatmaps


def test_sections_in_reading_order_with_the_verdict_first(report):
    page, audits, _ = report
    where = [page.index(s) for s in SECTIONS]
    assert where == sorted(where)
    before = page[:where[0]]
    assert "<table" not in before and 'class="tok' not in before and "<img" not in before
    first_table = page[where[0]:page.index("</table>", where[0])]
    for name, a in audits.items():  # the summary table names each model's verdict
        assert name in first_table and f">{a['verdict']}</span>" in first_table


def test_heatmaps_have_the_legend_and_label_names(report):
    page, _, heatmaps = report
    section = page[page.index(SECTIONS[2]):page.index(SECTIONS[3])]
    assert section.index("class='legend'") < section.index('class="attr"')
    assert "supports the predicted label" in section and "speaks against it" in section
    assert section.count('class="attr"') == 2 * len(METHODS) * 2  # 2 inputs x methods x 2 models
    assert not re.search(r"predicted \d", page)
    for name, recs in heatmaps.items():
        for rec in recs["gradient_x_input"]:
            label = ["negative", "positive"][rec.prediction]
            assert f"{name} predicts <b>{label}</b>" in section and f"predicted {label} (p=" in section


def test_plot_advice_escaping_and_no_external_assets(report):
    page, _, _ = report
    fooled = page[page.index(SECTIONS[3]):page.index(SECTIONS[4])]
    assert "src='data:image/png;base64," in fooled and "plot unavailable" not in fooled
    advice = page[page.index(SECTIONS[4]):]
    assert "unmask audit MODEL_DIR" in advice and "integrated gradients" in advice
    assert "&lt;script&gt;mess" in page and "<script" not in page.lower()
    assert not EXTERNAL.findall(page), EXTERNAL.findall(page)[:3]
