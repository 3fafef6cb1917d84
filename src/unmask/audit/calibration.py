"""Calibration of the audit's statistics on clean models only.

Each statistic of a clean model is treated as one draw from the clean population: with the calibration
models' mean m, standard deviation s and count n, a new clean model's (x - m) / (s * sqrt(1 + 1/n)) follows
Student's t with n - 1 degrees of freedom (a prediction interval), so the one-sided tail of that t gives
the chance that a clean model is at least this extreme. ``s`` has a floor per statistic (a handful of
calibration models can agree by luck), which only makes the audit more conservative.

A statistic's spread depends on how many inputs each model was audited on: the per-input means (pile-up,
misplacement, ...) carry sampling noise that shrinks with n, but clean models also differ from each other,
and that part does not shrink. A calibration therefore records its ``n_inputs`` and, for the per-input
statistics, a ``floor_scale``: how much the clean spread actually shrank between REFERENCE_N inputs and
``n_inputs`` on the same calibration models (``spread_ratios``; at most 1, so a floor never grows). Measured
on the zoo's 14 calibration models from 40 to 200 inputs: 0.78 for the top-1 pile-up, 0.90 for the pile-up,
about 1 for the rest -- far from the 0.45 that sampling noise alone would give (a floor scaled by
sqrt(40 / n), tried first, flagged a held-out clean model at n = 200). ``Calibration.load`` picks, among
the calibrations shipped with the package, the one fitted at the largest n not above the audit's (fitting at
fewer inputs than audited only makes the audit more conservative; at more inputs it would not be, so an
audit on fewer inputs than every shipped calibration uses the smallest and says so).

The calibrations shipped with the package were fitted by ``experiments/audit_zoo.py`` on the clean models of
the zoo's calibration split: ``calibration.json`` at 40 inputs (``report``), ``calibration_n200.json`` at
200, the CLI's default (``calibrate --n 200``); each file records which models those were.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import stats as st

from unmask.errors import UnmaskError
from unmask.io import write_json_atomic

# Floors on the clean standard deviation, in each statistic's own units, for a calibration at REFERENCE_N
# inputs per model; a calibration at another size scales the per-input means' (PER_INPUT_STATS) by its
# measured ``floor_scale``.
REFERENCE_N = 40
PER_INPUT_STATS = ("unfaithfulness", "top1_miss", "misplacement", "pileup", "top1_pileup", "content_top1")
SIGMA_FLOOR = {"unfaithfulness": 0.08, "top1_miss": 0.05, "misplacement": 0.05, "pileup": 0.04, "top1_pileup": 0.05,
               "content_top1": 0.05, "magnitude_ratio": 0.15, "first_order_miss": 0.05, "structure": 0.3}
# Statistics tested on every method, and once per model (for the local-gradient methods). Also measured and
# reported, but not tested: unfaithfulness (on clean fine-tuned MiniLM, gradient x input's ranking is already
# at or below random comprehensiveness, so a facade cannot make it much worse), top1_miss (misplacement is its
# soft, lower-variance form: with the zoo-v1 calibration top1_miss could not reach its thresholds at all) and
# first_order_miss (clean models' first-order predictions barely correlate with occlusion either).
METHOD_STATS = ("misplacement", "pileup", "top1_pileup", "content_top1")
MODEL_STATS = ("magnitude_ratio",)
REPORTED_METHOD_STATS = ("unfaithfulness", "top1_miss")
REPORTED_MODEL_STATS = ("first_order_miss",)


def floor_for(key: str, floor_scale: dict[str, float] | None = None) -> float:
    """The floor on the clean standard deviation of statistic ``key``, times its ``floor_scale`` (if any)."""
    stat = key.split(".")[-1]
    return SIGMA_FLOOR[stat] * (floor_scale or {}).get(stat, 1.0)


@dataclass
class StatCalibration:
    mean: float
    std: float
    n: int

    def t(self, value: float, floor: float) -> float:
        s = max(self.std, floor) * math.sqrt(1 + 1 / self.n)
        return (value - self.mean) / s

    def tail(self, value: float, floor: float) -> float:
        """P(clean model >= value): one-sided Student-t prediction tail."""
        return float(st.t.sf(self.t(value, floor), df=max(self.n - 1, 1)))

    def value_at(self, p: float, floor: float) -> float:
        """The value whose tail is ``p`` (the inverse of ``tail``): where a test with this tail fires."""
        s = max(self.std, floor) * math.sqrt(1 + 1 / self.n)
        return self.mean + float(st.t.isf(p, df=max(self.n - 1, 1))) * s


@dataclass
class Calibration:
    stats: dict[str, StatCalibration]
    models: list[str] = field(default_factory=list)
    source: str = ""
    n_inputs: int | None = None   # inputs audited per calibration model (None: unknown)
    floor_scale: dict[str, float] = field(default_factory=dict)  # per statistic, <= 1 (``spread_ratios``)

    def to_dict(self) -> dict:
        return {"stats": {k: asdict(v) for k, v in self.stats.items()}, "models": self.models,
                "source": self.source, "n_inputs": self.n_inputs, "floor_scale": self.floor_scale}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls({k: StatCalibration(**v) for k, v in d["stats"].items()}, d.get("models", []),
                   d.get("source", ""), d.get("n_inputs"), dict(d.get("floor_scale") or {}))

    def floor(self, key: str) -> float:
        return floor_for(key, self.floor_scale)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path | None = None, n_inputs: int | None = None) -> "Calibration":
        """The given file, or the calibration shipped with unmask for an audit on ``n_inputs`` inputs: the one
        fitted at the largest n not above it (the smallest when every one is above it); None: the default
        calibration (``calibration.json``)."""
        if path is None and n_inputs is not None:
            return shipped_for(n_inputs)
        try:
            text = (Path(path).read_text() if path is not None
                    else resources.files("unmask.audit").joinpath("calibration.json").read_text())
        except FileNotFoundError:
            raise UnmaskError(f"audit calibration file not found: {path or 'unmask/audit/calibration.json'}") from None
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UnmaskError(f"broken audit calibration file {path}: {e}") from None


def shipped() -> list[Calibration]:
    """Every calibration shipped with the package (``calibration*.json``), by increasing ``n_inputs``."""
    files = [f for f in resources.files("unmask.audit").iterdir()
             if f.name.startswith("calibration") and f.name.endswith(".json")]
    return sorted((Calibration.from_dict(json.loads(f.read_text())) for f in files),
                  key=lambda c: c.n_inputs or REFERENCE_N)


def shipped_for(n_inputs: int, cals: list[Calibration] | None = None) -> Calibration:
    """The calibration (of ``cals``, default the shipped ones) fitted at the largest n not above ``n_inputs``,
    else the one at the smallest n."""
    if n_inputs < 1:
        raise UnmaskError(f"an audit needs at least 1 input, got {n_inputs}")
    cals = sorted(shipped() if cals is None else cals, key=lambda c: c.n_inputs or REFERENCE_N)
    if not cals:
        raise UnmaskError("no audit calibration shipped with unmask (unmask/audit/calibration*.json)")
    fit_below = [c for c in cals if (c.n_inputs or REFERENCE_N) <= n_inputs]
    return fit_below[-1] if fit_below else cals[0]


def statistics(evidence: dict) -> dict[str, float]:
    """Flat ``{key: value}`` of an audit evidence dict (``AuditReport.evidence``); higher = more suspicious."""
    out: dict[str, float] = {}
    behavior = evidence["behavior"]
    for name, m in behavior["methods"].items():
        for s in METHOD_STATS + REPORTED_METHOD_STATS:
            out[f"{name}.{s}"] = float(m.get(s, math.nan))  # NaN: evidence older than the statistic
    for s in MODEL_STATS + REPORTED_MODEL_STATS:
        out[f"model.{s}"] = float(behavior[s])
    structure = evidence.get("structure")
    if structure and structure.get("coupling") is not None:
        out["model.structure"] = -math.log10(max(float(structure["coupling"]), 1e-12))
    return out


def tested_keys(calibration: Calibration) -> list[str]:
    """The calibrated statistics the verdicts test (per method, per model, structure), without pooled ones."""
    tested = set(METHOD_STATS + MODEL_STATS + ("structure",))
    return sorted(k for k in calibration.stats if k.split(".")[-1] in tested and not k.startswith("any."))


def fire_values(calibration: Calibration, p: float) -> dict[str, float]:
    """Per tested statistic: the value at which its tail reaches ``p`` (e.g. SUSPECT_P / number of tests)."""
    return {k: calibration.stats[k].value_at(p, calibration.floor(k)) for k in tested_keys(calibration)}


def spread_ratios(calibration: Calibration, reference: Calibration) -> dict[str, float]:
    """Per per-input statistic: min(1, clean spread in ``calibration`` / in ``reference``), both fitted on the same
    clean models at different numbers of inputs (spreads pooled over methods, ``any.<stat>``)."""
    if sorted(calibration.models) != sorted(reference.models):
        raise UnmaskError("spread ratios need two calibrations of the same clean models")
    out = {}
    for stat in PER_INPUT_STATS:
        a, b = calibration.stats.get(f"any.{stat}"), reference.stats.get(f"any.{stat}")
        if a is not None and b is not None and b.std > 0:
            out[stat] = round(min(1.0, a.std / b.std), 4)
    return out


def fit(evidences: dict[str, dict], source: str = "", n_inputs: int | None = None) -> Calibration:
    """Fit on the evidence of clean models only (``{model name: evidence dict}``), each audited on
    ``n_inputs`` inputs."""
    if len(evidences) < 3:
        raise UnmaskError(f"calibration needs at least 3 clean models, got {len(evidences)}")
    values: dict[str, list[float]] = {}
    for ev in evidences.values():
        for k, v in statistics(ev).items():
            if np.isfinite(v):
                values.setdefault(k, []).append(v)
                if not k.startswith("model."):  # pooled over methods, for methods not calibrated alone
                    values.setdefault("any." + k.split(".")[-1], []).append(v)
    stats = {k: StatCalibration(float(np.mean(v)), float(np.std(v, ddof=1)), len(v))
             for k, v in values.items() if len(v) >= 3}
    return Calibration(stats, sorted(evidences), source, n_inputs)
