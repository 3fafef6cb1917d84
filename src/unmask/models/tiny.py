"""Tiny randomly initialized classifiers for tests and examples (seconds on a CPU): BERT with MiniLM's
WordPiece tokenizer, and, built offline from their configs, DistilBERT (no ``.bert``, no token types) and
RoBERTa with a small byte-level BPE tokenizer ("Ġ" marks a word start, no "##")."""
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


BPE_CORPUS = (
    "a gripping , funny and moving film that never lets go .",
    "the movie was long , dull and far too loud .",
    "not as bad as you think , and the acting is good .",
    "an unbelievably tedious affair ; don't see it !",
    "the plot is thin but the performances are wonderful .",
    "it's a charming , heartfelt and beautifully made story .",
)


def tiny_bpe_tokenizer(vocab_size: int = 300):
    """A RoBERTa tokenizer with a byte-level BPE vocabulary trained on ``BPE_CORPUS`` (no download)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(BPE_CORPUS) * 4, trainer)
    spec = json.loads(bpe.to_str())["model"]
    return RobertaTokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]])


def tiny_roberta_classifier(seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4,
                            intermediate: int = 64, num_labels: int = 2) -> TextClassifier:
    """A random RoBERTa classifier with ``tiny_bpe_tokenizer()``."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    tokenizer = tiny_bpe_tokenizer()
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=130,
                           num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    return TextClassifier(RobertaForSequenceClassification(config), tokenizer, max_length=128, name="tiny-roberta")


def tiny_distilbert_classifier(seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4,
                               intermediate: int = 64, num_labels: int = 2) -> TextClassifier:
    """A random DistilBERT classifier (``.distilbert.transformer.layer``, no pooler) with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=30522, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=intermediate,
                              num_labels=num_labels, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)
    return TextClassifier(DistilBertForSequenceClassification(config), tokenizer, name="tiny-distilbert")
