"""Time the full Facade Table 2 (issue 15.4: <= 20 minutes on 2 cores): f_orig, each g, f + g and RP + g.

    python bench/bench_facade_table.py --f runs/zoo/sst2_s0_16k --g first=runs/zoo/g_first \\
        --g stop=runs/zoo/g_stop --rp runs/zoo/rp_s0 --threads 2 --json bench/results/facade_table_872.json

Every merge is evaluated as its parts run apart (``facade.summed.SummedModel``: the same function as the
dense merged model, checked on the first inputs here against ``merge.merge``, with no zero blocks), as the
Facade pipeline does. Gradient x input (the paper's Gradient), SmoothGrad and IG with the pipeline's
``EvalConfig`` on all SST-2 dev sentences by default; P@1 / Mean Attribution for the first-token and
stop-word targets of every model. Records wall and CPU seconds per model, the machine and its CPU flags.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_average, machine_info, timed  # noqa: E402


def parse_named(specs: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: {flag} must be NAME=DIR, got {spec!r}")
        out.append((name, path))
    return out


def check_apart(f, g, texts: list[str]) -> float:
    """max |dense merge(f, g) - (f + g run apart)| logit on ``texts`` (the equivalence the timing relies on)."""
    from unmask.facade.conceal import logit_change
    from unmask.facade.merge import merge
    from unmask.facade.summed import SummedModel

    return logit_change(merge(f, g), SummedModel(f, g), texts)["max_logit_change"]


def main(argv: list[str] | None = None) -> int:
    from unmask.data import load_task
    from unmask.facade.evaluate import EvalConfig, evaluate_model
    from unmask.facade.summed import SummedModel
    from unmask.facade.targets import TargetPositions
    from unmask.models import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--f", required=True, help="f_orig directory")
    p.add_argument("--g", action="append", required=True, help="NAME=DIR of a facade g (repeatable)")
    p.add_argument("--rp", default=None, help="a regularized model (paper Eq. 5) each g is also merged into")
    p.add_argument("--task", choices=["sst2", "rte"], default="sst2")
    p.add_argument("--limit", type=int, default=None, help="first N dev examples (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    examples = load_task(args.task, "dev", limit=args.limit)
    f = load_model(args.f)
    gs = [(name, load_model(path)) for name, path in parse_named(args.g, "--g")]
    rp = load_model(args.rp) if args.rp else None
    models = [("f_orig", f)] + [(f"g_{n}", g) for n, g in gs] + [(f"merged_{n}", SummedModel(f, g, f"merged_{n}"))
                                                                 for n, g in gs]
    if rp is not None:
        models += [("rp", rp)] + [(f"rp_merged_{n}", SummedModel(rp, g, f"rp_merged_{n}")) for n, g in gs]
    texts = [e.text for e in examples[:32]]
    equivalence = {n: check_apart(f, g, texts) for n, g in gs}
    targets = {t: TargetPositions(t, f.tokenizer) for t in ("first", "stop")}
    config = EvalConfig()
    rows, reference = {}, None
    load_before = load_average()
    start = time.perf_counter()
    for name, model in models:
        wall, cpu, r = timed(lambda m=model: evaluate_model(m, examples, targets, config, reference, progress=False))
        reference = reference or r["predictions"]
        rows[name] = {**{k: v for k, v in r.items() if k != "predictions"}, "wall_seconds": round(wall, 1),
                      "cpu_seconds": round(cpu, 1)}
        s = r["saliency"]
        print(f"{name:18s} {wall:7.1f} s  acc {r['accuracy']:.1f}  agree {r.get('agreement', 100.0):.1f}  "
              + "  ".join(f"{t}: " + "/".join(f"{s[t][m]['p1']:.1f}" for m in config.methods) for t in s),
              flush=True)
    total = time.perf_counter() - start
    result = {"command": "python bench/bench_facade_table.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "n": len(examples), "methods": list(config.methods), "eval_config": config.__dict__,
              "total_wall_seconds": round(total, 1), "apart_vs_dense_max_logit_diff": equivalence,
              "load_before": load_before, "load_after": load_average(), "machine": machine_info(), "models": rows}
    print(f"total {total:.1f} s for {len(models)} models x {len(examples)} inputs x {len(config.methods)} methods")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
