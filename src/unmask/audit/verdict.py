"""From calibrated statistics to verdicts: per method, per model, and a plain-language summary.

Every statistic is turned into a tail probability under the clean population (``calibration.py``). A
method's p-value is the smallest tail among its tests times the number of tests of the whole audit
(Bonferroni); the model's is the smallest of those (structural test included). Thresholds are fixed in advance, not
fitted on attacks: ``suspect`` below ``SUSPECT_P`` (1%), ``manipulated`` below ``MANIPULATED_P`` (0.1%).
The model score is -log10 of its p-value, so a score of 2 means "a clean model reaches this in 1% of cases"
as far as the calibration models can tell.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from unmask.audit.calibration import METHOD_STATS, MODEL_STATS, Calibration, statistics

SUSPECT_P = 1e-2
MANIPULATED_P = 1e-3
LOCAL_GRADIENT = ("gradient", "gradient_x_input", "smoothgrad")
LABELS = {"gradient": "Gradient (L2 norm)", "gradient_x_input": "Gradient x input",
          "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated gradients",
          "leave_one_out": "Leave-one-out", "lime": "LIME", "kernel_shap": "KernelSHAP",
          "attention": "Attention", "attention_rollout": "Attention rollout"}


@dataclass
class Test:
    key: str
    value: float
    t: float
    p: float


@dataclass
class MethodVerdict:
    method: str
    verdict: str            # trustworthy | suspect | manipulated | reference
    p_value: float
    tests: list[Test] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _verdict(p: float) -> str:
    return "manipulated" if p < MANIPULATED_P else "suspect" if p < SUSPECT_P else "trustworthy"


def run_tests(values: dict[str, float], calibration: Calibration, keys: list[str]) -> list[Test]:
    out = []
    for k in keys:
        cal = calibration.stats.get(k) or calibration.stats.get(_generic(k))
        if cal is None or k not in values or not math.isfinite(values[k]):
            continue
        floor = calibration.floor(k)
        out.append(Test(k, values[k], cal.t(values[k], floor), cal.tail(values[k], floor)))
    return out


def _generic(key: str) -> str:
    """Methods without their own calibration (e.g. LIME) use the pooled statistic ``any.<stat>``."""
    return "any." + key.split(".")[-1]


def _reason(test: Test, evidence: dict) -> str:
    method, stat = test.key.split(".")
    b = evidence["behavior"]
    if stat == "top1_miss":
        return (f"its top token moves the output only {100 * (1 - test.value):.0f}% as much as the most "
                f"effective token")
    if stat == "misplacement":
        skill = 1 - test.value
        return (f"the tokens it calls important matter to the output {'less' if skill < 0 else 'little more'} "
                f"than a token picked at random (placement skill {skill:+.2f}; 1 = on the most effective token, "
                f"0 = chance)")
    if stat == "pileup":
        m = b["methods"][method]
        return (f"it puts {100 * m['pileup_share']:.0f}% of its attribution on {m['pileup_class']}, where "
                f"occlusion puts {100 * m['reference_share']:.0f}%")
    if stat == "top1_pileup":
        m = b["methods"][method]
        return (f"its top token is on {m['top1_pileup_class']} in {100 * m['top1_share']:.0f}% of the inputs, where "
                f"occlusion's most effective token is in {100 * m['reference_top1_share']:.0f}%")
    if stat == "content_top1":
        m = b["methods"][method]
        words = ", ".join(repr(w) for w in m.get("content_top1_words", [])[:4])
        return (f"its top token lands on the same few content words ({words}) in {100 * test.value:.0f}% of the "
                f"inputs beyond where occlusion's most effective token does")
    if stat == "magnitude_ratio":
        return (f"the gradient predicts output changes {10 ** test.value:.1f}x the size of those masking a "
                f"token produces")
    if stat == "structure":
        return (f"the weights split into nearly independent sub-networks (coupling {10 ** -test.value:.1e})")
    return test.key


def verdicts(evidence: dict, calibration: Calibration) -> tuple[dict[str, MethodVerdict], dict]:
    """Per-method verdicts and the model-level verdict dict (verdict, score, p_value, reasons)."""
    values = statistics(evidence)
    methods = evidence["behavior"]["methods"]
    model_tests = run_tests(values, calibration, [f"model.{s}" for s in MODEL_STATS])
    out: dict[str, MethodVerdict] = {}
    per_method = {}
    for name in methods:
        tests = run_tests(values, calibration, [f"{name}.{s}" for s in METHOD_STATS])
        if name in LOCAL_GRADIENT:
            tests += model_tests
        per_method[name] = tests
    structural = run_tests(values, calibration, ["model.structure"])
    # Bonferroni over every test of the model: a method's p-value already counts the other methods' tests,
    # so no method is flagged on a model the model-level verdict calls trustworthy.
    n_tests = sum(len(t) for t in per_method.values()) + len(structural)
    for name, tests in per_method.items():
        if not tests:
            out[name] = MethodVerdict(name, "uncalibrated", float("nan"))
            continue
        p = min(1.0, min(t.p for t in tests) * n_tests)
        flagged = sorted((t for t in tests if t.p * n_tests < SUSPECT_P), key=lambda t: t.p)
        out[name] = MethodVerdict(name, _verdict(p), p, tests, [_reason(t, evidence) for t in flagged])
    out[evidence["behavior"]["reference"]] = MethodVerdict(evidence["behavior"]["reference"], "reference",
                                                           float("nan"))
    behavior = [v.p_value for v in out.values() if math.isfinite(v.p_value)]
    p_behavior = min(behavior) if behavior else 1.0
    p_structure = min((min(1.0, t.p * n_tests) for t in structural), default=1.0)
    # The weights can make a model suspect, never manipulated: only what the explanations do proves that.
    # Structure therefore lowers the model's p-value at most to the manipulated threshold (not below it).
    p_model = min(p_behavior, max(p_structure, MANIPULATED_P))
    verdict = _verdict(p_model)
    reasons = [_reason(t, evidence) for t in structural if t.p * n_tests < SUSPECT_P]
    model = {"verdict": verdict, "p_value": p_model, "score": -math.log10(max(p_model, 1e-300)),
             "p_behavior": p_behavior, "p_structure": p_structure,
             "structural_tests": [asdict(t) for t in structural], "structural_reasons": reasons,
             "tests_pooled": n_tests}
    return out, model


def summary(method_verdicts: dict[str, MethodVerdict], model: dict) -> str:
    """A few sentences a user can act on."""
    bad = [m for m, v in method_verdicts.items() if v.verdict in ("manipulated", "suspect")]
    good = [m for m, v in method_verdicts.items() if v.verdict in ("trustworthy", "reference")]
    p = model["p_value"]
    chance = f"a clean model scores this high with probability {p:.1e}" if p < 0.01 else \
        f"nothing a clean model would not show (p = {p:.2f})"
    if not bad:
        if model["verdict"] == "suspect":  # the weights alone (structure never gives more than suspect)
            p_b = model.get("p_behavior", 1.0)
            return (f"SUSPECT: the explanation methods behave like a clean model's (behavioral p = {p_b:.2g}), "
                    f"but " + "; ".join(model["structural_reasons"]) + ". Inspect how the model was built: a "
                    "facade trained to keep its gradients' statistics in the clean range looks like this.")
        return (f"No sign of manipulated explanations ({chance}). Every audited method's important tokens "
                f"matter to the output about as much as on clean models.")
    parts = []
    for m in bad:
        v = method_verdicts[m]
        why = "; ".join(v.reasons[:2]) or "its statistics are outside the clean range"
        parts.append(f"{_label(m)} is {v.verdict.upper()}: {why}.")
    use = ", ".join(_label(m) for m in good) or "black-box methods (leave-one-out, LIME, KernelSHAP)"
    return (f"This model's explanations are {model['verdict'].upper()} ({chance}). " + " ".join(parts)
            + f" Do not trust {', '.join(_label(m) for m in bad)} on this model; use {use}, which agree with "
              "what actually moves the output.")
