"""Structural evidence (unmask.audit.structure): merges and their concealed twins split into f and g with
coupling << 1; clean BERT / DistilBERT / RoBERTa couple near 1; readout shares match f and g run apart."""
import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

from unmask.audit.structure import _CorrelationSums, _layout, structural_evidence
from unmask.errors import UnmaskError
from unmask.facade.conceal import add_noise, finetune_merged, logit_change, permute_hidden
from unmask.facade.merge import merge
from unmask.facade.model import new_facade
from unmask.models import SplitLayerNorm, TextClassifier
from unmask.models.tiny import tiny_classifier

TEXTS = ["a gripping , funny and moving film that never lets go .", "bad", "not as bad as you think .",
         "the movie was long , dull and far too loud ."]

# Thresholds, chosen from clean models only: 12 clean tiny random models (BERT, DistilBERT, RoBERTa x seeds
# 0-3, default init) measured coupling 0.846-0.928 and the pretrained MiniLM 0.853. The clean bound 0.6 sits
# 0.25 below the lowest of them. Independence is declared below 0.3 (half-way, on a log scale, between
# that bound and the largest noise a merge can take and keep its predictions, ~1e-2 x max|W|).
CLEAN_MIN = 0.6
INDEPENDENT_MAX = 0.3
F_UNITS, G_UNITS = set(range(32)), set(range(32, 48))


@functools.lru_cache(maxsize=1)
def tokenizer():
    from transformers import AutoTokenizer

    from unmask.models import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)


def clean_model(kind: str, seed: int) -> TextClassifier:
    """A tiny random BERT / DistilBERT / RoBERTa classifier built from its config (32 hidden, 4 heads)."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "bert":
        model = tf.BertForSequenceClassification(tf.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    elif kind == "distilbert":
        model = tf.DistilBertForSequenceClassification(tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4,
                                                                           hidden_dim=64))
    else:
        model = tf.RobertaForSequenceClassification(tf.RobertaConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=514))
    return TextClassifier(model, tokenizer(), name=kind)


@functools.lru_cache(maxsize=1)
def parts():
    """f (32 hidden, 4 heads of 8), g (16 hidden, 2 heads of 8) and their plain merge (f's units first)."""
    f = tiny_classifier(seed=0)
    g = new_facade(f, seed=1, hidden=16, intermediate=32)
    return f, g, merge(f, g)


def with_ordinary_layernorm(model: TextClassifier) -> TextClassifier:
    """Every split LayerNorm replaced by one ordinary LayerNorm over all units (weights concatenated)."""
    hf = copy.deepcopy(model.model)
    for module in list(hf.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SplitLayerNorm):
                ln = nn.LayerNorm(child.weight.shape[0], eps=child.eps)
                with torch.no_grad():
                    ln.weight.copy_(child.weight)
                    ln.bias.copy_(child.bias)
                setattr(module, name, ln)
    assert not any(isinstance(m, SplitLayerNorm) for m in hf.modules())
    return TextClassifier(hf, model.tokenizer, name="ordinary-ln")


def unit_map(original: TextClassifier, permuted: TextClassifier) -> np.ndarray:
    """p with new unit i = old unit p[i], read off the word-embedding columns."""
    old, new = original.embedding_matrix[:64].detach(), permuted.embedding_matrix[:64].detach()
    p = torch.cdist(new.T, old.T).argmin(1).numpy()
    assert sorted(p.tolist()) == list(range(old.shape[1]))
    return p


def twin(name: str) -> tuple[TextClassifier, np.ndarray]:
    """A concealed twin of the plain merge and p (twin unit i = merge unit p[i])."""
    _, _, m = parts()
    identity = np.arange(48)
    if name == "plain":
        return m, identity
    if name.startswith("noise"):
        return add_noise(m, float(name[5:]), seed=3), identity
    if name == "permuted":
        t = permute_hidden(m, seed=5)
        return t, unit_map(m, t)
    if name == "ordinary_layernorm":
        return with_ordinary_layernorm(m), identity
    if name == "permuted_noise1e-3_ordinary_layernorm":
        t = with_ordinary_layernorm(add_noise(permute_hidden(m, seed=6), 1e-3, seed=7))
        return t, unit_map(m, t)
    raise KeyError(name)


@pytest.mark.parametrize("kind,expected,readout", [
    ("bert", ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.key",
              "bert.encoder.layer.0.attention.self.value", "bert.encoder.layer.0.attention.output.dense",
              "bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.output.dense"], "bert.pooler.dense"),
    ("distilbert", [f"distilbert.transformer.layer.0.{n}" for n in
                    ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1",
                     "ffn.lin2")], "pre_classifier"),
    ("roberta", ["roberta.encoder.layer.0.attention.self.query", "roberta.encoder.layer.0.attention.self.key",
                 "roberta.encoder.layer.0.attention.self.value", "roberta.encoder.layer.0.attention.output.dense",
                 "roberta.encoder.layer.0.intermediate.dense", "roberta.encoder.layer.0.output.dense"],
     "classifier.dense"),
])
def test_layout_finds_every_residual_linear_by_shape(kind, expected, readout):
    layout = _layout(clean_model(kind, 0))
    kinds = [(m.kind, m.module) for m in layout.matrices]
    assert kinds[:6] == list(zip(("query", "key", "value", "attention_output", "ffn_in", "ffn_out"), expected[:6]))
    assert len(kinds) == 2 * 6 + 1 and kinds[-1] == ("readout", readout)
    assert layout.hidden == 32 and layout.head_size == 8 and layout.classifier.out_features == 2


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
@pytest.mark.parametrize("seed", [0, 1])
def test_clean_models_couple_near_one_for_their_best_split(kind, seed):
    e = structural_evidence(clean_model(kind, seed))
    assert CLEAN_MIN < e.coupling < 1.2
    assert sum(p.size for p in e.parts) == 32 and min(p.size for p in e.parts) >= 8
    assert all(CLEAN_MIN / 2 < v < 1.5 for v in e.coupling_by_type.values())


@pytest.mark.parametrize("name,ceiling", [
    ("plain", 1e-12), ("noise1e-6", 2e-5), ("noise1e-4", 2e-3), ("noise1e-3", 2e-2), ("permuted", 1e-12),
    ("ordinary_layernorm", 1e-12), ("permuted_noise1e-3_ordinary_layernorm", 2e-2)])
def test_merges_and_concealed_twins_split_into_f_and_g(name, ceiling):
    """coupling ~ noise / typical |W| (median |N(0, s max|W|)| / median |W| ~ 3.5 s here), parts = f, g."""
    model, p = twin(name)
    e = structural_evidence(model)
    assert e.coupling < min(ceiling, INDEPENDENT_MAX)
    found = sorted((set(p[part.units].tolist()) for part in e.parts), key=len, reverse=True)
    assert found == [F_UNITS, G_UNITS]


def test_concealed_twins_keep_the_merge_function():
    """Sanity of the twins: permutation is exact, 1e-3 noise barely moves the logits."""
    _, _, m = parts()
    assert logit_change(m, twin("permuted")[0], TEXTS)["max_logit_change"] < 1e-5
    change = logit_change(m, twin("noise1e-3")[0], TEXTS)
    assert change["max_logit_change"] < 1e-2 and change["agreement"] == 100.0


def test_briefly_fine_tuned_merge_stays_far_below_one():
    from unmask.data.readers import load_task

    _, _, m = parts()
    tuned = finetune_merged(m, load_task("sst2", "train", limit=32), steps=10, lr=2e-5, batch_size=8,
                            log=lambda _: None)
    assert not torch.equal(tuned.model.bert.encoder.layer[0].intermediate.dense.weight[:32, 32:],
                           torch.zeros(32, 16))  # the zero blocks are filled
    e = structural_evidence(tuned)
    assert e.coupling < 0.05
    assert sorted((set(part.units) for part in e.parts), key=len, reverse=True) == [F_UNITS, G_UNITS]


def test_three_parts_are_found_in_a_double_merge():
    f, g, m = parts()
    g2 = new_facade(f, seed=9, hidden=8, intermediate=16)
    double = add_noise(merge(m, g2), 1e-4, seed=1)
    e = structural_evidence(double, max_parts=3)
    assert sorted((set(p.units) for p in e.parts), key=len, reverse=True) == [F_UNITS, G_UNITS, set(range(48, 56))]
    assert e.coupling < 2e-3
    assert len(structural_evidence(double, max_parts=2).parts) == 2


def test_clean_model_is_not_split_again():
    assert len(structural_evidence(clean_model("bert", 0), max_parts=3).parts) == 2


def test_readout_shares_equal_f_and_g_run_apart():
    """Oracle: f's and g's own logits (bias left out) and their own loss gradients at the merge's prediction."""
    f, g, m = parts()
    e = structural_evidence(m, texts=TEXTS)
    e_f, e_g = sorted(e.parts, key=lambda p: p.size, reverse=True)
    batch = m.encode(TEXTS)
    x_m = m.embed(batch.input_ids)
    logits = m.forward_embeds(x_m, batch.attention_mask, batch.token_type_ids).logits.detach()
    pred = logits.argmax(-1)
    runner = logits.masked_fill(nn.functional.one_hot(pred, 2).bool(), float("-inf")).argmax(-1)
    coeff = logits.softmax(-1) - nn.functional.one_hot(pred, 2).float()
    rows = torch.arange(len(TEXTS))
    margins, masses = [], []
    for model in (f, g):
        x = model.embed(batch.input_ids).detach().requires_grad_(True)
        out = model.forward_embeds(x, batch.attention_mask, batch.token_type_ids).logits - model.model.classifier.bias
        margins.append((out[rows, pred] - out[rows, runner]).abs().detach())
        (grad,) = torch.autograd.grad((coeff * out).sum(), x)
        masses.append(((grad * x.detach()).sum(-1).abs() * batch.attention_mask).sum(-1))
    margin = torch.stack(margins, -1)
    mass = torch.stack(masses, -1)
    want_margin = (margin / margin.sum(-1, keepdim=True)).mean(0)
    want_grad = (mass / mass.sum(-1, keepdim=True)).mean(0)
    assert [e_f.margin_share, e_g.margin_share] == pytest.approx(want_margin.tolist(), abs=1e-5)
    assert [e_f.gradient_share, e_g.gradient_share] == pytest.approx(want_grad.tolist(), abs=1e-5)
    w = m.model.classifier.weight.detach().abs()
    assert e_g.classifier_share == pytest.approx(float(w[:, 32:].sum() / w.sum()), abs=1e-6)
    assert e.n_texts == len(TEXTS) and len(e.activation_coupling_by_layer) == 3  # embeddings + 2 layers
    assert 0 < e.activation_coupling < 2
    assert e.to_dict()["parts"][1]["size"] == 16


def test_activation_coupling_matches_numpy_correlations():
    gen = np.random.default_rng(0)
    a = gen.normal(size=(200, 6))
    a[:, 1] += a[:, 0]           # correlated within part 0
    a[:, 4] -= 2 * a[:, 3]       # correlated within part 1
    labels = np.array([0, 0, 0, 1, 1, 1])
    sums = _CorrelationSums()
    sums.add(torch.as_tensor(a[:120]))
    sums.add(torch.as_tensor(a[120:]))
    corr = np.abs(np.corrcoef(a.T))
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(6, dtype=bool)
    want = corr[~same].mean() / corr[same & off].mean()
    assert sums.cross_over_within(labels) == pytest.approx(want, rel=1e-9)


def test_bad_input_raises_one_clear_error():
    model = tiny_classifier(seed=0)
    with pytest.raises(UnmaskError, match="max_parts"):
        structural_evidence(model, max_parts=1)
    with pytest.raises(UnmaskError, match="texts is empty"):
        structural_evidence(model, texts=[])
    with pytest.raises(UnmaskError, match="pairs given without texts"):
        structural_evidence(model, pairs=["a"])
    with pytest.raises(UnmaskError, match="min_part"):
        structural_evidence(model, min_part=17)
    broken = copy.deepcopy(model)
    broken.model.bert.encoder.layer = nn.ModuleList([nn.Identity()])
    with pytest.raises(UnmaskError, match="no list of transformer layers"):
        structural_evidence(broken)
