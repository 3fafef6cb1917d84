"""``unmask diffmask train|explain``: learn DiffMask probes for a classifier, then explain inputs with them."""
from __future__ import annotations

import argparse
from dataclasses import replace

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import add_json_argument, add_quiet_argument, emit_json
from unmask.errors import UnmaskError


@builder("diffmask")
def build(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train DiffMask probes (resumes from OUT/checkpoint)")
    t.add_argument("--model", required=True, help="classifier directory (e.g. runs/sst2)")
    t.add_argument("--out", required=True, help="output directory for the trained DiffMask")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", choices=["sst2", "rte"], help="bundled training data")
    src.add_argument("--data", help="a .tsv/.csv/.jsonl file with a 'text' column (labels are not used)")
    t.add_argument("--text-column", default="text")
    t.add_argument("--pair-column", default=None)
    t.add_argument("--mode", choices=["input", "hidden"], default="input",
                   help="gate input tokens (voted by layers 0..k) or layer k's hidden states")
    t.add_argument("--eps", type=float, default=0.1, help="KL(original || masked) tolerance (default 0.1)")
    t.add_argument("--layers", default=None, help="comma-separated layers to train (default: all)")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-4, help="probe learning rate (paper: 3e-4)")
    t.add_argument("--lr-baseline", type=float, default=None, help="baseline learning rate (default: --lr)")
    t.add_argument("--lr-multipliers", type=float, default=0.3)
    t.add_argument("--warmup", type=int, default=50, help="linear learning-rate warm-up steps")
    t.add_argument("--train-limit", type=int, default=None, help="use only the first N examples")
    t.add_argument("--checkpoint-every", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    add_quiet_argument(t)
    add_json_argument(t, "the per-layer running KL / share kept / multipliers and OUT")
    e = sub.add_parser("explain", help="explain one input with a trained DiffMask (one forward pass)")
    e.add_argument("text")
    e.add_argument("--pair", default=None)
    e.add_argument("--model", required=True, help="the classifier the DiffMask was trained on")
    e.add_argument("--diffmask", required=True, help="directory written by `unmask diffmask train`")
    e.add_argument("--layers", default=None, help="comma-separated layers to show (default: all)")
    e.add_argument("--html", default=None, help="write an HTML heatmap (one row per layer) here")
    add_json_argument(e, "the Attribution records")


def _layers(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UnmaskError(f"--layers must be comma-separated integers, got {spec!r}") from None


@command("diffmask", "DiffMask: learn which tokens / hidden states each layer needs, then explain inputs.",
         "examples:\n  unmask diffmask train --model runs/sst2 --task sst2 --mode input --eps 0.1 "
         "--steps 300 --out runs/diffmask/sst2_input\n"
         "  unmask diffmask explain \"a gripping , funny film\" --model runs/sst2 "
         "--diffmask runs/diffmask/sst2_input --layers 0,3,6")
def run(args: argparse.Namespace) -> int:
    return _train(args) if args.action == "train" else _explain(args)


def _train(args: argparse.Namespace) -> int:
    from unmask.data import load_task, read_examples
    from unmask.masking import ClassifierAdapter, DiffMaskTrainConfig, diffmask_for, train_diffmask
    from unmask.models import load_model

    model = load_model(args.model)
    adapter = ClassifierAdapter(model)
    if args.task:
        items = load_task(args.task, "train", limit=args.train_limit)
    else:
        items = read_examples(args.data, text_col=args.text_column, pair_col=args.pair_column)
        items = items[:args.train_limit] if args.train_limit else items
    diffmask = diffmask_for(adapter, args.mode, eps=args.eps)
    config = DiffMaskTrainConfig(steps=args.steps, batch_size=args.batch_size, lr_gates=args.lr,
                                 lr_baselines=args.lr_baseline, lr_multipliers=args.lr_multipliers,
                                 warmup_steps=args.warmup,
                                 layers=_layers(args.layers), checkpoint_every=args.checkpoint_every,
                                 seed=args.seed)
    info = {"model": str(args.model), "data": args.task or args.data, "train_items": len(items)}
    result = train_diffmask(diffmask, adapter, items, args.out, config, info=info, progress=not args.quiet)
    for k, row in sorted(result["running"].items(), key=lambda kv: int(kv[0])):
        print(f"layer {k}: running KL {row['kl']:.4f}, expected share kept {row['l0']:.3f}, "
              f"multiplier {result['multipliers'][int(k)]:.3f}")
    print(f"DiffMask written to {args.out}")
    emit_json(args.json, {"out": str(args.out), **result})
    return 0


def _explain(args: argparse.Namespace) -> int:
    from rich.console import Console

    from unmask.io import write_text_atomic
    from unmask.masking import explain_diffmask, load_diffmask
    from unmask.models import load_model
    from unmask.report.html import attributions_page

    model = load_model(args.model)
    diffmask, saved = load_diffmask(args.diffmask)
    records = explain_diffmask(diffmask, model, [args.text], pairs=[args.pair] if args.pair else None,
                               layers=_layers(args.layers))
    console = Console(highlight=False)
    console.print(f"DiffMask ({diffmask.mode} gates, eps {diffmask.eps}) trained on "
                  f"{saved.get('info', {}).get('model', '?')}; scores = probability of keeping")
    for k, recs in records.items():
        console.print(f"layer {k}: expected share kept {recs[0].extras['expected_kept']:.2f}")
        console.print(recs[0].render_terminal())
    named = {f"{recs[0].method} layer {k}": recs for k, recs in records.items()}
    if args.html:
        labelled = {name: [replace(r, method=name) for r in recs] for name, recs in named.items()}
        write_text_atomic(args.html, attributions_page(labelled, title="DiffMask keep probabilities"))
        print(f"HTML written to {args.html}")
    emit_json(args.json, {name: [r.to_dict() for r in recs] for name, recs in named.items()})
    return 0
