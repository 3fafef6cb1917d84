"""Model adapters: tokenize -> batch -> logits from word embeddings."""
from unmask.models.batch import Batch, length_buckets
from unmask.models.classifier import DEFAULT_MODEL, TextClassifier, default_model_path, load_model
from unmask.models.split_layernorm import SplitLayerNorm

__all__ = ["Batch", "DEFAULT_MODEL", "SplitLayerNorm", "TextClassifier", "default_model_path",
           "length_buckets", "load_model"]
