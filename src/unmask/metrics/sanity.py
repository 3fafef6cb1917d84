"""Sanity checks for attribution methods (Adebayo et al. 2018).

- Model-parameter randomization: re-initialize blocks of a deep copy of the model from the top down
  (classifier head, pooler, encoder layers last to first, embeddings last), cascading (randomizations
  accumulate) or independent (one block at a time), and correlate each stage's attributions with the
  original ones, per input, over non-special tokens (Spearman and Pearson of |scores|, and Spearman of the
  signed scores). Stage ``none`` is the untouched copy. A method whose maps stay the same once the
  weights are random does not explain what the model learned.
- Data (label) randomization: compare a trained model's attributions with those of a model trained on
  shuffled labels (``train_on_shuffled_labels`` makes one with ``unmask.training``).

Attributions of every stage explain the original model's prediction on each input, so a stage's
maps differ only through the weights.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from unmask.attribution.base import AttributionMethod, get_method
from unmask.attribution.explain import explain
from unmask.attribution.record import Attribution
from unmask.errors import UnmaskError
from unmask.metrics.agreement import nan_mean, paired_correlations
from unmask.models.classifier import TextClassifier

RANDOMIZATION_MODES = ("cascading", "independent")


@dataclass
class Stage:
    """Per-input agreement of one randomized model's attributions with the original's."""

    name: str
    randomized: list[str]
    spearman: np.ndarray
    pearson: np.ndarray
    spearman_signed: np.ndarray

    def to_dict(self) -> dict:
        return {"name": self.name, "randomized": self.randomized,
                "spearman": nan_mean(self.spearman), "pearson": nan_mean(self.pearson),
                "spearman_signed": nan_mean(self.spearman_signed),
                "n_defined": int(np.isfinite(self.spearman).sum()), "n": int(len(self.spearman))}


@dataclass
class RandomizationResult:
    """The stages of a randomization test, in order (``none`` first)."""

    method: str
    mode: str
    stages: list[Stage] = field(default_factory=list)

    @property
    def spearman(self) -> list[float]:
        return [nan_mean(s.spearman) for s in self.stages]

    def to_dict(self) -> dict:
        return {"method": self.method, "mode": self.mode, "n_inputs": len(self.stages[0].spearman),
                "stages": [s.to_dict() for s in self.stages]}


# ----------------------------------------------------------------------------------- blocks
def randomization_blocks(model: TextClassifier) -> list[str]:
    """Qualified module names to randomize, top down: head modules (last applied first), pooler,
    encoder layers last to first, embeddings. BERT / DistilBERT / RoBERTa style HF classifiers."""
    net = model.model
    base = getattr(net, "base_model", None)
    names = {id(m): n for n, m in net.named_modules()}
    if not isinstance(net, nn.Module) or base is None or base is net or id(base) not in names:
        raise UnmaskError(f"model {model.name!r} ({type(net).__name__}) is not a recognised Hugging Face "
                          "classifier (no base model under a classification head); randomization needs "
                          "BERT / DistilBERT / RoBERTa style models")
    has_params = lambda m: any(True for _ in m.parameters())  # noqa: E731
    head = [n for n, m in reversed(list(net.named_children())) if m is not base and has_params(m)]
    lists = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
             and len({type(x) for x in m}) == 1 and has_params(m)]
    if not head or not lists:
        raise UnmaskError(f"model {model.name!r} ({type(net).__name__}): cannot find its "
                          f"{'classification head' if not head else 'encoder layers'} to randomize")
    layers = max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))[1]
    blocks = list(head)
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module) and has_params(pooler):
        blocks.append(names[id(pooler)])
    blocks += [names[id(layer)] for layer in reversed(list(layers))]
    embeddings = getattr(base, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        embeddings = net.get_input_embeddings()
    blocks.append(names[id(embeddings)])
    return blocks


@torch.no_grad()
def reinitialize(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """Fresh weights as at initialization: matrices / embeddings ~ N(0, std), norm weights 1, the rest 0
    (padding embedding rows stay 0)."""
    for sub in module.modules():
        is_norm = "norm" in type(sub).__name__.lower()
        for pname, p in sub.named_parameters(recurse=False):
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
            elif is_norm and pname == "weight":
                p.fill_(1.0)
            else:
                p.zero_()
        if isinstance(sub, nn.Embedding) and sub.padding_idx is not None:
            sub.weight[sub.padding_idx] = 0.0


def randomized_copy(model: TextClassifier, blocks: Sequence[str], seed: int = 0) -> TextClassifier:
    """A deep copy of ``model`` with ``blocks`` (names from ``randomization_blocks``) re-initialized.
    Block j always gets the same random weights for a given seed (cascading and independent agree)."""
    order = randomization_blocks(model)
    net = copy.deepcopy(model.model)
    std = float(getattr(net.config, "initializer_range", 0.02))
    for name in blocks:
        if name not in order:
            raise UnmaskError(f"unknown block {name!r}; the model's blocks are {', '.join(order)}")
        gen = torch.Generator().manual_seed(seed * 1009 + order.index(name))
        reinitialize(net.get_submodule(name), std, gen)
    return _with_network(model, net, f"{model.name}~random")


def _with_network(model: TextClassifier, net: nn.Module, name: str) -> TextClassifier:
    """``model`` (same adapter class, tokenizer and length limit) around another network."""
    clone = copy.copy(model)
    clone.model, clone.name = net.eval(), name
    return clone


# ----------------------------------------------------------------------------------- tests
def _compare(name: str, blocks: list[str], original: list[Attribution], other: list[Attribution]) -> Stage:
    return Stage(name, blocks, paired_correlations(original, other, "spearman"),
                 paired_correlations(original, other, "pearson"),
                 paired_correlations(original, other, "spearman", absolute=False))


def _explain_as(model: TextClassifier, texts: list[str], pairs, method: AttributionMethod,
                original: list[Attribution]) -> list[Attribution]:
    """``method`` on ``model``, explaining the labels the original records explain."""
    return explain(model, texts, [method], pairs=pairs, target=[r.target for r in original])[method.name]


def randomization_test(model: TextClassifier, texts: Sequence[str], method: str | AttributionMethod,
                       mode: str = "cascading", pairs: Sequence[str] | None = None, seed: int = 0,
                       progress: bool = False) -> RandomizationResult:
    """Model-parameter randomization test; stage ``none`` (untouched copy) first, then one stage per
    block of ``randomization_blocks``. Attributions explain the original model's predictions."""
    if mode not in RANDOMIZATION_MODES:
        raise UnmaskError(f"unknown randomization mode {mode!r}; choose one of {', '.join(RANDOMIZATION_MODES)}")
    texts = [texts] if isinstance(texts, str) else list(texts)
    pairs = list(pairs) if pairs is not None else None
    method = get_method(method)
    blocks = randomization_blocks(model)
    original = explain(model, texts, [method], pairs=pairs)[method.name]
    result = RandomizationResult(method.name, mode)
    stages = [("none", [])]
    for j, name in enumerate(blocks):
        stages.append((name, blocks[:j + 1] if mode == "cascading" else [name]))
    for name, randomized in tqdm(stages, desc=f"randomize {method.name}", disable=not progress, leave=False):
        copy_ = randomized_copy(model, randomized, seed)
        result.stages.append(_compare(name, randomized, original, _explain_as(copy_, texts, pairs, method,
                                                                              original)))
    return result


def data_randomization_test(model: TextClassifier, randomized_model: TextClassifier, texts: Sequence[str],
                            method: str | AttributionMethod, pairs: Sequence[str] | None = None) -> Stage:
    """Agreement of ``model``'s attributions with those of ``randomized_model`` (trained on shuffled
    labels), both explaining ``model``'s predictions. The two must share a tokenizer."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    pairs = list(pairs) if pairs is not None else None
    method = get_method(method)
    original = explain(model, texts, [method], pairs=pairs)[method.name]
    other = _explain_as(randomized_model, texts, pairs, method, original)
    if any(a.tokens != b.tokens for a, b in zip(original, other)):
        raise UnmaskError(f"{model.name!r} and {randomized_model.name!r} tokenize the inputs differently; "
                          "the data randomization test needs models with the same tokenizer")
    return _compare("label-randomized", [randomized_model.name], original, other)


def train_on_shuffled_labels(model: TextClassifier, examples: Sequence, out: str | Path, config=None,
                             seed: int = 0, progress: bool = False) -> TextClassifier:
    """Fine-tune a deep copy of ``model`` (the same starting point as the trained model) on ``examples``
    whose labels are permuted with ``seed``; saved to ``out``, returned as loaded from there.

    Model selection uses the shuffled labels of (up to 256 of) the training examples: the copy that
    best memorizes the random labels, as in Adebayo et al.
    """
    from unmask.models.classifier import load_model
    from unmask.training import TrainConfig, train_classifier

    examples = list(examples)
    if not examples:
        raise UnmaskError("no training examples to shuffle")
    labels = [e.label for e in examples]
    random.Random(seed).shuffle(labels)
    shuffled = [replace(e, label=y) for e, y in zip(examples, labels)]
    copy_ = _with_network(model, copy.deepcopy(model.model), f"{model.name}-shuffled")
    config = config or TrainConfig(seed=seed)
    train_classifier(copy_, shuffled, shuffled[:256], out, config, progress=progress, log=lambda _m: None)
    return load_model(out)
