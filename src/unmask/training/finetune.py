"""Fine-tune a classifier on the shared training loop: per-epoch dev evaluation, checkpoints, resume.

The loss is pluggable (``LossFn``): plain cross-entropy for ``unmask train``; the Facade paper's
gradient-regularized objective (Eq. 5) for ``unmask facade regularize``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unmask.cache import data_fingerprint
from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.io import write_json_atomic
from unmask.models.classifier import TextClassifier
from unmask.training.batches import Tokenized, collate, epoch_batches, tokenize_examples
from unmask.training.loop import LoopState, TrainingLoop, run_settings, steps_for

LossFn = Callable[[TextClassifier, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_loss(model: TextClassifier, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy; returns (loss, logits)."""
    logits = model.forward_embeds(model.embed(batch["input_ids"]), batch["attention_mask"],
                                  batch["token_type_ids"]).logits
    return torch.nn.functional.cross_entropy(logits, batch["labels"]), logits


@dataclass
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_length: int = 128
    checkpoint_every: int = 500
    max_steps: int | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    seed: int = 0


@torch.no_grad()
def evaluate(model: TextClassifier, data: Tokenized, batch_size: int = 128) -> dict[str, float]:
    """Accuracy and predictions on pre-tokenized data (length-sorted batches)."""
    model.model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    preds = [0] * len(data)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = collate(data, idx, model.tokenizer.pad_token_id)
        logits = model.forward_embeds(model.embed(b["input_ids"]), b["attention_mask"],
                                      b["token_type_ids"]).logits
        for i, p in zip(idx, logits.argmax(-1).tolist()):
            preds[i] = p
    correct = sum(int(p == y) for p, y in zip(preds, data.labels))
    return {"accuracy": 100.0 * correct / max(len(data), 1), "predictions": preds}


def train_classifier(model: TextClassifier, train: list[Example], dev: list[Example], out: str | Path,
                     config: TrainConfig, loss_fn: LossFn = cross_entropy_loss,
                     progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train ``model`` in place; the best dev-accuracy model is saved to ``out`` (safetensors).

    Dev accuracy is measured at every epoch end and at the end of the budget. Resumes from
    ``out/checkpoint`` if present. Returns the metrics also written to ``out/metrics.json``.
    """
    if not train:
        raise UnmaskError("no training examples")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = train[:config.train_limit] if config.train_limit else train
    dev = dev[:config.eval_limit] if config.eval_limit else dev
    tr = tokenize_examples(model, train, config.max_length)
    dv = tokenize_examples(model, dev, config.max_length)
    lengths = [len(x) for x in tr.input_ids]

    def batches(epoch: int) -> list[list[int]]:
        return epoch_batches(lengths, config.batch_size, config.seed, epoch)

    per_epoch = len(batches(0))
    total = config.max_steps or steps_for(config.epochs, per_epoch)
    params = [p for p in model.model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    warm = max(1, int(config.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    pad = model.tokenizer.pad_token_id

    def loss(index: list[int], state: LoopState) -> tuple[torch.Tensor, dict[str, float]]:
        model.model.train()
        value, _ = loss_fn(model, collate(tr, index, pad))
        return value, {}

    def track(state: LoopState, stats: dict[str, float]) -> None:
        if "running_loss" in state.extra:  # a checkpoint written before the shared loop
            state.running["loss"] = state.extra.pop("running_loss")
        old = state.running.get("loss")
        state.running["loss"] = stats["loss"] if old is None else 0.98 * old + 0.02 * stats["loss"]

    def evaluate_dev(state: LoopState) -> None:
        metrics = evaluate(model, dv)
        state.history.append({"step": state.step, "epoch": state.step / per_epoch,
                              "dev_accuracy": metrics["accuracy"], "train_loss": state.running["loss"]})
        log(f"step {state.step}: dev accuracy {metrics['accuracy']:.2f}%")
        if metrics["accuracy"] > state.extra.get("best", -1.0):
            state.extra["best"] = metrics["accuracy"]
            model.save(out)

    loop = TrainingLoop(
        batches=batches, loss=loss, optimizers={"adamw": opt}, schedulers={"linear": sched},
        modules={"model": model.model}, max_steps=total, clip_params=params, clip_norm=1.0,
        checkpoint_dir=out / "checkpoint", checkpoint_every=config.checkpoint_every, checkpoint_at_epoch_end=True,
        eval_at_epoch_end=True, evaluate=evaluate_dev, after_update=track,
        postfix=lambda state, stats: {"loss": state.running["loss"], "epoch": state.epoch},
        seed=config.seed, what="training", desc=f"train {model.name}", progress=progress, log=log,
        settings=run_settings(config, train=data_fingerprint(train), dev=data_fingerprint(dev)))
    state = loop.run()
    result = {"best_dev_accuracy": state.extra.get("best", -1.0), "steps": state.step, "history": state.history,
              "config": asdict(config), "train_examples": len(tr), "dev_examples": len(dv),
              "seconds_this_run": loop.seconds}
    write_json_atomic(out / "metrics.json", result)
    return result
