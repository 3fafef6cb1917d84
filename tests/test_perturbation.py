"""Input reduction, HotFlip and universal triggers on models whose decisive tokens are known."""
import pytest
from test_perturbation_models import planted_classifier, synthetic_sentences, trained_bag_classifier

from unmask.errors import UnmaskError
from unmask.perturbation import evaluate_trigger, hotflip, reduce_inputs, search_trigger


# ------------------------------------------------------------------ input reduction
def test_reduction_keeps_the_decisive_token():
    m = planted_classifier({"zebra": 2.0}, bias=-1.0)
    (r,) = reduce_inputs(m, "the movie was zebra and really long")
    assert r.original_prediction == 1 and r.final_prediction == 1
    assert r.segment_tokens() == ["zebra"]
    assert r.final_tokens == ["[CLS]", "zebra", "[SEP]"]
    assert r.stopped == "min_tokens"
    assert len(r.steps) == 6 and all(s.prediction == 1 for s in r.steps)
    assert "zebra" not in [s.change["removed"] for s in r.steps]


def test_reduction_stops_before_the_prediction_changes():
    # contributions: the ~0, apple 0.1, tiger 0.6, zebra 2.0; bias -2.3 -> total 0.4 (positive).
    # Least important first: the, apple (total 0.3); removing tiger would give -0.3 -> stop there.
    m = planted_classifier({"zebra": 2.0, "tiger": 0.6, "apple": 0.1}, bias=-2.3)
    (r,) = reduce_inputs(m, "the apple tiger zebra")
    assert r.segment_tokens() == ["tiger", "zebra"]
    assert r.stopped == "prediction_changed"
    assert [s.change["removed"] for s in r.steps] == ["the", "apple"]
    assert r.final_probability > 0.5
    # the recorded probability is the model's on the final input
    assert m.predict(["tiger zebra"])[0, 1].item() == pytest.approx(r.final_probability, abs=1e-6)


def test_beam_search_finds_a_shorter_reduction_than_greedy():
    # apple +0.2, lemon -0.3, zebra +1.2, bias -1 -> 0.1. Greedy removes apple first (smallest |c|) and the
    # prediction flips at once; a beam of 3 also tries removing lemon and then apple, ending at "zebra".
    m = planted_classifier({"apple": 0.2, "lemon": -0.3, "zebra": 1.2}, bias=-1.0)
    (greedy,) = reduce_inputs(m, "apple lemon zebra", beam_size=1)
    (beam,) = reduce_inputs(m, "apple lemon zebra", beam_size=3)
    assert greedy.segment_tokens() == ["apple", "lemon", "zebra"] and greedy.steps == []
    assert beam.segment_tokens() == ["zebra"]
    assert [s.change["removed"] for s in beam.steps] == ["lemon", "apple"]


def test_beam_rank_attribution_follows_the_gradient_order_confidence_the_output():
    # apple +0.05, lemon -0.1, zebra +1.2, bias -1 -> 0.15; both children of the root keep the prediction
    # and reach min_tokens=2. Attribution order prefers removing apple (smallest |c|); confidence prefers
    # removing lemon (p(positive) rises to sigmoid(0.25) vs sigmoid(0.1)).
    m = planted_classifier({"apple": 0.05, "lemon": -0.1, "zebra": 1.2}, bias=-1.0)
    (by_attr,) = reduce_inputs(m, "apple lemon zebra", beam_size=2, min_tokens=2)
    (by_conf,) = reduce_inputs(m, "apple lemon zebra", beam_size=2, min_tokens=2, rank="confidence")
    assert by_attr.segment_tokens() == ["lemon", "zebra"]
    assert by_conf.segment_tokens() == ["apple", "zebra"]
    assert by_attr.params["rank"] == "attribution" and by_conf.final_probability > by_attr.final_probability
    with pytest.raises(UnmaskError, match="unknown beam rank"):
        reduce_inputs(m, "apple", rank="best")


def test_reduction_of_one_segment_leaves_the_other_and_the_specials(tiny_model):
    premise, hypo = "a man is sleeping on a long red couch .", "a person rests ."
    (r0,) = reduce_inputs(tiny_model, premise, hypo, segment=0)
    (r1,) = reduce_inputs(tiny_model, premise, hypo, segment=1)
    enc = tiny_model.encode([premise], [hypo])
    hyp_tokens = [t for t, s in zip(enc.tokens[0], enc.sequence_ids[0]) if s == 1]
    prem_tokens = [t for t, s in zip(enc.tokens[0], enc.sequence_ids[0]) if s == 0]
    for r in (r0, r1):
        assert r.final_tokens.count("[CLS]") == 1 and r.final_tokens.count("[SEP]") == 2
        assert r.final_prediction == r.original_prediction
    assert [t for t, s in zip(r0.final_tokens, r0.final_segments) if s == 1] == hyp_tokens
    assert [t for t, s in zip(r1.final_tokens, r1.final_segments) if s == 0] == prem_tokens
    assert len(r0.segment_tokens()) < len(prem_tokens)
    # an independent forward pass on the reduced text agrees with the recorded prediction
    probs = tiny_model.predict([" ".join(r0.segment_tokens())], [hypo])
    assert int(probs.argmax()) == r0.original_prediction


def test_batched_reduction_equals_one_at_a_time(tiny_model):
    texts = ["a great movie , really .", "bad film , awful acting and a dull plot", "fine"]
    together = reduce_inputs(tiny_model, texts, beam_size=2)
    alone = [reduce_inputs(tiny_model, t, beam_size=2)[0] for t in texts]
    assert [r.final_tokens for r in together] == [r.final_tokens for r in alone]
    assert [len(r.steps) for r in together] == [len(r.steps) for r in alone]


def test_reduction_accepts_another_attribution_method():
    m = planted_classifier({"zebra": 2.0}, bias=-1.0)
    (r,) = reduce_inputs(m, "the zebra was long", method="leave_one_out")
    assert r.segment_tokens() == ["zebra"] and r.params["method"] == "leave_one_out"


# ------------------------------------------------------------------ HotFlip
PLANTED = {"zebra": 2.0, "awful": -1.0, "##ing": -5.0, "!": -5.0}


def test_hotflip_flips_the_decisive_token_with_the_best_allowed_replacement():
    m = planted_classifier(PLANTED, bias=-1.0)
    (r,) = hotflip(m, "the movie zebra is long")
    assert r.success and r.final_prediction == 0 and r.original_prediction == 1
    assert len(r.steps) == 1
    assert r.steps[0].change == {"position": 3, "old": "zebra", "new": "awful"}
    assert r.final_tokens == ["[CLS]", "the", "movie", "awful", "is", "long", "[SEP]"]
    (sub,) = hotflip(m, "the movie zebra is long", allow_subwords=True)
    assert sub.steps[0].change["new"] == "##ing"
    (punct,) = hotflip(m, "the movie zebra is long", allow_punctuation=True)
    assert punct.steps[0].change["new"] == "!"


def test_hotflip_budget():
    m = planted_classifier(PLANTED, bias=-1.0)  # three zebras: 6 - 1 = 5; needs two flips to awful
    (short,) = hotflip(m, "zebra zebra zebra the", max_flips=1)
    assert not short.success and short.stopped == "budget" and len(short.steps) == 1
    assert short.final_prediction == short.original_prediction
    (full,) = hotflip(m, "zebra zebra zebra the")
    assert full.success and len(full.steps) == 2
    assert all(s.change["old"] == "zebra" and s.change["new"] == "awful" for s in full.steps)


def test_hotflip_restricted_to_stop_words_never_touches_content_words():
    m = planted_classifier(PLANTED, bias=-0.5)
    (r,) = hotflip(m, "zebra the movie", stop_words_only=True)
    assert [s.change["old"] for s in r.steps] == ["the"]
    assert not r.success and r.stopped == "no_positions"
    assert r.final_tokens[1] == "zebra"


def test_hotflip_restricted_to_a_segment(tiny_model):
    premise, hypo = "a man is sleeping on the couch .", "a person rests ."
    (r,) = hotflip(tiny_model, premise, hypo, segment=1, max_flips=3)
    positions = [s.change["position"] for s in r.steps]
    assert positions and all(r.final_segments[p] == 1 for p in positions)
    enc = tiny_model.encode([premise], [hypo])
    assert [t for t, s in zip(r.final_tokens, r.final_segments) if s == 0] == \
        [t for t, s in zip(enc.tokens[0], enc.sequence_ids[0]) if s == 0]


# ------------------------------------------------------------------ universal triggers
def test_trigger_search_finds_the_planted_trigger_and_raises_the_error_rate():
    m = trained_bag_classifier()
    search = [t for t, y in synthetic_sentences(300, seed=5) if y == 1][:64]
    held_out = [t for t, y in synthetic_sentences(300, seed=6) if y == 1]
    baseline = evaluate_trigger(m, [m.tokenizer.convert_tokens_to_ids("the")] * 2, held_out, label=1)
    assert baseline["accuracy_before"] > 95 and baseline["success_pct"] < 5
    result = search_trigger(m, search, label="positive", length=2, iterations=3, batch_size=16,
                            candidates=20)
    assert "zebra" in result.tokens
    ev = evaluate_trigger(m, result, held_out)
    assert ev["success_pct"] > 90 and ev["accuracy_after"] < 10
    assert result.evaluation == ev and len(result.history) == 3


def test_targeted_trigger_and_pair_segment(tiny_model):
    r = search_trigger(tiny_model, ["a man sleeps ."] * 4, ["a person rests ."] * 4, label=0, target=1,
                       length=2, iterations=1, batch_size=4, candidates=5)
    assert r.segment == 1 and r.target_label == 1 and len(r.tokens) == 2
    ev = evaluate_trigger(tiny_model, r, ["a man sleeps ."], ["a person rests ."])
    assert ev["n_total"] == 1
    with pytest.raises(UnmaskError, match="equals the source class"):
        search_trigger(tiny_model, ["a b"], label=0, target=0)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda m: hotflip(m, "a fine film", max_flips=0), "budget"),
    (lambda m: reduce_inputs(m, "a fine film", max_steps=0), "max_steps"),
    (lambda m: reduce_inputs(m, "a fine film", beam_size=0), "beam_size"),
    (lambda m: search_trigger(m, ["a fine film"], label=0, iterations=0), "iterations"),
    (lambda m: reduce_inputs(m, ""), "empty"),
    (lambda m: hotflip(m, "   "), "empty"),
    (lambda m: search_trigger(m, ["ok", ""], label=0), "empty"),
    (lambda m: reduce_inputs(m, "a fine film", "a pair", segment=2), "unknown segment"),
    (lambda m: hotflip(m, "a fine film", segment=-1), "unknown segment"),
    (lambda m: reduce_inputs(m, "a fine film", segment=1), "no pair"),
    (lambda m: search_trigger(m, ["a fine film"], label=0, segment=3), "unknown segment"),
    (lambda m: search_trigger(m, ["a fine film"], label="neutral"), "unknown label"),
])
def test_bad_input_raises_one_clear_error(tiny_model, call, match):
    with pytest.raises(UnmaskError, match=match):
        call(tiny_model)
