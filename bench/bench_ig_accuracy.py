"""Integrated gradients: speed against Captum at equal *per-token* accuracy, not only equal completeness.

Completeness (|sum of scores - (F(x) - F(x'))|) is one number per sentence; errors of single tokens can cancel
in it. This benchmark also measures each configuration's per-token error against its own converged integral:
Captum's LayerIntegratedGradients (documented usage: one sentence per call, n_steps=50, its [CLS] [PAD]..
[SEP] reference) against the same call with ``--reference-steps`` Gauss-Legendre points; unmask (zero
baseline) against its own fixed rule with that many points. Error of a sentence = ||a - a_ref|| / ||a_ref||
over its tokens. Timings: median of ``--repeats`` runs of each configuration, ms per sentence.

    python bench/bench_ig_accuracy.py --model artifacts/demo/f_orig --limit 64 --threads 1 --json OUT.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_captum  # noqa: E402
from bench_common import default_model_spec, load_average, machine_info, make_inputs, timed  # noqa: E402
from unmask.attribution.explain import attribute_batch  # noqa: E402
from unmask.attribution.integrated_gradients import IntegratedGradients  # noqa: E402
from unmask.data import load_task  # noqa: E402
from unmask.models import load_model  # noqa: E402

# name -> IntegratedGradients keyword arguments (float32 throughout: the accuracy question, not bf16's)
UNMASK_CONFIGS = {
    "unmask global doubling from 16, tol 1e-3": dict(tolerance=1e-3, refine="global"),
    "unmask local (panels of 4, tol 1e-3)": dict(tolerance=1e-3, refine="local"),
    "unmask local (panels of 4, tol 1e-4)": dict(tolerance=1e-4, refine="local"),
    "unmask local (panels of 4, tol 3e-5)": dict(tolerance=3e-5, refine="local"),
    "unmask fixed 32": dict(steps=32, tolerance=None),
    "unmask fixed 50": dict(steps=50, tolerance=None),
}


def token_errors(scores: list[np.ndarray], reference: list[np.ndarray]) -> list[float]:
    """Per sentence ||a - a_ref|| / ||a_ref||."""
    return [float(np.linalg.norm(np.asarray(a) - np.asarray(r)) / max(np.linalg.norm(r), 1e-12))
            for a, r in zip(scores, reference)]


def stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def median_timed(fn, repeats: int) -> tuple[float, object]:
    """(median wall seconds over ``repeats`` calls, the last call's result)."""
    runs = [timed(fn) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), runs[-1][2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: runs/sst2 if present, else MiniLM)")
    p.add_argument("--limit", type=int, default=64, help="first N SST-2 dev sentences (default %(default)s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--reference-steps", type=int, default=256)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.limit < 1 or args.repeats < 1 or args.reference_steps < 64:
        p.error("--limit and --repeats must be >= 1 and --reference-steps >= 64")
    torch.set_num_threads(args.threads)
    spec = args.model or default_model_spec()
    model = load_model(spec, num_labels=2)
    for prm in model.model.parameters():  # Captum differentiates through the same model as unmask
        prm.requires_grad_(True)
    texts = [e.text for e in load_task("sst2", "dev")][:args.limit]
    inputs = make_inputs(model, texts)
    n = len(texts)
    result = {"command": " ".join(["python", *sys.argv]), "model": spec, "machine": machine_info(),
              "load_at_start": load_average(), "sentences": n, "reference_steps": args.reference_steps,
              "rows": []}

    def unmask_run(**kw):
        records = attribute_batch(model, inputs.batch, IntegratedGradients(precision="float32", **kw),
                                  inputs.targets, inputs.logits)
        return [np.asarray(r.scores) for r in records], [r.extras for r in records]

    captum_ref = bench_captum.integrated_gradients(model, inputs, 1, n_steps=args.reference_steps)["scores"]
    unmask_ref, _ = unmask_run(steps=args.reference_steps, tolerance=None)
    captum_s, captum = median_timed(lambda: bench_captum.integrated_gradients(model, inputs, 1), args.repeats)
    rows = [{"configuration": "captum doc (n_steps=50, one per call)", "ms_per_sentence": 1000 * captum_s / n,
             "points_mean": float(bench_captum.IG_STEPS), "completeness": stats(captum["relative_error"]),
             "token_error": stats(token_errors(captum["scores"], captum_ref))}]
    for name, kw in UNMASK_CONFIGS.items():
        seconds, (scores, extras) = median_timed(lambda kw=kw: unmask_run(**kw), args.repeats)
        rows.append({"configuration": name, "ms_per_sentence": 1000 * seconds / n,
                     "points_mean": float(np.mean([e["steps"] for e in extras])),
                     "completeness": stats([e["relative_error"] for e in extras]),
                     "token_error": stats(token_errors(scores, unmask_ref))})
    base = rows[0]["ms_per_sentence"]
    for r in rows:
        r["vs_captum"] = base / r["ms_per_sentence"]
    result["rows"] = rows
    print("| configuration | ms/sentence | vs Captum | points | completeness median / p95 / max | "
          "token error median / p95 / max |\n|---|---:|---:|---:|---|---|")
    for r in rows:
        c, t = r["completeness"], r["token_error"]
        print(f"| {r['configuration']} | {r['ms_per_sentence']:.1f} | {r['vs_captum']:.2f}x | {r['points_mean']:.1f} | "
              f"{c['median']:.1e} / {c['p95']:.1e} / {c['max']:.1e} | {t['median']:.1e} / {t['p95']:.1e} / "
              f"{t['max']:.1e} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
