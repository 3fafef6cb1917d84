"""Cost of `unmask.audit` on a 6-layer model: wall and CPU seconds for N SST-2 dev sentences, per stage.

    python bench/bench_audit.py --model runs/zoo/sst2_s0_16k --n 200 --threads 2 --json bench/results/audit.json

Target (issue 11): <= 5 minutes for 200 sentences on 2 cores. Records the CPU flags (lscpu) and the load.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_dev_model_arguments, dev_model, load_average, machine_info, timed  # noqa: E402


def cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Flags")), "")


def main(argv: list[str] | None = None) -> int:
    from unmask.audit import audit

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dev_model_arguments(p, threads=2)
    args = p.parse_args(argv)
    model, texts = dev_model(args)
    stages: list[tuple[str, float]] = []
    start = time.perf_counter()
    load_before = load_average()
    wall, cpu, report = timed(lambda: audit(model, texts, progress=lambda s: stages.append(
        (s, time.perf_counter() - start))))
    flags = cpu_flags()
    result = {"command": "python bench/bench_audit.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "n": args.n, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
              "verdict": report.verdict, "load_before": load_before, "load_after": load_average(),
              "stages_started_at": [(s, round(t, 1)) for s, t in stages], "machine": machine_info(),
              "avx512_bf16": "avx512_bf16" in flags.split(), "cpu_flags": flags}
    print(json.dumps({k: v for k, v in result.items() if k != "cpu_flags"}, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
