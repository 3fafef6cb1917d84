"""Does IG's rise on merged models come from too few path steps? IG P@1 / Mean Attribution vs steps.

    python experiments/facade_ig_steps.py --task sst2 --limit 100 --steps 10,50,200

The Facade tables use IG with 10 Gauss-Legendre steps (as in facade_reproduce.py). The Facade's
gradients oscillate along the path, so a few steps may sample them badly. This re-scores IG alone on
f_orig and the merged models with more steps, reporting the completeness error beside P@1.
Writes experiments/results/facade_ig_steps_TASK.{json,md}.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from unmask.data import load_task
from unmask.facade.evaluate import EvalConfig, evaluate_model
from unmask.facade.targets import TargetPositions
from unmask.models import load_model
from unmask.training.checkpoint import write_json_atomic

RESULTS = Path(__file__).parent / "results"
MODELS = ("f_orig", "merged_ft", "merged_stop", "merged_stop_rp")
TARGET_OF = {"f_orig": ("ft", "stop"), "merged_ft": ("ft",), "merged_stop": ("stop",), "merged_stop_rp": ("stop",)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["sst2", "rte"], required=True)
    p.add_argument("--limit", type=int, default=100, help="first N dev examples")
    p.add_argument("--steps", default="10,50,200", help="comma-separated IG step counts")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    dev = load_task(args.task, "dev", limit=args.limit)
    root = Path(f"runs/facade/{args.task}")
    command = "python experiments/facade_ig_steps.py " + " ".join(map(shlex.quote, argv or sys.argv[1:]))
    out: dict = {"command": command, "examples": len(dev), "results": {}}
    lines = [f"# IG vs path steps on Facade-merged models ({args.task.upper()}, first {len(dev)} dev)", "",
             f"Command: `{command}`", "",
             "| model | target | steps | IG P@1 | IG Mean Attribution | median relative completeness error |",
             "|---|---|---:|---:|---:|---:|"]
    for name in MODELS:
        path = Path(f"runs/{args.task}") if name == "f_orig" else root / name
        if not (path / "model.safetensors").is_file():
            print(f"skipping {name}: {path} has no model", flush=True)
            continue
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
            write_json_atomic(RESULTS / f"facade_ig_steps_{args.task}.json", out)
    (RESULTS / f"facade_ig_steps_{args.task}.md").write_text("\n".join(lines) + "\n")
    print(f"results written to {RESULTS / f'facade_ig_steps_{args.task}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
