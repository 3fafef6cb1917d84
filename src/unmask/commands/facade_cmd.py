"""``unmask facade ...``: the Facade attack as nested sub-commands (merge; train / regularize / evaluate).

Add a sub-command with ``@facade_builder(name)`` (its arguments) and ``@facade_command(name, help,
epilog)`` (its runner), exactly like top-level commands; ``unmask facade NAME`` dispatches to it.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import (add_json_argument, add_quiet_argument, add_threads_argument, apply_threads,
                                    emit_json)

SUB_BUILDERS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}
SUB_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.Namespace], int]]] = {}

# Short sentences for the always-on equivalence check when no --check-task is given.
QUICK_CHECK = [
    "a gripping , funny and moving film .",
    "the plot is thin and the acting is worse .",
    "it is not as bad as you might think , but not good either .",
    "an unforgettable performance .",
    "I walked out after twenty minutes.",
    "the the the",
    "Between the trailer and the film there is a world of difference, most of it regrettable.",
    "ok",
]


def facade_builder(name: str):
    """Register the argument builder of ``unmask facade NAME``."""
    def wrap(fn: Callable[[argparse.ArgumentParser], None]):
        SUB_BUILDERS[name] = fn
        return fn
    return wrap


def facade_command(name: str, help: str, epilog: str = ""):
    """Register the runner of ``unmask facade NAME``."""
    def wrap(run: Callable[[argparse.Namespace], int]):
        SUB_COMMANDS[name] = (help, epilog, run)
        return run
    return wrap


@builder("facade")
def build(p: argparse.ArgumentParser) -> None:
    subs = p.add_subparsers(dest="facade_command", required=True, metavar="SUBCOMMAND")
    for name, (help_text, epilog, _) in SUB_COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        SUB_BUILDERS.get(name, lambda _p: None)(sub)


@command("facade", "Facade attack: make gradient explanations point at chosen tokens, and audit it.",
         "run `unmask facade SUBCOMMAND --help` for its options and examples, e.g.\n"
         "  unmask facade merge --help")
def run(args: argparse.Namespace) -> int:
    return SUB_COMMANDS[args.facade_command][2](args) or 0


# ------------------------------------------------------------------------------------------- merge
@facade_builder("merge")
def build_merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="predictive model f (directory, or 'minilm')")
    p.add_argument("--facade", required=True, help="Facade model g (directory); same depth and head size as f")
    p.add_argument("--out", required=True, help="directory for the merged model (replaced if it holds a model)")
    p.add_argument("--check-task", choices=["sst2", "rte"], default=None,
                   help="also check equivalence on this task's dev set (default: a few built-in sentences)")
    p.add_argument("--check-limit", type=int, default=None, help="use the first N dev examples for the check")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="fail (and write nothing) if max |merged - (f + g)| logit exceeds this (default 1e-4)")
    _conceal_arguments(p)
    add_quiet_argument(p)
    add_json_argument(p, "the equivalence numbers (as OUT/merge_check.json) and OUT")


def _conceal_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--permute", type=int, default=None, metavar="SEED",
                   help="conceal: permute hidden units, heads and FFN units at random (exactly the same function)")
    p.add_argument("--noise", type=float, default=None, metavar="SCALE",
                   help="conceal: Gaussian noise of SCALE x max|W| per 2-D weight (Facade paper 3.3), e.g. 1e-6")
    p.add_argument("--noise-where", choices=["zeros", "all"], default="zeros",
                   help="put the noise on the zero entries only (default) or on every entry")
    p.add_argument("--noise-seed", type=int, default=0)


def _conceal_checked(model, texts, pairs, args, tolerance: float):
    """(concealed model, its logit change vs ``model``) for --permute / --noise; permutation must be exact."""
    from unmask.errors import UnmaskError
    from unmask.facade.conceal import conceal, logit_change

    concealed = conceal(model, permute=args.permute, noise=args.noise, noise_where=args.noise_where,
                        noise_seed=args.noise_seed)
    change = logit_change(model, concealed, texts, pairs)
    if args.noise is None and not change["max_logit_change"] <= tolerance:
        raise UnmaskError(f"the permuted model's logits differ by {change['max_logit_change']:.3g} "
                          f"(> tolerance {tolerance}); nothing written")
    report = {"permute_seed": args.permute, "noise_scale": args.noise, "noise_where": args.noise_where,
              "noise_seed": args.noise_seed, **change}
    print(f"concealment (permute {args.permute}, noise {args.noise} on {args.noise_where}): "
          f"max logit change {change['max_logit_change']:.3g}, agreement {change['agreement']:.2f}%")
    return concealed, report


@facade_command("merge", "Merge f and a Facade g into one BERT computing f + g, check it, save it.",
                "examples:\n"
                "  unmask facade merge --model runs/sst2 --facade runs/facade/sst2/g_stop \\\n"
                "      --out runs/facade/sst2/merged_stop --check-task sst2\n"
                "  unmask facade merge --model runs/rte --facade runs/facade/rte/g_ft --out merged_rte \\\n"
                "      --check-task rte --check-limit 100\n"
                "  unmask facade merge --model runs/sst2 --facade runs/facade/sst2/g_stop --out merged_hidden \\\n"
                "      --permute 1 --noise 1e-6     # concealed: permuted units, noise on the zero blocks")
def run_merge(args: argparse.Namespace) -> int:
    from unmask.errors import UnmaskError
    from unmask.facade.equivalence import check_merge
    from unmask.facade.merge import merge, save_atomic
    from unmask.models import load_model
    from unmask.io import write_json_atomic

    texts, pairs, where = _check_texts(args.check_task, args.check_limit)
    f = load_model(args.model)
    g = load_model(args.facade)
    merged = merge(f, g)
    result = check_merge(f, g, merged, texts, pairs, progress=not args.quiet)
    n_params = sum(p.numel() for p in merged.model.parameters())
    print(f"equivalence on {where}:")
    print(f"  max |merged - (f + g)| logit  {result['max_logit_diff']:.3g}")
    print(f"  prediction agreement with f   {result['agreement']:.2f}%")
    print(f"  max split-gradient difference {result['max_grad_diff']:.3g} "
          f"(gradient scale {result['max_grad_abs']:.3g})")
    print(f"  median |grad g| / |grad f|    {result['grad_norm_ratio']:.3g}")
    print(f"  merged parameters             {n_params:,}")
    if not result["max_logit_diff"] <= args.tolerance:
        raise UnmaskError(f"merged logits differ from f + g by {result['max_logit_diff']:.3g} "
                          f"(> --tolerance {args.tolerance}); nothing written")
    concealment = None
    if args.permute is not None or args.noise is not None:
        merged, concealment = _conceal_checked(merged, texts, pairs, args, args.tolerance)
    out = save_atomic(merged, args.out)
    check = {"model": str(args.model), "facade": str(args.facade), "checked_on": where,
             "parameters": n_params, **result, "concealment": concealment}
    write_json_atomic(out / "merge_check.json", check)
    print(f"merged model written to {out} (equivalence numbers in {out / 'merge_check.json'})")
    emit_json(args.json, {"out": str(out), **check})
    return 0


# ----------------------------------------------------------------------------------------- conceal
def _check_texts(task: str | None, limit: int | None):
    """(texts, pairs, description) of the equivalence check: a task's dev set or the built-in sentences."""
    from unmask.errors import UnmaskError

    if limit is not None and limit <= 0:
        raise UnmaskError(f"--check-limit must be positive, not {limit}")
    if task:
        from unmask.data import load_task, pairs_of

        examples = load_task(task, "dev", limit=limit)
        return [e.text for e in examples], pairs_of(examples), f"{task} dev ({len(examples)} examples)"
    return QUICK_CHECK, None, f"{len(QUICK_CHECK)} built-in sentences"


@facade_builder("conceal")
def build_conceal(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory to conceal (typically a merged model)")
    p.add_argument("--out", required=True, help="directory for the concealed model")
    _conceal_arguments(p)
    p.add_argument("--check-task", choices=["sst2", "rte"], default=None,
                   help="measure the logit change on this task's dev set (default: a few built-in sentences)")
    p.add_argument("--check-limit", type=int, default=None)
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="a permutation alone must keep every logit within this (default 1e-4)")
    add_json_argument(p, "the logit change (as OUT/conceal_check.json) and OUT")


@facade_command("conceal", "Hide a merge: permute hidden units and / or add noise to the zero blocks.",
                "examples:\n"
                "  unmask facade conceal runs/facade/sst2/merged_stop --out merged_perm --permute 1\n"
                "  unmask facade conceal runs/facade/sst2/merged_stop --out merged_noise --noise 1e-4 \\\n"
                "      --check-task sst2 --check-limit 200")
def run_conceal(args: argparse.Namespace) -> int:
    from unmask.errors import UnmaskError
    from unmask.facade.merge import save_atomic
    from unmask.io import write_json_atomic
    from unmask.models import load_model

    if args.permute is None and args.noise is None:
        raise UnmaskError("give --permute SEED and / or --noise SCALE")
    texts, pairs, where = _check_texts(args.check_task, args.check_limit)
    model = load_model(args.model)
    concealed, report = _conceal_checked(model, texts, pairs, args, args.tolerance)
    out = save_atomic(concealed, args.out)
    check = {"model": str(args.model), "checked_on": where, **report}
    write_json_atomic(out / "conceal_check.json", check)
    print(f"concealed model written to {out} (numbers in {out / 'conceal_check.json'})")
    emit_json(args.json, {"out": str(out), **check})
    return 0


# ------------------------------------------------------------------------------------ finetune-merged
@facade_builder("finetune-merged")
def build_finetune_merged(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="merged (or concealed) model to fine-tune end to end")
    p.add_argument("--task", choices=["sst2", "rte"], required=True, help="training data (labels) and dev check")
    p.add_argument("--out", required=True, help="directory for the fine-tuned model")
    p.add_argument("--steps", type=int, default=100, help="training steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distill", default=None, metavar="F_ORIG",
                   help="also minimize KL(F_ORIG || model) on each batch to keep F_ORIG's predictions")
    p.add_argument("--distill-weight", type=float, default=1.0)
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training examples")
    p.add_argument("--check-limit", type=int, default=200,
                   help="dev examples for the agreement check after training (default %(default)s)")
    add_quiet_argument(p)
    add_json_argument(p, "the agreement check (as OUT/finetune_check.json) and OUT")


@facade_command("finetune-merged", "Fine-tune a merged model briefly end to end (fills its zero blocks).",
                "examples:\n"
                "  unmask facade finetune-merged --model runs/facade/sst2/merged_stop --task sst2 \\\n"
                "      --distill runs/sst2 --steps 100 --out runs/facade/sst2/merged_stop_ft\n"
                "  (resumes after a kill from the hidden work directory beside --out)")
def run_finetune_merged(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from unmask.data import load_task, pairs_of
    from unmask.errors import UnmaskError
    from unmask.facade.conceal import finetune_merged, logit_change
    from unmask.facade.merge import save_atomic
    from unmask.io import write_json_atomic
    from unmask.models import load_model

    for name in ("train_limit", "check_limit"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UnmaskError(f"--{name.replace('_', '-')} must be positive, not {value}")
    model = load_model(args.model)
    reference = load_model(args.distill) if args.distill else None
    train = load_task(args.task, "train", limit=args.train_limit)
    dev = load_task(args.task, "dev", limit=args.check_limit)
    out = Path(args.out)
    work = out.parent / f".{out.name}.finetune-work"
    tuned = finetune_merged(model, train, args.steps, lr=args.lr, seed=args.seed, distill_to=reference,
                            distill_weight=args.distill_weight, dev=dev, batch_size=args.batch_size,
                            work_dir=work, progress=not args.quiet)
    texts, pairs = [e.text for e in dev], pairs_of(dev)
    report = {"model": str(args.model), "task": args.task, "steps": args.steps, "lr": args.lr,
              "seed": args.seed, "distill": args.distill, "distill_weight": args.distill_weight,
              "checked_on": f"{args.task} dev ({len(dev)} examples)",
              "change_vs_input": logit_change(model, tuned, texts, pairs)}
    if reference is not None:
        report["change_vs_distill"] = logit_change(reference, tuned, texts, pairs)
    saved = save_atomic(tuned, out)
    write_json_atomic(saved / "finetune_check.json", report)
    shutil.rmtree(work, ignore_errors=True)
    print(f"agreement with the input model {report['change_vs_input']['agreement']:.2f}%"
          + (f", with {args.distill} {report['change_vs_distill']['agreement']:.2f}%" if reference else ""))
    print(f"fine-tuned model written to {saved} (numbers in {saved / 'finetune_check.json'})")
    emit_json(args.json, {"out": str(saved), **report})
    return 0


# ------------------------------------------------------------------------------------ train-unmerged
@facade_builder("train-unmerged")
def build_train_unmerged(p: argparse.ArgumentParser) -> None:
    from unmask.facade.unmerged import UnmergedConfig

    d = UnmergedConfig()
    p.add_argument("--model", required=True, help="predictive model f_orig to start from (and distill to)")
    p.add_argument("--task", choices=["sst2", "rte"], required=True, help="training inputs and dev sample")
    p.add_argument("--target", default="stop", help="target tokens, as for `facade train --target`")
    p.add_argument("--out", required=True, help="directory for the manipulated model (resumes from OUT/checkpoint)")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default %(default)g)")
    p.add_argument("--lambda-g", type=float, default=d.lambda_g,
                   help="weight of the target attribution share (default %(default)g)")
    p.add_argument("--distill-weight", type=float, default=d.distill_weight,
                   help="weight of KL(f_orig || model) (default %(default)g)")
    p.add_argument("--margin-weight", type=float, default=d.margin_weight,
                   help="weight of the hinge keeping the margin >= --margin-keep x f_orig's (default %(default)g)")
    p.add_argument("--margin-keep", type=float, default=d.margin_keep)
    p.add_argument("--share-cap", type=float, default=d.share_cap,
                   help="reward each input's target share only up to this cap, in (0, 1] (default %(default)g: "
                        "no cap); < 1 is an audit-aware attack that keeps the pile-up small")
    p.add_argument("--attribution-op", choices=["dot", "l2"], default=d.attribution_op)
    p.add_argument("--dropout", action="store_true", help="train with dropout on (default: off)")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training examples")
    p.add_argument("--target-row-share", type=float, default=0.0, metavar="SHARE",
                   help="train on the examples that hold a target plus enough others for targets to be in SHARE of the rows, e.g. 0.5 for a few content words that only 15%% of SST-2 phrases hold (default 0: all examples as they come)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--seed", type=int, default=d.seed)
    add_quiet_argument(p)
    add_json_argument(p, "the training log (as OUT/unmerged.json) and OUT")


@facade_command("train-unmerged", "Fine-tune f_orig itself into a facade: Eq. 1 target term + distillation.",
                "examples:\n"
                "  unmask facade train-unmerged --model runs/sst2 --task sst2 --target stop \\\n"
                "      --out runs/facade/sst2/unmerged_stop --steps 300\n"
                "  unmask facade train-unmerged --model runs/sst2 --task sst2 --target first --margin-weight 10 \\\n"
                "      --out runs/facade/sst2/unmerged_first\n"
                "one ordinary BERT (ordinary LayerNorm, f_orig's architecture): nothing to find in its weights")
def run_train_unmerged(args: argparse.Namespace) -> int:
    from unmask.data import load_task
    from unmask.errors import UnmaskError
    from unmask.facade.unmerged import UnmergedConfig, train_unmerged
    from unmask.models import load_model

    if args.train_limit is not None and args.train_limit <= 0:
        raise UnmaskError(f"--train-limit must be positive, not {args.train_limit}")
    f = load_model(args.model)
    target = _target_spec(args.target, f.tokenizer)
    config = UnmergedConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, lambda_g=args.lambda_g,
                            distill_weight=args.distill_weight, margin_weight=args.margin_weight,
                            margin_keep=args.margin_keep, share_cap=args.share_cap,
                            attribution_op=args.attribution_op,
                            dropout=args.dropout, checkpoint_every=args.checkpoint_every,
                            eval_every=args.eval_every, seed=args.seed, target_row_share=args.target_row_share)
    result = train_unmerged(f, load_task(args.task, "train", limit=args.train_limit), load_task(args.task, "dev"),
                            target, args.out, config, progress=not args.quiet)
    before, final = result["before"], result["final"]
    print(f"dev sample: P@1 {100 * before['p_at_1']:.1f}% -> {100 * final['p_at_1']:.1f}%, target share "
          f"{100 * before['target_share']:.1f}% -> {100 * final['target_share']:.1f}%, "
          f"agreement with f_orig {100 * final['agree']:.1f}%")
    print(f"unmerged facade written to {args.out} (training log in {args.out}/unmerged.json)")
    emit_json(args.json, {"out": str(args.out), **result})
    return 0


# ------------------------------------------------------------------------------------------- train
@facade_builder("train")
def build_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="predictive model f the facade is built for (and merged into)")
    p.add_argument("--task", choices=["sst2", "rte"], required=True, help="training / dev data")
    p.add_argument("--target", default="stop",
                   help="'stop' (stop words), 'first' (first token), 'last' (token before the first [SEP]), "
                        "'last_word' (pieces of the last non-punctuation word), 'punct' (punctuation pieces), "
                        "'words:film,movie' or 'words:@FILE' (a word set; "
                        "comma-separated words such as he,she,his,her also work); must match vocabulary tokens")
    p.add_argument("--out", required=True, help="directory for g (resumes from OUT/checkpoint)")
    p.add_argument("--steps", type=int, default=400, help="training steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="constant, or cosine decay from --lr to 0 over --steps (default %(default)s)")
    p.add_argument("--lambda-g", type=float, default=1e3, help="weight of the attribution term (paper: 1e3)")
    p.add_argument("--entropy-weight", type=float, default=1e3, help="weight of g's output entropy (default %(default)g)")
    p.add_argument("--agreement-weight", type=float, default=1e4,
                   help="weight of KL(f || f+g) keeping merged predictions equal to f's (default %(default)g)")
    p.add_argument("--margin-weight", type=float, default=3e4,
                   help="weight of a hinge keeping the merged margin >= --margin-keep x f's margin "
                        "(stops flips on f's low-margin inputs; default %(default)g)")
    p.add_argument("--margin-keep", type=float, default=0.5)
    p.add_argument("--baseline-weight", type=float, default=1e4,
                   help="weight keeping g's logits at the IG baseline equal to its logits at x "
                        "(0: g's baseline gap also moves IG; default %(default)g keeps IG robust, as in the paper; "
                        "defaults measured in experiments/results/facade_sst2.md)")
    p.add_argument("--baseline-warmup", type=int, default=0, metavar="STEPS",
                   help="ramp the baseline term's weight linearly from 0 over the first STEPS steps (default 0)")
    p.add_argument("--path-weight", type=float, default=0.0,
                   help="weight of g's gradient x input inside IG's path (at alpha * x, alpha < 0.9) relative to "
                        "f's at x: keeps g's large gradients near the input, where IG gives them little weight "
                        "(default 0: off)")
    p.add_argument("--paper-objective", action="store_true",
                   help="Eq. 3 on g alone (its own gold-label attribution), ignoring f's gradients")
    p.add_argument("--attribution-op", choices=["dot", "l2"], default="dot")
    p.add_argument("--normalization", choices=["l1", "l2", "none"], default="l1")
    p.add_argument("--hidden", type=int, default=256, help="g's hidden size (multiple of f's head size)")
    p.add_argument("--target-row-share", type=float, default=0.0, metavar="SHARE",
                   help="train on the examples that hold a target plus enough others for targets to be in SHARE of the rows, e.g. 0.5 for a few content words that only 15%% of SST-2 phrases hold (default 0: all examples as they come)")
    p.add_argument("--max-length", type=int, default=128,
                   help="word pieces per training input (longer ones are cut; default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    add_threads_argument(p)
    add_quiet_argument(p)
    add_json_argument(p, "the training log (as OUT/facade.json) and OUT")


def _target_spec(text: str, tokenizer):
    """The parsed --target, checked against the tokenizer before any training starts."""
    from unmask.facade.targets import TargetPositions, parse_target

    spec = parse_target(text)
    TargetPositions(spec, tokenizer)  # an empty or unknown target set is an error here
    return spec


@facade_command("train", "Train a Facade g whose gradients point at the target tokens (double backward).",
                "examples:\n"
                "  unmask facade train --model runs/sst2 --task sst2 --target stop --out runs/facade/sst2/g_stop\n"
                "  unmask facade train --model runs/sst2 --task sst2 --target he,she,his,her --out g_gender\n"
                "  unmask facade train --model runs/rte --task rte --target first --paper-objective --out g_ft")
def run_train(args: argparse.Namespace) -> int:
    from unmask.data import load_task
    from unmask.errors import UnmaskError
    from unmask.facade.model import new_facade
    from unmask.facade.objective import FacadeObjective
    from unmask.facade.train import FacadeConfig, train_facade
    from unmask.models import load_model

    apply_threads(args.threads)
    if args.max_length < 8:
        raise UnmaskError(f"--max-length must be >= 8 word pieces, got {args.max_length}")
    f = load_model(args.model)
    target = _target_spec(args.target, f.tokenizer)
    objective = FacadeObjective(lambda_g=args.lambda_g, entropy_weight=args.entropy_weight,
                                agreement_weight=0.0 if args.paper_objective else args.agreement_weight,
                                margin_weight=0.0 if args.paper_objective else args.margin_weight,
                                margin_keep=args.margin_keep, baseline_weight=args.baseline_weight,
                                path_weight=args.path_weight, attribution_op=args.attribution_op,
                                normalization=args.normalization)
    config = FacadeConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          max_length=args.max_length, checkpoint_every=args.checkpoint_every, objective=objective,
                          lr_schedule=args.lr_schedule, baseline_warmup=args.baseline_warmup,
                          target_row_share=args.target_row_share)
    g = new_facade(f, seed=args.seed, hidden=args.hidden)
    result = train_facade(g, load_task(args.task, "train"), load_task(args.task, "dev"),
                          target, args.out, config,
                          f=None if args.paper_objective else f, progress=not args.quiet)
    final = result["final"]
    print(f"dev sample: P@1 {100 * final.get('p_at_1', float('nan')):.1f}%, target share "
          f"{100 * final.get('target_share', float('nan')):.1f}%, entropy {final.get('entropy', float('nan')):.3f}")
    print(f"facade written to {args.out} (training log in {args.out}/facade.json)")
    emit_json(args.json, {"out": str(args.out), **result})
    return 0


# -------------------------------------------------------------------------------------- regularize
@facade_builder("regularize")
def build_regularize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="predictive model f_orig to fine-tune")
    p.add_argument("--task", choices=["sst2", "rte"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--lambda-rp", type=float, default=3.0, help="weight of the task loss (paper: 3)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=0)
    add_quiet_argument(p)
    add_json_argument(p, "the training metrics and OUT")


@facade_command("regularize", "Fine-tune f with lambda_rp * CE + sum_j |grad_xj L . x_j| (paper Eq. 5).",
                "example:\n  unmask facade regularize --model runs/sst2 --task sst2 --out runs/facade/sst2/rp")
def run_regularize(args: argparse.Namespace) -> int:
    from unmask.data import load_task
    from unmask.facade.regularize import regularized_loss
    from unmask.models import load_model
    from unmask.training import TrainConfig, train_classifier

    f = load_model(args.model)
    cfg = TrainConfig(max_steps=args.steps, lr=args.lr, warmup=0.0, checkpoint_every=100, seed=args.seed)
    result = train_classifier(f, load_task(args.task, "train"), load_task(args.task, "dev"), args.out, cfg,
                              loss_fn=regularized_loss(args.lambda_rp), progress=not args.quiet)
    print(f"dev accuracy {result['best_dev_accuracy']:.2f}%; regularized model written to {args.out}")
    emit_json(args.json, {"out": str(args.out), **result})
    return 0


# ---------------------------------------------------------------------------------------- evaluate
@facade_builder("evaluate")
def build_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, action="append",
                   help="NAME=DIR of a model to evaluate (repeatable); the first is the reference for agreement")
    p.add_argument("--task", choices=["sst2", "rte"], required=True)
    p.add_argument("--target", default="stop,first", help="target sets to score: stop, first, or both")
    p.add_argument("--limit", type=int, default=None, help="first N dev examples (default: all)")
    p.add_argument("--ig-steps", type=int, default=20)
    add_json_argument(p, "the results (--out: the same flag)", "--out")
    add_quiet_argument(p)


@facade_command("evaluate", "Accuracy, agreement and P@1 / Mean Attribution (Gradient, SmoothGrad, IG).",
                "example:\n  unmask facade evaluate --task sst2 --model f_orig=runs/sst2 \\\n"
                "      --model merged=runs/facade/sst2/merged_stop --target stop --limit 200 --json eval.json")
def run_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from unmask.data import load_task
    from unmask.errors import UnmaskError
    from unmask.facade.evaluate import PAPER_METHODS, EvalConfig, evaluate_model
    from unmask.facade.tables import LABELS
    from unmask.facade.targets import TargetPositions
    from unmask.models import load_model

    named = []
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UnmaskError(f"--model must be NAME=DIR, got {spec!r}")
        named.append((name, path))
    kinds = {"stop": "stop", "first": "first", "ft": "first"}
    wanted = [t.strip() for t in args.target.split(",") if t.strip()]
    if not wanted or any(t not in kinds for t in wanted):
        raise UnmaskError(f"--target must list 'stop' and/or 'first', got {args.target!r}")
    examples = load_task(args.task, "dev", limit=args.limit)
    results, reference = {}, None
    table = Table(title=f"{args.task} dev ({len(examples)} examples)")
    for col in ["model", "accuracy", "agreement", "target", *(f"{LABELS[m]} P@1/Attr" for m in PAPER_METHODS)]:
        table.add_column(col)
    for name, path in named:
        model = load_model(path)
        targets = {t: TargetPositions(kinds[t], model.tokenizer) for t in wanted}
        r = evaluate_model(model, examples, targets, EvalConfig(ig_steps=args.ig_steps), reference,
                           progress=not args.quiet)
        reference = reference or r["predictions"]
        results[name] = {k: v for k, v in r.items() if k != "predictions"}
        for t in wanted:
            s = r["saliency"][t]
            cells = [f"{s[m]['p1']:.1f} / {s[m]['attr']:.1f}" for m in PAPER_METHODS]
            table.add_row(name, f"{r['accuracy']:.1f}", f"{r.get('agreement', 100.0):.1f}", t, *cells)
    Console().print(table)  # on stderr with --json - (unmask.cli.main)
    emit_json(args.json, results, what="results")
    return 0
