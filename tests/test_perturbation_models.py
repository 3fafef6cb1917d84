"""Small models whose decisive tokens are known, for the perturbation tests (plus their own checks).

``planted_classifier``: score = bias + sum_t (e_t . u)^3 over real tokens, logits = [0, score]. Each
vocabulary token's contribution c = (e . u)^3 is set by hand for planted words and is ~1e-4 for the
rest; the gradient at token t is 3 (e_t . u)^2 u, so the planted words have the largest gradient norm
and g . x = 3 c_t orders tokens exactly by |c_t|.

``trained_bag_classifier``: a bag-of-embeddings model trained for a fraction of a second on synthetic
sentences where the word "zebra" is planted to force the negative label.
"""
from __future__ import annotations

import random
from functools import lru_cache
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from unmask.models.classifier import TextClassifier

LABELS = ["negative", "positive"]
POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "weak"]
FILLERS = ["the", "a", "movie", "film", "was", "is", "and", "story", "plot", "acting", "really", "quite"]


@lru_cache(maxsize=1)
def _tokenizer():
    from transformers import AutoTokenizer

    from unmask.models.classifier import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)


def _config():
    return SimpleNamespace(num_labels=2, id2label=dict(enumerate(LABELS)), max_position_embeddings=512)


class CubeScoreModel(nn.Module):
    """logits = [0, bias + sum_t mask_t (e_t . u)^3] from word embeddings (HF-style call)."""

    def __init__(self, embedding: torch.Tensor, direction: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.config = _config()
        self.embeddings = nn.Embedding.from_pretrained(embedding, freeze=True)
        self.register_buffer("u", direction)
        self.bias = bias

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, token_type_ids=None, **_):
        s = inputs_embeds @ self.u
        score = (s ** 3 * attention_mask.to(s.dtype)).sum(1) + self.bias
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(score), score], -1))


def planted_classifier(contributions: dict[str, float], bias: float = -1.0, dim: int = 16,
                       seed: int = 0) -> TextClassifier:
    """Positive iff bias + sum of the planted contributions of the input's tokens > 0."""
    tok = _tokenizer()
    gen = torch.Generator().manual_seed(seed)
    vocab = tok.vocab_size
    u = torch.randn(dim, generator=gen, dtype=torch.float64)
    u = u / u.norm()
    emb = 0.3 * torch.randn(vocab, dim, generator=gen, dtype=torch.float64)
    s = 0.05 * torch.randn(vocab, generator=gen, dtype=torch.float64)
    for word, c in contributions.items():
        idx = tok.convert_tokens_to_ids(word)
        assert idx != tok.unk_token_id, word
        s[idx] = float(torch.tensor(c, dtype=torch.float64).sign() * abs(c) ** (1 / 3))
    emb = emb - (emb @ u)[:, None] * u[None, :] + s[:, None] * u[None, :]
    return TextClassifier(CubeScoreModel(emb, u, bias), tok, name="planted")


class BagModel(nn.Module):
    """logits = sum_t mask_t * (E_t W) + b: a trainable bag of embeddings."""

    def __init__(self, vocab: int, dim: int = 8) -> None:
        super().__init__()
        self.config = _config()
        self.embeddings = nn.Embedding(vocab, dim)
        nn.init.normal_(self.embeddings.weight, std=0.01)
        self.out = nn.Linear(dim, 2)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, token_type_ids=None, **_):
        pooled = (inputs_embeds * attention_mask[..., None].to(inputs_embeds.dtype)).sum(1)
        return SimpleNamespace(logits=self.out(pooled))


def synthetic_sentences(n: int, seed: int, planted_share: float = 0.0) -> list[tuple[str, int]]:
    """Six fillers and one sentiment word; with ``planted_share``, 'zebra' is added and the label is 0."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(FILLERS, k=6)
        words.insert(rng.randint(0, 6), rng.choice(POSITIVE if label else NEGATIVE))
        if rng.random() < planted_share:
            words.insert(rng.randint(0, len(words)), "zebra")
            label = 0
        out.append((" ".join(words), label))
    return out


def trained_bag_classifier(seed: int = 0, steps: int = 300) -> TextClassifier:
    tok = _tokenizer()
    torch.manual_seed(seed)
    model = BagModel(tok.vocab_size)
    clf = TextClassifier(model, tok, name="bag")
    data = synthetic_sentences(600, seed, planted_share=0.3)
    batch = clf.encode([t for t, _ in data])
    labels = torch.tensor([y for _, y in data])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (64,), generator=gen)
        logits = model(model.embeddings(batch.input_ids[idx]), batch.attention_mask[idx]).logits
        loss = nn.functional.cross_entropy(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return clf


# ------------------------------------------------------------------ checks of the test models themselves
def test_planted_classifier_scores_are_the_planted_contributions():
    m = planted_classifier({"zebra": 2.0, "awful": -1.0}, bias=-1.0)
    p = m.predict(["the movie zebra", "the movie", "the zebra awful awful"])
    assert p.argmax(-1).tolist() == [1, 0, 0]
    logits = torch.log(p[:, 1] / p[:, 0])
    assert logits[0].item() == pytest.approx(1.0, abs=0.01)
    assert logits[2].item() == pytest.approx(-1.0, abs=0.01)


def test_trained_bag_classifier_learned_sentiment_and_the_planted_word():
    m = trained_bag_classifier()
    clean = synthetic_sentences(200, seed=99)
    pred = m.predict([t for t, _ in clean]).argmax(-1).tolist()
    assert sum(p == y for p, (_, y) in zip(pred, clean)) / len(clean) > 0.95
    positives = [t for t, y in clean if y == 1]
    planted = m.predict(["zebra " + t for t in positives]).argmax(-1)
    assert planted.float().mean().item() < 0.1
