"""Accuracy of each benchmarked configuration (computed after timing, outside the timed region).

- gradient: unmask's token scores vs Captum's (one per call), max absolute and max relative difference
  (relative to each sentence's largest score).
- SmoothGrad: unmask given exactly the noise draws Captum made (re-created from the seeds Captum ran
  with) vs Captum, through unmask's bucketed path; and, for scale, unmask with its own noise vs Captum.
- IG: completeness error |sum_i a_i - (F(x) - F(x'))| / |F(x) - F(x')| per sentence (max, median, share
  over 1e-3), steps used by the adaptive rule, and unmask's fixed 50-step IG vs Captum's
  IntegratedGradients on the word embeddings with the same (zero) baseline.
- bf16: SmoothGrad in bf16 with Captum's noise vs Captum; every 10-sample SmoothGrad estimate vs the
  smoothed gradient itself (200 draws); gradient and IG-50 under bf16 autocast (reported, not used).
"""
from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIG

import bench_captum
from bench_common import Inputs
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.models.batch import length_buckets

AGREEMENT_SENTENCES = 16
BF16_SENTENCES = 32        # bf16 errors of gradient and IG, and the SmoothGrad reference, on the first 32
REFERENCE_SAMPLES = 200    # SmoothGrad "truth": the mean gradient over this many noise draws


def score_difference(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict:
    abs_diff = [float(np.abs(a - b).max()) for a, b in zip(ours, theirs)]
    rel = [d / max(float(np.abs(b).max()), 1e-30) for d, b in zip(abs_diff, theirs)]
    return {"max_abs_diff": max(abs_diff), "max_rel_diff": max(rel), "median_rel_diff": float(np.median(rel))}


def error_summary(relative_errors: list[float], tolerance: float = 1e-3) -> dict:
    e = np.asarray(relative_errors, dtype=float)
    return {"max_rel_error": float(e.max()), "median_rel_error": float(np.median(e)),
            "share_over_tolerance": float((e > tolerance).mean())}


def smoothgrad_same_noise(model, inputs: Inputs, captum: dict, budget: int,
                          precision: str = "float32") -> list[np.ndarray]:
    """unmask fed the unit draws of Captum's one-per-call run (seed = sentence index), bucketed."""
    n = bench_captum.SG_SAMPLES
    dim = model.embedding_matrix.shape[1]
    ours: list[np.ndarray] = [None] * len(inputs.texts)  # type: ignore[list-item]
    method = SmoothGrad(samples=n, noise_scale=bench_captum.SG_SCALE, token_budget=budget, precision=precision)
    for idx in length_buckets(inputs.lengths, budget, n):
        sub = inputs.batch.select(idx)
        noise = torch.zeros((len(idx) * n, sub.input_ids.shape[1], dim))
        for j, i in enumerate(idx):
            length = inputs.lengths[i]
            noise[j * n:(j + 1) * n, :length] = bench_captum.smoothgrad_noise((n, length, dim),
                                                                              captum["stds"][i], seed=i)
        scores, extras = method.attribute(model, sub, inputs.targets[idx], noise=noise)
        for j, i in enumerate(idx):
            assert abs(extras[j]["noise_std"] - captum["stds"][i]) <= 1e-6 * captum["stds"][i]
            ours[i] = scores[j, :inputs.lengths[i]].detach().numpy()
    return ours


def smoothgrad_vs_reference(model, inputs: Inputs, estimates: dict[str, list[np.ndarray]], budget: int) -> dict:
    """Error of each 10-sample estimate against the smoothed gradient itself (``REFERENCE_SAMPLES``
    draws, float32, independent noise): SmoothGrad's accuracy is that of a Monte Carlo mean."""
    count = min(BF16_SENTENCES, len(inputs.texts))
    idx = list(range(count))
    sub = inputs.batch.select(idx)
    ref = SmoothGrad(samples=REFERENCE_SAMPLES, seed=12345, token_budget=budget)
    scores, _ = ref.attribute(model, sub, inputs.targets[idx])
    truth = [scores[i, :inputs.lengths[i]].detach().numpy() for i in idx]
    out = {name: score_difference(est[:count], truth) for name, est in estimates.items()}
    return {"sentences": count, "reference_samples": REFERENCE_SAMPLES} | out


def bf16_errors(model, inputs: Inputs, grad_scores: list[np.ndarray], budget: int) -> tuple[dict, dict]:
    """Gradient and fixed 50-step IG run under bf16 autocast, vs float32 (first ``BF16_SENTENCES``)."""
    from unmask.attribution.gradient import Gradient

    count = min(BF16_SENTENCES, len(inputs.texts))
    idx = list(range(count))
    sub = inputs.batch.select(idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, _ = Gradient(token_budget=budget).attribute(model, sub, inputs.targets[idx])
        _, ig = IntegratedGradients(steps=50, tolerance=None, token_budget=budget).attribute(
            model, sub, inputs.targets[idx])
    ours = [g[i, :inputs.lengths[i]].float().detach().numpy() for i in idx]
    grad = score_difference(ours, grad_scores[:count]) | {"sentences": count}
    ig_err = error_summary([e["relative_error"] for e in ig]) | {"sentences": count}
    return grad, ig_err


def ig_zero_baseline_agreement(model, inputs: Inputs, ours: list[np.ndarray]) -> dict:
    """Captum IntegratedGradients (embeddings in, zero baseline, 50 Gauss-Legendre steps) vs unmask."""
    ig = CaptumIG(bench_captum._from_embeds(model))
    theirs = []
    for i, b in enumerate(inputs.singles[:AGREEMENT_SENTENCES]):
        x = model.embed(b.input_ids).detach()
        attr = ig.attribute(x, target=inputs.targets[[i]], n_steps=bench_captum.IG_STEPS,
                            additional_forward_args=(b.attention_mask, b.token_type_ids))
        theirs.append(attr.sum(-1)[0].detach().numpy())
    return score_difference(ours[:len(theirs)], theirs) | {"sentences": len(theirs)}


def evaluate(model, inputs: Inputs, outputs: dict, methods: list[str], budget: int) -> dict:
    acc: dict = {}
    grad_bf16 = ig_bf16 = None
    if "gradient" in methods:
        doc = outputs[("gradient", "captum_doc")]["scores"]
        grad_bf16, ig_bf16 = bf16_errors(model, inputs, doc, budget)
        acc["gradient"] = {"unmask_vs_captum_doc": score_difference(outputs[("gradient", "unmask")]["scores"], doc),
                           "captum_b16_vs_captum_doc": score_difference(outputs[("gradient", "captum_b16")]["scores"],
                                                                        doc),
                           "bf16_autocast_vs_captum_doc (not used)": grad_bf16}
    if "smoothgrad" in methods:
        doc = outputs[("smoothgrad", "captum_doc")]
        same32 = smoothgrad_same_noise(model, inputs, doc, budget)
        same16 = smoothgrad_same_noise(model, inputs, doc, budget, precision="bfloat16")
        acc["smoothgrad"] = {
            "unmask_same_noise_vs_captum_doc": score_difference(same32, doc["scores"]),
            "unmask_bf16_same_noise_vs_captum_doc": score_difference(same16, doc["scores"]),
            "unmask_own_noise_vs_captum_doc": score_difference(outputs[("smoothgrad", "unmask")]["scores"],
                                                               doc["scores"]),
            "vs_smoothed_gradient_reference": smoothgrad_vs_reference(
                model, inputs, {"captum_doc_fp32": doc["scores"], "unmask_fp32_same_noise": same32,
                                "unmask_bf16_same_noise": same16}, budget)}
    if "integrated_gradients" in methods:
        ig: dict = {}
        for (m, cfg), out in outputs.items():
            if m == "integrated_gradients" and cfg.startswith("captum_"):
                ig[cfg + " ([PAD] reference)"] = error_summary(out["relative_error"])
        for cfg in [c for (m, c) in outputs if m == "integrated_gradients" and c.startswith("unmask")]:
            extras = outputs[("integrated_gradients", cfg)]["extras"]
            summary = error_summary([e["relative_error"] for e in extras])
            steps = np.array([e["steps"] for e in extras])
            summary["mean_steps"] = float(steps.mean())
            summary["steps_histogram"] = {int(s): int((steps == s).sum()) for s in np.unique(steps)}
            ig[cfg + " (zero reference)"] = summary
        ig["unmask_fixed50_vs_captum_ig50_zero_reference"] = ig_zero_baseline_agreement(
            model, inputs, outputs[("integrated_gradients", "unmask_fixed50")]["scores"])
        if ig_bf16 is not None:
            ig["unmask_fixed50_bf16_autocast (not used)"] = ig_bf16
        acc["integrated_gradients"] = ig
    return acc
