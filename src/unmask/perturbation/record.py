"""Records of perturbation searches, with every intermediate input so a report can replay them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Step:
    """One edit and the input it produced.

    ``change`` says what was done: ``{"removed": token, "position": i}`` for input reduction,
    ``{"position": i, "old": token, "new": token}`` for HotFlip. ``probability`` is the model's
    probability of the *original* prediction on the edited input.
    """

    tokens: list[str]
    prediction: int
    probability: float
    change: dict


@dataclass
class PerturbationResult:
    """Outcome of input reduction or HotFlip on one input.

    ``segment`` is the segment that was edited (0 = text / premise, 1 = pair / hypothesis, ``None`` =
    any word piece);
    ``final_segments`` gives the segment of each final token (``None`` for [CLS]/[SEP]).
    ``success``: HotFlip changed the prediction; input reduction always ends on an input that keeps it.
    """

    kind: str
    text: str
    pair: str | None
    segment: int | None
    label_names: list[str]
    original_tokens: list[str]
    original_prediction: int
    original_probability: float
    final_tokens: list[str]
    final_segments: list[int | None]
    final_prediction: int
    final_probability: float
    steps: list[Step]
    success: bool
    stopped: str
    params: dict = field(default_factory=dict)

    @property
    def num_changes(self) -> int:
        return len(self.steps)

    def segment_tokens(self) -> list[str]:
        """The final word pieces of the edited segment (e.g. the reduced sentence)."""
        if self.segment is None:
            return [t for t, s in zip(self.final_tokens, self.final_segments) if s is not None]
        return [t for t, s in zip(self.final_tokens, self.final_segments) if s == self.segment]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["num_changes"] = self.num_changes
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PerturbationResult":
        d = {k: v for k, v in d.items() if k != "num_changes"}
        d["steps"] = [Step(**s) for s in d["steps"]]
        return cls(**d)

    def describe(self) -> str:
        """Plain-text account: original, each step, final input."""
        names = self.label_names
        lines = [f"original ({names[self.original_prediction]}, p={self.original_probability:.3f}): "
                 f"{' '.join(self.original_tokens)}"]
        for i, s in enumerate(self.steps, 1):
            if "removed" in s.change:
                what = f"remove {s.change['removed']!r} (position {s.change['position']})"
            else:
                what = f"flip {s.change['old']!r} -> {s.change['new']!r} (position {s.change['position']})"
            lines.append(f"  step {i}: {what}: {names[s.prediction]} p(original)={s.probability:.3f}")
        lines.append(f"final ({names[self.final_prediction]}, p(original)={self.final_probability:.3f}, "
                     f"stopped: {self.stopped}): {' '.join(self.final_tokens)}")
        return "\n".join(lines)


@dataclass
class TriggerResult:
    """A universal trigger: ``tokens`` inserted at the start of ``segment`` of every input of class
    ``source_label`` (to flip it to any other class, or to ``target_label`` if set).

    ``history`` has one entry per search iteration (trigger and its objective on that batch);
    ``evaluation`` is filled by ``evaluate_trigger`` on held-out examples.
    """

    tokens: list[str]
    token_ids: list[int]
    source_label: int
    target_label: int | None
    segment: int
    label_names: list[str]
    history: list[dict]
    objective: float
    params: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)

    @property
    def phrase(self) -> str:
        return " ".join(self.tokens)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        goal = (f"{self.label_names[self.source_label]} -> {self.label_names[self.target_label]}"
                if self.target_label is not None else f"{self.label_names[self.source_label]} -> any other")
        lines = [f"trigger ({goal}, prepended to segment {self.segment}): {self.phrase!r}"]
        for h in self.history:
            lines.append(f"  iteration {h['iteration']}: {' '.join(h['tokens'])!r} objective {h['objective']:.4f}")
        e = self.evaluation
        if e:
            cls = self.label_names[self.source_label]
            head = (f"held-out: {e['success_pct']:.1f}% of {e['n']} inputs predicted {cls} change prediction"
                    if e["n"] else f"held-out: none of the {e['n_total']} inputs is predicted {cls}")
            lines.append(f"{head} (accuracy on class {e['accuracy_before']:.1f}% -> {e['accuracy_after']:.1f}%)")
        return "\n".join(lines)
