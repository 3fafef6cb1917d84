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

Equal-accuracy configurations (the speed-up must come from less work, not from lower accuracy):

  unmask_eq_mc       SmoothGrad with antithetic noise (pairs +e, -e) and the fewest samples k (of
                     --sg-eq-samples) whose Monte-Carlo error is <= that of Captum's documented 10-sample
                     NoiseTunnel, both measured in this run against a 200-sample plain-Gaussian reference of
                     the smoothed gradient (same noise scale, 0.01 x (max - min)) on the first
                     --sg-eq-sentences sentences, before the timing; float32
  unmask_eq_mc_auto  the same with precision="auto" (k chosen again in the precision auto resolves to)
  floor_<k>rows      the floor with k rows per sentence (the work unmask_eq_mc needs)
  unmask_eq_acc      IG (adaptive local Gauss-Legendre) with tolerance = the --ig-eq-percentile-th
                     percentile of the completeness errors of Captum's documented n_steps=50 in this run,
                     so unmask's worst error (each sentence meets the tolerance) is <= that percentile of
                     Captum's, and unmask's percentile is too

SmoothGrad error measure: per sentence ||est - ref||_2 / ||ref||_2 over the token scores the bench compares
(mean gradient . clean embedding, [CLS]/[SEP] included; padding dropped); the median over sentences x
seeds (--sg-eq-seeds independent draws of every estimator) decides. The reference's own Monte-Carlo error
adds the same amount to every estimator's measured error, so the comparison is fair; it is reported.

Tokenization and the prediction forward are outside the timed region for every configuration (the
``unmask_e2e`` rows time ``unmask.explain`` from raw text, prediction included). Each configuration runs
``--repeats`` times, round-robin, and the median is reported. Accuracy: gradients vs Captum, IG
completeness error, SmoothGrad vs Captum with the same noise draws. The machine record has lscpu's
model name and flags (avx512_bf16 / amx present or not) and what precision="auto" resolves to.

  python bench/bench_gradient_methods.py --limit 64           # quick
  python bench/bench_gradient_methods.py --limit 256 --mixed  # the numbers in bench/results.md
  python bench/bench_gradient_methods.py --limit 64 --threads 2 --repeats 3 \
      --skip integrated_gradients/captum_b16,integrated_gradients/unmask_global   # equal accuracy, ~10 min
  python bench/bench_gradient_methods.py --limit 4 --repeats 1 --threads 1 --sg-eq-seeds 1  # smoke
"""
from __future__ import annotations

import argparse
import fnmatch
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
from unmask.attribution.precision import cpu_has_native_bf16, probe, resolve_precision  # noqa: E402
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


# configurations bench_accuracy.evaluate reads: never skipped
REQUIRED = {"gradient/captum_doc", "gradient/captum_b16", "gradient/unmask", "smoothgrad/captum_doc",
            "smoothgrad/unmask", "integrated_gradients/captum_doc", "integrated_gradients/unmask_fixed50"}


def ig_eq_tolerance(captum_errors: list[float], percentile: float) -> float:
    """unmask_eq_acc's tolerance: that percentile (numpy's linear interpolation) of Captum's completeness
    errors, at least 1e-7 (below it float32 cannot resolve the error)."""
    return max(float(np.percentile(np.asarray(captum_errors, dtype=float), percentile)), 1e-7)


def configurations(model, inputs: Inputs, methods: list[str], budget: int, e2e: bool, ig_steps_equal: int,
                   eq: dict | None = None, skip: tuple[str, ...] = ()) -> dict:
    """``{(method, config): callable}`` in the order they run within each repeat. ``eq``: the equal-accuracy
    settings (``sg_samples``, ``sg_samples_auto``, ``ig_percentile``); unmask_eq_acc takes its tolerance
    from the captum_doc IG run of the same repeat, which runs before it."""
    cfg = {}
    eq = eq or {}
    state: dict = {}
    for m in methods:
        run = bench_captum.RUNNERS[m]
        if m == "integrated_gradients":
            def captum_ig(run=run):
                out = run(model, inputs, per_call=1)
                state["captum_doc_errors"] = out["relative_error"]
                return out
            cfg[(m, "captum_doc")] = captum_ig
        else:
            cfg[(m, "captum_doc")] = lambda run=run: run(model, inputs, per_call=1)
        cfg[(m, "captum_b16")] = lambda run=run: run(model, inputs, per_call=bench_captum.BATCH)
        if m == "integrated_gradients" and ig_steps_equal:
            cfg[(m, f"captum_doc_{ig_steps_equal}")] = lambda run=run: run(model, inputs, 1, n_steps=ig_steps_equal)
        cfg[(m, "floor")] = lambda m=m: floor(model, inputs, FLOOR_ROWS[m], budget)
        for v in UNMASK_VARIANTS[m]:
            cfg[(m, v)] = lambda m=m, v=v: run_unmask(model, inputs, unmask_method(m, v, budget))
        if m == "smoothgrad" and eq.get("sg_samples"):
            k, k_auto = eq["sg_samples"], eq["sg_samples_auto"]
            cfg[(m, f"floor_{k}rows")] = lambda k=k: floor(model, inputs, k, budget)
            if k_auto != k:
                cfg[(m, f"floor_{k_auto}rows")] = lambda k=k_auto: floor(model, inputs, k, budget)
            cfg[(m, "unmask_eq_mc")] = lambda k=k: run_unmask(model, inputs, SmoothGrad(
                samples=k, noise="antithetic", noise_scale=bench_captum.SG_SCALE, token_budget=budget,
                precision="float32"))
            cfg[(m, "unmask_eq_mc_auto")] = lambda k=k_auto: run_unmask(model, inputs, SmoothGrad(
                samples=k, noise="antithetic", noise_scale=bench_captum.SG_SCALE, token_budget=budget,
                precision="auto"))
        if m == "integrated_gradients" and eq.get("ig_percentile") is not None:
            def eq_acc(q=eq["ig_percentile"]):
                if "captum_doc_errors" not in state:
                    raise RuntimeError("unmask_eq_acc needs the captum_doc IG run of the same repeat first")
                tol = ig_eq_tolerance(state["captum_doc_errors"], q)
                out = run_unmask(model, inputs, IntegratedGradients(tolerance=tol, refine="local",
                                                                    token_budget=budget))
                out["tolerance"] = tol
                return out
            cfg[(m, "unmask_eq_acc")] = eq_acc
        if e2e:
            v = UNMASK_VARIANTS[m][0]
            cfg[(m, v + "_e2e")] = lambda m=m, v=v: run_explain(model, inputs, unmask_method(m, v, budget))
    if skip:
        cfg = {k: f for k, f in cfg.items() if not any(fnmatch.fnmatchcase(f"{k[0]}/{k[1]}", pat) for pat in skip)}
    return cfg


def check_skip(patterns: tuple[str, ...]) -> None:
    hit = sorted(r for r in REQUIRED if any(fnmatch.fnmatchcase(r, pat) for pat in patterns))
    if hit:
        raise SystemExit(f"--skip would drop {hit}: the accuracy evaluation needs them")


# ------------------------------------------------------------------------------- equal accuracy
SG_EQ_SAMPLES = (2, 4, 6, 8, 10)
SG_REFERENCE_SAMPLES = 200               # plain Gaussian, as two independent halves (their gap = its own error)
SG_REFERENCE_SEEDS = (1_000_003, 1_000_033)
CAPTUM_SEED_STRIDE = 100_000             # Captum draw j: torch.manual_seed(j * stride + sentence index)


def subset_inputs(inputs: Inputs, count: int) -> Inputs:
    idx = list(range(count))
    return Inputs(inputs.texts[:count], inputs.batch.select(idx), inputs.singles[:count], inputs.targets[:count],
                  inputs.logits[:count])


def relative_errors(estimate: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    """Per sentence ||est - ref||_2 / ||ref||_2 over its token scores (the measure the choice uses)."""
    return np.array([np.linalg.norm(e - r) / max(np.linalg.norm(r), 1e-30) for e, r in zip(estimate, reference)])


def max_norm_errors(estimate: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    """Per sentence max |est - ref| / max |ref| (bench_accuracy.score_difference's measure, for comparison)."""
    return np.array([np.abs(e - r).max() / max(np.abs(r).max(), 1e-30) for e, r in zip(estimate, reference)])


def error_stats(l2: np.ndarray, max_norm: np.ndarray | None = None) -> dict:
    out = {"median": float(np.median(l2)), "mean": float(l2.mean()), "p90": float(np.percentile(l2, 90)),
           "max": float(l2.max()), "n": int(len(l2))}
    if max_norm is not None:
        out["median_max_norm"] = float(np.median(max_norm))
    return out


def sg_scores(model, inputs: Inputs, budget: int, samples: int, noise: str, seed: int, precision: str,
              noise_scale: float = bench_captum.SG_SCALE) -> tuple[list[np.ndarray], list[dict]]:
    method = SmoothGrad(samples=samples, noise=noise, noise_scale=noise_scale, seed=seed, token_budget=budget,
                        precision=precision)
    out = run_unmask(model, inputs, method)
    return [np.asarray(x, dtype=np.float64) for x in out["scores"]], out["extras"]


def smoothgrad_equal_mc(model, inputs: Inputs, budget: int, sentences: int, samples: tuple[int, ...],
                        seeds: int) -> tuple[dict, list[np.ndarray]]:
    """Monte-Carlo error of every SmoothGrad estimator against a 200-sample plain-Gaussian reference on the
    first ``sentences`` sentences, and the fewest antithetic samples at Captum's 10-sample error (float32,
    and again in the precision "auto" resolves to). Returns (record, reference scores)."""
    count = min(sentences, len(inputs.texts))
    sub = subset_inputs(inputs, count)
    start = time.perf_counter()
    half = SG_REFERENCE_SAMPLES // 2
    a, _ = sg_scores(model, sub, budget, half, "gaussian", SG_REFERENCE_SEEDS[0], "float32")
    b, _ = sg_scores(model, sub, budget, half, "gaussian", SG_REFERENCE_SEEDS[1], "float32")
    ref = [(x + y) / 2 for x, y in zip(a, b)]
    # sd of a 200-mean = |A - B| / 2 in expectation (A, B independent 100-means)
    ref_self = np.array([np.linalg.norm(x - y) / 2 / max(np.linalg.norm(r), 1e-30) for x, y, r in zip(a, b, ref)])
    estimators: dict[str, dict] = {}

    def record(name: str, runs: list[list[np.ndarray]], **info) -> None:
        l2 = np.concatenate([relative_errors(r, ref) for r in runs])
        mx = np.concatenate([max_norm_errors(r, ref) for r in runs])
        estimators[name] = {**info, **error_stats(l2, mx),
                            "seed0_median": float(np.median(relative_errors(runs[0], ref))),
                            "per_sentence": [relative_errors(r, ref).round(6).tolist() for r in runs]}

    clean, _ = sg_scores(model, sub, budget, 1, "gaussian", 0, "float32", noise_scale=0.0)
    record("gradient_no_noise", [clean], samples=0, noise="none", precision="float32")
    captum = [[np.asarray(x, dtype=np.float64) for x in
               bench_captum.smoothgrad(model, sub, per_call=1, seed=j * CAPTUM_SEED_STRIDE)["scores"]]
              for j in range(seeds)]
    record("captum_doc", captum, samples=bench_captum.SG_SAMPLES, noise="gaussian", precision="float32")
    auto = resolve_precision("auto", model)
    precisions = ["float32"] + (["bfloat16"] if auto == "bfloat16" else [])
    for noise in ("gaussian", "antithetic"):
        for prec in precisions if noise == "antithetic" else ["float32"]:
            for k in samples:
                if noise == "antithetic" and k % 2:
                    continue
                runs = [sg_scores(model, sub, budget, k, noise, s, prec)[0] for s in range(seeds)]
                record(f"unmask_{noise}_{prec}_k{k}", runs, samples=k, noise=noise, precision=prec)
    target = estimators["captum_doc"]["median"]

    def choose(prec: str) -> dict:
        ok = [e["samples"] for e in estimators.values()
              if e["noise"] == "antithetic" and e["precision"] == prec and e["median"] <= target]
        k = min(ok) if ok else max(x for x in samples if x % 2 == 0)
        return {"samples": k, "met": bool(ok), "median_error": estimators[f"unmask_antithetic_{prec}_k{k}"]["median"]}

    chosen = {"float32": choose("float32"), "auto": {**choose(auto), "precision": auto}}
    rec = {"sentences": count, "seeds": seeds, "reference_samples": SG_REFERENCE_SAMPLES,
           "reference_seeds": list(SG_REFERENCE_SEEDS), "noise_scale": bench_captum.SG_SCALE,
           "error_measure": "per sentence ||est - ref||_2 / ||ref||_2 over the token scores (mean gradient . "
                            "clean embedding, [CLS]/[SEP] included); statistics over sentences x seeds; "
                            "median_max_norm = median of max|est - ref| / max|ref| (bench_accuracy's measure)",
           "criterion": "smallest antithetic k with median error <= captum_doc's median error",
           "reference_own_error": error_stats(ref_self), "captum_doc_median_error": target,
           "estimators": estimators, "chosen": chosen, "seconds": time.perf_counter() - start}
    return rec, ref


def smoothgrad_timed_errors(outputs: dict, ref: list[np.ndarray]) -> dict:
    """The error of each timed SmoothGrad configuration's own output (seed 0 / Captum's seeds) vs the
    reference, on the reference's sentences, and the precision each used."""
    out = {}
    for (m, cfg), o in outputs.items():
        if m != "smoothgrad" or "scores" not in o or cfg.startswith("floor") or cfg.endswith("_e2e"):
            continue
        est = [np.asarray(x, dtype=np.float64) for x in o["scores"][:len(ref)]]
        out[cfg] = error_stats(relative_errors(est, ref), max_norm_errors(est, ref))
        extras = o.get("extras") or [{}]
        for key in ("precision", "precision_error"):
            if key in extras[0]:
                out[cfg][key] = extras[0][key]
    return out


def ig_error_stats(errors: list[float], tolerance: float) -> dict:
    e = np.asarray(errors, dtype=float)
    return {"median": float(np.median(e)), "p95": float(np.percentile(e, 95)), "max": float(e.max()),
            "share_over_tolerance": float((e > tolerance).mean()), "n": int(len(e))}


def ig_equal_accuracy(outputs: dict, percentile: float) -> dict:
    """unmask_eq_acc's completeness errors against Captum-50's (the same run), at the tolerance used."""
    captum = outputs[("integrated_gradients", "captum_doc")]["relative_error"]
    eq = outputs[("integrated_gradients", "unmask_eq_acc")]
    tol = eq["tolerance"]
    ours = [e["relative_error"] for e in eq["extras"]]
    steps = np.array([e["steps"] for e in eq["extras"]])
    c, u = ig_error_stats(captum, tol), ig_error_stats(ours, tol)
    return {"percentile": percentile, "tolerance": tol,
            "tolerance_rule": f"{percentile:g}th percentile (numpy linear) of captum_doc's completeness errors",
            "captum_doc": c, "unmask_eq_acc": u | {"mean_steps": float(steps.mean()), "max_steps": int(steps.max()),
                                                   "precision": eq["extras"][0].get("precision")},
            "unmask_max_le_captum_percentile": u["max"] <= tol * (1 + 1e-9),
            "unmask_p95_le_captum_p95": u["p95"] <= c["p95"], "unmask_max_le_captum_max": u["max"] <= c["max"],
            "unmask_median_le_captum_median": u["median"] <= c["median"],
            "note": "relative to |F(x) - F(x')|: Captum's reference is [CLS] [PAD].. [SEP], unmask's is zero"}


_SG_SCANS: dict = {}


def run_set(model, texts: list[str], methods: list[str], repeats: int, budget: int, e2e: bool,
            ig_steps_equal: int, label: str, eq_args: dict | None = None, skip: tuple[str, ...] = ()) -> dict:
    inputs = make_inputs(model, texts)
    warm = make_inputs(model, texts[:4])
    eq: dict = {}
    equal: dict = {}
    sg_ref = None
    if eq_args and "smoothgrad" in methods:  # before the timing: the timed configurations depend on it
        print(f"[{label}] SmoothGrad equal-MC-error scan on the first {min(eq_args['sg_sentences'], len(texts))} "
              f"sentences x {eq_args['sg_seeds']} seeds ...", flush=True)
        key = (tuple(texts[:eq_args["sg_sentences"]]), budget, eq_args["sg_samples"], eq_args["sg_seeds"])
        if key not in _SG_SCANS:  # the length-mixed set starts with the same sentences: scan once
            _SG_SCANS[key] = smoothgrad_equal_mc(model, inputs, budget, eq_args["sg_sentences"],
                                                 eq_args["sg_samples"], eq_args["sg_seeds"])
        scan, sg_ref = _SG_SCANS[key]
        equal["smoothgrad"] = dict(scan)
        ch = equal["smoothgrad"]["chosen"]
        eq["sg_samples"], eq["sg_samples_auto"] = ch["float32"]["samples"], ch["auto"]["samples"]
        print(sg_scan_table(equal["smoothgrad"]) + f"\n({equal['smoothgrad']['seconds']:.0f} s)\n", flush=True)
    if eq_args and "integrated_gradients" in methods:
        eq["ig_percentile"] = eq_args["ig_percentile"]
    for fn in configurations(model, warm, methods, budget, e2e, ig_steps_equal, eq, skip).values():  # warm-up
        fn()
    cfg = configurations(model, inputs, methods, budget, e2e, ig_steps_equal, eq, skip)
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
    if sg_ref is not None:
        equal["smoothgrad"]["timed_outputs"] = smoothgrad_timed_errors(outputs, sg_ref)
    if ("integrated_gradients", "unmask_eq_acc") in outputs:
        equal["integrated_gradients"] = ig_equal_accuracy(outputs, eq["ig_percentile"])
    ig_errors = {}
    for (m, c), o in outputs.items():
        if m == "integrated_gradients" and "relative_error" in o:
            ig_errors[c] = o["relative_error"]
        elif m == "integrated_gradients" and o.get("extras") and "relative_error" in o["extras"][0]:
            ig_errors[c] = [e["relative_error"] for e in o["extras"]]
    lengths = np.array(inputs.lengths)
    return {
        "label": label, "sentences": len(texts), "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()), "equal_accuracy": equal,
        "ig_error_percentiles": {c: {"median": float(np.median(e)), "p95": float(np.percentile(e, 95)),
                                     "max": float(np.max(e))} for c, e in ig_errors.items()},
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
def accuracy_notes(result: dict) -> dict[str, str]:
    """``{"method/config": short accuracy text}`` for the table's accuracy column."""
    notes: dict[str, str] = {}
    sg = result.get("equal_accuracy", {}).get("smoothgrad", {})
    for cfg, e in sg.get("timed_outputs", {}).items():
        prec = f", {e['precision']}" if "precision" in e else ""
        notes[f"smoothgrad/{cfg}"] = f"MC error {e['median']:.3f} (median, {e['n']} sent.{prec})"
    for cfg, e in result.get("ig_error_percentiles", {}).items():
        notes[f"integrated_gradients/{cfg}"] = f"completeness p95 {e['p95']:.1e}, max {e['max']:.1e}"
    ig = result.get("equal_accuracy", {}).get("integrated_gradients")
    if ig:
        notes["integrated_gradients/unmask_eq_acc"] += f" (tolerance {ig['tolerance']:.1e})"
    return notes


def table(result: dict, methods: list[str]) -> str:
    t = result["timings"]
    notes = accuracy_notes(result)
    lines = ["| method | configuration | ms/sentence | sentences/s | speed-up vs Captum doc | "
             "vs Captum b16 | time / floor | CPU ms/sentence | accuracy |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in methods:
        doc, b16, fl = (t.get(f"{m}/{c}", {}).get("ms_per_sentence") for c in ("captum_doc", "captum_b16", "floor"))
        for key, v in t.items():
            if not key.startswith(m + "/"):
                continue
            ms = v["ms_per_sentence"]
            ratio = lambda ref: f"{ref / ms:.2f}x" if ref else ""  # noqa: E731
            lines.append(f"| {m} | {key.split('/', 1)[1]} | {ms:.2f} | {v['sentences_per_second']:.1f} | "
                         f"{ratio(doc)} | {ratio(b16)} | {(ms / fl) if fl else float('nan'):.2f} | "
                         f"{v['cpu_ms_per_sentence']:.2f} | {notes.get(key, '')} |")
    return "\n".join(lines)


def sg_scan_table(sg: dict) -> str:
    """Every SmoothGrad estimator's error vs the 200-sample reference (markdown)."""
    lines = [f"SmoothGrad Monte-Carlo error vs a {sg['reference_samples']}-sample plain-Gaussian reference, "
             f"first {sg['sentences']} sentences x {sg['seeds']} seeds; error = ||est - ref|| / ||ref|| per "
             f"sentence over the token scores (reference's own error: median {sg['reference_own_error']['median']:.3f},"
             f" adds to all alike)", "",
             "| estimator | samples | noise | precision | median | mean | p90 | max | seed-0 median | "
             "median max-norm |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in sg["estimators"].items():
        lines.append(f"| {name} | {e['samples']} | {e['noise']} | {e['precision']} | {e['median']:.4f} | "
                     f"{e['mean']:.4f} | {e['p90']:.4f} | {e['max']:.4f} | {e['seed0_median']:.4f} | "
                     f"{e['median_max_norm']:.4f} |")
    ch = sg["chosen"]
    lines += ["", f"criterion: {sg['criterion']} ({sg['captum_doc_median_error']:.4f}); chosen: float32 k = "
              f"{ch['float32']['samples']} (met: {ch['float32']['met']}), precision='auto' -> "
              f"{ch['auto']['precision']}: k = {ch['auto']['samples']} (met: {ch['auto']['met']})"]
    return "\n".join(lines)


def equal_table(result: dict) -> str:
    """The equal-accuracy configurations against Captum's documented usage (markdown)."""
    t, eq = result["timings"], result.get("equal_accuracy", {})
    rows = ["| method | configuration | work | accuracy statistic | unmask | Captum doc | ms/sentence | "
            "Captum doc ms | vs Captum doc |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    sg = eq.get("smoothgrad")
    if sg and "timed_outputs" in sg:
        doc_ms = t["smoothgrad/captum_doc"]["ms_per_sentence"]
        doc_err = sg["timed_outputs"]["captum_doc"]["median"]
        for cfg, which in (("unmask_eq_mc", "float32"), ("unmask_eq_mc_auto", "auto")):
            if f"smoothgrad/{cfg}" not in t:
                continue
            ch = sg["chosen"][which]
            prec = ch.get("precision", "float32")
            e = sg["timed_outputs"][cfg]
            ms = t[f"smoothgrad/{cfg}"]["ms_per_sentence"]
            work = f"antithetic k={ch['samples']}, {e.get('precision', prec)}"
            rows.append(f"| smoothgrad | {cfg} | {work} | median MC error, scan ({sg['sentences']} sent. x "
                        f"{sg['seeds']} seeds) | {ch['median_error']:.4f} | {sg['captum_doc_median_error']:.4f} | "
                        f"{ms:.2f} | {doc_ms:.2f} | {doc_ms / ms:.2f}x |")
            rows.append(f"| smoothgrad | {cfg} | {work} | median MC error, the timed output ({e['n']} sent.) | "
                        f"{e['median']:.4f} | {doc_err:.4f} | {ms:.2f} | {doc_ms:.2f} | {doc_ms / ms:.2f}x |")
    ig = eq.get("integrated_gradients")
    if ig:
        doc_ms = t["integrated_gradients/captum_doc"]["ms_per_sentence"]
        ms = t["integrated_gradients/unmask_eq_acc"]["ms_per_sentence"]
        u, c = ig["unmask_eq_acc"], ig["captum_doc"]
        for stat in ("p95", "max", "median"):
            rows.append(f"| integrated_gradients | unmask_eq_acc | tolerance {ig['tolerance']:.2e} "
                        f"(Captum p{ig['percentile']:g}), {u['mean_steps']:.1f} steps | completeness {stat} | "
                        f"{u[stat]:.2e} | {c[stat]:.2e} | {ms:.2f} | {doc_ms:.2f} | {doc_ms / ms:.2f}x |")
    return "\n".join(rows) if len(rows) > 2 else ""


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
    p.add_argument("--no-equal-accuracy", action="store_true",
                   help="skip the equal-accuracy configurations (unmask_eq_mc, unmask_eq_mc_auto, unmask_eq_acc)")
    p.add_argument("--sg-eq-sentences", type=int, default=32,
                   help="sentences of the SmoothGrad 200-sample reference and error scan (default 32)")
    p.add_argument("--sg-eq-samples", default=",".join(map(str, SG_EQ_SAMPLES)),
                   help="antithetic sample counts scanned (even; default 2,4,6,8,10)")
    p.add_argument("--sg-eq-seeds", type=int, default=3,
                   help="independent draws of every estimator in the scan (default 3)")
    p.add_argument("--ig-eq-percentile", type=float, default=95.0,
                   help="unmask_eq_acc's tolerance = this percentile of Captum-50's completeness errors (default 95;"
                        " 100 = its max)")
    p.add_argument("--skip", default="", metavar="PATTERNS",
                   help="comma-separated method/config glob patterns not to time, e.g. "
                        "'integrated_gradients/captum_b16,integrated_gradients/unmask_global'")
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
    skip = tuple(x.strip() for x in args.skip.split(",") if x.strip())
    check_skip(skip)
    sg_samples = tuple(int(x) for x in args.sg_eq_samples.split(",") if x.strip())
    if not sg_samples or any(k < 2 or k % 2 for k in sg_samples):
        p.error("--sg-eq-samples: even counts >= 2 (antithetic noise draws pairs)")
    if not 0 <= args.ig_eq_percentile <= 100:
        p.error("--ig-eq-percentile must be in [0, 100]")
    eq_args = None if args.no_equal_accuracy else {
        "sg_sentences": args.sg_eq_sentences, "sg_samples": sg_samples, "sg_seeds": max(1, args.sg_eq_seeds),
        "ig_percentile": args.ig_eq_percentile}
    torch.manual_seed(0)
    model = load_model(spec, num_labels=2)
    for prm in model.model.parameters():  # Captum and the floor see the same model as unmask
        prm.requires_grad_(True)
    dev = [e.text for e in load_task("sst2", "dev")]
    machine = machine_info()
    auto = resolve_precision("auto", model)
    machine["precision_auto"] = {"resolves_to": auto, "native_bf16": cpu_has_native_bf16()}
    if machine["precision_auto"]["native_bf16"]:
        pr = probe(model)
        machine["precision_auto"]["probe"] = {"float32_seconds": pr.float32_seconds,
                                              "bfloat16_seconds": pr.bfloat16_seconds, "speedup": pr.speedup,
                                              "bf16_gradient_relative_error": pr.relative_error}
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": spec,
              "machine": machine, "load_at_start": load_average(), "sets": []}
    printable = {**machine, "lscpu": {k: v for k, v in machine["lscpu"].items() if k != "flags"}}
    print(json.dumps(printable), flush=True)
    sets = [(f"first {min(args.limit, len(dev))}", dev[:args.limit], args.repeats, args.ig_equal_accuracy_steps)]
    if args.mixed:
        sets.append((f"all {len(dev)} (length-mixed)", dev, args.mixed_repeats, 0))
    path = Path(args.out) / f"bench_{time.strftime('%Y%m%d_%H%M%S')}.json"
    for label, texts, repeats, equal_steps in sets:
        res = run_set(model, texts, methods, repeats, args.token_budget, args.e2e, equal_steps, label,
                      eq_args, skip)
        result["sets"].append(res)
        save(result, path)
        print(f"\n## {label}: {res['sentences']} sentences, {res['mean_tokens']:.1f} tokens on average "
              f"(max {res['max_tokens']})\n")
        print(table(res, methods))
        if res["equal_accuracy"].get("smoothgrad"):
            print("\n" + sg_scan_table(res["equal_accuracy"]["smoothgrad"]))
        eq_rows = equal_table(res)
        if eq_rows:
            print("\nequal or better accuracy than Captum's documented usage, same run:\n\n" + eq_rows)
        print("\naccuracy:", json.dumps(res["accuracy"], indent=1))
    if args.memory:
        result["memory"] = measure_memory(spec, args.memory_steps, args.token_budget)
        print("\nmemory:", json.dumps(result["memory"]))
    result["load_at_end"] = load_average()
    save(result, path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
