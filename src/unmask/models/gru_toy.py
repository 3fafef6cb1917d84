"""The DiffMask toy model: embedding 64 -> per-position MLP -> GRU 64 -> linear.

The query ``<n, m>`` is embedded (its own table) and concatenated to every position's symbol embedding,
so the per-position MLP can decide whether the symbol matters; counting can only happen in the GRU
(paper section 4.1). As in the paper, the MLP ends in a ``bottleneck`` (2 by default: "we set [the
hidden states] to dimension 2 with the purpose of having a bottleneck"). States exposed for masking:

- layer 0: symbol embeddings ``e(x_i)`` (no query information yet)
- layer 1: MLP output ``f([e(x_i); q(n); q(m)])`` (the states the paper's Table 1 attributes to)
- layer 2: GRU outputs; the classifier reads the state at the last real position.

``run`` accepts a replacement for the symbol embeddings or for one layer's states, which is all DiffMask
and the toy comparison methods need.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from unmask.data.toy_counting import ToyData, ToyTaskConfig
from unmask.errors import UnmaskError
from unmask.io import write_json_atomic
from unmask.models.batch import Batch


@dataclass
class ToyStates:
    logits: torch.Tensor
    hidden: list[torch.Tensor]  # layers 0, 1, 2; each (B, T, H)


class GRUCounter(nn.Module):
    num_layers = 2

    def __init__(self, num_symbols: int = 10, embed: int = 64, hidden: int = 64, bottleneck: int = 2,
                 num_labels: int = 2) -> None:
        super().__init__()
        self.num_symbols, self.embed_size, self.hidden_size = num_symbols, embed, hidden
        self.bottleneck = bottleneck
        self.embedding = nn.Embedding(num_symbols + 1, embed)  # last row: padding
        self.query_embedding = nn.Embedding(num_symbols, embed)
        self.feed_forward = nn.Sequential(nn.Linear(3 * embed, hidden), nn.Tanh(), nn.Linear(hidden, bottleneck))
        self.gru = nn.GRU(bottleneck, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, num_labels)

    @property
    def layer_sizes(self) -> list[int]:
        return [self.embed_size, self.bottleneck, self.hidden_size]

    def run(self, data: ToyData, replace: dict[int, torch.Tensor] | None = None) -> ToyStates:
        """Forward pass; ``replace[k]`` (B, T, H_k) substitutes layer k's states and the rest is recomputed."""
        replace = replace or {}
        if bad := [k for k in replace if k not in (0, 1, 2)]:
            raise UnmaskError(f"toy model layer index must be 0, 1 or 2, got {bad[0]}")
        h0 = replace.get(0, self.embedding(data.sequences))
        query = self.query_embedding(data.queries).flatten(1)  # (B, 2E)
        q = query[:, None, :].expand(-1, h0.shape[1], -1)
        h1 = replace.get(1, self.feed_forward(torch.cat([h0, q], -1)))
        h2 = replace.get(2, self.gru(h1)[0])
        last = h2[torch.arange(h2.shape[0]), data.lengths - 1]
        return ToyStates(self.classifier(last), [h0, h1, h2])

    def forward(self, data: ToyData) -> torch.Tensor:
        return self.run(data).logits

    def config(self) -> dict:
        return {"num_symbols": self.num_symbols, "embed": self.embed_size, "hidden": self.hidden_size,
                "bottleneck": self.bottleneck, "num_labels": self.classifier.out_features}


@torch.no_grad()
def toy_accuracy(model: GRUCounter, data: ToyData, batch_size: int = 1024) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(data), batch_size):
        part = data.select(torch.arange(s, min(len(data), s + batch_size)))
        correct += int((model(part).argmax(-1) == part.labels).sum())
    return 100.0 * correct / len(data)


@dataclass
class ToyTrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    target_accuracy: float = 99.5


def train_toy_model(model: GRUCounter, train: ToyData, dev: ToyData, config: ToyTrainConfig = ToyTrainConfig(),
                    out: str | Path | None = None, progress: bool = True) -> dict:
    """Adam + cross-entropy on the shared training loop; stops early once dev accuracy reaches
    ``target_accuracy``. Keeps the best dev-accuracy weights; with ``out`` they are written to
    ``out/model.safetensors`` and the run checkpoints to ``out/checkpoint`` at every epoch end (and resumes).
    """
    from unmask.training.batches import shuffled_batches
    from unmask.training.loop import TensorStore, TrainingLoop, run_settings

    best = TensorStore()  # the best dev-accuracy weights, checkpointed with the run

    def loss(index, state):
        model.train()
        part = train.select(index)
        return nn.functional.cross_entropy(model(part), part.labels), {}

    def evaluate(state):  # at every epoch end
        acc = toy_accuracy(model, dev)
        state.history.append({"epoch": state.epoch, "dev_accuracy": acc})
        if acc > state.extra.get("best", -1.0):
            state.extra["best"] = acc
            best.set(model.state_dict())
        if state.extra["best"] >= config.target_accuracy:
            state.stop()

    loop = TrainingLoop(
        batches=lambda epoch: shuffled_batches(len(train), config.batch_size, config.seed, epoch), loss=loss,
        optimizers={"adam": torch.optim.Adam(model.parameters(), lr=config.lr)}, modules={"model": model, "best": best},
        max_steps=config.epochs * math.ceil(len(train) / config.batch_size), eval_at_epoch_end=True,
        evaluate=evaluate, checkpoint_dir=None if out is None else Path(out) / "checkpoint",
        checkpoint_at_epoch_end=True, seed=config.seed, what="toy GRU training", desc="train toy GRU",
        postfix=lambda state, stats: {"loss": stats["loss"], "best": state.extra.get("best", -1.0)},
        progress=progress, log=lambda s: None,
        settings=run_settings(config, model=model.config(), train=train.fingerprint(), dev=dev.fingerprint()))
    state = loop.run()
    model.load_state_dict(best.get())
    model.eval()
    result = {"dev_accuracy": state.extra["best"], "epochs_run": len(state.history), "history": state.history,
              "train_examples": len(train), "dev_examples": len(dev), "config": asdict(config),
              "seconds": loop.seconds}
    if out is not None:
        save_toy_model(model, out, train.config, result)
    return result


def save_toy_model(model: GRUCounter, out: str | Path, task: ToyTaskConfig, metrics: dict | None = None) -> Path:
    from safetensors.torch import save_file

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(d / "model.safetensors")
    write_json_atomic(d / "config.json", {"model": model.config(), "task": asdict(task), "metrics": metrics or {}})
    return d


def load_toy_model(directory: str | Path) -> tuple[GRUCounter, ToyTaskConfig, dict]:
    import json

    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise UnmaskError(f"{d}: not a toy model directory (needs config.json and model.safetensors)")
    meta = json.loads((d / "config.json").read_text())
    model = GRUCounter(**meta["model"])
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    return model.eval(), ToyTaskConfig(**meta["task"]), meta.get("metrics", {})


# ------------------------------------------------------------------------------------------ adapter
class ToyVocab:
    """Tokenizer-like ids of a ``ToyGRUAdapter``: real ids, then padding, then the occlusion fill ([MASK])."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pad_token_id, self.mask_token_id = size, size + 1
        self.unk_token_id = self.mask_token_id
        self.all_special_ids = [self.pad_token_id, self.mask_token_id]

    def __len__(self) -> int:
        return self.size + 2


class ToyGRUAdapter:
    """The toy GRU as a ``ModelAdapter`` (models/adapter.py), attributing to the states of ``layer``:

    - ``layer=0``: symbol embeddings. Token id = symbol; the query ``<n, m>`` rides in
      ``token_type_ids`` (n * S + m at every position), as BERT's segment ids ride beside the tokens.
    - ``layer=1``: the per-position MLP output (the paper's Table 1 states). It depends on the symbol
      and the query only, so the "vocabulary" is every (symbol, n, m): id = symbol * S^2 + n * S + m and
      ``embedding_matrix`` holds the MLP output of each, making ``embed`` an exact lookup.

    ``fill`` (layer-sized vector, default zeros) is the [MASK] row: what occlusion puts at a position.
    Text form of an input: ``"n m: s1 s2 ..."`` (``encode`` also takes a ``ToyData``).
    """

    supports_attention = False

    def __init__(self, model: GRUCounter, layer: int = 1, fill: torch.Tensor | None = None) -> None:
        if layer not in (0, 1):
            raise UnmaskError(f"the toy adapter attributes to layer 0 (symbols) or 1 (MLP states), got {layer}")
        self.model, self.layer, self.name = model.eval(), layer, f"toy_gru_layer{layer}"
        self.max_length = 512
        s = model.num_symbols
        self.tokenizer = ToyVocab(s if layer == 0 else s ** 3)
        dtype = model.classifier.weight.dtype
        size = model.layer_sizes[layer]
        fill = torch.zeros(size, dtype=dtype) if fill is None else fill.to(dtype)
        if fill.shape != (size,):
            raise UnmaskError(f"fill must have shape ({size},), got {tuple(fill.shape)}")
        with torch.no_grad():
            if layer == 0:
                table = model.embedding.weight.detach()  # last row = padding
            else:
                ids = torch.arange(s ** 3)
                sym, n, m = ids // (s * s), ids // s % s, ids % s
                q = model.query_embedding(torch.stack([n, m], 1)).flatten(1)
                table = torch.cat([model.feed_forward(torch.cat([model.embedding(sym), q], -1)),
                                   torch.zeros(1, size, dtype=dtype)])
        self._table = torch.cat([table, fill[None]]).detach()

    # ------------------------------------------------------------------------ labels
    @property
    def num_labels(self) -> int:
        return int(self.model.classifier.out_features)

    @property
    def label_names(self) -> list[str]:
        return ["not_more", "more"] if self.num_labels == 2 else [f"LABEL_{i}" for i in range(self.num_labels)]

    def label_index(self, label: int | str) -> int:
        if isinstance(label, str) and label in self.label_names:
            return self.label_names.index(label)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < self.num_labels:
            return label
        raise UnmaskError(f"unknown label {label!r}; the toy model has labels {', '.join(self.label_names)}")

    # ------------------------------------------------------------------------ inputs
    def parse(self, texts: list[str]) -> ToyData:
        """``"n m: s1 s2 ..."`` strings -> ``ToyData`` (labels computed from the counts)."""
        from unmask.data.toy_counting import ToyTaskConfig, toy_label

        s = self.model.num_symbols
        config = ToyTaskConfig(num_symbols=s, max_length=max(1, max(len(t.split(":")[-1].split()) for t in texts)))
        rows = []
        for i, t in enumerate(texts):
            head, _, body = t.partition(":")
            try:
                n, m = (int(v) for v in head.split())
                seq = [int(v) for v in body.split()]
            except ValueError:
                raise UnmaskError(f"toy input #{i} {t!r} is not 'n m: s1 s2 ...' (symbols as integers)") from None
            if not seq or not all(0 <= v < s for v in [n, m, *seq]) or n == m:
                raise UnmaskError(f"toy input #{i} {t!r}: need distinct n, m and at least one symbol, all in 0..{s - 1}")
            rows.append((seq, n, m))
        width = max(len(r[0]) for r in rows)
        seqs = torch.full((len(rows), width), s, dtype=torch.long)
        for i, (seq, _, _) in enumerate(rows):
            seqs[i, :len(seq)] = torch.tensor(seq)
        return ToyData(seqs, torch.tensor([len(r[0]) for r in rows]), torch.tensor([[r[1], r[2]] for r in rows]),
                       torch.tensor([toy_label(*r) for r in rows]), config)

    def encode(self, texts: "list[str] | ToyData", pairs: list[str | None] | None = None,
               on_too_long: str = "truncate") -> Batch:
        """A ``Batch`` of a ``ToyData`` (same width) or of ``"n m: s1 s2 ..."`` strings; pairs are not supported."""
        if pairs is not None and any(p is not None for p in pairs):
            raise UnmaskError("the toy model takes no pair texts")
        data = texts if isinstance(texts, ToyData) else self.parse([texts] if isinstance(texts, str) else list(texts))
        s, (rows, width) = self.model.num_symbols, data.sequences.shape
        mask = data.mask
        query = (data.queries[:, 0] * s + data.queries[:, 1])[:, None].expand(rows, width)
        symbols = data.sequences.clamp_max(s - 1)
        ids = symbols if self.layer == 0 else symbols * s * s + query
        ids = torch.where(mask, ids, torch.full_like(ids, self.tokenizer.pad_token_id))
        lengths = data.lengths.tolist()
        tokens = [[str(int(v)) for v in data.sequences[r, :lengths[r]]] + ["[PAD]"] * (width - lengths[r])
                  for r in range(rows)]
        texts_out = [f"{int(q[0])} {int(q[1])}: " + " ".join(tokens[r][:lengths[r]])
                     for r, q in enumerate(data.queries)]
        return Batch(input_ids=ids, attention_mask=mask.long(), token_type_ids=query.clone(), tokens=tokens,
                     word_ids=[list(range(n)) + [None] * (width - n) for n in lengths],
                     sequence_ids=[[0] * n + [None] * (width - n) for n in lengths],
                     words=[(tokens[r][:lengths[r]],) for r in range(rows)], texts=texts_out)

    # ------------------------------------------------------------------------ differentiable core
    @property
    def embedding_matrix(self) -> torch.Tensor:
        return self._table

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._table[input_ids]

    def forward_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, output_attentions: bool = False,
                       **kwargs) -> ToyStates:
        """Logits (and the states from ``layer`` on) with the ``layer`` states replaced by ``embeds``."""
        if output_attentions:
            raise UnmaskError("the toy GRU has no attention weights")
        m, s = self.model, self.model.num_symbols
        h = embeds
        if self.layer == 0:
            if token_type_ids is None:
                raise UnmaskError("layer-0 toy inputs need the query in token_type_ids (use encode)")
            q = m.query_embedding(torch.stack([token_type_ids[:, 0] // s, token_type_ids[:, 0] % s], 1)).flatten(1)
            h = m.feed_forward(torch.cat([h, q[:, None, :].expand(-1, h.shape[1], -1)], -1))
        h2 = m.gru(h)[0]
        last = h2[torch.arange(h2.shape[0]), attention_mask.sum(1).clamp_min(1) - 1]
        return ToyStates(m.classifier(last), [embeds, h, h2][self.layer:])

    def logits(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.forward_embeds(self.embed(batch.input_ids), batch.attention_mask, batch.token_type_ids).logits

    @property
    def special_token_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)
