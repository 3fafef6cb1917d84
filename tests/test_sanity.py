"""Model-parameter and label randomization tests (Adebayo et al. 2018) and method agreement."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from test_perturbation_models import planted_classifier
from unmask.attribution import explain
from unmask.data import Example
from unmask.errors import UnmaskError
from unmask.metrics.agreement import agreement_matrix, paired_correlations
from unmask.metrics.sanity import (data_randomization_test, randomization_blocks, randomization_test,
                                   randomized_copy, train_on_shuffled_labels)
from unmask.models.tiny import tiny_classifier
from unmask.training import TrainConfig

TEXTS = ["a gripping , funny and moving film .", "the plot is thin and the acting is worse .",
         "it is not as bad as you might think , but not good either .", "an unforgettable performance .",
         "I walked out after twenty minutes.", "Between the trailer and the film there is a world of difference.",
         "a dull , plodding mess", "what a lovely surprise this turned out to be"]


@pytest.fixture(scope="module")
def sharp():
    """A tiny BERT with larger weights, so its gradients depend strongly on every layer."""
    m = tiny_classifier(seed=2)
    with torch.no_grad():
        for p in m.model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return m


def test_blocks_top_down_for_bert_distilbert_roberta(tiny_model):
    from transformers import (DistilBertConfig, DistilBertForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)

    from unmask.models.classifier import TextClassifier

    assert randomization_blocks(tiny_model) == ["classifier", "bert.pooler", "bert.encoder.layer.1",
                                                "bert.encoder.layer.0", "bert.embeddings"]
    d = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=3, n_heads=4, hidden_dim=64))
    assert randomization_blocks(TextClassifier(d, tiny_model.tokenizer)) == [
        "classifier", "pre_classifier", "distilbert.transformer.layer.2", "distilbert.transformer.layer.1",
        "distilbert.transformer.layer.0", "distilbert.embeddings"]
    r = RobertaForSequenceClassification(RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=64))
    assert randomization_blocks(TextClassifier(r, tiny_model.tokenizer)) == [
        "classifier", "roberta.encoder.layer.1", "roberta.encoder.layer.0", "roberta.embeddings"]


def test_unrecognised_architecture_is_one_clear_error():
    m = planted_classifier({"zebra": 2.0})
    with pytest.raises(UnmaskError, match="not a recognised Hugging Face classifier"):
        randomization_blocks(m)
    with pytest.raises(UnmaskError, match="not a recognised"):
        randomization_test(m, ["a zebra"], "gradient")


def test_randomized_copy_changes_only_its_blocks_and_not_the_original(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    c = randomized_copy(tiny_model, ["classifier", "bert.encoder.layer.1"], seed=0)
    after = c.model.state_dict()
    for k, v in before.items():
        assert torch.equal(tiny_model.model.state_dict()[k], v)  # the original is untouched
        changed = not torch.equal(after[k], v)
        if k.startswith(("classifier.weight", "bert.encoder.layer.1.attention.self.query.weight")):
            assert changed, k
        if k.startswith(("bert.encoder.layer.0.", "bert.pooler.", "bert.embeddings.")):
            assert not changed, k
    ln = c.model.bert.encoder.layer[1].output.LayerNorm
    assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and torch.equal(ln.bias, torch.zeros_like(ln.bias))
    std = c.model.classifier.weight.std().item()
    assert 0.01 < std < 0.04  # N(0, initializer_range = 0.02)
    again = randomized_copy(tiny_model, ["bert.encoder.layer.1"], seed=0)  # same weights per block and seed
    assert torch.equal(again.model.bert.encoder.layer[1].intermediate.dense.weight,
                       c.model.bert.encoder.layer[1].intermediate.dense.weight)
    with pytest.raises(UnmaskError, match="unknown block 'bert.decoder'"):
        randomized_copy(tiny_model, ["bert.decoder"])


@pytest.mark.parametrize("method", ["gradient_x_input", "integrated_gradients"])
def test_cascading_correlation_is_one_untouched_and_falls_as_layers_are_randomized(sharp, method):
    res = randomization_test(sharp, TEXTS, method, mode="cascading")
    names = [s.name for s in res.stages]
    assert names == ["none", "classifier", "bert.pooler", "bert.encoder.layer.1", "bert.encoder.layer.0",
                     "bert.embeddings"]
    rho = res.spearman
    assert rho[0] == pytest.approx(1.0, abs=1e-6)  # untouched copy
    assert np.nanmean(res.stages[0].pearson) == pytest.approx(1.0, abs=1e-6)
    assert max(rho[1:]) < 0.8 and np.mean(rho[1:]) < 0.5  # falls once the head is random
    assert res.stages[-1].randomized == names[1:]
    d = res.to_dict()
    assert d["n_inputs"] == len(TEXTS) and d["stages"][0]["spearman"] == pytest.approx(1.0, abs=1e-6)


def test_attention_ignores_the_head_a_method_independent_of_those_weights_stays_at_one(sharp):
    """Negative control: [CLS] attention does not read the classifier or pooler, so randomizing them
    leaves its maps exactly as they were; randomizing the last encoder layer does not."""
    rho = randomization_test(sharp, TEXTS, "attention").spearman
    assert rho[:3] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    assert max(rho[3:]) < 0.5


def test_independent_randomizes_one_block_at_a_time(sharp):
    res = randomization_test(sharp, TEXTS[:4], "gradient_x_input", mode="independent")
    assert [s.randomized for s in res.stages[1:]] == [[s.name] for s in res.stages[1:]]
    assert res.spearman[0] == pytest.approx(1.0, abs=1e-6) and max(res.spearman[1:]) < 0.9
    casc = randomization_test(sharp, TEXTS[:4], "gradient_x_input", mode="cascading")
    # stage 1 (the head only) is the same model in both modes
    np.testing.assert_allclose(res.stages[1].spearman, casc.stages[1].spearman)


def test_randomization_with_pairs(sharp):
    res = randomization_test(sharp, ["A man sleeps.", "Two dogs run in a park"], "gradient",
                             pairs=["A person rests.", "Animals move"])
    assert res.spearman[0] == pytest.approx(1.0, abs=1e-6) and len(res.stages) == 6


def test_randomization_bad_mode(tiny_model):
    with pytest.raises(UnmaskError, match="unknown randomization mode 'top-down'"):
        randomization_test(tiny_model, TEXTS, "gradient", mode="top-down")
    with pytest.raises(UnmaskError, match="unknown method"):
        randomization_test(tiny_model, TEXTS, "no_such_method")


def test_label_randomization_with_a_model_trained_on_shuffled_labels(tmp_path):
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "great", "awful", "the", "a"]
    data = [Example(" ".join(rng.choice(words, 5)), int(i % 2)) for i in range(64)]
    start = tiny_classifier(seed=3)
    trained = tiny_classifier(seed=3)
    shuffled = train_on_shuffled_labels(start, data, tmp_path / "shuffled",
                                        TrainConfig(max_steps=8, batch_size=16, lr=1e-3, seed=0))
    assert (tmp_path / "shuffled" / "model.safetensors").is_file()
    # the starting model is untouched: its copy was trained
    for a, b in zip(start.model.parameters(), trained.model.parameters()):
        assert torch.equal(a, b)
    stage = data_randomization_test(trained, shuffled, TEXTS[:4], "gradient_x_input")
    assert stage.name == "label-randomized" and len(stage.spearman) == 4
    assert np.nanmean(stage.spearman) < 0.95
    same = data_randomization_test(trained, trained, TEXTS[:4], "gradient_x_input")
    assert np.nanmean(same.spearman) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(UnmaskError, match="no training examples"):
        train_on_shuffled_labels(start, [], tmp_path / "x")


# ----------------------------------------------------------------------------------- agreement
def test_agreement_matrix_by_hand(tiny_model):
    (r,) = explain(tiny_model, ["a b c d"], ["gradient"])["gradient"]  # [CLS] a b c d [SEP]
    a = replace(r, method="a", scores=np.array([9.0, 1, 2, 3, 4, -9]))
    b = replace(r, method="b", scores=np.array([0.0, -1, -2, -3, -4, 0]))  # same |scores| order
    c = replace(r, method="c", scores=np.array([0.0, 4, 3, 2, 1, 0]))  # reversed
    d = replace(r, method="d", scores=np.array([0.0, 1, 3, 2, 4, 0]))  # one swap
    names, m = agreement_matrix({"a": [a], "b": [b], "c": [c], "d": [d]})
    assert names == ["a", "b", "c", "d"]
    np.testing.assert_allclose(np.diag(m), 1.0)
    np.testing.assert_allclose(m, m.T)
    assert m[0, 1] == pytest.approx(1.0) and m[0, 2] == pytest.approx(-1.0) and m[0, 3] == pytest.approx(0.8)
    _, k = agreement_matrix({"a": [a], "d": [d]}, statistic="kendall")
    assert k[0, 1] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair of 6
    _, t = agreement_matrix({"a": [a], "c": [c], "d": [d]}, statistic="top_k", k=2)
    assert t[0, 1] == 0.0 and t[0, 2] == 0.5  # top-2 {d, c} vs {a, b} and vs {d, b}
    const = replace(r, scores=np.array([0.0, 1, 1, 1, 1, 0]))
    assert np.isnan(paired_correlations([a], [const])[0])  # constant map: undefined, left out
    _, withc = agreement_matrix({"a": [a, a], "x": [const, b]})
    assert withc[0, 1] == pytest.approx(1.0)


def test_agreement_errors(tiny_model):
    recs = explain(tiny_model, ["a b c d", "e f"], ["gradient"])["gradient"]
    with pytest.raises(UnmaskError, match="unknown statistic 'cosine'"):
        agreement_matrix({"a": recs, "b": recs}, statistic="cosine")
    with pytest.raises(UnmaskError, match="same inputs"):
        agreement_matrix({"a": recs, "b": recs[:1]})
    with pytest.raises(UnmaskError, match="different tokens"):
        agreement_matrix({"a": recs, "b": recs[::-1]})
    with pytest.raises(UnmaskError, match="no methods"):
        agreement_matrix({})
