"""Peak memory (max RSS of a child process) of IG on a long input, or of any command.

    python bench/bench_memory.py                       # IG, 512 tokens x 300 steps, MiniLM (the issue's case)
    python bench/bench_memory.py --tokens 512 --steps 300 --memory 512MiB --precision float32
    python bench/bench_memory.py --cmd -- make demo    # peak RSS of any command (its largest process)

The IG case runs in a fresh child Python so the number is that run alone: the child loads
``unmask.load_model("minilm", num_labels=2)``, builds one input of exactly ``--tokens`` word pieces,
runs ``IntegratedGradients(steps=N, tolerance=None)`` with the default (model-derived) token budget and
prints its own VmHWM (peak resident set, /proc/self/status) with the budget, precision and seconds.
``--memory`` sets ``UNMASK_MEMORY_BUDGET`` for the child. ``--cmd`` reports ``ru_maxrss`` of the children.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
import unmask
from unmask.attribution.budget import token_budget_for
from unmask.attribution.integrated_gradients import IntegratedGradients

tokens, steps, precision = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
model = unmask.load_model("minilm", num_labels=2)
words = ("the film is a gripping , funny and moving story about friendship " * 200).split()
text = " ".join(words[:tokens - 2])  # one word piece per word here, plus [CLS] and [SEP]
assert len(model.encode([text]).tokens[0]) == tokens, len(model.encode([text]).tokens[0])
start = time.perf_counter()
rec = unmask.explain(model, [text], methods=[IntegratedGradients(steps=steps, tolerance=None,
                                                                 precision=precision)])["integrated_gradients"][0]
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"tokens": len(rec.tokens), "steps": rec.extras["steps"], "precision": rec.extras["precision"],
                  "token_budget": token_budget_for(model, tokens), "seconds": round(seconds, 1),
                  "relative_error": rec.extras["relative_error"],
                  "vmhwm_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1)}))
"""


def ig_peak(tokens: int, steps: int, threads: int, precision: str, memory: str | None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    if memory:
        env["UNMASK_MEMORY_BUDGET"] = memory
    out = subprocess.run([sys.executable, "-c", CHILD, str(tokens), str(steps), str(threads), precision],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def command_peak(cmd: list[str]) -> dict:
    start = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {"command": " ".join(cmd), "returncode": rc, "seconds": round(time.perf_counter() - start, 1),
            "max_rss_mib": round(peak_kib / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--memory", default=None, help="UNMASK_MEMORY_BUDGET for the child (default: 512 MiB)")
    p.add_argument("--cmd", nargs=argparse.REMAINDER, help="measure this command instead (after --)")
    args = p.parse_args(argv)
    if args.cmd:
        cmd = args.cmd[1:] if args.cmd[0] == "--" else args.cmd
        result = command_peak(cmd)
    else:
        result = ig_peak(args.tokens, args.steps, args.threads, args.precision, args.memory)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
