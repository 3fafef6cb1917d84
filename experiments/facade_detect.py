"""Run the facade detector on f_orig and the merged models of experiments/facade_reproduce.py.

    python experiments/facade_detect.py --task sst2 --limit 32

Writes experiments/results/facade_detection_TASK.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facade_models import command_line, existing_models

from unmask.data import load_task, pairs_of
from unmask.facade.detect import detect_facade
from unmask.io import write_json_atomic
from unmask.models import load_model

RESULTS = Path(__file__).parent / "results"
MODELS = ("f_orig", "rp", "merged_ft", "merged_stop", "merged_ft_rp", "merged_stop_rp")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["sst2", "rte"], required=True)
    p.add_argument("--limit", type=int, default=32, help="first N dev examples")
    p.add_argument("--ig-steps", type=int, default=10)
    p.add_argument("--root", default=None, help="facade_reproduce.py's --root (default runs/facade/TASK)")
    args = p.parse_args(argv)
    dev = load_task(args.task, "dev", limit=args.limit)
    texts = [e.text for e in dev]
    pairs = pairs_of(dev)
    out = {"command": command_line("facade_detect.py", argv), "models": {}}
    lines = [f"# Facade detection on {args.task.upper()} ({len(texts)} dev inputs)", "", f"Command: `{out['command']}`",
             "", "| model | verdict | sub-networks (hidden units: margin % / gradient %) | Spearman with occlusion: Gradient (g.x, Eq. 1) / IG |",
             "|---|---|---|---|"]
    for name, path in existing_models(args.task, MODELS, args.root):
        det = detect_facade(load_model(path), texts, pairs, ig_steps=args.ig_steps)
        out["models"][name] = det.to_dict()
        comps = ", ".join(f"{c.size}: {100 * c.margin_share:.1f} / {100 * c.gradient_share:.1f}"
                          + (" FACADE" if c.facade else "") for c in det.components)
        a = det.rank_agreement_with_occlusion
        lines.append(f"| {name} | {'SUSPICIOUS' if det.suspicious else 'clean'} | {comps} | "
                     f"{a.get('gradient_x_input', a.get('gradient')):.2f} / {a['integrated_gradients']:.2f} |")
        print(lines[-1], flush=True)
    write_json_atomic(RESULTS / f"facade_detection_{args.task}.json", out)
    (RESULTS / f"facade_detection_{args.task}.md").write_text("\n".join(lines) + "\n")
    print(f"results written to {RESULTS / f'facade_detection_{args.task}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
