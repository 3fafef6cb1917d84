"""Batching is invisible: scores do not depend on batch composition, order, padding or token budget.

Run on the float64 tiny model so that any difference beyond ~1e-9 is a logic error, not rounding.
"""
import numpy as np
import pytest

import unmask
from unmask.attribution import get_method
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.models.batch import length_buckets

TEXTS = ["a gripping , funny film .", "bad",
         "the plot is thin but the actors are wonderful and the score is lovely , really", "no way"]
PREMISES = ["A flibbertigibbet sleeps soundly.", "Dogs bark", "It rains."]
HYPOTHESES = ["Nobody rests, unbelievably.", "Some animals are loud at night", "The street is wet and cold."]
LONG = " ".join(["an extraordinarily long-winded review that keeps going"] * 12)

METHODS = ["gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "leave_one_out",
           "attention", "attention_rollout"]


def method(name: str, token_budget: int = 8192):
    if name == "integrated_gradients":  # fixed steps: adaptive stopping is covered separately
        return IntegratedGradients(steps=8, tolerance=None, token_budget=token_budget)
    return get_method(name, token_budget=token_budget)


def assert_same(a, b, rel: float = 1e-9) -> None:
    assert a.tokens == b.tokens and a.sequence_ids == b.sequence_ids and a.word_ids == b.word_ids
    assert a.target == b.target
    scale = max(np.abs(a.scores).max(), 1e-300)
    np.testing.assert_allclose(a.scores, b.scores, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("name", METHODS)
def test_batched_equals_one_at_a_time(tiny_model_f64, name):
    together = unmask.explain(tiny_model_f64, TEXTS, methods=[method(name)])[name]
    reversed_ = unmask.explain(tiny_model_f64, TEXTS[::-1], methods=[method(name)])[name][::-1]
    for text, rec, rev in zip(TEXTS, together, reversed_):
        alone = unmask.explain(tiny_model_f64, [text], methods=[method(name)])[name][0]
        assert_same(alone, rec)
        assert_same(alone, rev)
        assert rec.text == text


@pytest.mark.parametrize("name", METHODS)
def test_sentence_pairs_batched_equals_one_at_a_time(tiny_model_f64, name):
    together = unmask.explain(tiny_model_f64, PREMISES, pairs=HYPOTHESES, methods=[method(name)])[name]
    for p, h, rec in zip(PREMISES, HYPOTHESES, together):
        alone = unmask.explain(tiny_model_f64, [p], pairs=[h], methods=[method(name)])[name][0]
        assert_same(alone, rec)
        assert (rec.text, rec.pair) == (p, h)


@pytest.mark.parametrize("name", METHODS)
def test_padding_does_not_change_scores(tiny_model_f64, name):
    """A short input alone vs. in one padded bucket with a much longer one (budget large enough for both)."""
    short = "bad"
    alone = unmask.explain(tiny_model_f64, [short], methods=[method(name, 10**6)])[name][0]
    with_long = unmask.explain(tiny_model_f64, [short, LONG], methods=[method(name, 10**6)])[name]
    assert len(with_long[1].tokens) > 10 * len(alone.tokens)
    assert_same(alone, with_long[0])
    for rec in with_long:
        assert "[PAD]" not in rec.tokens
        assert len(rec.scores) == len(rec.tokens) == len(rec.word_ids) == len(rec.sequence_ids)
        assert rec.tokens[0] == "[CLS]" and rec.tokens[-1] == "[SEP]"


def test_method_called_directly_on_a_padded_batch_zeroes_padding(tiny_model_f64):
    batch = tiny_model_f64.encode(["bad", LONG])
    import torch

    target = torch.tensor([0, 1])
    for name in METHODS:
        scores, extras = method(name).attribute(tiny_model_f64, batch, target)
        assert scores.shape == batch.input_ids.shape and len(extras) == 2
        assert (scores[0, batch.lengths[0]:] == 0).all(), name
        alone, _ = method(name).attribute(tiny_model_f64, batch.select([0]), target[:1])
        np.testing.assert_allclose(scores[0, :batch.lengths[0]].numpy(), alone[0].numpy(),
                                   rtol=1e-9, atol=1e-9 * float(alone.abs().max()))


@pytest.mark.parametrize("name", METHODS + ["integrated_gradients_adaptive"])
@pytest.mark.parametrize("budget", [1, 37, 300])
def test_token_budget_is_invisible(tiny_model_f64, name, budget):
    texts, pairs = PREMISES, HYPOTHESES
    if name == "integrated_gradients_adaptive":
        make = lambda b: IntegratedGradients(steps=2, tolerance=1e-4, token_budget=b)  # noqa: E731
        key = "integrated_gradients"
    else:
        make = lambda b: method(name, b)  # noqa: E731
        key = name
    reference = unmask.explain(tiny_model_f64, texts, pairs=pairs, methods=[make(10**6)])[key]
    chunked = unmask.explain(tiny_model_f64, texts, pairs=pairs, methods=[make(budget)])[key]
    for a, b in zip(reference, chunked):
        assert_same(a, b)
        assert a.extras.get("steps") == b.extras.get("steps")


def test_length_buckets_cover_every_row_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=200).tolist()
    for budget, rows in [(1, 1), (500, 1), (4096, 16), (10**6, 50)]:
        groups = length_buckets(lengths, budget, rows)
        assert sorted(i for g in groups for i in g) == list(range(200))
        for g in groups:
            width = max(lengths[i] for i in g)
            assert len(g) == 1 or width * len(g) * rows <= budget


# ----------------------------------------------------------------------------------- segment-aware view

def pieces_by_word(tokens, sequence_ids):
    """Oracle for the word view from the WordPiece strings alone: '##' continues the previous word."""
    words: dict[int, list[list[int]]] = {0: [], 1: []}
    for t, (tok, seq) in enumerate(zip(tokens, sequence_ids)):
        if seq is None:
            continue
        if tok.startswith("##"):
            words[seq][-1].append(t)
        else:
            words[seq].append([t])
    return words


def test_sentence_pair_word_view_is_segment_aware(tiny_model_f64):
    rec = unmask.explain(tiny_model_f64, [PREMISES[0]], pairs=[HYPOTHESES[0]],
                         methods=["gradient_x_input"])["gradient_x_input"][0]
    sep = [i for i, t in enumerate(rec.tokens) if t == "[SEP]"]
    assert len(sep) == 2 and rec.tokens[0] == "[CLS]"
    assert rec.sequence_ids == [None] + [0] * (sep[0] - 1) + [None] + [1] * (sep[1] - sep[0] - 1) + [None]
    assert rec.words == (["A", "flibbertigibbet", "sleeps", "soundly", "."],
                         ["Nobody", "rests", ",", "unbelievably", "."])
    groups = pieces_by_word(rec.tokens, rec.sequence_ids)
    assert max(len(g) for g in groups[0]) > 1 and max(len(g) for g in groups[1]) > 1  # real subwords
    oracles = {"sum": np.sum, "max": np.max, "mean": np.mean, "l2": lambda v: np.sqrt(np.sum(v ** 2))}
    for aggregate, fn in oracles.items():
        for normalized in (False, True):
            s = rec.normalized() if normalized else rec.scores
            got = rec.word_scores(aggregate, normalized=normalized)
            expected = [(seq, rec.words[seq][w], float(fn(s[idx])))
                        for seq in (0, 1) for w, idx in enumerate(groups[seq])]
            assert [g[:2] for g in got] == [e[:2] for e in expected]
            np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], rtol=1e-12)
            for (seq, word, _), idx in zip(got, groups[0] + groups[1]):
                assert "".join(rec.tokens[i].removeprefix("##") for i in idx) == word.lower()
    with pytest.raises(ValueError):
        rec.word_scores("median")


def test_sentence_pairs_are_encoded_as_two_segments(tiny_model_f64):
    batch = tiny_model_f64.encode(PREMISES, HYPOTHESES)
    for row, seq in enumerate(batch.sequence_ids):
        n = batch.lengths[row]
        types = batch.token_type_ids[row, :n].tolist()
        last_sep = n - 1
        assert types == [1 if (s == 1 or t == last_sep) else 0 for t, s in enumerate(seq[:n])]
        assert all(s is None for s in seq[n:])
