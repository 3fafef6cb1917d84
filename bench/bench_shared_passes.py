"""The audit's three gradient passes (first-order occlusion, gradient, gradient x input): run apart vs shared.

    python bench/bench_shared_passes.py --model runs/zoo/merged_stop_plain --n 200 --threads 1 --repeats 2

Each way as the audit runs it (float32, auto token budget): ``former`` = the audit before sharing
(first-order occlusion in one pass over the whole batch, then gradient and gradient x input each alone);
``apart`` = one ``attribute_methods`` call per method; ``shared`` = one call for the three (one pass per
length bucket). Reports wall seconds per repeat (the three alternate) and checks that apart and shared
scores are bitwise equal.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_dev_model_arguments, dev_model, load_average, lscpu_info, machine_info  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from unmask.attribution.explain import attribute_methods, predict_batch
    from unmask.audit.behavior import audit_method, first_order_occlusion
    from unmask.audit.first_order import FirstOrderOcclusion

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dev_model_arguments(p, threads=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    model, texts = dev_model(args)
    batch = model.encode(texts)
    logits = predict_batch(model, batch)
    target = logits.argmax(-1)
    budget = FirstOrderOcclusion().token_budget
    methods = [FirstOrderOcclusion(), audit_method("gradient", budget), audit_method("gradient_x_input", budget)]
    attribute_methods(model, batch.select([0, 1]), methods, target[:2], logits[:2])  # warm-up
    load_before = load_average()
    former, apart, shared = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        first_order_occlusion(model, batch, target)
        [attribute_methods(model, batch, [m], target, logits) for m in methods[1:]]
        former.append(time.perf_counter() - start)
        start = time.perf_counter()
        one = [attribute_methods(model, batch, [m], target, logits)[0] for m in methods]
        apart.append(time.perf_counter() - start)
        start = time.perf_counter()
        together = attribute_methods(model, batch, methods, target, logits)
        shared.append(time.perf_counter() - start)
    equal = all(np.array_equal(a.scores, b.scores) for x, y in zip(one, together) for a, b in zip(x, y))
    result = {"command": "python bench/bench_shared_passes.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "n": args.n, "threads": args.threads,
              "former_seconds": [round(t, 2) for t in former], "apart_seconds": [round(t, 2) for t in apart],
              "shared_seconds": [round(t, 2) for t in shared], "speedup": round(min(former) / min(shared), 2),
              "bitwise_equal": equal, "load_before": load_before, "load_after": load_average(),
              "machine": machine_info(), "native_bf16": lscpu_info().get("native_bf16")}
    print(json.dumps(result, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
