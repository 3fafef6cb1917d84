"""Stop %, flip histogram, gender attribution, and the shortcut (planted gender) generator."""
import numpy as np
import pytest

from unmask.attribution.record import Attribution
from unmask.data import Example
from unmask.data.shortcut import GENDER_WORDS, TEMPLATES, gender_label_agreement, plant, plant_gender
from unmask.errors import UnmaskError
from unmask.metrics.perturbation import flip_histogram, gender_attribution, reduction_stop_metrics
from unmask.perturbation.record import PerturbationResult, Step


def _result(final: list[str], segments: list, steps: int = 0, success: bool = True, segment=0):
    step = Step(tokens=[], prediction=0, probability=0.5, change={"position": 1, "old": "a", "new": "b"})
    return PerturbationResult(kind="x", text="t", pair=None, segment=segment, label_names=["n", "p"],
                              original_tokens=final, original_prediction=1, original_probability=0.9,
                              final_tokens=final, final_segments=segments, final_prediction=0,
                              final_probability=0.4, steps=[step] * steps, success=success, stopped="x")


def test_stop_metrics_count_only_the_reduced_segment():
    a = _result(["[CLS]", "the", "movie", "[SEP]", "the", "[SEP]"], [None, 0, 0, None, 1, None])
    b = _result(["[CLS]", "The", "a", "[SEP]"], [None, 0, 0, None])
    c = _result(["[CLS]", "##s", "[SEP]"], [None, 0, None])
    m = reduction_stop_metrics([a, b, c])
    assert m["stop_pct"] == pytest.approx(100 * (0.5 + 1.0 + 0.0) / 3)
    assert m["all_stop_pct"] == pytest.approx(100 / 3)
    assert m["mean_reduced_length"] == pytest.approx(5 / 3)
    with pytest.raises(UnmaskError):
        reduction_stop_metrics([])


def test_flip_histogram():
    rs = [_result(["x"], [0], steps=1), _result(["x"], [0], steps=1), _result(["x"], [0], steps=3),
          _result(["x"], [0], steps=20), _result(["x"], [0], steps=4, success=False)]
    h = flip_histogram(rs, max_bin=16)
    assert h["histogram"]["1"] == 2 and h["histogram"]["3"] == 1 and h["histogram"]["more"] == 1
    assert h["histogram"]["not_flipped"] == 1 and sum(h["histogram"].values()) == 5
    assert h["mean_flips"] == pytest.approx((1 + 1 + 3 + 20) / 4)
    assert h["one_flip_pct"] == pytest.approx(40.0) and h["flipped_pct"] == pytest.approx(80.0)


def _attr(tokens, scores):
    seq = [None] + [0] * (len(tokens) - 2) + [None]
    return Attribution(tokens=tokens, scores=np.array(scores, float), method="m", target=0, target_name="n",
                       prediction=0, probabilities=[1.0, 0.0], word_ids=seq, sequence_ids=seq,
                       words=([],), text="")


def test_gender_attribution_against_hand_computed_values():
    a = _attr(["[CLS]", "she", "is", "great", "[SEP]"], [1, -4, 1, 2, 0])   # she: 4/8
    b = _attr(["[CLS]", "his", "film", "man", "[SEP]"], [0, 1, 1, 1, 1])    # his, man: 1/4 each
    g = gender_attribution([a, b])
    assert g["n_gender_tokens"] == 3 and g["n_tokens"] == 10
    assert g["gender_attribution"] == pytest.approx((0.5 + 0.25 + 0.25) / 3)
    assert g["average_token"] == pytest.approx(0.2)
    assert g["relative_pct"] == pytest.approx(100 * ((1 / 3) / 0.2 - 1))
    none = gender_attribution([_attr(["[CLS]", "ok", "[SEP]"], [1, 1, 1])])
    assert none["gender_attribution"] is None and none["relative_pct"] is None


def test_plant_gender_is_seeded_and_follows_the_label():
    data = [Example(f"sentence number {i} .", i % 2) for i in range(400)]
    a = plant_gender(data, correlation=0.8, seed=3)
    assert a == plant_gender(data, correlation=0.8, seed=3)
    assert a != plant_gender(data, correlation=0.8, seed=4)
    assert 0.73 < gender_label_agreement(a) < 0.87
    perfect = plant_gender(data, correlation=1.0, seed=0)
    assert all((e.gender == "female") == (e.label == 1) for e in perfect)
    for e, src in zip(perfect, data):
        assert src.text in e.text and e.label == src.label
        words = e.text.split()
        assert any(w in GENDER_WORDS for w in words)
        s = e.swapped()
        assert s.gender != e.gender and s.label == e.label and s.template == e.template
        assert s.swapped() == e
        assert len(s.text.split()) == len(words)
        diff = [(x, y) for x, y in zip(words, s.text.split()) if x != y]
        assert diff and all(x in GENDER_WORDS and y in GENDER_WORDS for x, y in diff)


def test_plant_gender_rejects_bad_input():
    with pytest.raises(UnmaskError, match="correlation"):
        plant_gender([Example("a", 0)], correlation=1.5)
    with pytest.raises(UnmaskError, match="pair"):
        plant_gender([Example("a", 0, "b")])
    with pytest.raises(UnmaskError, match="label"):
        plant_gender([Example("a", 2)])
    with pytest.raises(UnmaskError, match="template"):
        plant("a", len(TEMPLATES), "male")
