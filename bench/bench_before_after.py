"""Before / after: the same unmask workload on an older revision of ``src/`` and on the working tree.

The older ``src/`` is exported with ``git archive`` to a temporary directory (the repository is not
touched) and each side runs in its own subprocess with ``PYTHONPATH`` pointing at its ``src``. Sides
alternate (old, new, old, new, ...) so that a change in machine load hits both; the median is reported.
With ``--threads 1`` the process CPU time is a load-robust measure of the work done.

  python bench/bench_before_after.py --rev c46a68d~1 --limit 64 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("gradient", "smoothgrad", "integrated_gradients", "integrated_gradients_fixed50",
             "integrated_gradients_local")

CHILD = r"""
import json, os, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from unmask.attribution.explain import attribute_batch
from unmask.attribution.gradient import Gradient
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.data import load_task
from unmask.models import load_model
model = load_model(sys.argv[1], num_labels=2)
texts = [e.text for e in load_task("sst2", "dev")[:int(sys.argv[2])]]
batch = model.encode(texts)
logits = model.logits(batch)
target = logits.argmax(-1)
make = {"gradient": lambda: Gradient(), "smoothgrad": lambda: SmoothGrad(),
        "integrated_gradients": lambda: IntegratedGradients(),
        "integrated_gradients_fixed50": lambda: IntegratedGradients(steps=50, tolerance=None),
        "integrated_gradients_local": lambda: IntegratedGradients(refine="local")}
out = {}
for name in sys.argv[4].split(","):
    try:
        make[name]()
    except TypeError:  # option not in this revision
        out[name] = None
        continue
    attribute_batch(model, batch.select([0, 1]), make[name](), target[:2], logits[:2])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    records = attribute_batch(model, batch, make[name](), target, logits)
    out[name] = {"wall_ms": 1000 * (time.perf_counter() - wall) / len(texts),
                 "cpu_ms": 1000 * (time.process_time() - cpu) / len(texts),
                 "load": os.getloadavg()[0],
                 "steps": [r.extras.get("steps") for r in records],
                 "relative_error": [r.extras.get("relative_error") for r in records]}
print(json.dumps(out))
"""


def export_src(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True).stdout
    tar = into / "src.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "src"


def run_side(src: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-c", CHILD, args.model, str(args.limit), str(args.threads), args.workloads]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", required=True, help="git revision of the 'before' src/")
    p.add_argument("--model", default=str(ROOT / "runs" / "sst2"))
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"before": export_src(args.rev, Path(tmp)), "after": ROOT / "src"}
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for r in range(args.repeats):
            for name, src in sides.items():
                runs[name].append(run_side(src, args))
                print(f"repeat {r + 1} {name}: " + ", ".join(
                    f"{w} {v['cpu_ms']:.1f} cpu / {v['wall_ms']:.1f} wall ms (load {v['load']:.1f})"
                    for w, v in runs[name][-1].items() if v), flush=True)
    print(f"\n{args.limit} SST-2 dev sentences, {args.threads} thread(s), before = {args.rev}, "
          f"median of {args.repeats}\n")
    print("| workload | before CPU ms/sent | after CPU ms/sent | CPU speed-up | before wall | after wall | "
          "mean steps before / after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    def cell(side: str, w: str, key: str) -> float | None:
        vals = [x[w][key] for x in runs[side] if x.get(w)]
        return statistics.median(vals) if vals else None

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for w in args.workloads.split(","):
        cpu = {s: cell(s, w, "cpu_ms") for s in runs}
        wall = {s: cell(s, w, "wall_ms") for s in runs}
        steps = []
        for s in runs:
            last = runs[s][-1].get(w)
            steps.append(f"{statistics.mean(last['steps']):.1f}" if last and last["steps"][0] is not None else "-")
        ratio = f"{cpu['before'] / cpu['after']:.2f}x" if cpu["before"] and cpu["after"] else "-"
        print(f"| {w} | {fmt(cpu['before'])} | {fmt(cpu['after'])} | {ratio} | {fmt(wall['before'])} | "
              f"{fmt(wall['after'])} | {' / '.join(steps)} |")


if __name__ == "__main__":
    main()
