"""Fine-tune a classifier with a progress bar, per-epoch dev evaluation, checkpoints and resume.

The loss is pluggable (``LossFn``): plain cross-entropy for ``unmask train``; the Facade paper's
gradient-regularized objective (Eq. 5) for ``unmask facade regularize``.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.io import write_json_atomic
from unmask.models.classifier import TextClassifier
from unmask.training.batches import Tokenized, collate, epoch_batches, tokenize_examples
from unmask.training.checkpoint import load_checkpoint, save_checkpoint

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

    Resumes from ``out/checkpoint`` if present. Returns the metrics also written to ``out/metrics.json``.
    """
    if not train:
        raise UnmaskError("no training examples")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    train = train[:config.train_limit] if config.train_limit else train
    dev = dev[:config.eval_limit] if config.eval_limit else dev
    tr = tokenize_examples(model, train, config.max_length)
    dv = tokenize_examples(model, dev, config.max_length)
    lengths = [len(x) for x in tr.input_ids]
    per_epoch = math.ceil(len(tr) / config.batch_size)
    total = config.max_steps or max(1, int(config.epochs * per_epoch))
    params = [p for p in model.model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    warm = max(1, int(config.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    meta = load_checkpoint(out / "checkpoint", {"model": model.model}, {"adamw": opt})
    step = meta["step"] if meta else 0
    history = meta["history"] if meta else []
    best = meta["best"] if meta else -1.0
    running = meta.get("running_loss") if meta else None  # so the logged loss continues, not restarts
    if meta:
        log(f"resumed from {out / 'checkpoint'} at step {step}/{total}")
    with warnings.catch_warnings():  # replaying the schedule: "step() before optimizer.step()" is expected
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(step):
            sched.step()
    bar = tqdm(total=total, initial=step, desc=f"train {model.name}", disable=not progress)
    started = time.time()
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        batches = epoch_batches(lengths, config.batch_size, config.seed, epoch)
        for index in batches[offset:]:
            model.model.train()
            b = collate(tr, index, model.tokenizer.pad_token_id)
            loss, logits = loss_fn(model, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", epoch=epoch)
            end_of_epoch = step % per_epoch == 0 or step == total
            if end_of_epoch:
                metrics = evaluate(model, dv)
                history.append({"step": step, "epoch": step / per_epoch, "dev_accuracy": metrics["accuracy"],
                                "train_loss": running})
                log(f"step {step}: dev accuracy {metrics['accuracy']:.2f}%")
                if metrics["accuracy"] > best:
                    best = metrics["accuracy"]
                    model.save(out)
            if step % config.checkpoint_every == 0 or end_of_epoch:
                save_checkpoint(out / "checkpoint", {"model": model.model}, {"adamw": opt},
                                {"step": step, "history": history, "best": best, "running_loss": running})
            if step >= total:
                break
    bar.close()
    result = {"best_dev_accuracy": best, "steps": step, "history": history, "config": asdict(config),
              "train_examples": len(tr), "dev_examples": len(dv),
              "seconds_this_run": round(time.time() - started, 1)}
    write_json_atomic(out / "metrics.json", result)
    return result
