"""Facade attack variants: permuted / noise-concealed merges, protected saving, brief fine-tuning."""
import json
import os
import subprocess
import sys

import pytest
import torch
from test_facade_merge import PAIRS, TEXTS, random_bert, scramble

from unmask.cli import main
from unmask.errors import UnmaskError
from unmask.facade.conceal import add_noise, logit_change, permute_hidden
from unmask.facade.merge import merge
from unmask.facade.model import new_facade
from unmask.models import SplitLayerNorm, load_model


def merged_pair(dtype=torch.float64, seed=3):
    f = random_bert(seed, layers=2, head_size=4, heads=3, intermediate=10, dtype=dtype)
    g = scramble(new_facade(f, seed=seed + 1, hidden=8, intermediate=12), seed + 2)
    return f, g, merge(f, g)


def token_grad_x_input(model, batch):
    """Per-token g . x of the logit-1 gradient at the word embeddings (permutation-invariant)."""
    x = model.embed(batch.input_ids).detach().requires_grad_(True)
    out = model.forward_embeds(x, batch.attention_mask, batch.token_type_ids).logits
    (g,) = torch.autograd.grad(out[:, 1].sum(), x)
    return (g * x).sum(-1).detach()


# ------------------------------------------------------------------------------------ permutation
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_permuted_merge_computes_the_same_function(dtype, tol):
    _, _, m = merged_pair(dtype)
    pm = permute_hidden(m, seed=7)
    batch = m.encode(TEXTS, PAIRS)
    torch.testing.assert_close(pm.logits(batch), m.logits(batch), rtol=0, atol=tol)
    torch.testing.assert_close(token_grad_x_input(pm, batch), token_grad_x_input(m, batch), rtol=0,
                               atol=tol * 10)
    # it is really permuted: groups are no longer contiguous blocks, weights moved
    ln = pm.model.bert.encoder.layer[0].output.LayerNorm
    assert isinstance(ln, SplitLayerNorm) and not ln.contiguous and ln.sizes == [12, 8]
    assert "unmask_split_layernorm" not in pm.model.config.to_dict()
    assert not torch.equal(pm.model.bert.encoder.layer[0].attention.self.query.weight,
                           m.model.bert.encoder.layer[0].attention.self.query.weight)
    # the zero pattern is no longer block diagonal in the stored order (first row mixes both parts)
    q = pm.model.bert.encoder.layer[1].intermediate.dense.weight
    assert (q == 0).any() and not torch.equal(q[:, :12] == 0, m.model.bert.encoder.layer[1].intermediate.dense.weight[:, :12] == 0)
    # f's units under the permutation are exactly one LayerNorm group
    f_units = sorted(torch.argsort(_perm_of(m, pm))[:12].tolist())
    assert f_units in ln.groups


def _perm_of(m, pm):
    """Recover the hidden permutation from the word embeddings (new column i = old column p[i])."""
    a, b = m.embedding_matrix[:200], pm.embedding_matrix[:200]
    return torch.tensor([int((a - b[:, [i]]).abs().sum(0).argmin()) for i in range(b.shape[1])])


def test_permuting_a_plain_bert_keeps_ordinary_layernorm_and_the_function():
    f = random_bert(5, layers=2, head_size=4, heads=2, dtype=torch.float64)
    pf = permute_hidden(f, seed=1)
    assert type(pf.model).__name__ == "BertForSequenceClassification"
    assert isinstance(pf.model.bert.embeddings.LayerNorm, torch.nn.LayerNorm)
    batch = f.encode(TEXTS)
    torch.testing.assert_close(pf.logits(batch), f.logits(batch), rtol=0, atol=1e-10)
    assert not torch.equal(pf.embedding_matrix, f.embedding_matrix)


def test_different_seeds_give_different_permutations_and_the_input_is_untouched():
    _, _, m = merged_pair(torch.float32)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    a, b, a2 = permute_hidden(m, 1), permute_hidden(m, 2), permute_hidden(m, 1)
    assert all(torch.equal(before[k], v) for k, v in m.model.state_dict().items())
    assert torch.equal(a.embedding_matrix, a2.embedding_matrix)
    assert not torch.equal(a.embedding_matrix, b.embedding_matrix)


def test_permuted_merge_reloads_identically(tmp_path):
    _, _, m = merged_pair(torch.float32)
    pm = permute_hidden(m, seed=11)
    pm.save(tmp_path / "pm")
    back = load_model(tmp_path / "pm")
    batch = m.encode(TEXTS, PAIRS)
    assert torch.equal(back.logits(batch), pm.logits(batch))
    state, loaded = pm.model.state_dict(), back.model.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
    assert back.model.bert.embeddings.LayerNorm.groups == pm.model.bert.embeddings.LayerNorm.groups
    # and a permuted merge merges again with another facade
    g2 = scramble(new_facade(back, seed=40, hidden=4, intermediate=6), 41)
    mm = merge(back, g2)
    torch.testing.assert_close(mm.logits(batch), back.logits(batch) + g2.logits(batch), rtol=0, atol=1e-5)


def test_split_layernorm_groups_equal_the_blockwise_oracle():
    """Index-list groups: each group normalized on its own, computed here by hand."""
    torch.manual_seed(0)
    groups = [[0, 3, 4], [1, 2, 5, 6]]
    ln = SplitLayerNorm(groups, eps=1e-5).double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(7))
        ln.bias.copy_(torch.randn(7))
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    expected = torch.empty_like(x)
    for g in groups:
        v = x[..., g]
        mu, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        expected[..., g] = (v - mu) / torch.sqrt(var + 1e-5) * ln.weight[g] + ln.bias[g]
    torch.testing.assert_close(ln(x), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="exactly once"):
        SplitLayerNorm([[0, 1], [1, 2]])


# ------------------------------------------------------------------------------------------ noise
def test_noise_on_zeros_touches_only_the_zeros_with_the_given_scale():
    _, _, m = merged_pair(torch.float64)
    nm = add_noise(m, 1e-3, seed=0)
    for (name, w), (_, v) in zip(m.model.named_parameters(), nm.model.named_parameters()):
        if w.ndim != 2:
            assert torch.equal(w, v), name
            continue
        zero = w == 0
        assert torch.equal(w[~zero], v[~zero]), name
        if zero.sum() > 500:  # the block-diagonal matrices: every zero moved, std = 1e-3 max|W|
            assert (v[zero] != 0).all()
            ratio = v[zero].std().item() / (1e-3 * w.abs().max().item())
            assert 0.9 < ratio < 1.1, (name, ratio)
    change = logit_change(m, nm, TEXTS, PAIRS)
    assert 0 < change["max_logit_change"] < 0.05 and change["agreement"] == 100.0


def test_noise_at_1e6_keeps_the_function_and_all_noise_moves_every_entry():
    _, _, m = merged_pair(torch.float32)
    change = logit_change(m, add_noise(m, 1e-6, seed=1), TEXTS, PAIRS)
    assert change["max_logit_change"] < 1e-4 and change["n"] == 3
    everywhere = add_noise(m, 1e-2, seed=1, where="all")
    w0 = m.model.bert.encoder.layer[0].attention.self.query.weight
    w1 = everywhere.model.bert.encoder.layer[0].attention.self.query.weight
    assert (w0 != w1).all()
    assert logit_change(m, everywhere, TEXTS)["max_logit_change"] > change["max_logit_change"]
    assert torch.equal(add_noise(m, 1e-3, seed=5).embedding_matrix, add_noise(m, 1e-3, seed=5).embedding_matrix)


@pytest.mark.parametrize("kwargs, message", [({"where": "ones"}, "noise location"),
                                             ({"scale": -1.0}, "noise scale"),
                                             ({"scale": float("nan")}, "noise scale")])
def test_bad_noise_arguments_are_one_clear_error(kwargs, message):
    _, _, m = merged_pair(torch.float32)
    with pytest.raises(UnmaskError, match=message):
        add_noise(m, **{"scale": 1e-3, **kwargs})


# ------------------------------------------------------------------------------------------- CLI
def _save_f_and_g(tmp_path):
    f = random_bert(29, head_size=8, heads=2, dtype=torch.float32)
    f.save(tmp_path / "f")
    new_facade(f, seed=30, hidden=16, intermediate=32).save(tmp_path / "g")
    return f


def test_cli_merge_with_permute_and_noise_and_conceal(tmp_path, capsys):
    _save_f_and_g(tmp_path)
    base = ["facade", "merge", "--model", str(tmp_path / "f"), "--facade", str(tmp_path / "g"), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "plain")]) == 0
    assert main(base + ["--out", str(tmp_path / "hidden"), "--permute", "3", "--noise", "1e-6"]) == 0
    out = capsys.readouterr().out
    assert "concealment (permute 3, noise 1e-06 on zeros)" in out
    report = json.loads((tmp_path / "hidden" / "merge_check.json").read_text())["concealment"]
    assert report["permute_seed"] == 3 and report["noise_scale"] == 1e-6 and report["max_logit_change"] < 1e-4
    plain, hidden = load_model(tmp_path / "plain"), load_model(tmp_path / "hidden")
    assert not hidden.model.bert.embeddings.LayerNorm.contiguous
    assert logit_change(plain, hidden, TEXTS, PAIRS)["max_logit_change"] < 1e-4

    assert main(["facade", "conceal", str(tmp_path / "plain"), "--out", str(tmp_path / "perm"),
                 "--permute", "5"]) == 0
    check = json.loads((tmp_path / "perm" / "conceal_check.json").read_text())
    assert check["max_logit_change"] < 1e-5 and check["noise_scale"] is None
    assert logit_change(plain, load_model(tmp_path / "perm"), TEXTS, PAIRS)["max_logit_change"] < 1e-5
    capsys.readouterr()
    assert main(["facade", "conceal", str(tmp_path / "plain"), "--out", str(tmp_path / "x")]) == 2
    assert "give --permute SEED and / or --noise SCALE" in capsys.readouterr().err
    assert main(["facade", "conceal", str(tmp_path / "plain"), "--out", str(tmp_path / "x"),
                 "--noise", "-1"]) == 2
    assert "noise scale" in capsys.readouterr().err and not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- protected saving
PLAIN_TRANSFORMERS = r"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
texts, pairs, results = json.loads(sys.argv[1]), json.loads(sys.argv[2]), {}
for path in sys.argv[4:]:
    out = results[path] = {}
    try:
        AutoModelForSequenceClassification.from_pretrained(path)
        out["plain"] = "loaded"
    except Exception as e:
        out["plain"] = f"{type(e).__name__}: {e}"
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    enc = tok(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        out["logits"] = model(**enc).logits.double().tolist()
    out["class"] = type(model).__name__
    out["layernorm"] = type(model.bert.embeddings.LayerNorm).__name__
open(sys.argv[3], "w").write(json.dumps(results))
"""


def test_plain_transformers_refuses_and_trust_remote_code_rebuilds_exactly(tmp_path):
    """One subprocess without unmask on its path loads a plain and a permuted merge both ways."""
    _, _, m = merged_pair(torch.float32)
    models = {"merged": m, "permuted": permute_hidden(m, seed=2)}
    for name, model in models.items():
        model.save(tmp_path / name)
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["model_type"] == "unmask_merged_bert" and "auto_map" in config
        assert {"modeling_merged.py", "split_layernorm.py", "model.safetensors"} <= {
            p.name for p in (tmp_path / name).iterdir()}
        assert not list((tmp_path / name).glob("*.bin"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    # -I and cwd=tmp_path: the copied modeling code must work without unmask importable
    run = subprocess.run([sys.executable, "-I", "-c", PLAIN_TRANSFORMERS, json.dumps(TEXTS), json.dumps(PAIRS),
                          str(tmp_path / "out.json"), *(str(tmp_path / n) for n in models)],
                         env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=tmp_path,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "out.json").read_text())
    for name, model in models.items():
        out = results[str(tmp_path / name)]
        assert out["plain"].startswith("ValueError") and "trust_remote_code=True" in out["plain"], out["plain"]
        assert out["class"] == "MergedBertForSequenceClassification" and out["layernorm"] == "SplitLayerNorm"
        ours = load_model(tmp_path / name)
        mine = ours.logits(ours.encode(TEXTS, PAIRS)).double()
        torch.testing.assert_close(torch.tensor(out["logits"], dtype=torch.float64), mine, rtol=0, atol=1e-6)
        torch.testing.assert_close(mine, model.logits(model.encode(TEXTS, PAIRS)).double(), rtol=0, atol=0)


def test_old_merged_dirs_with_split_sizes_in_a_bert_config_still_load(tmp_path):
    """Directories written before the protected format: model_type bert + unmask_split_layernorm."""
    _, _, m = merged_pair(torch.float32)
    m.save(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    config = json.loads(path.read_text())
    for key in ("auto_map", "unmask_layernorm_groups"):
        config.pop(key)
    config.update(model_type="bert", architectures=["BertForSequenceClassification"])
    path.write_text(json.dumps(config))
    for name in ("modeling_merged.py", "split_layernorm.py"):
        (tmp_path / "old" / name).unlink()
    back = load_model(tmp_path / "old")
    assert back.model.config.unmask_split_layernorm == [12, 8]
    assert isinstance(back.model.bert.embeddings.LayerNorm, SplitLayerNorm)
    batch = m.encode(TEXTS, PAIRS)
    assert torch.equal(back.logits(batch), m.logits(batch))
    back.save(tmp_path / "resaved")  # saving again writes the protected format
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["model_type"] == "unmask_merged_bert"


# ------------------------------------------------------------------------------------ fine-tuning
def _examples(n=24):
    from unmask.data.readers import Example

    words = ["good", "bad", "fine", "awful", "great", "dull"]
    return [Example(f"a {words[i % 6]} film about {words[(i * 5) % 6]} people .", i % 2) for i in range(n)]


def test_finetune_merged_fills_the_zero_blocks_and_distillation_keeps_predictions():
    from unmask.facade.conceal import finetune_merged

    f, _, m = merged_pair(torch.float32)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    train = _examples()
    tuned = finetune_merged(m, train, steps=4, lr=1e-3, seed=0, batch_size=8, log=lambda _: None)
    assert all(torch.equal(before[k], v) for k, v in m.model.state_dict().items())  # input untouched
    w0 = m.model.bert.encoder.layer[0].intermediate.dense.weight
    w1 = tuned.model.bert.encoder.layer[0].intermediate.dense.weight
    zero = w0 == 0
    assert zero.sum() > 100 and (w1[zero] != 0).float().mean() > 0.9  # block structure no longer exact
    assert isinstance(tuned.model.bert.encoder.layer[0].output.LayerNorm, SplitLayerNorm)
    again = finetune_merged(m, train, steps=4, lr=1e-3, seed=0, batch_size=8, log=lambda _: None)
    assert torch.equal(again.embedding_matrix, tuned.embedding_matrix)  # seeded
    # labels that contradict f: CE alone pulls the model away from f, a heavy KL to f holds it there
    from unmask.data.readers import Example

    texts = [e.text for e in train]
    against = [Example(t, int(y)) for t, y in zip(texts, 1 - f.logits(f.encode(texts)).argmax(-1))]
    free = finetune_merged(m, against, steps=8, lr=3e-3, seed=1, batch_size=8, log=lambda _: None)
    kept = finetune_merged(m, against, steps=8, lr=3e-3, seed=1, batch_size=8, distill_to=f,
                           distill_weight=50.0, log=lambda _: None)
    kl = {}
    for name, model in (("free", free), ("kept", kept)):
        lf, lm = f.logits(f.encode(texts)), model.logits(model.encode(texts))
        kl[name] = torch.nn.functional.kl_div(lm.log_softmax(-1), lf.log_softmax(-1), log_target=True,
                                              reduction="batchmean").item()
    assert kl["kept"] < 0.5 * kl["free"], kl
    with pytest.raises(UnmaskError, match="steps must be positive"):
        finetune_merged(m, train, steps=0)


def test_cli_finetune_merged(tmp_path, capsys):
    _save_f_and_g(tmp_path)
    assert main(["facade", "merge", "--model", str(tmp_path / "f"), "--facade", str(tmp_path / "g"),
                 "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    code = main(["facade", "finetune-merged", "--model", str(tmp_path / "m"), "--task", "rte", "--steps", "2",
                 "--batch-size", "4", "--train-limit", "16", "--check-limit", "6", "--distill", str(tmp_path / "f"),
                 "--out", str(tmp_path / "ft"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "fine-tuned model written to" in out
    report = json.loads((tmp_path / "ft" / "finetune_check.json").read_text())
    assert report["change_vs_input"]["n"] == 6 and report["change_vs_input"]["max_logit_change"] > 0
    assert "change_vs_distill" in report
    tuned = load_model(tmp_path / "ft")
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["model_type"] == "unmask_merged_bert"
    assert not list(tmp_path.glob(".ft*"))  # work directory removed after success
    assert logit_change(load_model(tmp_path / "m"), tuned, TEXTS)["max_logit_change"] > 0


# ---------------------------------------------------------------------------------------- targets
def _tok():
    from test_facade_merge import tokenizer

    return tokenizer()


def _targets(spec, texts, pairs=None):
    """Target word pieces per row, read off the mask."""
    from unmask.facade.targets import TargetPositions

    tok = _tok()
    enc = tok(texts, pairs, padding=True, return_tensors="pt") if pairs else tok(texts, padding=True,
                                                                                return_tensors="pt")
    mask = TargetPositions(spec, tok).mask(enc["input_ids"], enc["attention_mask"])
    return [[t for t, m in zip(tok.convert_ids_to_tokens(row), keep) if m] for row, keep in
            zip(enc["input_ids"].tolist(), mask.tolist())]


SENTENCES = ["a gripping , funny film .", "the movie ... was it good ?!", "ok"]


def test_positional_and_lexical_targets_on_hand_checked_sentences():
    assert _targets("first", SENTENCES) == [["a"], ["the"], ["ok"]]
    assert _targets("last", SENTENCES) == [["."], ["!"], ["ok"]]  # padding rows: before their own [SEP]
    assert _targets("punct", SENTENCES) == [[",", "."], [".", ".", ".", "?", "!"], []]
    assert _targets("stop", SENTENCES) == [["a"], ["the", "was", "it"], []]
    assert _targets("words:film,movie,the", SENTENCES) == [["film"], ["the", "movie"], []]
    assert _targets("Film, MOVIE", SENTENCES) == [["film"], ["movie"], []]
    # pairs: first / last are the premise's first and last token
    assert _targets("last", ["a film .", "bad"], ["it is good", "so so"]) == [["."], ["bad"]]
    assert _targets("first", ["a film .", "bad"], ["it is good", "so so"]) == [["a"], ["bad"]]


def test_punctuation_pieces():
    from unmask.facade.targets import is_punctuation_piece

    assert all(is_punctuation_piece(t) for t in [",", "...", "##.", "?!", "«", "$", "-"])
    assert not any(is_punctuation_piece(t) for t in ["a", "##s", "a.", "", "##", "1"])


def test_word_file_and_a_target_set_matching_nothing(tmp_path):
    from unmask.facade.targets import TargetPositions, parse_target

    words = tmp_path / "words.txt"
    words.write_text("# my targets\nfilm\nmovie, the\n")
    assert parse_target(f"words:@{words}") == ["film", "movie", "the"]
    assert _targets(f"words:@{words}", SENTENCES) == [["film"], ["the", "movie"], []]
    with pytest.raises(UnmaskError, match="xyzzy, zzyzx"):
        TargetPositions(parse_target("xyzzy,zzyzx"), _tok())
    with pytest.raises(UnmaskError, match="vocabulary token.*xyzzy"):
        TargetPositions("xyzzy", _tok())
    with pytest.warns(UserWarning, match="ignored: xyzzy"):
        TargetPositions(["film", "xyzzy"], _tok())
    with pytest.raises(UnmaskError, match="predicate '_never' matches no token"):
        TargetPositions(_never, _tok())
    with pytest.raises(UnmaskError, match="word file not found"):
        parse_target(f"words:@{tmp_path / 'missing.txt'}")
    with pytest.raises(UnmaskError, match="empty facade target"):
        parse_target("words:")


def _never(_piece: str) -> bool:
    return False


def test_cli_facade_train_refuses_a_target_that_matches_nothing(tmp_path, capsys):
    f = random_bert(32, head_size=8, heads=2, dtype=torch.float32)
    f.save(tmp_path / "f")
    code = main(["facade", "train", "--model", str(tmp_path / "f"), "--task", "rte", "--target", "xyzzy",
                 "--out", str(tmp_path / "g"), "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "xyzzy" in err and "vocabulary" in err
    assert not (tmp_path / "g").exists()
    code = main(["facade", "train", "--model", str(tmp_path / "f"), "--task", "rte", "--target", "punct",
                 "--out", str(tmp_path / "g"), "--steps", "1", "--batch-size", "4", "--hidden", "16",
                 "--no-progress"])
    assert code == 0
    assert json.loads((tmp_path / "g" / "facade.json").read_text())["final"]["p_at_1"] >= 0


# ------------------------------------------------------------------------------- unmerged facade
@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny BERT trained on planted-sentiment sentences: input-dependent predictions with real margins."""
    from test_perturbation_models import synthetic_sentences

    from unmask.data.readers import Example
    from unmask.models.tiny import tiny_classifier
    from unmask.training import TrainConfig, train_classifier

    data = [Example(s, y) for s, y in synthetic_sentences(480, 0)]
    f = tiny_classifier(seed=0)
    result = train_classifier(f, data[:400], data[400:], tmp_path_factory.mktemp("f"),
                              TrainConfig(max_steps=50, lr=3e-3, warmup=0.0, batch_size=32), progress=False,
                              log=lambda _: None)
    assert result["best_dev_accuracy"] > 90
    return f, data[:400], data[400:]


def test_unmerged_facade_moves_gradient_attribution_and_keeps_predictions(trained_tiny, tmp_path):
    from unmask.attribution import explain
    from unmask.facade.targets import TargetPositions
    from unmask.facade.unmerged import UnmergedConfig, train_unmerged

    f, train, dev = trained_tiny
    f_state = {k: v.clone() for k, v in f.model.state_dict().items()}
    config = UnmergedConfig(steps=30, lr=1e-3, batch_size=16, eval_every=10, distill_weight=10.0)
    result = train_unmerged(f, train, dev, "stop", tmp_path / "h", config, progress=False, log=lambda _: None)
    assert all(torch.equal(f_state[k], v) for k, v in f.model.state_dict().items())  # f untouched
    assert result["final"]["target_share"] > result["before"]["target_share"] + 0.3
    h = load_model(tmp_path / "h")
    assert type(h.model).__name__ == "BertForSequenceClassification"
    assert all(not isinstance(m, SplitLayerNorm) for m in h.model.modules())
    # independent oracle: the library's gradient x input and the model's predictions on dev
    texts = [e.text for e in dev]
    stop = TargetPositions("stop", h.tokenizer)

    def p_at_1(model):
        records = explain(model, texts, methods=["gradient_x_input"])["gradient_x_input"]
        return sum(bool(stop.mask_tokens(r.tokens, r.sequence_ids)[int(abs(r.scores).argmax())])
                   for r in records) / len(records)

    assert p_at_1(h) > p_at_1(f) + 0.4
    assert logit_change(f, h, texts)["agreement"] >= 95.0


def test_unmerged_training_resumes_exactly(trained_tiny, tmp_path):
    from unmask.facade.unmerged import UnmergedConfig, train_unmerged

    f, train, dev = trained_tiny
    train = train[:64]
    kw = dict(lr=1e-3, batch_size=16, eval_every=3, checkpoint_every=3, seed=4)
    full = train_unmerged(f, train, dev, "first", tmp_path / "full", UnmergedConfig(steps=6, **kw),
                          progress=False, log=lambda _: None)
    train_unmerged(f, train, dev, "first", tmp_path / "cut", UnmergedConfig(steps=3, **kw), progress=False,
                   log=lambda _: None)
    resumed = train_unmerged(f, train, dev, "first", tmp_path / "cut", UnmergedConfig(steps=6, **kw),
                             progress=False, log=lambda _: None)
    a, b = load_model(tmp_path / "full").model.state_dict(), load_model(tmp_path / "cut").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["before"] == full["before"] and resumed["history"] == full["history"]


def test_cli_train_unmerged(trained_tiny, tmp_path, capsys):
    f, _, _ = trained_tiny
    f.save(tmp_path / "f")
    code = main(["facade", "train-unmerged", "--model", str(tmp_path / "f"), "--task", "sst2", "--target",
                 "words:film,movie", "--out", str(tmp_path / "h"), "--steps", "2", "--train-limit", "32",
                 "--batch-size", "8", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "unmerged facade written to" in out and "agreement with f_orig" in out
    log = json.loads((tmp_path / "h" / "unmerged.json").read_text())
    assert log["steps"] == 2 and log["target"] == "words" and log["config"]["distill_weight"] == 10.0
    assert main(["facade", "train-unmerged", "--model", str(tmp_path / "f"), "--task", "sst2", "--target",
                 "xyzzy", "--out", str(tmp_path / "h2")]) == 2
    assert "xyzzy" in capsys.readouterr().err
    assert main(["facade", "train-unmerged", "--model", str(tmp_path / "f"), "--task", "sst2",
                 "--margin-keep", "2", "--out", str(tmp_path / "h3")]) == 2
    assert "margin_keep" in capsys.readouterr().err


def test_unmerged_share_cap_rewards_the_share_only_up_to_the_cap(trained_tiny):
    """Hand-computed: with lambda_g = 1 and no other terms, the loss is -mean_rows(min(cap, row share)); a cap
    below every row's share makes the attribution term constant (zero gradient to the weights)."""
    from unmask.facade.targets import TargetPositions
    from unmask.facade.unmerged import UnmergedConfig, unmerged_loss
    from unmask.training.batches import collate, tokenize_examples

    f, train, _ = trained_tiny
    tok = tokenize_examples(f, train[:8], 64)
    b = collate(tok, list(range(8)), f.tokenizer.pad_token_id)
    targets = TargetPositions("stop", f.tokenizer).mask(b["input_ids"], b["attention_mask"])
    with torch.no_grad():
        ref = f.forward_embeds(f.embed(b["input_ids"]), b["attention_mask"], b["token_type_ids"]).logits
    free = UnmergedConfig(lambda_g=1.0, distill_weight=0.0)
    loss, info = unmerged_loss(f, b, targets, ref, free)
    assert float(loss) == pytest.approx(-info["target_share"], abs=1e-6)
    f.model.zero_grad()
    capped, info_c = unmerged_loss(f, b, targets, ref, UnmergedConfig(lambda_g=1.0, distill_weight=0.0,
                                                                      share_cap=1e-6))
    rows_with_target = float((targets.sum(-1) > 0).float().mean())  # a row without a target has share 0
    assert 0 < rows_with_target
    assert float(capped) == pytest.approx(-1e-6 * rows_with_target, abs=1e-10)  # the others sit above the cap
    assert info_c["target_share"] == pytest.approx(info["target_share"])  # the reported share is not capped
    params = [p for p in f.model.parameters() if p.requires_grad]
    if params:
        grads = torch.autograd.grad(capped, params, allow_unused=True)
        assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)


def test_unmerged_share_cap_setting_and_errors():
    from unmask.errors import UnmaskError
    from unmask.facade.unmerged import UnmergedConfig, _settings
    from unmask.facade.targets import TargetPositions
    from unmask.models.tiny import tiny_classifier
    from unmask.data.readers import Example

    f = tiny_classifier(seed=0)
    data = [Example("the film is good", 1)]
    t = TargetPositions("stop", f.tokenizer)
    assert "share_cap" not in _settings(UnmergedConfig(), t, data, data)["config"]   # old runs still resume
    assert _settings(UnmergedConfig(share_cap=0.3), t, data, data)["config"]["share_cap"] == 0.3
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(UnmaskError, match="share_cap"):
            UnmergedConfig(share_cap=bad)
