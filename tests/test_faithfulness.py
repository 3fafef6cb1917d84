"""Comprehensiveness / sufficiency / AOPC, deletion / insertion curves and their random baseline."""
from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from test_perturbation_models import (LABELS, POSITIVE, _tokenizer, planted_classifier, synthetic_sentences,
                                      trained_bag_classifier)
from unmask.attribution import explain
from unmask.errors import UnmaskError
from unmask.metrics.faithfulness import (FRACTIONS, Curve, Faithfulness, RowCache, deletion_curve, faithfulness,
                                         insertion_curve, random_curve, random_faithfulness)
from unmask.models.classifier import TextClassifier

sigmoid = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731


class LinearBag(nn.Module):
    """logits = [0, sum_t mask_t w(token_t)]: p(positive) is a sigmoid of a sum we can do by hand."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_labels=2, id2label=dict(enumerate(LABELS)), max_position_embeddings=512)
        self.embeddings = nn.Embedding.from_pretrained(weights[:, None], freeze=True)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, token_type_ids=None, **_):
        score = (inputs_embeds[..., 0] * attention_mask.to(inputs_embeds.dtype)).sum(1)
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(score), score], -1))


def linear_bag(weights: dict[str, float]) -> TextClassifier:
    tok = _tokenizer()
    w = torch.zeros(tok.vocab_size, dtype=torch.float64)
    for word, value in weights.items():
        w[tok.convert_tokens_to_ids(word)] = value
    return TextClassifier(LinearBag(w), tok, name="linear")


WEIGHTS = {"good": 2.0, "bad": -1.0, "film": 0.5, "[MASK]": 0.25}


def hand_record(model: TextClassifier, scores: list[float], text: str = "good bad film"):
    (r,) = explain(model, [text], ["leave_one_out"])["leave_one_out"]
    return replace(r, scores=np.array(scores, dtype=float))


# ----------------------------------------------------------------------------------- hand-computed
def test_comprehensiveness_and_sufficiency_by_hand_signed_and_abs():
    m = linear_bag(WEIGHTS)
    r = hand_record(m, [0.0, 2.0, -1.0, 0.5, 0.0])  # [CLS] good bad film [SEP]; y = positive (1.5 > 0)
    assert r.tokens == ["[CLS]", "good", "bad", "film", "[SEP]"] and r.target == 1
    p = sigmoid(1.5)
    fr = (0.1, 0.5, 1.0)  # k = 1, 2, 3 of 3 candidates
    f = faithfulness(m, [r], fractions=fr)  # signed: good, film, bad
    np.testing.assert_allclose(f.comprehensiveness[0], [p - sigmoid(-0.5), p - sigmoid(-1.0), p - 0.5], atol=1e-12)
    np.testing.assert_allclose(f.sufficiency[0], [p - sigmoid(2.0), p - sigmoid(2.5), 0.0], atol=1e-12)
    a = faithfulness(m, [r], fractions=fr, rank_by="abs")  # |score|: good, bad, film
    np.testing.assert_allclose(a.comprehensiveness[0], [p - sigmoid(-0.5), p - sigmoid(0.5), p - 0.5], atol=1e-12)
    np.testing.assert_allclose(a.sufficiency[0], [p - sigmoid(2.0), p - sigmoid(1.0), 0.0], atol=1e-12)
    assert a.aopc_comprehensiveness == pytest.approx(a.comprehensiveness.mean())
    d = a.to_dict()
    assert d["fractions"] == list(fr) and d["aopc_sufficiency"] == pytest.approx(a.sufficiency.mean())
    assert d["comprehensiveness"] == pytest.approx(a.comprehensiveness[0].tolist())


def test_mask_mode_by_hand_and_k_at_least_one():
    m = linear_bag(WEIGHTS)
    r = hand_record(m, [0.0, 2.0, -1.0, 0.5, 0.0])
    p = sigmoid(1.5)
    f = faithfulness(m, [r], fractions=(0.01, 0.5), mode="mask")  # 1% of 3 -> k = 1
    np.testing.assert_allclose(f.comprehensiveness[0], [p - sigmoid(-0.5 + 0.25), p - sigmoid(-1.0 + 0.5)],
                               atol=1e-12)
    np.testing.assert_allclose(f.sufficiency[0], [p - sigmoid(2.0 + 0.5), p - sigmoid(2.5 + 0.25)], atol=1e-12)


def test_ties_are_broken_by_position():
    m = linear_bag(WEIGHTS)
    r = hand_record(m, [0.0, 1.0, 1.0, 1.0, 0.0])  # all tied: good first
    f = faithfulness(m, [r], fractions=(0.1,))
    assert f.comprehensiveness[0, 0] == pytest.approx(sigmoid(1.5) - sigmoid(-0.5))


def test_target_other_than_the_prediction():
    m = linear_bag(WEIGHTS)
    r = replace(hand_record(m, [0.0, 2.0, -1.0, 0.5, 0.0]), target=0)  # explain "negative": bad first
    f = faithfulness(m, [r], fractions=(0.1,))
    q = 1 - sigmoid(1.5)
    assert f.comprehensiveness[0, 0] == pytest.approx(q - (1 - sigmoid(-0.5)))  # top signed is still "good"
    r2 = replace(r, scores=np.array([0.0, -2.0, 1.0, -0.5, 0.0]))  # bad supports negative
    f2 = faithfulness(m, [r2], fractions=(0.1,))
    assert f2.comprehensiveness[0, 0] == pytest.approx(q - (1 - sigmoid(2.5)))


def test_deletion_and_insertion_curves_by_hand():
    m = linear_bag(WEIGHTS)
    r = hand_record(m, [0.0, 2.0, -1.0, 0.5, 0.0])
    d = deletion_curve(m, [r], steps=3)  # delete good, film, bad in turn
    np.testing.assert_allclose(d.fractions, [0, 1 / 3, 2 / 3, 1])
    want = [sigmoid(1.5), sigmoid(-0.5), sigmoid(-1.0), 0.5]
    np.testing.assert_allclose(d.probs[0], want, atol=1e-12)
    assert d.auc == pytest.approx(np.trapezoid(want, d.fractions))
    i = insertion_curve(m, [r], steps=3)  # insert good, film, bad into [CLS] [SEP]
    np.testing.assert_allclose(i.probs[0], [0.5, sigmoid(2.0), sigmoid(2.5), sigmoid(1.5)], atol=1e-12)
    im = insertion_curve(m, [r], steps=3, mode="mask")  # start from three [MASK]s
    np.testing.assert_allclose(im.probs[0], [sigmoid(0.75), sigmoid(2.5), sigmoid(2.75), sigmoid(1.5)], atol=1e-12)
    assert isinstance(d, Curve) and d.to_dict()["auc"] == pytest.approx(d.auc)


# ----------------------------------------------------------------------------------- oracles on models
def test_decisive_token_beats_random_on_planted_model():
    m = planted_classifier({"zebra": 2.0}, bias=-1.0)
    texts = ["the movie zebra was quite long", "a zebra story", "and the plot zebra is really the acting",
             "zebra", "the film is the film and zebra"]
    recs = explain(m, texts, ["gradient_x_input"])["gradient_x_input"]
    assert all(r.tokens[int(np.argmax(r.scores))] == "zebra" for r in recs)
    f = faithfulness(m, recs)
    rnd = random_faithfulness(m, recs, repeats=5)
    assert f.comprehensiveness[:, 0] == pytest.approx(sigmoid(1.0) - sigmoid(-1.0), abs=0.01)  # logit 1 -> -1
    assert f.aopc_comprehensiveness > rnd.aopc_comprehensiveness + 0.1
    assert f.aopc_sufficiency < rnd.aopc_sufficiency - 0.1
    assert deletion_curve(m, recs).auc < random_curve(m, recs, "deletion").auc - 0.05
    assert insertion_curve(m, recs).auc > random_curve(m, recs, "insertion").auc + 0.05


def test_decisive_token_beats_random_on_tiny_trained_model():
    m = trained_bag_classifier(steps=80)
    texts = [t for t, y in synthetic_sentences(40, seed=7, planted_share=1.0)]  # zebra -> negative
    recs = [r for r in explain(m, texts, ["leave_one_out"])["leave_one_out"] if r.target == 0][:10]
    assert len(recs) == 10
    f = faithfulness(m, recs, fractions=(0.1, 0.2))
    rnd = random_faithfulness(m, recs, fractions=(0.1, 0.2), repeats=5)
    assert f.aopc_comprehensiveness > rnd.aopc_comprehensiveness + 0.2


def test_true_decisive_token_beats_random_on_tiny_trained_model():
    """The ground-truth ranking (the planted 'zebra' first, every other token tied at 0), not a method's,
    on sentences whose only sentiment word is positive: there 'zebra' alone makes the label negative."""
    m = trained_bag_classifier(steps=80)
    texts = [t for t, _ in synthetic_sentences(80, seed=7, planted_share=1.0)
             if set(t.split()) & set(POSITIVE)]  # zebra -> negative
    recs = [r for r in explain(m, texts, ["leave_one_out"])["leave_one_out"] if r.target == 0][:10]
    truth = [replace(r, scores=np.array([float(t == "zebra") for t in r.tokens])) for r in recs]
    assert len(truth) == 10 and all(r.scores.sum() == 1 for r in truth)
    f = faithfulness(m, truth)
    rnd = random_faithfulness(m, truth, repeats=5)
    assert f.comprehensiveness[:, 0].min() > 0.5  # removing zebra alone (k = 1) flips every prediction
    assert f.aopc_comprehensiveness > rnd.aopc_comprehensiveness + 0.1
    assert f.comprehensiveness[:, 0].mean() > rnd.comprehensiveness[:, 0].mean() + 0.2
    assert deletion_curve(m, truth).auc < random_curve(m, truth, "deletion", repeats=5).auc


# ----------------------------------------------------------------------------------- batching, specials
def test_batched_equals_one_at_a_time(tiny_model):
    texts = ["a gripping , funny film .", "ok", "the plot is thin and the acting is worse , sadly so .",
             "an unforgettable performance", "I walked out after twenty minutes."]
    recs = explain(tiny_model, texts, ["gradient_x_input"])["gradient_x_input"]
    for mode in ("remove", "mask"):
        together = faithfulness(tiny_model, recs, mode=mode, token_budget=4096)
        alone = [faithfulness(tiny_model, [r], mode=mode, token_budget=16) for r in recs]
        np.testing.assert_allclose(together.comprehensiveness, np.vstack([a.comprehensiveness for a in alone]),
                                   atol=1e-6)
        np.testing.assert_allclose(together.sufficiency, np.vstack([a.sufficiency for a in alone]), atol=1e-6)
        d = deletion_curve(tiny_model, recs, mode=mode, token_budget=64)
        d1 = np.vstack([deletion_curve(tiny_model, [r], mode=mode).probs for r in recs])
        np.testing.assert_allclose(d.probs, d1, atol=1e-6)
    r1 = random_faithfulness(tiny_model, recs, seed=3)
    r2 = [random_faithfulness(tiny_model, [r], seed=3, token_budget=16) for r in recs[::-1]][::-1]
    np.testing.assert_allclose(r1.comprehensiveness, np.vstack([r.comprehensiveness for r in r2]), atol=1e-6)
    np.testing.assert_allclose(r1.sufficiency, np.vstack([r.sufficiency for r in r2]), atol=1e-6)
    r3 = random_faithfulness(tiny_model, recs, seed=4)
    assert not np.allclose(r1.comprehensiveness, r3.comprehensiveness)  # the seed matters


class Spy(TextClassifier):
    """Records every (input ids, attention mask, token types) the model is run on."""

    def __init__(self, base: TextClassifier) -> None:
        super().__init__(base.model, base.tokenizer, name="spy")
        self.seen: list[tuple[list[int], list[int] | None]] = []
        self._ids = None

    def embed(self, input_ids):
        self._ids = input_ids
        return super().embed(input_ids)

    def forward_embeds(self, embeds, attention_mask, token_type_ids=None, **kwargs):
        for b in range(len(embeds)):
            n = int(attention_mask[b].sum())
            assert attention_mask[b, :n].all()  # padding only at the end
            types = token_type_ids[b, :n].tolist() if token_type_ids is not None else None
            self.seen.append((self._ids[b, :n].tolist(), types))
        return super().forward_embeds(embeds, attention_mask, token_type_ids, **kwargs)


def test_remove_and_mask_keep_specials_and_token_types(tiny_model):
    spy = Spy(tiny_model)
    tok = tiny_model.tokenizer
    texts, pairs = ["A man sleeps on a couch.", "Two dogs run"], ["A person rests.", "Animals are moving fast"]
    recs = explain(tiny_model, texts, ["gradient_x_input"], pairs=pairs)["gradient_x_input"]
    originals = [tiny_model.encode([t], [p]) for t, p in zip(texts, pairs)]
    lengths = {len(o.input_ids[0]) for o in originals}
    for mode in ("remove", "mask"):
        spy.seen.clear()
        faithfulness(spy, recs, mode=mode)
        deletion_curve(spy, recs, mode=mode)
        insertion_curve(spy, recs, mode=mode)
        assert len(spy.seen) > 20
        for ids, types in spy.seen:
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
            assert ids.count(tok.sep_token_id) == 2 and ids.count(tok.cls_token_id) == 1
            first_sep = ids.index(tok.sep_token_id)
            assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
            if mode == "mask":
                assert len(ids) in lengths
            else:
                assert tok.mask_token_id not in ids
        if mode == "remove":
            assert min(len(ids) for ids, _ in spy.seen) == 3  # insertion at 0: [CLS] [SEP] [SEP]


def test_identical_perturbed_rows_run_once(tiny_model):
    spy = Spy(tiny_model)
    recs = explain(tiny_model, ["a b c"], ["gradient"])["gradient"]  # 3 candidates: k = 1, 1, 1, 1, 2
    faithfulness(spy, recs)
    assert len(spy.seen) == len({(tuple(i), tuple(t or ())) for i, t in spy.seen}) == 1 + 2 + 2


def _same(a: Faithfulness, b: Faithfulness) -> bool:
    return (np.allclose(a.comprehensiveness, b.comprehensiveness, atol=1e-5)
            and np.allclose(a.sufficiency, b.sufficiency, atol=1e-5))


def test_row_cache_runs_each_distinct_row_once_across_calls(tiny_model):
    spy = Spy(tiny_model)
    texts = ["a fine film", "a dull , long film", "the plot is thin but the cast is good"]
    recs = explain(tiny_model, texts, ["gradient", "gradient_x_input", "leave_one_out"])
    calls = [lambda m, **kw: faithfulness(m, recs[name], **kw) for name in recs]
    calls.append(lambda m, **kw: random_faithfulness(m, recs["leave_one_out"], seed=2, **kw))
    alone = [call(spy) for call in calls]
    per_call = list(spy.seen)
    spy.seen.clear()
    cache = RowCache(spy)
    shared = [call(spy, cache=cache) for call in calls]
    assert all(_same(a, b) for a, b in zip(alone, shared))
    distinct = {(tuple(i), tuple(t or ())) for i, t in per_call}
    assert len(spy.seen) == len(cache) == len(distinct) < len(per_call)  # each distinct row ran once
    with pytest.raises(UnmaskError, match="one cache per model"):
        faithfulness(tiny_model, recs["gradient"], cache=cache)  # not the spy the cache was made for


def test_row_cache_shares_only_identical_rows(tiny_model):
    spy = Spy(tiny_model)
    (r,) = explain(tiny_model, ["a b c"], ["gradient"])["gradient"]  # 3 candidates: k = 1, 1, 1, 1, 2
    a = replace(r, scores=np.array([0.0, 3.0, 2.0, 1.0, 0.0]))  # order a, b, c
    b = replace(r, scores=np.array([0.0, 2.0, 3.0, 1.0, 0.0]))  # order b, a, c: the same top-2 set
    cache = RowCache(spy)
    faithfulness(spy, [a], cache=cache)
    assert len(spy.seen) == 1 + 2 + 2
    spy.seen.clear()
    assert _same(faithfulness(spy, [b], cache=cache), faithfulness(tiny_model, [b]))
    ids = tiny_model.encode(["a b c"]).input_ids[0].numpy()
    assert sorted(tuple(i) for i, _ in spy.seen) == sorted(  # without b; with only b
        [tuple(np.delete(ids, 2)), tuple(np.delete(ids, [1, 3]))])
    spy.seen.clear()
    faithfulness(spy, [b], mode="mask", cache=cache)  # only the unmasked input is a row already run
    assert len(spy.seen) == 2 + 2


# ----------------------------------------------------------------------------------- errors
def test_bad_input_gives_one_clear_error(tiny_model):
    recs = explain(tiny_model, ["a fine film"], ["gradient"])["gradient"]
    cases = [
        (dict(mode="zero"), "unknown perturbation mode 'zero'"),
        (dict(rank_by="random"), "unknown rank_by 'random'"),
        (dict(fractions=(0.0, 0.1)), r"fractions must lie in \(0, 1\]"),
        (dict(fractions=(1.5,)), r"fractions must lie in \(0, 1\]"),
        (dict(fractions=()), "no fractions"),
        (dict(token_budget=0), "token_budget"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(UnmaskError, match=msg):
            faithfulness(tiny_model, recs, **kwargs)
    with pytest.raises(UnmaskError, match="no attribution records"):
        faithfulness(tiny_model, [])
    with pytest.raises(UnmaskError, match="does not match model"):
        faithfulness(tiny_model, [replace(recs[0], text="a different film")])
    with pytest.raises(UnmaskError, match="steps must be a positive integer"):
        deletion_curve(tiny_model, recs, steps=0)
    with pytest.raises(UnmaskError, match="repeats must be a positive integer"):
        random_faithfulness(tiny_model, recs, repeats=0)
    with pytest.raises(UnmaskError, match="unknown perturbation mode"):
        insertion_curve(tiny_model, recs, mode="pad")
    with pytest.raises(UnmaskError, match="unknown curve kind"):
        random_curve(tiny_model, recs, kind="sideways")


def test_defaults_match_the_eraser_bins(tiny_model):
    assert FRACTIONS == (0.01, 0.05, 0.1, 0.2, 0.5)
    recs = explain(tiny_model, ["a fine film", "a dull , long film"], ["gradient"])["gradient"]
    f = faithfulness(tiny_model, recs)
    assert isinstance(f, Faithfulness) and f.comprehensiveness.shape == (2, 5) == f.sufficiency.shape
