"""LIME and KernelSHAP: exact Shapley values on additive models and on enumerable coalitions, efficiency,
planted tokens, word granularity, sentence pairs, batching, seeds and bad parameters."""
from itertools import combinations
from math import comb
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from test_perturbation_models import _config, _tokenizer, planted_classifier
from torch import nn

import unmask
from unmask.attribution import get_method
from unmask.attribution.coalitions import feature_groups
from unmask.attribution.kernel_shap import KernelShap, shap_coalitions, shapley_kernel
from unmask.attribution.lime import Lime, exponential_kernel, lime_coalitions, weighted_ridge
from unmask.cli import main
from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier

LONG = "the plot is thin but the actors are wonderful and the score is lovely , really quite moving"
PIECES = "an unbelievably bad film"  # "unbelievably" -> un ##bel ##ie ##va ##bly


class LinearBag(nn.Module):
    """logits = [0, bias + sum_t mask_t w(id_t)]: a linear bag of words (embedding dim 1 = the weight)."""

    def __init__(self, weights: torch.Tensor, bias: float = 0.3) -> None:
        super().__init__()
        self.config = _config()
        self.embeddings = nn.Embedding.from_pretrained(weights[:, None], freeze=True)
        self.bias = bias

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, token_type_ids=None, **_):
        score = (inputs_embeds[..., 0] * attention_mask.to(inputs_embeds.dtype)).sum(1) + self.bias
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(score), score], -1))


@pytest.fixture(scope="module")
def linear():
    tok = _tokenizer()
    w = torch.randn(tok.vocab_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return TextClassifier(LinearBag(w), tok, name="linear"), w


def run(model, texts, method, pairs=None, target=None):
    return unmask.explain(model, texts, methods=[method], pairs=pairs, target=target)[method.name]


# ------------------------------------------------------------------ KernelSHAP: oracles
@pytest.mark.parametrize("perturbation", ["remove", "mask", "pad"])
def test_kernel_shap_recovers_the_weights_of_a_linear_bag_of_words(linear, perturbation):
    model, w = linear
    tok = model.tokenizer
    rec = run(model, [LONG], KernelShap(samples=300, perturbation=perturbation, objective="logit"), target=1)[0]
    ids = tok.convert_tokens_to_ids(rec.tokens)
    assert rec.extras["features"] == len(ids) - 2 and 2 ** (len(ids) - 2) > 300  # sampled, not enumerated
    fill = {"remove": 0.0, "mask": float(w[tok.mask_token_id]), "pad": float(w[tok.pad_token_id])}[perturbation]
    expected = np.array([0.0] + [float(w[i]) - fill for i in ids[1:-1]] + [0.0])
    np.testing.assert_allclose(rec.scores, expected, atol=1e-9)
    assert rec.extras["r2"] == pytest.approx(1.0, abs=1e-9)


def test_kernel_shap_word_granularity_splits_a_word_evenly_over_its_pieces(linear):
    model, w = linear
    rec = run(model, [PIECES], KernelShap(samples=100, granularity="word", objective="logit"), target=1)[0]
    assert rec.tokens[2:7] == ["un", "##bel", "##ie", "##va", "##bly"]
    ids = model.tokenizer.convert_tokens_to_ids(rec.tokens)
    word = sum(float(w[i]) for i in ids[2:7])
    np.testing.assert_allclose(rec.scores[2:7], word / 5, atol=1e-9)
    np.testing.assert_allclose(rec.scores[[1, 7]], [float(w[ids[1]]), float(w[ids[7]])], atol=1e-9)
    assert rec.extras["features"] == 4
    assert rec.word_scores("sum")[1] == (0, "unbelievably", pytest.approx(word, abs=1e-9))


def brute_force_shapley(model: TextClassifier, ids: list[int], objective_target: int) -> np.ndarray:
    """Exact Shapley values of log p(target) over the pieces between [CLS] and [SEP] (removal)."""
    inner = ids[1:-1]
    m = len(inner)

    def value(kept: tuple[int, ...]) -> float:
        seq = torch.tensor([[ids[0], *[inner[i] for i in kept], ids[-1]]])
        with torch.no_grad():
            logits = model.forward_embeds(model.embed(seq), torch.ones_like(seq)).logits
        return float(logits.log_softmax(-1)[0, objective_target])

    cache = {s: value(s) for k in range(m + 1) for s in combinations(range(m), k)}
    phi = np.zeros(m)
    for i in range(m):
        for s, v in cache.items():
            if i in s:
                continue
            with_i = tuple(sorted((*s, i)))
            phi[i] += (cache[with_i] - v) / (m * comb(m - 1, len(s)))
    return phi


def test_kernel_shap_is_exact_when_every_coalition_fits_the_budget(tiny_model_f64):
    rec = run(tiny_model_f64, ["bad film , really"], KernelShap(samples=2 ** 5))[0]
    ids = tiny_model_f64.tokenizer.convert_tokens_to_ids(rec.tokens)
    assert len(ids) - 2 == 4
    phi = brute_force_shapley(tiny_model_f64, ids, rec.target)
    np.testing.assert_allclose(rec.scores[1:-1], phi, rtol=1e-8, atol=1e-12)
    assert rec.extras["evaluations"] == 2 ** 4


def test_kernel_shap_efficiency_on_a_nonlinear_model(tiny_model_f64):
    rec = run(tiny_model_f64, [LONG], KernelShap(samples=120))[0]
    cls, sep = tiny_model_f64.tokenizer.cls_token_id, tiny_model_f64.tokenizer.sep_token_id
    with torch.no_grad():
        empty = torch.tensor([[cls, sep]])
        f0 = tiny_model_f64.forward_embeds(tiny_model_f64.embed(empty), torch.ones_like(empty)).logits
    f0 = float(f0.log_softmax(-1)[0, rec.target])
    fx = float(np.log(rec.probabilities[rec.target]))
    assert rec.extras["empty_value"] == pytest.approx(f0, abs=1e-12)
    assert rec.scores.sum() == pytest.approx(fx - f0, abs=1e-9)
    assert abs(rec.extras["efficiency_gap"]) < 1e-12
    assert rec.extras["evaluations"] == 122 and rec.scores[0] == 0 and rec.scores[-1] == 0


def test_shapley_sampling_enumerates_small_sizes_with_their_kernel_weights():
    m = 10
    z, w = shap_coalitions(m, 100, np.random.default_rng(0))
    assert len(z) == 100 and len(np.unique(z, axis=0)) == 100
    assert not z.all(1).any() and z.any(1).all()            # neither full nor empty
    sizes = z.sum(1)
    assert ((sizes == 1).sum(), (sizes == 9).sum()) == (10, 10)  # sizes 1 and M-1 enumerated
    ratio = w[sizes == 1][0] / shapley_kernel(m, 1)
    assert w[(sizes == 1) | (sizes == 9)] / ratio == pytest.approx(np.full(20, shapley_kernel(m, 1)))
    assert w.sum() == pytest.approx(1.0)
    # every coalition of a paired size (s != M/2) comes with its complement (antithetic pairs), save
    # perhaps the last one drawn when the budget ran out
    keys = {row.tobytes() for row in z}
    paired = [row for row in z[:-1] if row.sum() != m // 2]
    assert len(paired) > 50 and all((~row).tobytes() in keys for row in paired)


# ------------------------------------------------------------------ LIME
def test_lime_ranks_the_planted_token_first():
    model = planted_classifier({"zebra": 3.0}, bias=-1.0)
    recs = run(model, ["the movie was zebra and the plot is fine", "zebra the story really"], Lime())
    for rec in recs:
        assert rec.tokens[int(np.argmax(np.abs(rec.scores)))] == "zebra"
        assert rec.scores[rec.tokens.index("zebra")] > 0  # supports the predicted (positive) label
        assert rec.extras["samples"] == 500 and 0 < rec.extras["r2"] <= 1


def test_weighted_ridge_equals_sklearn():
    rng = np.random.default_rng(1)
    x = rng.random((40, 6)) > 0.5
    y, w = rng.normal(size=40), rng.random(40) + 0.1
    coef, intercept, r2 = weighted_ridge(x.astype(float), y, w, alpha=1.0)
    ref = Ridge(alpha=1.0).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(coef, ref.coef_, atol=1e-10)
    assert intercept == pytest.approx(ref.intercept_, abs=1e-10)
    assert r2 == pytest.approx(ref.score(x, y, sample_weight=w), abs=1e-10)


def test_lime_sampling_and_kernel_follow_the_lime_package():
    z = lime_coalitions(8, 200, np.random.default_rng(0))
    assert z[0].all() and (z[1:].sum(1) <= 7).all()
    # lime removes randint(1, doc_size + 1) features: 1..8 of 8, the empty coalition included, uniformly
    removed = np.bincount(8 - z[1:].sum(1), minlength=9)
    assert removed[0] == 0 and (removed[1:] > 10).all()
    assert len(np.unique(z[1:][z[1:].sum(1) == 4], axis=0)) > 5  # which features: chosen at random
    assert not lime_coalitions(1, 5, np.random.default_rng(0))[1:].any()  # one feature: always removed
    k = exponential_kernel(np.array([[True] * 8, [True] * 2 + [False] * 6]), 0.25)
    d = 1 - np.sqrt(2 / 8)   # cosine distance of a 2-of-8 coalition to all-ones
    # lime: sqrt(exp(-(100 d)^2 / 25^2))
    np.testing.assert_allclose(k, [1.0, np.sqrt(np.exp(-(100 * d) ** 2 / 25 ** 2))])


def test_lime_on_a_linear_model_without_penalty_recovers_the_weights(linear):
    model, w = linear
    rec = run(model, [LONG], Lime(samples=400, alpha=0.0, objective="logit"), target=1)[0]
    ids = model.tokenizer.convert_tokens_to_ids(rec.tokens)
    np.testing.assert_allclose(rec.scores[1:-1], [float(w[i]) for i in ids[1:-1]], atol=1e-8)


# ------------------------------------------------------------------ shared behaviour
@pytest.mark.parametrize("cls", [Lime, KernelShap])
@pytest.mark.parametrize("perturbation", ["remove", "mask"])
def test_batched_equals_one_at_a_time(tiny_model_f64, cls, perturbation):
    texts = [LONG, "bad", PIECES]
    method = cls(samples=60, perturbation=perturbation, granularity="word", token_budget=512)
    together = run(tiny_model_f64, texts, method)
    for text, rec in zip(texts, together):
        alone = run(tiny_model_f64, [text], cls(samples=60, perturbation=perturbation, granularity="word"))[0]
        np.testing.assert_allclose(rec.scores, alone.scores, rtol=1e-9, atol=1e-12)
        numeric = {k: v for k, v in rec.extras.items() if not isinstance(v, str)}
        assert numeric == pytest.approx({k: alone.extras[k] for k in numeric}, rel=1e-9, abs=1e-12)
        assert {k: v for k, v in rec.extras.items() if isinstance(v, str)} == \
            {k: v for k, v in alone.extras.items() if isinstance(v, str)}


class CountingClassifier(TextClassifier):
    """Records the (rows, width) of every forward pass."""

    def __init__(self, base: TextClassifier) -> None:
        super().__init__(base.model, base.tokenizer, name="counting")
        self.calls: list[tuple[int, int]] = []

    def forward_embeds(self, embeds, attention_mask, token_type_ids=None, **kwargs):
        self.calls.append(tuple(attention_mask.shape))
        return super().forward_embeds(embeds, attention_mask, token_type_ids, **kwargs)


@pytest.mark.parametrize("cls", [Lime, KernelShap])
def test_perturbations_of_many_examples_share_token_budgeted_forwards(tiny_model, cls):
    model = CountingClassifier(tiny_model)
    texts = [LONG, "bad film", PIECES, "a gripping , funny film ."]
    batch = model.encode(texts)
    target = torch.zeros(len(texts), dtype=torch.long)
    # float32: "auto" may run its one-time bf16 probe through the same forward
    _, extras = cls(samples=60, token_budget=1 << 20, precision="float32").attribute(model, batch, target)
    rows = sum(e["evaluations"] for e in extras)
    assert rows > 100 and model.calls[0][0] == rows and len(model.calls) == 1  # every example, one forward
    model.calls.clear()
    _, again = cls(samples=60, token_budget=256, precision="float32").attribute(model, batch, target)
    assert [e["evaluations"] for e in again] == [e["evaluations"] for e in extras]
    assert sum(n for n, _ in model.calls) == rows and all(n * w <= 256 for n, w in model.calls)
    assert 1 < len(model.calls) < rows / 8  # chunks of many samples, never one forward per sample


@pytest.mark.parametrize("cls", [Lime, KernelShap])
def test_seed_reproducibility(tiny_model, cls):
    a = run(tiny_model, [LONG], cls(samples=50, seed=3))[0]
    b = run(tiny_model, [LONG], cls(samples=50, seed=3))[0]
    c = run(tiny_model, [LONG], cls(samples=50, seed=4))[0]
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.scores, c.scores)


def test_sentence_pairs_use_features_of_both_sequences(tiny_model_f64):
    rec = run(tiny_model_f64, ["A man sleeps."], KernelShap(samples=40, granularity="word"),
              pairs=["Nobody rests, unbelievably."])[0]
    specials = [i for i, s in enumerate(rec.sequence_ids) if s is None]
    assert (rec.scores[specials] == 0).all()
    assert rec.extras["features"] == len(rec.words[0]) + len(rec.words[1])
    assert all(rec.scores[i] != 0 for i, s in enumerate(rec.sequence_ids) if s == 1)
    assert rec.scores.sum() == pytest.approx(rec.extras["objective_value"] - rec.extras["empty_value"], abs=1e-9)


def test_feature_groups_follow_word_ids(tiny_model):
    batch = tiny_model.encode([PIECES])
    assert feature_groups(batch, 0, "word") == [[1], [2, 3, 4, 5, 6], [7], [8]]
    assert feature_groups(batch, 0, "token") == [[t] for t in range(1, 9)]


@pytest.mark.parametrize("params, message", [
    ({"samples": 0}, "samples must be a positive integer"),
    ({"samples": -3}, "samples must be a positive integer"),
    ({"perturbation": "blur"}, "unknown perturbation 'blur'"),
    ({"granularity": "sentence"}, "unknown granularity 'sentence'"),
    ({"objective": "nonsense"}, "unknown objective 'nonsense'"),
])
@pytest.mark.parametrize("name", ["lime", "kernel_shap"])
def test_bad_parameters_give_one_clear_error(name, params, message):
    with pytest.raises(UnmaskError, match=message):
        get_method(name, **params)


def test_lime_bad_kernel_width():
    with pytest.raises(UnmaskError, match="kernel_width must be positive"):
        Lime(kernel_width=0)


def test_cli_explain_with_lime(capsys, tiny_model, tmp_path):
    model_dir = tiny_model.save(tmp_path / "model")
    out = tmp_path / "out.json"
    assert main(["explain", "a gripping , funny film .", "--model", str(model_dir),
                 "--method", "lime,kernel_shap", "--json", str(out)]) == 0
    import json

    data = json.loads(out.read_text())
    assert set(data) == {"lime", "kernel_shap"}
    assert data["kernel_shap"][0]["extras"]["evaluations"] == 2 ** 6


def test_precision_auto_is_resolved_and_recorded(monkeypatch):
    """The default precision is "auto"; the record names what ran. Forcing "no native bf16" gives float32
    and the same scores as an explicit float32 run."""
    import unmask.attribution.precision as prec
    from unmask.attribution.kernel_shap import KernelShap
    from unmask.attribution.lime import Lime
    from unmask.models.tiny import tiny_classifier

    monkeypatch.setattr(prec, "device_has_native_bf16", lambda device: False)
    model = tiny_classifier(seed=0)
    batch = model.encode(["a good movie , not bad at all"])
    target = torch.tensor([1])
    for cls in (Lime, KernelShap):
        auto = cls(samples=64)
        assert auto.precision == "auto"
        scores, extras = auto.attribute(model, batch, target)
        assert all(e["precision"] == "float32" for e in extras)
        ref, _ = cls(samples=64, precision="float32").attribute(model, batch, target)
        assert torch.equal(scores, ref)
