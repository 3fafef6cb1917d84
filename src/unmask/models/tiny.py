"""Tiny randomly initialized BERT classifiers for tests and examples (seconds on a CPU)."""
from __future__ import annotations

import torch

from unmask.models.classifier import TextClassifier, default_model_path


def tiny_bert_config(hidden: int = 32, layers: int = 2, heads: int = 4, intermediate: int = 64,
                     num_labels: int = 2, vocab_size: int = 30522, max_position: int = 512):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=intermediate,
                      max_position_embeddings=max_position, num_labels=num_labels,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      attn_implementation="eager")


def tiny_classifier(seed: int = 0, **config_kwargs) -> TextClassifier:
    """A random BERT classifier with MiniLM's WordPiece tokenizer (vocab 30522)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_bert_config(**config_kwargs))
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)
    return TextClassifier(model, tokenizer, name="tiny")
