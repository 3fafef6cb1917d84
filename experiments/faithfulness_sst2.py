"""Faithfulness, sanity and agreement of every method on f_orig and on the Facade-merged models (SST-2).

    python experiments/faithfulness_sst2.py --n 40 --randomization-n 8

Writes experiments/results/faithfulness_sst2.{json,md}: one `unmask evaluate-methods` table per model, then
which measures expose the facade (a measure exposes it when a gradient method's value moves toward chance
on the merged model while it stays put on f_orig and for the black-box methods).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facade_models import command_line  # noqa: E402

MODELS = {"f_orig": "runs/zoo/sst2_s0_16k", "merged_stop": "runs/zoo/merged_stop_plain",
          "merged_first": "runs/zoo/merged_first_plain"}
MEASURES = (("comprehensiveness", "comp AOPC", "higher"), ("sufficiency", "suff AOPC", "lower"),
            ("deletion_auc", "deletion AUC", "lower"), ("insertion_auc", "insertion AUC", "higher"))


def main(argv: list[str] | None = None) -> int:
    from unmask.commands.evaluate_methods_cmd import evaluate_methods, evaluation_markdown
    from unmask.data import load_task
    from unmask.io import write_json_atomic, write_text_atomic
    from unmask.models import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--randomization-n", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts = [e.text for e in load_task("sst2", "dev", limit=args.n)]
    methods = args.methods.split(",") if args.methods else None
    results = {"command": command_line("faithfulness_sst2.py", argv), "n": args.n, "models": {}}
    md = [f"# Faithfulness and sanity on SST-2 (first {args.n} dev sentences)", "",
          f"Command: `{results['command']}`", ""]
    for name, path in MODELS.items():
        print(f"[faithfulness] {name} ({path})", flush=True)
        r = evaluate_methods(load_model(path), texts, methods=methods, randomization_n=args.randomization_n,
                             progress=True)
        r["model"] = f"{name} ({path})"
        results["models"][name] = r
        md += [f"## {name}", "", evaluation_markdown(r), ""]
    md += exposure(results["models"])
    write_json_atomic("experiments/results/faithfulness_sst2.json", results)
    write_text_atomic("experiments/results/faithfulness_sst2.md", "\n".join(md) + "\n")
    print("wrote experiments/results/faithfulness_sst2.{json,md}")
    return 0


def exposure(models: dict) -> list[str]:
    """Per method and measure: f_orig vs each merged model, and the random baseline."""
    lines = ["## Which measures expose the facade", "",
             "Value on f_orig -> value on the merged model (random ordering in brackets).", ""]
    base = models["f_orig"]
    for merged in [k for k in models if k != "f_orig"]:
        lines += [f"### {merged}", "", "| method | " + " | ".join(f"{t} ({d})" for _, t, d in MEASURES) + " |",
                  "|---|" + "---|" * len(MEASURES)]
        for method, r in base["methods"].items():
            m = models[merged]["methods"].get(method)
            if m is None:
                continue
            cells = []
            for key, _, _ in MEASURES:
                a, b = r.get(key), m.get(key)
                rnd = models[merged]["random"].get(key)
                cells.append("-" if a is None or b is None else f"{a:.3f} -> {b:.3f} [{rnd:.3f}]"
                             if rnd is not None else f"{a:.3f} -> {b:.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


if __name__ == "__main__":
    sys.exit(main())
