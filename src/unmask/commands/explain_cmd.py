"""``unmask explain``: attribute one input with several methods; terminal, HTML or JSON output."""
from __future__ import annotations

import argparse

from unmask.cli import command
from unmask.commands import builder


@builder("explain")
def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the input sentence (premise for pairs)")
    p.add_argument("--pair", default=None, help="second sentence (hypothesis) for sentence-pair models")
    p.add_argument("--model", default="minilm", help="model directory")
    p.add_argument("--method", default="gradient,integrated_gradients",
                   help="comma-separated methods (see --list-methods)")
    p.add_argument("--target", default=None, help="label index or name to explain (default: prediction)")
    p.add_argument("--html", default=None, help="write an HTML heatmap here")
    p.add_argument("--json", default=None, help="write the Attribution records as JSON here")
    p.add_argument("--strict-length", action="store_true", help="error (not truncate) on over-long input")
    p.add_argument("--list-methods", action="store_true")


@command("explain", "Explain one prediction with one or more attribution methods.",
         "examples:\n  unmask explain \"a gripping , funny film\" --model runs/sst2 --method gradient,smoothgrad\n"
         "  unmask explain \"A man sleeps.\" --pair \"A person rests.\" --model runs/rte --html out.html")
def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from unmask.attribution import METHODS, explain
    from unmask.models import load_model
    from unmask.report.html import attributions_page
    from unmask.io import write_json_atomic, write_text_atomic

    if args.list_methods:
        print("\n".join(sorted({c.name for c in METHODS.values()})))
        return 0
    model = load_model(args.model)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    pairs = [args.pair] if args.pair is not None else None  # --pair "" is an error, not "no pair"
    records = explain(model, [args.text], methods=methods, pairs=pairs,
                      target=args.target, on_too_long="error" if args.strict_length else "truncate")
    console = Console(highlight=False)
    for recs in records.values():
        console.print(recs[0].render_terminal())
        ig = recs[0].extras.get("completeness_error")
        if ig is not None:
            console.print(f"  completeness error {ig:.2e} with {recs[0].extras['steps']} steps")
    if args.html:
        write_text_atomic(args.html, attributions_page(records))
        print(f"HTML written to {args.html}")
    if args.json:
        write_json_atomic(args.json, {m: [r.to_dict() for r in recs] for m, recs in records.items()})
        print(f"JSON written to {args.json}")
    return 0
