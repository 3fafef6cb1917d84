"""The Facade model g: a randomly initialized BERT shaped to be merged with a predictive model.

g shares everything the merge needs with the predictive model f (layer count, vocabulary, positions,
token types, labels, head size, activation, LayerNorm eps, tokenizer) and differs only in width:
by default 256 hidden (8 heads of 32 for MiniLM) and an FFN of 3072, as in the Facade paper.
"""
from __future__ import annotations

import torch

from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier


def head_size_of(config) -> int:
    """Per-head width (hidden / heads) of a BERT config."""
    return int(config.hidden_size) // int(config.num_attention_heads)


def check_bert(model: TextClassifier, role: str) -> None:
    """Raise ``UnmaskError`` unless ``model`` is a BERT-family encoder the merge understands."""
    config = model.model.config
    kind = getattr(config, "model_type", None)
    if kind != "bert":
        raise UnmaskError(f"{role} model is of type {kind!r}; Facade models and merging support "
                          f"BERT-family models (model_type 'bert') only")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise UnmaskError(f"{role} model is a BERT decoder / cross-attention model; only encoders are supported")


def facade_config(predictive: TextClassifier, hidden: int = 256, intermediate: int = 3072,
                  head_size: int | None = None, dropout: float = 0.0):
    """BertConfig of a Facade model for ``predictive``: same depth, vocabulary, labels and head size.

    ``head_size`` defaults to the predictive model's (the merge requires equal head sizes); ``hidden``
    must be a multiple of it. ``dropout`` (default 0) applies to hidden states and attention.
    """
    from transformers import BertConfig

    check_bert(predictive, "predictive")
    p = predictive.model.config
    head = head_size or head_size_of(p)
    if hidden <= 0 or intermediate <= 0 or head <= 0:
        raise UnmaskError(f"Facade sizes must be positive (hidden={hidden}, intermediate={intermediate}, "
                          f"head_size={head})")
    if hidden % head:
        raise UnmaskError(f"Facade hidden size {hidden} is not a multiple of the head size {head} "
                          f"(the predictive model's heads are {head_size_of(p)} wide); pick e.g. "
                          f"{max(head, hidden // head * head)}")
    if not 0.0 <= dropout < 1.0:
        raise UnmaskError(f"dropout must be in [0, 1), not {dropout}")
    return BertConfig(
        vocab_size=p.vocab_size, hidden_size=hidden, num_hidden_layers=p.num_hidden_layers,
        num_attention_heads=hidden // head, intermediate_size=intermediate, hidden_act=p.hidden_act,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=p.max_position_embeddings, type_vocab_size=p.type_vocab_size,
        layer_norm_eps=p.layer_norm_eps, pad_token_id=p.pad_token_id, initializer_range=p.initializer_range,
        num_labels=predictive.num_labels, id2label=dict(enumerate(predictive.label_names)),
        label2id={n: i for i, n in enumerate(predictive.label_names)},
        architectures=["BertForSequenceClassification"], attn_implementation="eager")


def new_facade(predictive: TextClassifier, seed: int = 0, hidden: int = 256, intermediate: int = 3072,
               head_size: int | None = None, dropout: float = 0.0) -> TextClassifier:
    """A randomly initialized Facade classifier for ``predictive`` (same tokenizer, dtype and device).

    Deterministic in ``seed``; the global torch RNG state is left untouched.
    """
    from transformers import BertForSequenceClassification

    config = facade_config(predictive, hidden=hidden, intermediate=intermediate, head_size=head_size,
                           dropout=dropout)
    ref = predictive.embedding_matrix
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    model = model.to(dtype=ref.dtype, device=ref.device)
    return TextClassifier(model, predictive.tokenizer, max_length=predictive.max_length, name="facade")
