"""``unmask audit MODEL_DIR``: can this model's explanations be trusted? (exit 0 with the verdict)."""
from __future__ import annotations

import argparse
import sys

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import add_json_argument, add_threads_argument, apply_threads, emit_json


@builder("audit")
def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a local Hugging Face sequence-classifier directory (or an unmask LSTM)")
    p.add_argument("--data", default="sst2",
                   help="'sst2', 'rte' (bundled dev sets) or a .tsv/.csv/.jsonl file with a text column")
    p.add_argument("--text-column", default="text", help="text column of --data FILE")
    p.add_argument("--pair-column", default=None, help="second-text column of --data FILE (sentence pairs)")
    p.add_argument("--n", type=int, default=200, help="inputs to audit (default 200)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods to audit (default gradient, gradient_x_input, smoothgrad, "
                        "integrated_gradients; leave_one_out is the reference)")
    p.add_argument("--calibration", default=None,
                   help="calibration JSON (default: the one shipped with unmask fitted at the largest number of "
                        "inputs per model not above --n)")
    p.add_argument("--no-structure", action="store_true", help="skip the weight-structure check")
    add_json_argument(p, "the full report")
    p.add_argument("--html", default=None, metavar="OUT", help="write an HTML report")
    add_threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _inputs(args: argparse.Namespace) -> tuple[list[str], list[str | None] | None]:
    from unmask.data import pairs_of, task_or_file
    from unmask.errors import UnmaskError

    if args.n < 1:
        raise UnmaskError(f"--n must be at least 1, got {args.n}")
    examples = task_or_file(args.data, args.n, text_col=args.text_column, pair_col=args.pair_column)
    return [e.text for e in examples], pairs_of(examples)


@command("audit", "Audit whether a classifier's explanations can be trusted: per-method verdicts "
         "(trustworthy / suspect / manipulated) with the measured evidence and a calibrated model score.",
         "examples:\n  unmask audit runs/sst2\n  unmask audit runs/facade/sst2/merged_stop --n 100 --html audit.html\n"
         "  unmask audit runs/rte --data rte --json -\n\n"
         "A flagged model is a result, not an error: the exit code is 0 whenever the audit ran.")
def run(args: argparse.Namespace) -> int:
    from unmask.audit import audit
    from unmask.io import write_text_atomic
    from unmask.models import load_model

    apply_threads(args.threads)
    model = load_model(args.model)
    texts, pairs = _inputs(args)
    methods = args.methods.split(",") if args.methods else None
    say = None if args.quiet else (lambda msg: print(f"[audit] {msg}", file=sys.stderr, flush=True))
    kwargs = {"methods": methods} if methods else {}
    report = audit(model, texts, pairs, calibration=args.calibration, structure=not args.no_structure,
                   progress=say, **kwargs)
    report.model = str(args.model)
    if args.html:
        write_text_atomic(args.html, report.to_html())
    print(f"verdict: {report.verdict.upper()}  (score {report.score:.1f}; p = {report.p_value:.2g} that a clean "
          f"model looks like this; {len(texts)} inputs, {report.seconds:.0f} s)")
    for name, v in report.methods.items():
        extra = f"  p={v.p_value:.2g}" if v.p_value == v.p_value else ""
        print(f"  {name:<22} {v.verdict:<13}{extra}")
        for reason in v.reasons[:3]:
            print(f"      - {reason}")
    print(report.summary)
    if report.calibration.get("note"):
        print(f"note: {report.calibration['note']}")
    emit_json(args.json, report.to_dict(), what="JSON report")  # strict JSON: NaN (e.g. a reference's p) -> null
    if args.html:
        print(f"HTML report written to {args.html}")
    return 0
