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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from unmask.data.toy_counting import ToyData, ToyTaskConfig
from unmask.errors import UnmaskError
from unmask.io import write_json_atomic


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
    """Adam + cross-entropy; stops early once dev accuracy reaches ``target_accuracy``.

    Keeps the best dev-accuracy weights; with ``out`` they are written to ``out/model.safetensors``.
    """
    torch.manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    per_epoch = math.ceil(len(train) / config.batch_size)
    best, best_state, history = -1.0, None, []
    started = time.time()
    bar = tqdm(total=config.epochs * per_epoch, desc="train toy GRU", disable=not progress)
    g = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        for s in range(0, len(train), config.batch_size):
            part = train.select(order[s:s + config.batch_size])
            loss = nn.functional.cross_entropy(model(part), part.labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", best=f"{best:.2f}")
        acc = toy_accuracy(model, dev)
        history.append({"epoch": epoch + 1, "dev_accuracy": acc})
        if acc > best:
            best, best_state = acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
        if best >= config.target_accuracy:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    result = {"dev_accuracy": best, "epochs_run": len(history), "history": history,
              "train_examples": len(train), "dev_examples": len(dev), "config": asdict(config),
              "seconds": round(time.time() - started, 1)}
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
