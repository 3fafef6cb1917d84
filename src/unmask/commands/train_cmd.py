"""``unmask train``: fine-tune a classifier on a bundled task or a user file."""
from __future__ import annotations

import argparse

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import add_json_argument, add_quiet_argument, emit_json

LABELS = {"sst2": ["negative", "positive"], "rte": ["entailment", "not_entailment"]}


@builder("train")
def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=sorted(LABELS), required=True)
    p.add_argument("--out", required=True, help="output directory (model + checkpoint + metrics.json)")
    p.add_argument("--model", default="minilm", help="base model directory or 'minilm' (default)")
    p.add_argument("--arch", choices=("bert", "lstm"), default="bert",
                   help="bert: fine-tune --model; lstm: a new BiLSTM (GloVe 50d init if installed) on MiniLM's tokens")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default 5e-5 (bert), 2e-3 (lstm)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    add_quiet_argument(p)
    add_json_argument(p, "the training metrics (as OUT/metrics.json) and OUT")


@command("train", "Fine-tune a classifier (resumes from OUT/checkpoint after a kill).",
         "examples:\n  unmask train --task sst2 --out runs/sst2\n  unmask train --task rte --out runs/rte --epochs 5\n"
         "  unmask train --task sst2 --arch lstm --train-limit 8000 --epochs 3 --out runs/sst2_lstm\n"
         "  unmask train --task sst2 --out runs/sst2 --quiet --json - | jq .best_dev_accuracy")
def run(args: argparse.Namespace) -> int:
    import torch

    from unmask.data import load_task
    from unmask.models import load_model
    from unmask.training import TrainConfig, train_classifier

    torch.manual_seed(args.seed)  # the new classifier head is initialized at load time
    if args.arch == "lstm":
        from unmask.models.lstm import new_lstm_classifier

        model = new_lstm_classifier(LABELS[args.task], seed=args.seed)
    else:
        model = load_model(args.model, num_labels=2, label_names=LABELS[args.task])
    lr = args.lr if args.lr is not None else (2e-3 if args.arch == "lstm" else 5e-5)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr,
                         max_length=args.max_length, max_steps=args.max_steps, train_limit=args.train_limit,
                         checkpoint_every=args.checkpoint_every, seed=args.seed)
    result = train_classifier(model, load_task(args.task, "train"), load_task(args.task, "dev"), args.out,
                              config, progress=not args.quiet)
    print(f"best dev accuracy {result['best_dev_accuracy']:.2f}% after {result['steps']} steps")
    print(f"model written to {args.out}")
    emit_json(args.json, {"out": str(args.out), **result})
    return 0
