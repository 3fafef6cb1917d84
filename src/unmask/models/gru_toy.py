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
    from unmask.training.loop import TensorStore, TrainingLoop

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
        progress=progress, log=lambda s: None)
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
