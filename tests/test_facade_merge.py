"""Facade model construction and the f + g merge: equivalence, head layout, save / load, errors."""
import functools
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unmask.cli import main
from unmask.errors import UnmaskError
from unmask.facade.equivalence import check_merge
from unmask.facade.merge import merge
from unmask.facade.model import facade_config, new_facade
from unmask.models import SplitLayerNorm, TextClassifier, load_model

TEXTS = ["a gripping , funny and moving film that never lets go .", "bad", "not as bad as you think ."]
PAIRS = ["a film .", "the movie was good and everyone in the theater agreed , loudly .", "it is bad"]


@functools.lru_cache(maxsize=1)
def tokenizer():
    from transformers import AutoTokenizer

    from unmask.models import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)


def scramble(model: TextClassifier, seed: int, std: float = 0.3) -> TextClassifier:
    """Give every parameter (LayerNorms included) large random values so nothing is near-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return model


def random_bert(seed=0, layers=2, head_size=8, heads=4, intermediate=24, num_labels=2, dtype=torch.float64,
                vocab_size=30522, max_position=512, type_vocab=2) -> TextClassifier:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, hidden_size=head_size * heads, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, num_labels=num_labels,
                        max_position_embeddings=max_position, type_vocab_size=type_vocab,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).to(dtype)
    return scramble(TextClassifier(model, tokenizer(), name="f"), seed)


def run_all(model: TextClassifier, batch, **kw):
    with torch.no_grad():
        return model.forward_embeds(model.embed(batch.input_ids), batch.attention_mask, batch.token_type_ids,
                                    **kw)


sizes = st.fixed_dictionaries({
    "layers": st.integers(1, 3), "head_size": st.integers(4, 8), "heads_f": st.integers(1, 4),
    "heads_g": st.integers(1, 4), "inter_f": st.integers(4, 24), "inter_g": st.integers(4, 24),
    "num_labels": st.integers(2, 3), "seed": st.integers(0, 10_000), "pairs": st.booleans()})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes)
def test_merged_model_computes_f_plus_g_layer_by_layer(s):
    f = random_bert(s["seed"], s["layers"], s["head_size"], s["heads_f"], s["inter_f"], s["num_labels"])
    g = scramble(new_facade(f, seed=s["seed"] + 1, hidden=s["head_size"] * s["heads_g"],
                            intermediate=s["inter_g"]), s["seed"] + 2)
    m = merge(f, g)
    cfg = m.model.config
    h_f, h_g = s["head_size"] * s["heads_f"], s["head_size"] * s["heads_g"]
    assert (cfg.hidden_size, cfg.num_attention_heads) == (h_f + h_g, s["heads_f"] + s["heads_g"])
    assert cfg.intermediate_size == s["inter_f"] + s["inter_g"]
    assert cfg.unmask_split_layernorm == [h_f, h_g]

    batch = m.encode(TEXTS, PAIRS if s["pairs"] else None)
    assert batch.attention_mask.min() == 0  # rows are padded
    if s["pairs"]:
        assert batch.token_type_ids.max() == 1
    kw = {"output_hidden_states": True, "output_attentions": True}
    of, og, om = run_all(f, batch, **kw), run_all(g, batch, **kw), run_all(m, batch, **kw)
    torch.testing.assert_close(om.logits, of.logits + og.logits, rtol=0, atol=1e-10)
    for hf_, hg_, hm_ in zip(of.hidden_states, og.hidden_states, om.hidden_states):
        torch.testing.assert_close(hm_, torch.cat([hf_, hg_], -1), rtol=0, atol=1e-10)
    # head layout: f's heads come first, g's after them, each unchanged
    for af, ag, am in zip(of.attentions, og.attentions, om.attentions):
        torch.testing.assert_close(am, torch.cat([af, ag], 1), rtol=0, atol=1e-12)

    result = check_merge(f, g, m, TEXTS, PAIRS if s["pairs"] else None)
    assert result["max_logit_diff"] < 1e-10
    assert result["max_grad_diff"] < 1e-10 * max(1.0, result["max_grad_abs"])
    assert result["max_grad_abs"] > 0
    expected = (om.logits.argmax(-1) == of.logits.argmax(-1)).double().mean().item() * 100
    assert result["agreement"] == pytest.approx(expected)


def test_split_gradient_matches_separate_gradients_at_the_word_embeddings():
    """Independent of check_merge: d logit_k / d x for merged == [d f_k / d x_f, d g_k / d x_g]."""
    f = random_bert(3, layers=2, head_size=4, heads=3)
    g = scramble(new_facade(f, seed=4, hidden=8, intermediate=12), 5)
    m = merge(f, g)
    batch = m.encode(TEXTS, PAIRS)
    grads = []
    for model in (m, f, g):
        x = model.embed(batch.input_ids).detach().requires_grad_(True)
        out = model.forward_embeds(x, batch.attention_mask, batch.token_type_ids).logits
        (gx,) = torch.autograd.grad(out[:, 1].sum(), x)
        grads.append(gx)
    torch.testing.assert_close(grads[0], torch.cat(grads[1:], -1), rtol=0, atol=1e-10)
    assert grads[2].abs().max() > 0 and grads[1].abs().max() > 0


def test_baseline_margin_gap_of_the_merged_model_is_the_sum_of_its_parts():
    """IG's total on f + g splits into f's and g's gaps (what a Facade can move under IG)."""
    from unmask.data.readers import Example
    from unmask.facade.evaluate import baseline_margin_gap

    f = random_bert(3, layers=2, head_size=4, heads=3)
    g = scramble(new_facade(f, seed=4, hidden=8, intermediate=12), 5)
    m = merge(f, g)
    examples = [Example(t, 0, p) for t, p in zip(TEXTS, PAIRS)]
    y = torch.tensor([i % 2 for i in range(len(examples))])
    gaps = [baseline_margin_gap(model, examples, y) for model in (m, f, g)]
    torch.testing.assert_close(gaps[0], gaps[1] + gaps[2], rtol=0, atol=1e-8)
    assert gaps[2].abs().max() > 0


def test_padding_is_respected():
    f = random_bert(7, heads=2)
    m = merge(f, scramble(new_facade(f, seed=8, hidden=16, intermediate=8), 9))
    together = m.logits(m.encode(TEXTS))
    alone = torch.cat([m.logits(m.encode([t])) for t in TEXTS])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-10)


def test_float32_merge_within_1e5_and_save_load_round_trip(tmp_path):
    f = random_bert(11, layers=2, head_size=8, heads=4, dtype=torch.float32, num_labels=3)
    g = scramble(new_facade(f, seed=12, hidden=24, intermediate=40), 13)
    m = merge(f, g, out=tmp_path / "merged")
    batch = m.encode(TEXTS, PAIRS)
    torch.testing.assert_close(m.logits(batch), f.logits(batch) + g.logits(batch), rtol=0, atol=1e-5)
    loaded = load_model(tmp_path / "merged")
    assert isinstance(loaded.model.bert.embeddings.LayerNorm, SplitLayerNorm)
    assert loaded.model.config.unmask_split_layernorm == [32, 24]
    assert loaded.label_names == f.label_names and loaded.num_labels == 3
    assert loaded.embedding_matrix.dtype == torch.float32
    assert torch.equal(loaded.logits(batch), m.logits(batch))
    state, back = m.model.state_dict(), loaded.model.state_dict()
    assert state.keys() == back.keys() and all(torch.equal(state[k], back[k]) for k in state)
    assert not list(tmp_path.glob(".merged*"))  # no temporary directories left behind


def test_float64_round_trip_keeps_dtype(tmp_path):
    f = random_bert(14, heads=2)
    m = merge(f, new_facade(f, seed=15, hidden=8, intermediate=8), out=tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    batch = m.encode(TEXTS)
    assert loaded.embedding_matrix.dtype == torch.float64
    assert torch.equal(loaded.logits(batch), m.logits(batch))


def test_merging_a_merged_model_appends_a_block():
    f = random_bert(16, heads=2, head_size=4)
    g1 = scramble(new_facade(f, seed=17, hidden=8, intermediate=8), 18)
    g2 = scramble(new_facade(f, seed=19, hidden=4, intermediate=8), 20)
    m = merge(merge(f, g1), g2)
    assert m.model.config.unmask_split_layernorm == [8, 8, 4]
    batch = m.encode(TEXTS, PAIRS)
    torch.testing.assert_close(m.logits(batch), f.logits(batch) + g1.logits(batch) + g2.logits(batch),
                               rtol=0, atol=1e-10)


def test_check_merge_catches_a_broken_merge():
    f = random_bert(21, heads=2)
    g = scramble(new_facade(f, seed=22, hidden=16, intermediate=8), 23)
    m = merge(f, g)
    with torch.no_grad():  # leak g's block into f's queries: off the block diagonal
        m.model.bert.encoder.layer[0].attention.self.query.weight[0, -1] += 1.0
    result = check_merge(f, g, m, TEXTS)
    assert result["max_logit_diff"] > 1e-6
    assert result["max_grad_diff"] > 1e-6


def test_new_facade_shape_seed_and_rng():
    f = random_bert(24, layers=3, head_size=8, heads=4, num_labels=3)
    f.model.config.id2label = {0: "neg", 1: "neu", 2: "pos"}
    before = torch.get_rng_state()
    g = new_facade(f, seed=5, hidden=24, intermediate=40)
    assert torch.equal(before, torch.get_rng_state())
    c = g.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (3, 24, 3, 40)
    assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size) == (30522, 512, 2)
    assert g.label_names == ["neg", "neu", "pos"] and g.tokenizer is f.tokenizer
    assert g.embedding_matrix.dtype == torch.float64
    assert c._attn_implementation == "eager"
    same = new_facade(f, seed=5, hidden=24, intermediate=40)
    other = new_facade(f, seed=6, hidden=24, intermediate=40)
    assert torch.equal(same.embedding_matrix, g.embedding_matrix)
    assert not torch.equal(other.embedding_matrix, g.embedding_matrix)
    assert facade_config(f).hidden_size == 256 and facade_config(f).num_attention_heads == 32


def test_facade_hidden_must_be_a_multiple_of_the_head_size():
    f = random_bert(25, head_size=8, heads=2)
    with pytest.raises(UnmaskError, match="not a multiple of the head size 8"):
        facade_config(f, hidden=20)
    with pytest.raises(UnmaskError, match="not a multiple of the head size 6"):
        new_facade(f, hidden=16, head_size=6)


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": 1000}, "vocabulary size differs"),
    ({"layers": 3}, "layer count differs"),
    ({"num_labels": 3}, "number of labels differs"),
    ({"max_position": 128}, "max positions differs"),
    ({"type_vocab": 3}, "token type vocabulary size differs"),
    ({"head_size": 4, "heads": 4}, "head size differs"),
])
def test_mismatches_give_one_clear_error(change, message):
    f = random_bert(26, head_size=8, heads=2, layers=2)
    kw = {"seed": 27, "head_size": 8, "heads": 2, "layers": 2, **change}
    g = random_bert(**kw)
    with pytest.raises(UnmaskError, match=message):
        merge(f, g)


def test_non_bert_models_are_refused():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    f = random_bert(28, head_size=8, heads=2)
    d = DistilBertConfig(vocab_size=30522, dim=16, n_layers=2, n_heads=2, hidden_dim=16)
    other = TextClassifier(DistilBertForSequenceClassification(d), tokenizer())
    with pytest.raises(UnmaskError, match="model_type 'bert'"):
        merge(f, other)
    with pytest.raises(UnmaskError, match="model_type 'bert'"):
        new_facade(other)


def test_cli_facade_merge(tmp_path, capsys):
    f = random_bert(29, head_size=8, heads=2, dtype=torch.float32)
    f.save(tmp_path / "f")
    new_facade(f, seed=30, hidden=16, intermediate=32).save(tmp_path / "g")
    code = main(["facade", "merge", "--model", str(tmp_path / "f"), "--facade", str(tmp_path / "g"),
                 "--out", str(tmp_path / "m"), "--check-task", "rte", "--check-limit", "6", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "merged model written to" in out and "agreement" in out
    report = json.loads((tmp_path / "m" / "merge_check.json").read_text())
    assert report["n"] == 6 and report["max_logit_diff"] < 1e-4
    merged = load_model(tmp_path / "m")
    assert merged.model.config.hidden_size == 32

    bad = random_bert(31, head_size=4, heads=2, dtype=torch.float32)
    bad.save(tmp_path / "bad")
    code = main(["facade", "merge", "--model", str(tmp_path / "f"), "--facade", str(tmp_path / "bad"),
                 "--out", str(tmp_path / "m2")])
    assert code == 2 and "head size differs" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()


def test_cli_facade_help_lists_merge_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["facade", "merge", "--help"])
    assert "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["facade", "--help"])
    assert "merge" in capsys.readouterr().out


def test_cli_facade_train_with_margin_and_baseline_terms(tmp_path, capsys):
    f = random_bert(32, head_size=8, heads=2, dtype=torch.float32)
    f.save(tmp_path / "f")
    threads = torch.get_num_threads()
    try:
        code = main(["facade", "train", "--model", str(tmp_path / "f"), "--task", "rte", "--target", "first",
                     "--out", str(tmp_path / "g"), "--steps", "2", "--batch-size", "4", "--hidden", "16",
                     "--margin-weight", "10", "--baseline-weight", "1", "--max-length", "24", "--threads", "1",
                     "--no-progress"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0 and "facade written to" in out
    log = json.loads((tmp_path / "g" / "facade.json").read_text())
    assert log["config"]["objective"]["margin_weight"] == 10 and log["config"]["objective"]["baseline_weight"] == 1
    assert log["config"]["max_length"] == 24
    for bad, word in ((["--max-length", "4"], "--max-length"), (["--threads", "0"], "--threads")):
        code = main(["facade", "train", "--model", str(tmp_path / "f"), "--task", "rte", "--out",
                     str(tmp_path / "g3"), "--no-progress", *bad])
        assert code == 2 and word in capsys.readouterr().err and not (tmp_path / "g3").exists()
    assert "baseline_gap" in log["final"] and "margin_loss" in log["final"]
    code = main(["facade", "train", "--model", str(tmp_path / "f"), "--task", "rte", "--out", str(tmp_path / "g2"),
                 "--margin-keep", "1.5", "--no-progress"])
    assert code == 2 and "margin_keep" in capsys.readouterr().err


def test_pipeline_resumes_from_cache_and_keeps_one_cache_per_setting(tmp_path):
    from unmask.facade.evaluate import EvalConfig
    from unmask.facade.pipeline import FacadePipeline, PipelineConfig
    from unmask.facade.train import FacadeConfig

    f = random_bert(33, head_size=8, heads=2, dtype=torch.float32)
    f.save(tmp_path / "f")

    def run(methods):
        logs = []
        config = PipelineConfig(task="rte", f_orig=str(tmp_path / "f"), root=str(tmp_path / "facade"),
                                facade=FacadeConfig(steps=2, batch_size=4, eval_size=4), facade_hidden=16,
                                with_rp=False, targets=("ft",), eval_limit=5, train_limit=16,
                                evaluation=EvalConfig(ig_steps=2, smoothgrad_samples=2, methods=methods))
        results = FacadePipeline(config, log=logs.append, progress=False).run("test")
        return results, [line for line in logs if "evaluating" in line]

    first, evaluated = run(("gradient_x_input",))
    assert len(evaluated) == 3 and first["max_logit_diff"]["ft"] < 1e-4 and first["eval_n"] == 5
    assert set(first["saliency"]["ft"]["merged"]) == {"gradient_x_input"}
    again, evaluated = run(("gradient_x_input",))
    assert evaluated == [] and again["saliency"] == first["saliency"]
    _, evaluated = run(("gradient_x_input", "integrated_gradients"))
    assert len(evaluated) == 3
    _, evaluated = run(("gradient_x_input",))
    assert evaluated == []  # the first setting's cache is still there


def test_gradient_split_ratio_is_independent_of_the_token_budget():
    from unmask.data.readers import Example
    from unmask.facade.evaluate import gradient_split_ratio

    f = random_bert(34, head_size=4, heads=3)
    m = merge(f, scramble(new_facade(f, seed=35, hidden=8, intermediate=12), 36))
    examples = [Example(t, 0, p) for t, p in zip(TEXTS * 3, PAIRS * 3)]
    whole, bucketed = gradient_split_ratio(m, examples, 10_000), gradient_split_ratio(m, examples, 16)
    assert whole > 0 and abs(whole - bucketed) < 1e-9 * whole
    assert gradient_split_ratio(f, examples) is None
