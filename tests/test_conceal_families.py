"""Concealment (facade/conceal.py) works through the model's architecture, not BERT's module paths (issue 13):
permutation, noise and brief fine-tuning on tiny random DistilBERT (no ``.bert``, no pooler, ``q_lin`` /
``ffn.lin1`` names, ``pre_classifier``) and RoBERTa (``classifier.dense`` / ``out_proj`` head), and one clear
error naming an architecture it does not understand."""
import json

import pytest
import torch

from unmask.cli import main
from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.facade.conceal import add_noise, finetune_merged, logit_change, permute_hidden
from unmask.models import load_model
from unmask.models.tiny import BPE_CORPUS, tiny_classifier, tiny_distilbert_classifier, tiny_roberta_classifier

TEXTS = list(BPE_CORPUS)
PAIRS = list(reversed(BPE_CORPUS))
FAMILIES = {"distilbert": tiny_distilbert_classifier, "roberta": tiny_roberta_classifier, "bert": tiny_classifier}


def _f64(kind):
    model = FAMILIES[kind](seed=0)
    model.model.double()
    return model


def _perm_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The column permutation taking a to b (b[:, i] = a[:, perm[i]])."""
    return torch.tensor([int((a - b[:, [i]]).abs().sum(0).argmin()) for i in range(b.shape[1])])


@pytest.mark.parametrize("kind", ["distilbert", "roberta"])
def test_permutation_keeps_the_function_of_other_families(kind):
    model = _f64(kind)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    permuted = permute_hidden(model, seed=3)
    assert type(permuted.model) is type(model.model)
    for pairs in (None, PAIRS):
        batch = model.encode(TEXTS, pairs)
        torch.testing.assert_close(permuted.logits(batch), model.logits(batch), rtol=0, atol=1e-10)
    # really permuted: every hidden unit moved consistently (word embeddings' columns), input untouched
    perm = _perm_of(model.embedding_matrix[:200], permuted.embedding_matrix[:200])
    assert sorted(perm.tolist()) == list(range(32)) and not torch.equal(perm, torch.arange(32))
    torch.testing.assert_close(permuted.embedding_matrix, model.embedding_matrix[:, perm], rtol=0, atol=0)
    changed = [k for k, v in permuted.model.state_dict().items() if v.is_floating_point() and v.ndim == 2
               and not torch.equal(v, before[k])]
    assert len(changed) >= 2 * 6 + 2  # every layer's six Linears, the embeddings, the head
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())


def test_permutation_of_bert_is_what_it_was():
    """Seeds give the permutation of the BERT-only version (concealed models in experiments stay reproducible):
    pinned by the first hidden units of the permuted word embeddings and a pooler row."""
    model = tiny_classifier(seed=0)
    permuted = permute_hidden(model, seed=3)
    perm = _perm_of(model.embedding_matrix[:200], permuted.embedding_matrix[:200])
    g = torch.Generator().manual_seed(3)
    assert torch.equal(perm, torch.randperm(32, generator=g))  # p is the first draw, as before


@pytest.mark.parametrize("kind", ["distilbert", "roberta"])
def test_noise_and_finetuning_apply_to_other_families(kind):
    model = FAMILIES[kind](seed=0)
    noisy = add_noise(model, 1e-3, seed=0, where="all")
    change = logit_change(model, noisy, TEXTS)
    assert 0 < change["max_logit_change"] < 1e-1 and change["n"] == len(TEXTS)
    train = [Example(t, i % 2) for i, t in enumerate(TEXTS)]
    tuned = finetune_merged(permute_hidden(model, 1), train, steps=2, lr=1e-3, distill_to=model, batch_size=3)
    assert logit_change(model, tuned, TEXTS)["max_logit_change"] > 0


def test_cli_conceals_a_distilbert_directory(tmp_path, capsys):
    tiny_distilbert_classifier(seed=0).save(tmp_path / "plain")
    assert main(["facade", "conceal", str(tmp_path / "plain"), "--out", str(tmp_path / "hidden"),
                 "--permute", "2", "--noise", "1e-6", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["permute_seed"] == 2 and report["max_logit_change"] < 1e-4
    back = load_model(tmp_path / "hidden")
    assert type(back.model).__name__ == "DistilBertForSequenceClassification"


def test_an_architecture_it_does_not_understand_is_named_in_one_error():
    """ALBERT shares one layer across depths and factorizes its embeddings: no permutation rule fits."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    from unmask.models.classifier import TextClassifier

    bert = tiny_classifier(seed=0)
    config = AlbertConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, num_labels=2)
    albert = TextClassifier(AlbertForSequenceClassification(config), bert.tokenizer, name="tiny-albert")
    with pytest.raises(UnmaskError, match="cannot permute.*AlbertForSequenceClassification"):
        permute_hidden(albert, seed=0)
