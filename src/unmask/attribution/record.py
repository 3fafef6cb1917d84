"""``Attribution``: the one output record every method returns (tokens, scores, words, target)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

WORD_AGGREGATIONS = ("sum", "max", "l2", "mean")


@dataclass
class Attribution:
    """Scores for one input. Special tokens ([CLS]/[SEP]) are kept; padding is not.

    ``scores`` are the method's signed token scores (positive supports ``target`` where the method
    has a sign). ``normalized()`` gives the Facade paper's view, |s_i| / sum_j |s_j|.
    """

    tokens: list[str]
    scores: np.ndarray
    method: str
    target: int
    target_name: str
    prediction: int
    probabilities: list[float]
    word_ids: list[int | None]
    sequence_ids: list[int | None]
    words: tuple[list[str], ...]
    text: str
    pair: str | None = None
    params: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if len(self.scores) != len(self.tokens):
            raise ValueError(f"{len(self.scores)} scores for {len(self.tokens)} tokens")

    def normalized(self) -> np.ndarray:
        """|s_i| / sum_j |s_j| over all tokens including [CLS]/[SEP] (Facade paper Eq. 1)."""
        a = np.abs(self.scores)
        total = a.sum()
        return a / total if total > 0 else a

    def word_scores(self, aggregate: str = "sum", normalized: bool = False) -> list[tuple[int, str, float]]:
        """Scores per word: ``(sequence_id, word, score)`` with word pieces combined by ``aggregate``."""
        if aggregate not in WORD_AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregate!r}; choose one of {WORD_AGGREGATIONS}")
        s = self.normalized() if normalized else self.scores
        groups: dict[tuple[int, int], list[float]] = {}
        for t, (seq, w) in enumerate(zip(self.sequence_ids, self.word_ids)):
            if seq is not None and w is not None:
                groups.setdefault((seq, w), []).append(float(s[t]))
        agg = {"sum": np.sum, "max": np.max, "mean": np.mean,
               "l2": lambda v: float(np.sqrt(np.sum(np.square(v))))}[aggregate]
        return [(seq, self.words[seq][w], float(agg(v))) for (seq, w), v in sorted(groups.items())]

    def top_tokens(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.normalized())[:k]
        return [(self.tokens[i], float(self.normalized()[i])) for i in order]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scores"] = self.scores.tolist()
        d["words"] = [list(w) for w in self.words]
        d["normalized"] = self.normalized().tolist()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=float)

    @classmethod
    def from_dict(cls, d: dict) -> "Attribution":
        """Inverse of ``to_dict`` (also accepts ``json.loads(to_json())``); the derived ``normalized`` is
        recomputed, not read."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["words"] = tuple(list(w) for w in d["words"])
        return cls(**kwargs)

    def to_html(self) -> str:
        from unmask.report.html import attribution_html

        return attribution_html(self)

    def _repr_html_(self) -> str:
        """Jupyter: the input, a heatmap and the colour legend (``unmask.report.notebook``)."""
        from unmask.report.notebook import record_html

        return record_html(self)

    def render_terminal(self) -> str:
        from unmask.report.terminal import attribution_text

        return attribution_text(self)
