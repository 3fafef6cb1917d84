"""Value oracles computed by hand: leave-one-out and attention rollout on a model small enough to work out on
paper, P@1 / Mean Attribution on hand-made records, and HTML heatmaps parsed back to their tokens."""
import math
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from unmask.attribution import explain
from unmask.attribution.attention import Attention
from unmask.attribution.leave_one_out import LeaveOneOut
from unmask.attribution.record import Attribution
from unmask.metrics.saliency import saliency_summary, target_share
from unmask.models.classifier import TextClassifier, default_model_path

WORD_VALUES = {"good": 1.0, "bad": -1.0, "[MASK]": 0.5, "[UNK]": 2.0}  # every other token (and [PAD]) is 0


class BagOfValues(nn.Module):
    """logits = (s, -s) with s = sum of the attended tokens' one-dimensional embeddings; attention maps are
    fixed matrices (``attentions``: per layer, heads x T x T), returned whatever the input."""

    def __init__(self, tokenizer, attentions: list[torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_labels=2, max_position_embeddings=16, id2label={0: "pos", 1: "neg"})
        self.embeddings = nn.Embedding(len(tokenizer), 1)
        with torch.no_grad():
            self.embeddings.weight.zero_()
            for word, value in WORD_VALUES.items():
                self.embeddings.weight[tokenizer.convert_tokens_to_ids(word), 0] = value
        self.fixed_attentions = attentions

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, output_attentions=False):
        s = (inputs_embeds[..., 0] * attention_mask).sum(1)
        attn = None
        if output_attentions:
            attn = tuple(a.expand(len(s), *a.shape) for a in self.fixed_attentions)
        return SimpleNamespace(logits=torch.stack([s, -s], -1), attentions=attn)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ----------------------------------------------------------------------------------- leave-one-out
def test_leave_one_out_by_hand(tokenizer):
    model = TextClassifier(BagOfValues(tokenizer), tokenizer)
    # "good bad good": s = 1 - 1 + 1 = 1, prediction "pos" (logits 1, -1), log p(pos) = log sigmoid(2 s)
    base = log_sigmoid(2.0)
    good = base - log_sigmoid(2 * 0.5)  # good -> [MASK] (0.5): s = 0.5
    bad = base - log_sigmoid(2 * 2.5)  # bad -> [MASK]: s = 1 + 1 + 0.5 = 2.5
    assert good == pytest.approx(0.186334, abs=1e-6) and bad == pytest.approx(-0.120213, abs=1e-6)
    cases = {"mask": [0, good, bad, good, 0], "zero": [0, base - log_sigmoid(0.0), base - log_sigmoid(4.0),
                                                      base - log_sigmoid(0.0), 0],
             "unk": [0, base - log_sigmoid(4.0), base - log_sigmoid(8.0), base - log_sigmoid(4.0), 0],
             "pad": [0, base - log_sigmoid(0.0), base - log_sigmoid(4.0), base - log_sigmoid(0.0), 0]}
    for replace, expected in cases.items():
        (r,) = explain(model, ["good bad good"], [LeaveOneOut(replace=replace)])["leave_one_out"]
        assert r.tokens == ["[CLS]", "good", "bad", "good", "[SEP]"] and r.target_name == "pos"
        assert np.allclose(r.scores, expected, atol=1e-6), replace
        assert r.extras["objective_value"] == pytest.approx(base, abs=1e-6)


def test_leave_one_out_by_hand_in_a_padded_chunked_batch(tokenizer):
    model = TextClassifier(BagOfValues(tokenizer), tokenizer)
    texts = ["bad", "good good bad bad bad", "good"]
    recs = explain(model, texts, [LeaveOneOut(objective="logit", token_budget=8)])["leave_one_out"]
    # objective = logit of the prediction: |s|; removing a word of value v (-> 0.5) changes s by 0.5 - v
    for r, text in zip(recs, texts):
        values = [WORD_VALUES[w] for w in text.split()]
        s = sum(values)
        sign = 1.0 if s > 0 else -1.0  # logit of the predicted class is sign * s
        expected = [0.0] + [sign * s - sign * (s - v + 0.5) for v in values] + [0.0]
        assert np.allclose(r.scores, expected, atol=1e-6), text


# ----------------------------------------------------------------------------------- attention rollout
def test_attention_rollout_and_raw_attention_by_hand(tokenizer):
    # one word: [CLS] good [SEP]. Two layers, two heads each; the head mean is what rollout uses.
    a1 = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 0, 1]],
                       [[0.0, 1, 0], [0, 1, 0], [0, 0, 1]]])  # mean row 0: (0.5, 0.5, 0)
    a2 = torch.tensor([[[0.0, 0, 1], [0, 1, 0], [0, 0, 1]],
                       [[0.0, 0, 1], [1, 0, 0], [0, 0, 1]]])  # mean row 0: (0, 0, 1)
    model = TextClassifier(BagOfValues(tokenizer, [a1, a2]), tokenizer)
    # 0.5 A + 0.5 I with A the head mean. Layer 1: row 0 (0.75, 0.25, 0), row 1 (0, 1, 0), row 2 (0, 0, 1).
    # Layer 2: row 0 (0.5, 0, 0.5). Rollout row 0 = (layer-2 row 0) @ (layer-1 matrix)
    #   = 0.5 * (0.75, 0.25, 0) + 0.5 * (0, 0, 1) = (0.375, 0.125, 0.5)
    (r,) = explain(model, ["good"], ["attention_rollout"])["attention_rollout"]
    assert r.tokens == ["[CLS]", "good", "[SEP]"]
    assert np.allclose(r.scores, [0.375, 0.125, 0.5], atol=1e-7)
    (raw,) = explain(model, ["good"], [Attention(layer=0)])["attention"]
    assert np.allclose(raw.scores, [0.5, 0.5, 0.0], atol=1e-7)  # layer 0, [CLS] row, mean of the heads
    (head,) = explain(model, ["good"], [Attention(layer=-1, head=1)])["attention"]
    assert np.allclose(head.scores, [0.0, 0.0, 1.0], atol=1e-7)


# ----------------------------------------------------------------------------------- P@1 and Mean Attribution
def record(tokens, scores) -> Attribution:
    n = len(tokens)
    return Attribution(tokens=tokens, scores=np.array(scores, dtype=float), method="m", target=0, target_name="pos",
                       prediction=0, probabilities=[0.6, 0.4], word_ids=[None] + list(range(n - 2)) + [None],
                       sequence_ids=[None] + [0] * (n - 2) + [None], words=(tokens[1:-1],), text=" ".join(tokens))


def test_p_at_1_and_mean_attribution_by_hand():
    # normalized |scores|: (0.2, 0.6, 0.1, 0.1): top token 1 is a target; target mass 0.6 + 0.1 = 0.7
    a = record(["[CLS]", "the", "film", "[SEP]"], [1.0, -3.0, 0.5, 0.5])
    # normalized (0.5, 0.25, 0.25): top token 0 ([CLS]) is no target; target mass 0.25
    b = record(["[CLS]", "a", "[SEP]"], [2.0, 1.0, -1.0])
    masks = [np.array([0, 1, 0, 1]), np.array([0, 1, 0])]
    assert target_share(a, masks[0]) == (True, pytest.approx(0.7))
    assert target_share(b, masks[1]) == (False, pytest.approx(0.25))
    summary = saliency_summary([a, b], masks)
    assert summary["p1"] == pytest.approx(50.0) and summary["attr"] == pytest.approx(47.5)
    assert saliency_summary([a], [masks[0]]) == {"p1": pytest.approx(100.0), "attr": pytest.approx(70.0)}
    with pytest.raises(ValueError, match="mask of 3 for 4 tokens"):
        target_share(a, masks[1])


# ----------------------------------------------------------------------------------- HTML escaping
class Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.spans, self.titles, self._in_span = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "span" and "title" in dict(attrs):  # a token (the legend's colour swatches have no title)
            self._in_span = True
            self.spans.append("")
            self.titles.append(dict(attrs)["title"])

    def handle_endtag(self, tag):
        self._in_span = self._in_span and tag != "span"

    def handle_data(self, data):
        if self._in_span:
            self.spans[-1] += data


def test_html_heatmap_parses_back_to_the_exact_tokens():
    from unmask.report.html import attribution_html, attributions_page

    tokens = ["[CLS]", "<script>", '"&', "a&amp;b", "</span><b>", "'x'", "[SEP]"]
    r = record(tokens, [0.5, -1.0, 2.0, 0.25, 1.0, -0.5, 0.0])
    r.method, r.target_name, r.text = 'ig"<i>', "<pos>", 'say "<script>alert(1)</script>" & go'
    for html_text in (attribution_html(r), attributions_page({"m": [r]})):
        parser = Spans()
        parser.feed(html_text)
        assert set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h3", "div", "span"}
        assert parser.spans == tokens  # every token shown exactly, as text
        shares = r.normalized()
        assert parser.titles == [f"{t}: {w:.3f} (raw {s:+.4g})" for t, w, s in zip(tokens, shares, r.scores)]
    assert "<script>" not in attributions_page({"m": [r]})
