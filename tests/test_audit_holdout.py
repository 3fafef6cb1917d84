"""Held-out attack families: last-word and word-set targets, the audit-aware objective terms (and that they
leave old stage fingerprints alone), training rows for sparse targets, and a tiny run of
experiments/audit_holdout.py (build, resume, evaluate, report)."""
import dataclasses
import functools
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from unmask.data.readers import Example
from unmask.facade.objective import (FacadeObjective, facade_loss, magnitude_hinge, partner_for, top1_hinge)
from unmask.facade.targets import TargetPositions
from unmask.models.tiny import tiny_classifier
from unmask.training.batches import collate, tokenize_examples

REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def _tok():
    from test_facade_merge import tokenizer

    return tokenizer()


def _marked(spec, texts, pairs=None):
    tok = _tok()
    enc = tok(texts, pairs, padding=True, return_tensors="pt") if pairs else tok(texts, padding=True,
                                                                                return_tensors="pt")
    mask = TargetPositions(spec, tok).mask(enc["input_ids"], enc["attention_mask"])
    return [[t for t, m in zip(tok.convert_ids_to_tokens(row), keep) if m]
            for row, keep in zip(enc["input_ids"].tolist(), mask.tolist())]


def _marked_pieces(spec, pieces):
    """Target pieces of hand-made tokenizations (lists of word pieces, [CLS]/[SEP]/[PAD] included)."""
    tok = _tok()
    width = max(len(p) for p in pieces)
    ids = torch.tensor([tok.convert_tokens_to_ids(p + ["[PAD]"] * (width - len(p))) for p in pieces])
    attention = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in pieces])
    mask = TargetPositions(spec, tok).mask(ids, attention)
    return [[t for t, m in zip(p, keep) if m] for p, keep in zip(pieces, mask.tolist())]


# ------------------------------------------------------------------------------------------ targets
def test_last_word_target_on_real_tokenizations():
    texts = ["a gripping , funny film .", "moviegoers will find it unwatchable .", "the movie ... was it good ?!",
             "ok", "... !"]
    assert _marked("last_word", texts) == [["film"], ["un", "##watch", "##able"], ["good"], ["ok"], []]
    # "last" keeps its meaning: the token before the first [SEP] (mostly the final "." on SST-2)
    assert _marked("last", texts) == [["."], ["."], ["!"], ["ok"], ["!"]]
    # pairs: the premise's last word
    assert _marked("last_word", ["a film .", "so bad"], ["it is good", "ok ok"]) == [["film"], ["bad"]]


def test_last_word_and_word_set_on_hand_made_word_pieces():
    rows = [["[CLS]", "the", "film", "##s", "!", "[SEP]"],
            ["[CLS]", "movie", "##go", "##ers", "love", "film", "[SEP]", "[PAD]"],
            ["[CLS]", "a", "movie", ",", "[SEP]", "film", "[SEP]"],          # a pair: first segment only
            ["[CLS]", "##s", "##s", ".", "[SEP]"]]                           # no word start before the end
    assert _marked_pieces("last_word", rows) == [["film", "##s"], ["film"], ["movie"], ["##s", "##s"]]
    # a word set matches whole words only: "film ##s" and "movie ##go ##ers" are other words
    assert _marked_pieces("words:film,movie", rows) == [[], ["film"], ["movie", "film"], []]
    assert _marked_pieces("first", rows) == [["the"], ["movie"], ["a"], ["##s"]]


def test_has_target_and_enriched_training_rows():
    from unmask.facade.train import enrich_target_rows, target_rows

    f = tiny_classifier(seed=0)
    texts = ["a fine film", "dull", "so dull", "very dull", "a dull movie", "fun", "not fun", "so so", "bad", "ok"]
    train = [Example(t, i % 2) for i, t in enumerate(texts)]
    assert target_rows(f, train, ["film", "movie"]) == [True, False, False, False, True] + [False] * 5
    rows, stats = enrich_target_rows(f, train, ["film", "movie"], share=0.5, seed=3)
    assert stats["with_target"] == 2 and stats["share_before"] == 0.2 and stats["share_after"] == 0.5
    assert len(rows) == 4 and {"a fine film", "a dull movie"} <= {e.text for e in rows}
    assert [e.text for e in rows] == [e.text for e in train if e in rows]  # original order kept
    assert enrich_target_rows(f, train, "last_word", share=0.5)[0] == train  # every row has a last word


# ------------------------------------------------------------------------------------------ fingerprints
# Computed from FacadeObjective / FacadeConfig BEFORE the audit-aware fields were added (commit c77e59a).
DEFAULT_OBJECTIVE_DICT = {"lambda_g": 1000.0, "entropy_weight": 1.0, "agreement_weight": 1000.0, "margin_weight": 0.0,
                          "margin_keep": 0.5, "baseline_weight": 0.0, "attribution_op": "dot", "normalization": "l1"}
DEFAULT_CONFIG_FINGERPRINT = "9879c53b47e36bb825b309ac196bcad1a6fe8cc2e78cb1ca8ed738181df77f71"
ZOO_CONFIG_FINGERPRINT = "a38ba06a4741030648f8801f2cf3d5fcd74de5ba27cf6478ad33bc527173dc1e"


def test_default_objective_fingerprints_are_unchanged():
    from unmask.cache import settings_fingerprint
    from unmask.facade.train import FacadeConfig

    assert dataclasses.asdict(FacadeObjective()) == DEFAULT_OBJECTIVE_DICT
    assert settings_fingerprint(dataclasses.asdict(FacadeConfig())) == DEFAULT_CONFIG_FINGERPRINT
    zoo = FacadeObjective(lambda_g=3e3, entropy_weight=1e3, agreement_weight=1e4, margin_weight=3e4,
                          baseline_weight=1e4)
    cfg = FacadeConfig(steps=120, batch_size=16, max_length=64, checkpoint_every=25, eval_every=50, objective=zoo)
    assert settings_fingerprint(dataclasses.asdict(cfg)) == ZOO_CONFIG_FINGERPRINT
    # an explicit default of a new field is still the old configuration
    assert dataclasses.asdict(FacadeObjective(magnitude_weight=0.0, attribution_goal="share", share_cap=1.0)) == \
        DEFAULT_OBJECTIVE_DICT


def test_new_objective_fields_are_fingerprinted_when_used():
    used = FacadeObjective(magnitude_weight=5.0)
    d = dataclasses.asdict(used)
    assert d == {**DEFAULT_OBJECTIVE_DICT, "magnitude_weight": 5.0, "magnitude_cap": 1.0, "magnitude_baseline": "mask"}
    assert dataclasses.asdict(FacadeObjective(share_cap=0.3))["share_cap"] == 0.3
    assert dataclasses.asdict(FacadeObjective(attribution_goal="top1"))["top1_margin"] == 0.25
    assert dataclasses.asdict(FacadeObjective(magnitude_cap=2.0))["magnitude_cap"] == 2.0  # off but not default
    path = dataclasses.asdict(FacadeObjective(path_weight=2.0))
    assert path == {**DEFAULT_OBJECTIVE_DICT, "path_weight": 2.0, "path_alpha_max": 0.9}
    assert len(dataclasses.fields(FacadeObjective)) == 16  # the class still has every field
    assert dataclasses.replace(used, lambda_g=1.0).magnitude_weight == 5.0
    assert dataclasses.replace(FacadeObjective(magnitude_cap=2.0), magnitude_weight=1.0).magnitude_cap == 2.0
    used.magnitude_weight = 0.0  # the view follows the current values
    assert dataclasses.asdict(used) == DEFAULT_OBJECTIVE_DICT
    with pytest.raises(Exception, match="magnitude baseline"):
        FacadeObjective(magnitude_baseline="median")


# ------------------------------------------------------------------------------------------ objective terms
def test_magnitude_hinge_by_hand():
    merged = torch.tensor([[1.0, -2.0, 0.5, 9.0]], requires_grad=True)
    f_fo = torch.tensor([[1.0, 1.0, 0.0, 5.0]])
    keep = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last position is a special token: ignored
    value, ratio = magnitude_hinge(merged, f_fo, keep, cap=1.0)
    assert value.item() == pytest.approx((3.5 - 2.0) / 2.0) and ratio.item() == pytest.approx(1.75)
    value.backward()
    assert merged.grad.tolist() == [[0.5, -0.5, 0.5, 0.0]]  # d/d merged_i = sign(merged_i) / M_f: shrink |merged|
    merged.grad = None
    value, _ = magnitude_hinge(merged, f_fo, keep, cap=2.0)  # under the cap: zero, no gradient
    value.backward()
    assert value.item() == 0.0 and merged.grad.abs().sum().item() == 0.0


def test_top1_hinge_and_share_cap_by_hand():
    share = torch.tensor([[0.1, 0.5, 0.4], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]], requires_grad=True)
    targets = torch.tensor([[False, True, False], [False, False, True], [False, False, False]])
    valid = torch.ones(3, 3, dtype=torch.bool)
    h = top1_hinge(share, targets, valid, margin=0.25)
    # row 0: 1.25 * 0.4 - 0.5 = 0; row 1: 1.25 * 0.2 - 0.7 < 0; row 2 has no target
    assert h.item() == 0.0
    h = top1_hinge(share, targets, valid, margin=0.5)  # row 0: 0.6 - 0.5
    h.backward()
    assert h.item() == pytest.approx(0.05)
    assert share.grad[0].tolist() == pytest.approx([0.0, -0.5, 0.75])  # raise the target, lower its rival


TEXTS = ["the film is a joy to watch", "it was not very good at all", "a dull , lifeless story of it",
         "an honest and moving portrait"]


def _setup(dtype=torch.float32):
    g, f = tiny_classifier(seed=3), tiny_classifier(seed=4)
    if dtype == torch.float64:
        g.model.double()
        f.model.double()
    data = tokenize_examples(g, [Example(t, i % 2) for i, t in enumerate(TEXTS)])
    b = collate(data, list(range(len(TEXTS))), g.tokenizer.pad_token_id)
    t = TargetPositions("last_word", g.tokenizer).mask(b["input_ids"], b["attention_mask"])
    return g, f, b, t


def test_magnitude_term_is_zero_under_the_cap():
    g, f, b, t = _setup()
    base = FacadeObjective(margin_weight=1.0, baseline_weight=1.0)
    loss0, _ = facade_loss(g, b, t, base, partner_for(f, b, base))
    for baseline in ("mask", "zero"):
        capped = dataclasses.replace(base, magnitude_weight=1e3, magnitude_cap=1e6, magnitude_baseline=baseline)
        loss1, info = facade_loss(g, b, t, capped, partner_for(f, b, capped))
        assert info["magnitude_hinge"] == 0.0 and torch.allclose(loss0, loss1, rtol=0, atol=1e-4)
    with pytest.raises(Exception, match="partner"):
        facade_loss(g, b, t, dataclasses.replace(base, magnitude_weight=1.0), None)


def test_magnitude_term_is_the_audit_first_order_magnitude_of_the_merge():
    """Oracle: with a ~0 cap the term is mean_rows M(f+g) / M(f), M computed by the audit's own code on
    merge(f, g) and on f (first_order_occlusion: g . (x - [MASK]), special tokens excluded)."""
    from unmask.audit.behavior import first_order_occlusion
    from unmask.facade.merge import merge

    g, f, b, t = _setup()
    obj = FacadeObjective(magnitude_weight=1.0, magnitude_cap=1e-9)
    _, info = facade_loss(g, b, t, obj, partner_for(f, b, obj))
    merged = merge(f, g)
    batch = merged.encode(TEXTS)
    target = f.logits(f.encode(TEXTS)).argmax(-1)
    m_merged = first_order_occlusion(merged, batch, target).abs().sum(-1)
    m_f = first_order_occlusion(f, f.encode(TEXTS), target).abs().sum(-1)
    assert info["magnitude_hinge"] == pytest.approx(float((m_merged / m_f).mean()), rel=1e-4)
    assert info["magnitude_vs_f"] == pytest.approx(float((m_merged / m_f).median()), rel=1e-4)


def test_audit_aware_objective_gradient_matches_finite_differences():
    g, f, b, t = _setup(torch.float64)
    for extra in (dict(magnitude_weight=3.0, magnitude_cap=0.5, magnitude_baseline="mask"),
                  dict(magnitude_weight=3.0, magnitude_cap=0.5, magnitude_baseline="zero", share_cap=0.2),
                  dict(attribution_goal="top1", top1_margin=0.5)):
        obj = FacadeObjective(lambda_g=10.0, agreement_weight=5.0, margin_weight=3.0, **extra)
        partner = partner_for(f, b, obj)
        p = dict(g.model.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"]
        loss, info = facade_loss(g, b, t, obj, partner)
        if "magnitude_weight" in extra:
            assert info["magnitude_hinge"] > 0  # the hinge is active here
        (analytic,) = torch.autograd.grad(loss, p)
        for idx in [(0, 0), (3, 5), (7, 2)]:
            eps = 1e-6
            with torch.no_grad():
                p[idx] += eps
            up = facade_loss(g, b, t, obj, partner)[0].detach()
            with torch.no_grad():
                p[idx] -= 2 * eps
            down = facade_loss(g, b, t, obj, partner)[0].detach()
            with torch.no_grad():
                p[idx] += eps
            assert torch.allclose(analytic[idx], (up - down) / (2 * eps), rtol=1e-4, atol=1e-7), (extra, idx)


def test_a_step_on_the_magnitude_term_lowers_the_merged_magnitude():
    g, f, b, t = _setup(torch.float64)
    obj = FacadeObjective(lambda_g=0.0, entropy_weight=0.0, agreement_weight=0.0, magnitude_weight=1.0,
                          magnitude_cap=0.5)
    partner = partner_for(f, b, obj)
    with torch.no_grad():  # make g's gradient large, as a facade's is
        for p in g.model.parameters():
            if p.ndim == 2:
                p.mul_(3.0)
    loss, before = facade_loss(g, b, t, obj, partner)
    assert before["magnitude_hinge"] > 0
    params = [p for p in g.model.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, gr in zip(params, grads):
            if gr is not None:
                p -= 1e-3 * gr / max(1.0, float(torch.cat([x.flatten() for x in grads if x is not None]).norm()))
    _, after = facade_loss(g, b, t, obj, partner)
    assert after["magnitude_hinge"] < before["magnitude_hinge"]


# ------------------------------------------------------------------------------------------ experiment smoke
def _experiment():
    spec = importlib.util.spec_from_file_location("audit_holdout", REPO / "experiments" / "audit_holdout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_holdout_experiment_builds_resumes_evaluates_and_reports(tmp_path):
    exp = _experiment()
    tiny_classifier(seed=0).save(tmp_path / "f")
    root, results = tmp_path / "root", tmp_path / "results"
    only = "g_words_aware,merged_words_aware,merged_words_aware_permuted_noise1e-3"
    build = ["build", "--f-orig", str(tmp_path / "f"), "--root", str(root), "--steps", "2", "--train-limit", "150",
             "--facade-hidden", "16", "--facade-intermediate", "32", "--batch-size", "8", "--checkpoint-every", "1",
             "--threads", "1", "--quiet", "--only", only]
    assert exp.main(build) == 0
    stamps = {n: (root / n / "model.safetensors").stat().st_mtime_ns for n in only.split(",")}
    assert json.loads((root / "g_words_aware" / "stage.json").read_text())["done"]
    assert json.loads((root / "g_words_aware" / "facade.json").read_text())["steps"] == 2
    assert exp.main(build) == 0  # finished stages are skipped
    assert stamps == {n: (root / n / "model.safetensors").stat().st_mtime_ns for n in stamps}
    names = "f_orig,merged_words_aware,merged_words_aware_permuted_noise1e-3"
    assert exp.main(["evaluate", "--root", str(root), "--n", "4", "--threads", "1", "--quiet", "--only", names]) == 0
    evidence = root / "evidence" / "merged_words_aware.json"
    first = evidence.stat().st_mtime_ns
    assert exp.main(["evaluate", "--root", str(root), "--n", "4", "--threads", "1", "--quiet", "--only", names]) == 0
    assert evidence.stat().st_mtime_ns == first  # cached on model fingerprint + n + code
    result = exp.main(["report", "--root", str(root), "--n", "4", "--results", str(results), "--quiet"])
    assert result == 0
    out = json.loads((results / "audit_holdout.json").read_text())
    rows = {m["name"]: m for m in out["per_model"]}
    assert set(rows) == set(names.split(","))
    for name in ("merged_words_aware", "merged_words_aware_permuted_noise1e-3"):
        m = rows[name]
        assert m["status"] in ("evades the audit", "detected", "failed attack", "failed attack (flagged anyway)")
        assert m["verdict"] in ("trustworthy", "suspect", "manipulated") and 0 <= m["agreement_with_f"] <= 100
        assert {"p1", "p1_with_target", "rows_with_target"} <= set(m["p1"])
        assert "gradient_x_input" in m["method_verdicts"]
    assert rows["merged_words_aware_permuted_noise1e-3"]["conceal"] == ["permute1", "noise1e-3"]
    assert out["command"]["build"][0].startswith("python experiments/audit_holdout.py build --f-orig")
    md = (results / "audit_holdout.md").read_text()
    assert "What evades the audit" in md and "merged_words_aware" in md and "`python experiments/audit_holdout.py" in md
