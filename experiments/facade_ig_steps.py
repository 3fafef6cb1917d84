"""Why does IG move on Facade-merged models? Path steps vs g's baseline gap.

    python experiments/facade_ig_steps.py --task sst2 --limit 100 --steps 10,50

The Facade tables use IG with 10 Gauss-Legendre steps. Two explanations for IG's P@1 rising on merged
models: (1) too few steps sample g's oscillating gradients badly -> P@1 would fall as the steps grow
and the completeness error shrinks; (2) g's output at the zero baseline differs from its output at x,
and IG hands that gap (all of it, on f + g the gaps add) to the tokens g's gradient points at. The
script re-scores IG with each step count and reports, per merged model, the median |margin gap| of f
and of g (``unmask.facade.evaluate.baseline_margin_gap``). Writes
experiments/results/facade_ig_steps_TASK[_SUFFIX].{json,md}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facade_models import command_line, existing_models, model_path

from unmask.attribution.explain import predict_batch
from unmask.data import load_task, pairs_of
from unmask.facade.evaluate import EvalConfig, baseline_margin_gap, evaluate_model
from unmask.facade.targets import TargetPositions
from unmask.io import write_json_atomic, write_text_atomic
from unmask.models import load_model

RESULTS = Path(__file__).parent / "results"
MODELS = ("f_orig", "merged_ft", "merged_stop", "merged_stop_rp")
TARGET_OF = {"f_orig": ("ft", "stop"), "merged_ft": ("ft",), "merged_stop": ("stop",), "merged_stop_rp": ("stop",)}
PARTS = {"merged_ft": ("f_orig", "g_ft"), "merged_stop": ("f_orig", "g_stop"), "merged_stop_rp": ("rp", "g_stop")}


def gap_parts(task: str, name: str, root: str | None, dev, model) -> dict[str, float]:
    """Median |margin(x) - margin(baseline)| of the merged model's two parts, at its own predictions."""
    y = predict_batch(model, model.encode([e.text for e in dev], pairs_of(dev))).argmax(-1)
    return {part: float(baseline_margin_gap(load_model(model_path(task, part, root)), dev, y).abs().median())
            for part in PARTS[name]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["sst2", "rte"], required=True)
    p.add_argument("--limit", type=int, default=100, help="first N dev examples")
    p.add_argument("--steps", default="10,50", help="comma-separated IG step counts")
    p.add_argument("--root", default=None, help="facade_reproduce.py's --root (default runs/facade/TASK)")
    p.add_argument("--suffix", default="", help="appended to the result file names")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    dev = load_task(args.task, "dev", limit=args.limit)
    command = command_line("facade_ig_steps.py", argv)
    stem = f"facade_ig_steps_{args.task}" + (f"_{args.suffix}" if args.suffix else "")
    out: dict = {"command": command, "examples": len(dev), "results": {}, "baseline_gap_median": {}}
    lines = [f"# IG on Facade-merged models: path steps and baseline gap ({args.task.upper()}, first {len(dev)} dev)",
             "", f"Command: `{command}`", "",
             "| model | target | steps | IG P@1 | IG Mean Attribution | median relative completeness error |",
             "|---|---|---:|---:|---:|---:|"]
    for name, path in existing_models(args.task, MODELS, args.root):
        model = load_model(path)
        targets = {t: TargetPositions({"ft": "first", "stop": "stop"}[t], model.tokenizer) for t in TARGET_OF[name]}
        for n in steps:
            res = evaluate_model(model, dev, targets, EvalConfig(ig_steps=n, methods=("integrated_gradients",)),
                                 progress=False)
            err = res["ig_relative_completeness_error_median"]
            for t in targets:
                s = res["saliency"][t]["integrated_gradients"]
                out["results"].setdefault(name, {}).setdefault(t, {})[str(n)] = {**s, "relative_error_median": err}
                lines.append(f"| {name} | {t} | {n} | {s['p1']:.1f} | {s['attr']:.1f} | {err:.3f} |")
                print(lines[-1], flush=True)
        if name in PARTS:
            out["baseline_gap_median"][name] = gap_parts(args.task, name, args.root, dev, model)
        write_json_atomic(RESULTS / f"{stem}.json", out)
    lines += ["", "Median |logit margin at x - at the zero word-embedding baseline| of each part of a merged model "
              "(the IG mass each part distributes; the merged model's is their sum):", "",
              "| merged model | predictive part | Facade g |", "|---|---:|---:|"]
    for name, gaps in out["baseline_gap_median"].items():
        (f_name, f_gap), (g_name, g_gap) = gaps.items()
        lines.append(f"| {name} | {f_name}: {f_gap:.2f} | {g_name}: {g_gap:.2f} |")
    write_text_atomic(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")
    print(f"results written to {RESULTS / stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
