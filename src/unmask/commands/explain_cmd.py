"""``unmask explain``: attribute one input with several methods; terminal, HTML or JSON output."""
from __future__ import annotations

import argparse
import re
import sys

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import add_json_argument, emit_json
from unmask.errors import UnmaskError


@builder("explain")
def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", default=None, help="the input sentence (premise for pairs)")
    p.add_argument("--pair", default=None, help="second sentence (hypothesis) for sentence-pair models")
    p.add_argument("--model", default="minilm", help="model directory")
    p.add_argument("--method", default="gradient,integrated_gradients",
                   help="comma-separated methods (see --list-methods)")
    p.add_argument("--target", default=None, help="label index or name to explain (default: prediction)")
    p.add_argument("--top", type=int, default=0, metavar="K",
                   help="plain-text output: only the K tokens of largest |score| (default: every token)")
    p.add_argument("--html", default=None, help="write an HTML heatmap here")
    add_json_argument(p, "the Attribution records")
    p.add_argument("--strict-length", action="store_true", help="error (not truncate) on over-long input")
    p.add_argument("--list-methods", action="store_true", help="list the methods and exit (no text needed)")


def method_summary(cls) -> str:
    """First sentence of a method class's docstring, without RST markup, at most 100 characters."""
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    doc = doc.replace("``", "")
    sentence = re.split(r"(?<=\.)\s", doc, maxsplit=1)[0]
    return sentence if len(sentence) <= 100 else sentence[:97].rstrip() + "..."


def list_methods() -> str:
    """One line per registered method: name, one-line description, aliases."""
    from unmask.attribution import METHODS

    classes = sorted(set(METHODS.values()), key=lambda c: c.name)
    width = max(len(c.name) for c in classes)
    return "\n".join(f"{c.name:<{width}}  {method_summary(c)}"
                     + (f" (aliases: {', '.join(c.aliases)})" if c.aliases else "") for c in classes)


@command("explain", "Explain one prediction with one or more attribution methods.",
         "examples:\n  unmask explain \"a gripping , funny film\" --model runs/sst2 --method gradient,smoothgrad\n"
         "  unmask explain \"A man sleeps.\" --pair \"A person rests.\" --model runs/rte --html out.html\n"
         "  unmask explain \"a gripping , funny film\" --json - | jq .\n"
         "  unmask explain --list-methods\n\n"
         "On a terminal the tokens are coloured by score; piped, a plain table of signed scores is printed.")
def run(args: argparse.Namespace) -> int:
    if args.list_methods:
        print(list_methods())
        return 0
    if args.text is None:
        raise UnmaskError("no text given: unmask explain \"TEXT\" [--model DIR] (or --list-methods)")
    if args.top < 0:
        raise UnmaskError(f"--top must be >= 0, got {args.top}")
    from unmask.attribution import explain
    from unmask.io import write_text_atomic
    from unmask.models import load_model
    from unmask.report.html import attributions_page

    model = load_model(args.model)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    pairs = [args.pair] if args.pair is not None else None  # --pair "" is an error, not "no pair"
    records = explain(model, [args.text], methods=methods, pairs=pairs,
                      target=args.target, on_too_long="error" if args.strict_length else "truncate")
    if args.json != "-":  # with --json -, stdout is the JSON only (and status lines go to stderr)
        show(records, args.top)
    if args.html:
        write_text_atomic(args.html, attributions_page(records))
        print(f"HTML written to {args.html}")
    emit_json(args.json, {m: [r.to_dict() for r in recs] for m, recs in records.items()})
    return 0


def show(records: dict, top: int) -> None:
    """Colour heatmap on a terminal; elsewhere (pipe, file) a plain table of every token's signed score."""
    from unmask.report.terminal import attribution_table

    tty = sys.stdout.isatty()
    if tty:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False, force_terminal=True)
    for key, recs in records.items():
        r = recs[0]
        if tty:
            console.print(r.render_terminal() if key == r.method else f"[bold]{escape(key)}[/]\n" + r.render_terminal())
        else:
            table = attribution_table(r, top or None)
            print(table if key == r.method else f"{key}\n{table}")
        if r.extras.get("completeness_error") is not None:
            print(f"  completeness error {r.extras['completeness_error']:.2e} with {r.extras['steps']} steps")
        if not tty:
            print()
