"""The ``Attribution`` record: the Facade normalization, JSON round trip, escaped HTML and terminal views."""
import json

import numpy as np
import pytest
import torch
from rich.console import Console

import unmask
from unmask.attribution import Attribution
from unmask.report.html import attributions_page

XSS = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def record(tokens, scores, **kw) -> Attribution:
    n = len(tokens)
    base = dict(method="gradient", target=1, target_name="positive", prediction=1, probabilities=[0.3, 0.7],
                word_ids=[None] + list(range(n - 2)) + [None], sequence_ids=[None] + [0] * (n - 2) + [None],
                words=(list(tokens[1:-1]),), text=" ".join(tokens[1:-1]))
    base.update(kw)
    return Attribution(tokens=list(tokens), scores=np.asarray(scores, dtype=float), **base)


def test_normalized_is_abs_over_l1_including_specials():
    r = record(["[CLS]", "a", "b", "[SEP]"], [0.5, -2.0, 1.0, -0.5])
    np.testing.assert_allclose(r.normalized(), [0.125, 0.5, 0.25, 0.125])
    assert r.normalized().sum() == pytest.approx(1.0)
    assert r.top_tokens(2) == [("a", 0.5), ("b", 0.25)]
    zero = record(["[CLS]", "a", "[SEP]"], [0.0, 0.0, 0.0])
    assert np.array_equal(zero.normalized(), np.zeros(3))  # no NaN for all-zero scores
    with pytest.raises(ValueError, match="2 scores for 3 tokens"):
        record(["[CLS]", "a", "[SEP]"], [0.0, 1.0])


def test_normalized_gradient_x_input_is_the_facade_formula(tiny_model_f64):
    """Facade paper Eq. 1: a_i = |grad_{x_i} L . x_i| / sum_j |grad_{x_j} L . x_j| with L the cross-entropy
    on the predicted label, x the word-embedding output, [CLS]/[SEP] in the sum. Computed here directly."""
    texts = ["a gripping , funny film .", "bad"]
    recs = unmask.explain(tiny_model_f64, texts, methods=["gradient_x_input"])["gradient_x_input"]
    for text, rec in zip(texts, recs):
        batch = tiny_model_f64.encode([text])
        x = tiny_model_f64.embed(batch.input_ids).detach().requires_grad_(True)
        logits = tiny_model_f64.forward_embeds(x, batch.attention_mask, batch.token_type_ids).logits
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(-1))
        (g,) = torch.autograd.grad(loss, x)
        a = (g * x).sum(-1).abs()[0]
        expected = (a / a.sum()).detach().numpy()
        np.testing.assert_allclose(rec.normalized(), expected, rtol=1e-9)
        assert rec.normalized().sum() == pytest.approx(1.0, abs=1e-12)
        assert rec.target == rec.prediction == int(logits.argmax())
        word_total = sum(s for _, _, s in rec.word_scores("sum", normalized=True))
        specials = sum(w for w, seq in zip(rec.normalized(), rec.sequence_ids) if seq is None)
        assert word_total + specials == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["gradient", "smoothgrad", "integrated_gradients", "leave_one_out", "attention"])
def test_json_round_trip(tiny_model, name):
    rec = unmask.explain(tiny_model, ["A man sleeps ."], pairs=["Nobody rests , really ."],
                         methods=[name])[name][0]
    text = rec.to_json()
    data = json.loads(text)
    assert data["method"] == name and data["pair"] == "Nobody rests , really ."
    np.testing.assert_allclose(data["normalized"], rec.normalized())
    back = Attribution.from_dict(data)
    for field in ("tokens", "method", "target", "target_name", "prediction", "probabilities", "word_ids",
                  "sequence_ids", "words", "text", "pair", "params", "extras"):
        assert getattr(back, field) == getattr(rec, field), field
    assert np.array_equal(back.scores, rec.scores)  # exact: JSON floats round-trip float64
    assert back.to_json() == text
    assert back.word_scores("max") == rec.word_scores("max")


def test_json_handles_numpy_extras():
    r = record(["[CLS]", "a", "[SEP]"], [0.1, 0.2, 0.3], extras={"err": np.float32(0.5), "steps": 4})
    assert json.loads(r.to_json())["extras"] == {"err": 0.5, "steps": 4}


def test_html_escapes_every_token_and_the_text(tiny_model):
    tokens = ["[CLS]", "<script>", 'alert("x")', "</script>", "&", '"onmouseover="x', "[SEP]"]
    r = record(tokens, np.linspace(-1, 1, len(tokens)), target_name="<b>pos</b>", text=XSS)
    html = r.to_html()
    for raw in ("<script", "</script>", "<b>", 'alert("x")', '"onmouseover'):
        assert raw not in html, raw
    assert "&lt;script&gt;" in html and "&amp;" in html and "&quot;onmouseover=&quot;x" in html
    assert html.count("<span") == len(tokens)

    recs = unmask.explain(tiny_model, [XSS], pairs=["</div><script>evil()</script>"], methods=["gradient"])
    page = attributions_page(recs)
    assert "<script" not in page.lower().replace("&lt;script", "")
    assert "<img" not in page and "</div><script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # the heading shows the text, escaped
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")


def test_terminal_view_escapes_rich_markup():
    tokens = ["[CLS]", "[bold]", "[/]", "x", "[SEP]"]
    r = record(tokens, [0.1, -0.2, 0.3, 0.4, 0.0], target_name="[red]pos")
    console = Console(record=True, width=200, color_system=None)
    console.print(r.render_terminal())
    plain = console.export_text()
    for tok in tokens + ["[red]pos"]:
        assert tok in plain, tok
