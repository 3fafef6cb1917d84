"""Audit: can a model's explanations be trusted? Behavioral evidence first, structural second.

``unmask.audit(model, texts)`` measures, for each explanation method, whether the tokens it calls
important actually move the model's output (``behavior.py``), looks for nearly independent sub-networks
in the weights (``structure.py``), and turns both into calibrated verdicts (``verdict.py``) against the
statistics of clean models (``calibration.py``). It needs no knowledge of how the model was built.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from unmask.audit.behavior import DEFAULT_METHODS, behavioral_evidence
from unmask.audit.calibration import Calibration
from unmask.audit.verdict import MethodVerdict, summary, verdicts
from unmask.models.classifier import TextClassifier


@dataclass
class AuditReport:
    model: str
    verdict: str                      # trustworthy | suspect | manipulated
    score: float                      # -log10 p: how rarely a clean model looks like this
    p_value: float
    summary: str
    methods: dict[str, MethodVerdict]
    evidence: dict                    # {"behavior": ..., "structure": ...}
    calibration: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = {k: asdict(v) for k, v in self.methods.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AuditReport":
        from unmask.audit.verdict import Test

        methods = {k: MethodVerdict(**{**v, "tests": [Test(**t) for t in v.get("tests", [])]})
                   for k, v in d["methods"].items()}
        return cls(**{**d, "methods": methods})

    def to_html(self) -> str:
        from unmask.report.audit_page import audit_html

        return audit_html(self)


def audit(model: TextClassifier, texts: Sequence[str], pairs: Sequence[str | None] | None = None,
          methods: Sequence[str] = DEFAULT_METHODS, calibration: Calibration | str | None = None,
          structure: bool = True, token_budget: int | None = None,
          progress: Callable[[str], None] | None = None) -> AuditReport:
    """Audit ``model``'s explanations on ``texts`` (the model's own predictions are explained).

    ``calibration``: a ``Calibration``, a path to one, or ``None`` for the one shipped with unmask that was
    fitted at the largest number of inputs not above ``len(texts)`` (``Calibration.load``).
    ``structure``: also run the weight-structure check (BERT-like encoders; skipped with a note otherwise).
    A model the adapter cannot run faithfully from word embeddings (e.g. a decoder-style classifier) fails
    first with one ``UnmaskError`` naming its architecture (``TextClassifier.check_supported``).
    """
    from unmask.attribution.base import DEFAULT_TOKEN_BUDGET
    from unmask.models.adapter import ensure_supported

    started = time.time()
    ensure_supported(model, texts, pairs)  # the adapter's optional check (models/adapter.py)
    cal = calibration if isinstance(calibration, Calibration) else Calibration.load(calibration, len(texts))
    budget = token_budget or DEFAULT_TOKEN_BUDGET
    evidence: dict = {"behavior": behavioral_evidence(model, texts, pairs, methods, budget,
                                                      progress=progress).to_dict()}
    if structure:
        evidence["structure"] = structural(model, progress)
    per_method, model_level = verdicts(evidence, cal)
    return AuditReport(
        model=model.name, verdict=model_level["verdict"], score=model_level["score"],
        p_value=model_level["p_value"], summary=summary(per_method, model_level), methods=per_method,
        evidence={**evidence, "model_level": model_level},
        calibration={"models": cal.models, "source": cal.source, "n_inputs": cal.n_inputs,
                     "note": calibration_note(cal, len(texts))}, seconds=round(time.time() - started, 1))


def calibration_note(cal: Calibration, n: int) -> str:
    """Empty, or why the stated p-values may be optimistic: fewer inputs audited than calibrated on."""
    if cal.n_inputs and n < cal.n_inputs:
        return (f"audited on {n} inputs, fewer than the {cal.n_inputs} per model the calibration was fitted on: "
                "the statistics are noisier than the calibration assumes, so a clean model is flagged more often "
                "than the p-values say")
    return ""


def structural(model: TextClassifier, progress: Callable[[str], None] | None = None) -> dict:
    """Structural evidence as a dict, or a note saying why it does not apply to this model."""
    from unmask.errors import UnmaskError

    if progress:
        progress("weight structure")
    try:
        from unmask.audit.structure import structural_evidence

        return structural_evidence(model).to_dict()
    except UnmaskError as e:
        return {"coupling": None, "note": str(e)}


__all__ = ["AuditReport", "audit"]
