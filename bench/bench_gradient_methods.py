"""Throughput of gradient, integrated gradients and SmoothGrad: unmask side by side with Captum.

One process, one MiniLM classifier (runs/sst2 if it exists, else MiniLM with a fresh 2-label head: the
compute is the same), SST-2 dev sentences, targets = the model's predictions. Configurations per method:

  captum_doc   Captum as its docs show: one example per call (Saliency; LayerIntegratedGradients,
               n_steps=50; NoiseTunnel(Saliency) smoothgrad, nt_samples=10)
  captum_b16   the same Captum calls with 16 sentences per call, padded to the longest
  floor        plain torch: only the batched forward + backward passes the method needs (1 / 10 / 50 rows
               per sentence), on length-bucketed chunks of the default token budget
  unmask       unmask's method (length bucketing; IG adaptive Gauss-Legendre, tolerance 1e-3 of
               |F(x) - F(x')|, the same at tolerance 1e-2 (about the worst error of Captum's
               n_steps=50), and fixed 50 steps)

Tokenization and the prediction forward are outside the timed region for every configuration (the
``unmask_e2e`` rows time ``unmask.explain`` from raw text, prediction included). Each configuration runs
``--repeats`` times, round-robin, and the median is reported. Accuracy: gradients vs Captum, IG
completeness error, SmoothGrad vs Captum with the same noise draws.

  python bench/bench_gradient_methods.py --limit 64           # quick
  python bench/bench_gradient_methods.py --limit 256 --mixed  # the numbers in bench/results.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_accuracy  # noqa: E402
import bench_captum  # noqa: E402
from bench_common import (ROOT, Inputs, Timing, default_model_spec, load_average, machine_info,  # noqa: E402
                          make_inputs, timed)
from bench_floor import floor  # noqa: E402

import unmask  # noqa: E402
from unmask.attribution.base import DEFAULT_TOKEN_BUDGET  # noqa: E402
from unmask.attribution.explain import attribute_batch  # noqa: E402
from unmask.attribution.gradient import Gradient  # noqa: E402
from unmask.attribution.integrated_gradients import IntegratedGradients  # noqa: E402
from unmask.attribution.smoothgrad import SmoothGrad  # noqa: E402
from unmask.data import load_task  # noqa: E402
from unmask.models import load_model  # noqa: E402

METHODS = ("gradient", "smoothgrad", "integrated_gradients")
FLOOR_ROWS = {"gradient": 1, "smoothgrad": bench_captum.SG_SAMPLES, "integrated_gradients": bench_captum.IG_STEPS}


UNMASK_VARIANTS = {"gradient": ("unmask",), "smoothgrad": ("unmask", "unmask_bf16"),
                   "integrated_gradients": ("unmask_local", "unmask_local_tol1e-2", "unmask_global", "unmask_fixed50")}


def unmask_method(method: str, variant: str, token_budget: int):
    """unmask's configuration ``variant`` of ``method`` (``unmask`` = the defaults)."""
    if method == "gradient":
        return Gradient(token_budget=token_budget)
    if method == "smoothgrad":
        precision = "bfloat16" if variant == "unmask_bf16" else "float32"
        return SmoothGrad(samples=bench_captum.SG_SAMPLES, token_budget=token_budget, precision=precision)
    if variant == "unmask_fixed50":
        return IntegratedGradients(steps=bench_captum.IG_STEPS, tolerance=None, token_budget=token_budget)
    refine = "global" if variant == "unmask_global" else "local"
    tolerance = 1e-2 if variant == "unmask_local_tol1e-2" else 1e-3  # 1e-2: Captum n_steps=50's worst error
    return IntegratedGradients(tolerance=tolerance, refine=refine, token_budget=token_budget)


def run_unmask(model, inputs: Inputs, method) -> dict:
    records = attribute_batch(model, inputs.batch, method, inputs.targets, inputs.logits)
    return {"scores": [r.scores for r in records], "extras": [r.extras for r in records]}


def run_explain(model, inputs: Inputs, method) -> dict:
    records = unmask.explain(model, inputs.texts, methods=[method])[method.name]
    return {"scores": [r.scores for r in records], "extras": [r.extras for r in records]}


def configurations(model, inputs: Inputs, methods: list[str], budget: int, e2e: bool, ig_steps_equal: int) -> dict:
    """``{(method, config): callable}`` in the order they run within each repeat."""
    cfg = {}
    for m in methods:
        run = bench_captum.RUNNERS[m]
        cfg[(m, "captum_doc")] = lambda run=run: run(model, inputs, per_call=1)
        cfg[(m, "captum_b16")] = lambda run=run: run(model, inputs, per_call=bench_captum.BATCH)
        if m == "integrated_gradients" and ig_steps_equal:
            cfg[(m, f"captum_doc_{ig_steps_equal}")] = lambda run=run: run(model, inputs, 1, n_steps=ig_steps_equal)
        cfg[(m, "floor")] = lambda m=m: floor(model, inputs, FLOOR_ROWS[m], budget)
        for v in UNMASK_VARIANTS[m]:
            cfg[(m, v)] = lambda m=m, v=v: run_unmask(model, inputs, unmask_method(m, v, budget))
        if e2e:
            v = UNMASK_VARIANTS[m][0]
            cfg[(m, v + "_e2e")] = lambda m=m, v=v: run_explain(model, inputs, unmask_method(m, v, budget))
    return cfg


def run_set(model, texts: list[str], methods: list[str], repeats: int, budget: int, e2e: bool,
            ig_steps_equal: int, label: str) -> dict:
    inputs = make_inputs(model, texts)
    warm = make_inputs(model, texts[:4])
    for fn in configurations(model, warm, methods, budget, e2e, ig_steps_equal).values():  # warm-up
        fn()
    cfg = configurations(model, inputs, methods, budget, e2e, ig_steps_equal)
    timings = {k: Timing() for k in cfg}
    outputs: dict = {}
    for r in range(repeats):
        for key, fn in cfg.items():
            load = load_average()[0]
            seconds, cpu, outputs[key] = timed(fn)
            timings[key].seconds.append(seconds)
            timings[key].cpu_seconds.append(cpu)
            timings[key].loads.append(load)
            print(f"[{label} repeat {r + 1}/{repeats}] {key[0]:22s} {key[1]:16s} "
                  f"{1000 * seconds / len(texts):9.2f} ms/sentence  (cpu {1000 * cpu / len(texts):9.2f})  "
                  f"load {load:.2f}", flush=True)
    accuracy = bench_accuracy.evaluate(model, inputs, outputs, methods, budget)
    lengths = np.array(inputs.lengths)
    return {
        "label": label, "sentences": len(texts), "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()),
        "timings": {f"{m}/{c}": {"seconds": t.seconds, "cpu_seconds": t.cpu_seconds, "loads": t.loads,
                                 "ms_per_sentence": 1000 * t.median / len(texts),
                                 "cpu_ms_per_sentence": 1000 * t.cpu_median / len(texts),
                                 "sentences_per_second": len(texts) / t.median}
                    for (m, c), t in timings.items()},
        "accuracy": accuracy,
    }


# ------------------------------------------------------------------------------------------ memory
LONG_TEXT = " ".join(["the film is an uneven , often funny and sometimes deeply moving portrait of a family"] * 60)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that over from the
    parent across fork + exec, so a child started by a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (the memory check needs Linux)")


def memory_child(model_spec: str, steps: int, budget: int) -> None:
    """Peak RSS of IG with ``steps`` fixed steps on one 512-token input (run in a fresh process)."""
    import warnings

    model = load_model(model_spec, num_labels=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = model.encode([LONG_TEXT])
    before = peak_rss_mib()
    target = model.logits(batch).argmax(-1)
    start = time.perf_counter()
    _, extras = IntegratedGradients(steps=steps, tolerance=None, token_budget=budget).attribute(model, batch, target)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    print(json.dumps({"tokens": batch.lengths[0], "steps": steps, "token_budget": budget,
                      "peak_rss_after_load_mib": before, "peak_rss_mib": peak, "seconds": seconds,
                      "relative_error": extras[0]["relative_error"]}))


def measure_memory(model_spec: str, steps: int, budget: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", "--model", model_spec, "--memory-steps", str(steps),
           "--token-budget", str(budget)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ report
def table(result: dict, methods: list[str]) -> str:
    t = result["timings"]
    lines = ["| method | configuration | ms/sentence | sentences/s | speed-up vs Captum doc | "
             "vs Captum b16 | time / floor | CPU ms/sentence |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        doc, b16, fl = (t[f"{m}/{c}"]["ms_per_sentence"] for c in ("captum_doc", "captum_b16", "floor"))
        for key, v in t.items():
            if not key.startswith(m + "/"):
                continue
            ms = v["ms_per_sentence"]
            lines.append(f"| {m} | {key.split('/', 1)[1]} | {ms:.2f} | {v['sentences_per_second']:.1f} | "
                         f"{doc / ms:.2f}x | {b16 / ms:.2f}x | {ms / fl:.2f} | {v['cpu_ms_per_sentence']:.2f} |")
    return "\n".join(lines)


def save(result: dict, path: Path) -> None:
    """Write the results so far (temporary file + rename: never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory or 'minilm' (default: runs/sst2 if present)")
    p.add_argument("--limit", type=int, default=256, help="first N SST-2 dev sentences (default 256)")
    p.add_argument("--mixed", action="store_true", help="also run all 872 dev sentences (length-mixed case)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mixed-repeats", type=int, default=1, help="repeats for the 872-sentence set (default 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads (default: nproc; torch's own default follows the load average)")
    p.add_argument("--token-budget", type=int, default=DEFAULT_TOKEN_BUDGET)
    p.add_argument("--e2e", action="store_true", help="also time unmask.explain from raw text")
    p.add_argument("--ig-equal-accuracy-steps", type=int, default=0, metavar="N",
                   help="also time Captum's documented IG with n_steps=N (e.g. 128: enough for the tolerance)")
    p.add_argument("--memory", action="store_true", help="peak RSS of 300-step IG on a 512-token input")
    p.add_argument("--memory-steps", type=int, default=300)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench"), help="directory for the JSON results")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    spec = args.model or default_model_spec()
    if args.memory_child:
        memory_child(spec, args.memory_steps, args.token_budget)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    torch.manual_seed(0)
    model = load_model(spec, num_labels=2)
    for prm in model.model.parameters():  # Captum and the floor see the same model as unmask
        prm.requires_grad_(True)
    dev = [e.text for e in load_task("sst2", "dev")]
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": spec,
              "machine": machine_info(), "load_at_start": load_average(), "sets": []}
    print(json.dumps(result["machine"]), flush=True)
    sets = [(f"first {min(args.limit, len(dev))}", dev[:args.limit], args.repeats, args.ig_equal_accuracy_steps)]
    if args.mixed:
        sets.append((f"all {len(dev)} (length-mixed)", dev, args.mixed_repeats, 0))
    path = Path(args.out) / f"bench_{time.strftime('%Y%m%d_%H%M%S')}.json"
    for label, texts, repeats, equal_steps in sets:
        res = run_set(model, texts, methods, repeats, args.token_budget, args.e2e, equal_steps, label)
        result["sets"].append(res)
        save(result, path)
        print(f"\n## {label}: {res['sentences']} sentences, {res['mean_tokens']:.1f} tokens on average "
              f"(max {res['max_tokens']})\n")
        print(table(res, methods))
        print("\naccuracy:", json.dumps(res["accuracy"], indent=1))
    if args.memory:
        result["memory"] = measure_memory(spec, args.memory_steps, args.token_budget)
        print("\nmemory:", json.dumps(result["memory"]))
    result["load_at_end"] = load_average()
    save(result, path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
