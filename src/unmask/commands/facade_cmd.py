"""``unmask facade ...``: the Facade attack as nested sub-commands (merge; train / regularize / evaluate).

Add a sub-command with ``@facade_builder(name)`` (its arguments) and ``@facade_command(name, help,
epilog)`` (its runner), exactly like top-level commands; ``unmask facade NAME`` dispatches to it.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from unmask.cli import command
from unmask.commands import builder

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
    p.add_argument("--no-progress", action="store_true")


@facade_command("merge", "Merge f and a Facade g into one BERT computing f + g, check it, save it.",
                "examples:\n"
                "  unmask facade merge --model runs/sst2 --facade runs/facade/sst2/g_stop \\\n"
                "      --out runs/facade/sst2/merged_stop --check-task sst2\n"
                "  unmask facade merge --model runs/rte --facade runs/facade/rte/g_ft --out merged_rte \\\n"
                "      --check-task rte --check-limit 100")
def run_merge(args: argparse.Namespace) -> int:
    from unmask.errors import UnmaskError
    from unmask.facade.equivalence import check_merge
    from unmask.facade.merge import merge, save_atomic
    from unmask.models import load_model
    from unmask.training.checkpoint import write_json_atomic

    if args.check_limit is not None and args.check_limit <= 0:
        raise UnmaskError(f"--check-limit must be positive, not {args.check_limit}")
    f = load_model(args.model)
    g = load_model(args.facade)
    merged = merge(f, g)
    if args.check_task:
        from unmask.data import load_task

        examples = load_task(args.check_task, "dev", limit=args.check_limit)
        texts = [e.text for e in examples]
        pairs = [e.pair for e in examples] if examples[0].pair is not None else None
        where = f"{args.check_task} dev ({len(texts)} examples)"
    else:
        texts, pairs, where = QUICK_CHECK, None, f"{len(QUICK_CHECK)} built-in sentences"
    result = check_merge(f, g, merged, texts, pairs, progress=not args.no_progress)
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
    out = save_atomic(merged, args.out)
    write_json_atomic(out / "merge_check.json", {
        "model": str(args.model), "facade": str(args.facade), "checked_on": where,
        "parameters": n_params, **result})
    print(f"merged model written to {out} (equivalence numbers in {out / 'merge_check.json'})")
    return 0
