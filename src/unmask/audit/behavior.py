"""Behavioral evidence: does what an explanation method calls important actually move the output?

Everything here reads the model as a function (inputs -> outputs, and its input gradient); nothing
depends on how the weights are laid out, so permuting, noising or fine-tuning a merged model does not
change it, and an unmerged facade is measured the same way.

Per method, against references a gradient facade cannot steer (leave-one-out occlusion, and the
random ordering):

- ``unfaithfulness``: 1 - (AOPC_comp(method) - AOPC_comp(random)) / (AOPC_comp(occlusion) - AOPC_comp(random)),
  the share of the reference's comprehensiveness gain over chance that the method's ranking fails to get
  (ERASER comprehensiveness, removal, k in 1..50%);
- ``top1_miss``: 1 - the occlusion effect of the method's top token relative to the input's most effective
  token (0 when the method's top token is the one whose removal moves the output most);
- ``pileup``: the largest excess share of attribution the method puts on one class of positions or words
  (first word, last word, stop words, punctuation, each frequent word) over the share occlusion gives it.
- ``top1_pileup``: the same read on the top token only (the paper's P@1, made relative): the largest excess,
  over the same classes, of the share of inputs whose top-attributed token is in the class over the share of
  inputs whose most effective token (occlusion's top) is. A facade that lifts a class to the top of most
  inputs while leaving much of the attribution mass elsewhere shows here, not in ``pileup``.
- ``content_top1``: the class-free form of ``top1_pileup`` for content words: the share of inputs whose top
  token is on a content word (not a stop word, not punctuation) that is the method's top token at least
  ``max(3, 1.5% of the inputs)`` times more often than it is occlusion's, summed over such words. A facade on a
  set of content words of the attacker's choosing ("film", "movie", ...) lifts exactly those words, input after
  input; a clean model's disagreements with occlusion spread over many words. It sees only words the audited
  inputs hold.
- ``misplacement``: 1 - the method's placement skill against occlusion (``placement.py``): 0 when all of its
  attribution sits on the token whose removal moves the output most, 1 when it is placed no better than
  uniformly, above 1 when it sits on tokens that matter less than the average token. Class-free: it sees a
  facade whatever positions or words it targets.

Per model, for the local-gradient methods (gradient, gradient x input, SmoothGrad):

- ``magnitude_ratio``: log10 of the median over inputs of sum_i |g_i . (x_i - m)| / sum_i |occlusion_i|: the
  first-order change the gradient predicts for masking each token vs the change that happens. A facade has
  large gradients whose output barely moves.
- ``first_order_miss``: 1 - the median per-input Pearson correlation of predicted and actual changes.
"""
from __future__ import annotations

import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, get_method
from unmask.attribution.explain import attribute_batch, attribute_methods, predict_batch
from unmask.attribution.record import Attribution
from unmask.attribution.shared import pass_groups
from unmask.audit.first_order import FirstOrderOcclusion
from unmask.audit.placement import MIN_CONTENT, content_mask, misplacement
from unmask.data.readers import stopwords
from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier

REFERENCE = "leave_one_out"
LOCAL_GRADIENT = ("gradient", "gradient_x_input", "smoothgrad")
DEFAULT_METHODS = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients")
IG_STEPS = 16  # fixed Gauss-Legendre points: bounded cost on rough (facade) models; the error is reported


def audit_method(name: str, token_budget: int):
    """The method instance the audit runs for ``name``: IG with fixed steps, others at their defaults, and
    float32 wherever a method has a precision setting (the calibration must not depend on the CPU)."""
    import inspect

    cls = type(get_method(name, token_budget=token_budget))
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"token_budget": token_budget}
    if "precision" in params:
        kwargs["precision"] = "float32"
    if cls.name == "integrated_gradients":
        kwargs.update(steps=IG_STEPS, tolerance=None)
    return cls(**kwargs)
FREQUENT_WORDS = 20
PUNCTUATION = set(string.punctuation) | {"``", "''", "--"}


@dataclass
class MethodEvidence:
    method: str
    unfaithfulness: float
    top1_miss: float
    pileup: float
    pileup_class: str
    pileup_share: float
    reference_share: float
    aopc_comprehensiveness: float
    aopc_random: float
    aopc_reference: float
    seconds: float  # of the run that made its records (shared by methods sharing one gradient pass)
    extras: dict = field(default_factory=dict)
    misplacement: float = float("nan")   # NaN in evidence stored before the statistic existed
    top1_pileup: float = float("nan")    # likewise
    top1_pileup_class: str = ""
    top1_share: float = float("nan")     # share of inputs whose top token is in top1_pileup_class
    reference_top1_share: float = float("nan")
    content_top1: float = float("nan")   # NaN in evidence stored before the statistic existed
    content_top1_words: list = field(default_factory=list)


@dataclass
class BehavioralEvidence:
    n_inputs: int
    methods: dict[str, MethodEvidence]
    magnitude_ratio: float
    first_order_miss: float
    reference: str = REFERENCE
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = {k: asdict(v) for k, v in self.methods.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BehavioralEvidence":
        methods = {k: MethodEvidence(**v) for k, v in d["methods"].items()}
        return cls(**{**d, "methods": methods})


# ------------------------------------------------------------------------------ token classes
def word_classes(record: Attribution, frequent: set[str]) -> list[set[str]]:
    """For each token: the classes its word belongs to (first / last word, last content word, stop word,
    punctuation, word); one class per kind of target the Facade tools take, plus the frequent words."""
    sw = stopwords()
    out: list[set[str]] = []
    last_word: dict[int, int] = {}
    last_content: dict[int, int] = {}
    for seq, w in zip(record.sequence_ids, record.word_ids):
        if seq is not None and w is not None:
            last_word[seq] = max(last_word.get(seq, -1), w)
            if not _punctuation(record.words[seq][w]):
                last_content[seq] = max(last_content.get(seq, -1), w)
    for seq, w in zip(record.sequence_ids, record.word_ids):
        if seq is None or w is None:
            out.append(set())
            continue
        word = record.words[seq][w].lower()
        c = set()
        if w == 0:
            c.add("first word")
        if w == last_word[seq]:
            c.add("last word")
        if w == last_content.get(seq):
            c.add("last content word")
        if word in sw:
            c.add("stop words")
        if _punctuation(word):
            c.add("punctuation")
        if word in frequent:
            c.add(f"the word {word!r}")
        out.append(c)
    return out


def _punctuation(word: str) -> bool:
    return bool(word) and all(ch in PUNCTUATION for ch in word)


def frequent_words(records: Sequence[Attribution], k: int = FREQUENT_WORDS) -> set[str]:
    counts: Counter[str] = Counter()
    for r in records:
        for words in r.words:
            counts.update({w.lower() for w in words})
    return {w for w, _ in counts.most_common(k)}


def content_shares(record: Attribution) -> np.ndarray:
    """|score| normalized over the non-special tokens (specials get 0)."""
    keep = np.array([s is not None for s in record.sequence_ids])
    a = np.where(keep, np.abs(record.scores), 0.0)
    total = a.sum()
    return a / total if total > 0 else a


def class_shares(records: Sequence[Attribution], classes: list[list[set[str]]]) -> dict[str, float]:
    """Mean over inputs of the share of attribution on each class."""
    sums: Counter[str] = Counter()
    for r, cls in zip(records, classes):
        share = content_shares(r)
        per: Counter[str] = Counter()
        for s, c in zip(share, cls):
            for name in c:
                per[name] += s
        sums.update(per)
    return {k: v / len(records) for k, v in sums.items()}


def pileup(method: Sequence[Attribution], reference: Sequence[Attribution],
           classes: list[list[set[str]]]) -> tuple[float, str, float, float]:
    """(excess share, class, method share, reference share) of the class the method over-weights most."""
    m, ref = class_shares(method, classes), class_shares(reference, classes)
    if not m:
        return 0.0, "", 0.0, 0.0
    name = max(m, key=lambda k: m[k] - ref.get(k, 0.0))
    return m[name] - ref.get(name, 0.0), name, m[name], ref.get(name, 0.0)


def top_token(scores: np.ndarray, sequence_ids: Sequence[int | None]) -> int | None:
    """Index of the content token with the largest |score| (None: fewer than 2 content tokens or all 0)."""
    keep = content_mask(sequence_ids)
    a = np.abs(np.asarray(scores, dtype=float))
    if keep.sum() < MIN_CONTENT or not np.isfinite(a[keep]).all() or a[keep].max() <= 0:
        return None
    return int(np.argmax(np.where(keep, a, -np.inf)))


def top1_pileup(method: Sequence[Attribution], reference: Sequence[Attribution],
                classes: list[list[set[str]]]) -> tuple[float, str, float, float]:
    """(excess, class, method's share, reference's share) of the class the method's top token lands in most
    often beyond occlusion's top token; over inputs where both top tokens are defined."""
    on_method: Counter[str] = Counter()
    on_reference: Counter[str] = Counter()
    n = 0
    for r, o, cls in zip(method, reference, classes):
        tm, to = top_token(r.scores, r.sequence_ids), top_token(o.scores, o.sequence_ids)
        if tm is None or to is None:
            continue
        n += 1
        on_method.update(cls[tm])
        on_reference.update(cls[to])
    if not on_method:
        return 0.0, "", 0.0, 0.0
    name = max(sorted(on_method), key=lambda k: on_method[k] - on_reference[k])
    return (on_method[name] - on_reference[name]) / n, name, on_method[name] / n, on_reference[name] / n


MIN_REPEAT = 3          # content_top1: a word counts from this many excess top-1 inputs ...
REPEAT_SHARE = 0.015    # ... or this share of the inputs, whichever is larger


def word_at(record: Attribution, i: int) -> str:
    """The lower-cased word token ``i`` belongs to ("" for special tokens)."""
    seq, w = record.sequence_ids[i], record.word_ids[i]
    return "" if seq is None or w is None else record.words[seq][w].lower()


def content_top1(method: Sequence[Attribution], reference: Sequence[Attribution]) -> tuple[float, list[str]]:
    """(share of inputs, words): inputs whose top token is on a content word that is the method's top token at
    least ``max(MIN_REPEAT, REPEAT_SHARE x inputs)`` more times than occlusion's (words by excess, largest
    first); over inputs where both top tokens are defined."""
    on_method: Counter[str] = Counter()
    on_reference: Counter[str] = Counter()
    n = 0
    for r, o in zip(method, reference):
        tm, to = top_token(r.scores, r.sequence_ids), top_token(o.scores, o.sequence_ids)
        if tm is None or to is None:
            continue
        n += 1
        on_method[word_at(r, tm)] += 1
        on_reference[word_at(o, to)] += 1
    if not n:
        return 0.0, []
    least, sw = max(MIN_REPEAT, round(REPEAT_SHARE * n)), stopwords()
    excess = {w: on_method[w] - on_reference[w] for w in on_method
              if w and w not in sw and not _punctuation(w) and on_method[w] - on_reference[w] >= least}
    return sum(excess.values()) / n, sorted(excess, key=lambda w: (-excess[w], w))


def record_misplacement(method: Sequence[Attribution], reference: Sequence[Attribution]) -> float:
    """``placement.misplacement`` of a method's records against the occlusion records of the same inputs."""
    return misplacement([r.scores for r in method], [o.scores for o in reference],
                        [content_mask(r.sequence_ids) for r in method])


def top1_miss(method: Sequence[Attribution], reference: Sequence[Attribution]) -> float:
    """1 - mean over inputs of |occlusion(method's top token)| / max_j |occlusion_j|."""
    vals = []
    for r, o in zip(method, reference):
        keep = np.array([s is not None for s in r.sequence_ids])
        if not keep.any():
            continue
        occl = np.where(keep, np.abs(o.scores), 0.0)
        top = int(np.argmax(np.where(keep, np.abs(r.scores), -np.inf)))
        if occl.max() > 0:
            vals.append(occl[top] / occl.max())
    return float(1.0 - np.mean(vals)) if vals else float("nan")


# ------------------------------------------------------------------------------ magnitude consistency
def first_order_occlusion(model: TextClassifier, batch, target: torch.Tensor, objective: str = "log_prob",
                          token_budget: int = DEFAULT_TOKEN_BUDGET) -> torch.Tensor:
    """g_i . (x_i - m) per token: the first-order prediction of leave-one-out with [MASK] (rows x tokens),
    over the whole batch at once (``FirstOrderOcclusion``)."""
    return FirstOrderOcclusion(objective, token_budget).attribute(model, batch, target)[0]


def magnitude_consistency(predicted: torch.Tensor | Sequence[np.ndarray], occlusion: Sequence[Attribution]
                          ) -> tuple[float, float, list]:
    """(log10 median ratio predicted/actual, 1 - median Pearson, per-input ratios); ``predicted``: one row of
    first-order predictions per input (rows x tokens, or one array per input)."""
    ratios, corrs = [], []
    for r, rec in enumerate(occlusion):
        n = len(rec.scores)
        keep = np.array([s is not None for s in rec.sequence_ids])
        pred, act = np.asarray(predicted[r][:n])[keep], rec.scores[keep]
        denom = np.abs(act).sum()
        if denom > 1e-12:
            ratios.append(np.abs(pred).sum() / denom)
        if keep.sum() >= 3 and pred.std() > 0 and act.std() > 0:
            corrs.append(float(np.corrcoef(pred, act)[0, 1]))
    ratio = float(np.log10(np.median(ratios))) if ratios else float("nan")
    miss = float(1.0 - np.median(corrs)) if corrs else float("nan")
    return ratio, miss, [float(x) for x in ratios]


# ------------------------------------------------------------------------------ driver
def behavioral_evidence(model: TextClassifier, texts: Sequence[str], pairs: Sequence[str | None] | None = None,
                        methods: Sequence[str] = DEFAULT_METHODS, token_budget: int = DEFAULT_TOKEN_BUDGET,
                        seed: int = 0, progress: Callable[[str], None] | None = None,
                        records_out: dict[str, list[Attribution]] | None = None) -> BehavioralEvidence:
    """Measure the evidence above for each method on ``texts`` (the model's own predictions as targets).

    ``records_out``, if given, receives every method's records (and the reference's) by method name.
    """
    from unmask.metrics.faithfulness import RowCache, faithfulness, random_faithfulness

    if not texts:
        raise UnmaskError("the audit needs at least one input text")
    say = progress or (lambda _msg: None)
    started = time.time()
    batch = model.encode(list(texts), list(pairs) if pairs is not None else None)
    logits = predict_batch(model, batch, token_budget)
    target = logits.argmax(-1)
    say("occlusion (reference)")
    reference = attribute_batch(model, batch, get_method(REFERENCE, token_budget=token_budget), target, logits)
    say("faithfulness of the reference and of random orderings")
    if records_out is not None:
        records_out[REFERENCE] = reference
    rows = RowCache(model)  # the curves below share their rows: each distinct one runs once
    rows.add_inputs(batch, logits)
    ref_faith = faithfulness(model, reference, token_budget=token_budget, cache=rows)
    rand_faith = random_faithfulness(model, reference, seed=seed, token_budget=token_budget, cache=rows)
    frequent = frequent_words(reference)
    classes = [word_classes(r, frequent) for r in reference]
    names = [name for name in methods if name != REFERENCE]
    instances = [FirstOrderOcclusion(token_budget=token_budget), *(audit_method(n, token_budget) for n in names)]
    group_of = {j: g for g in pass_groups(model, instances) for j in g}  # first-order shares with gradient, g.x
    records: dict[int, list[Attribution]] = {}
    seconds: dict[int, float] = {}

    def run(i: int) -> None:
        """Records of ``instances[i]`` and of the methods sharing its gradient pass: one run, one time."""
        group = group_of[i]
        t0 = time.time()
        recs = attribute_methods(model, batch, [instances[j] for j in group], target, logits)
        for j, r in zip(group, recs):
            records[j], seconds[j] = r, time.time() - t0

    shared = [instances[j].name for j in group_of[0][1:]]
    say("first-order occlusion from the gradient" + (f" (one pass with {', '.join(shared)})" if shared else ""))
    run(0)
    dtype = torch.empty(0, dtype=model.embedding_matrix.dtype).numpy().dtype  # the pass's own precision
    predicted = [r.scores.astype(dtype) for r in records[0]]
    ratio, fo_miss, ratios = magnitude_consistency(predicted, reference)
    ref_gain = ref_faith.aopc_comprehensiveness - rand_faith.aopc_comprehensiveness
    out: dict[str, MethodEvidence] = {}
    for i, (name, method) in enumerate(zip(names, instances[1:]), 1):
        say(name)
        if i not in records:
            run(i)
        recs = records[i]
        if records_out is not None:
            records_out[method.name] = recs
        faith = faithfulness(model, recs, token_budget=token_budget, cache=rows)
        gain = faith.aopc_comprehensiveness - rand_faith.aopc_comprehensiveness
        unfaith = 1.0 - gain / max(ref_gain, 0.05 * abs(ref_faith.aopc_comprehensiveness), 1e-12)
        excess, cls, share, ref_share = pileup(recs, reference, classes)
        top_excess, top_cls, top_share, ref_top_share = top1_pileup(recs, reference, classes)
        content, content_words = content_top1(recs, reference)
        extras = {}
        if name == "integrated_gradients":
            errs = [r.extras.get("completeness_error", np.nan) for r in recs]
            extras["median_completeness_error"] = float(np.nanmedian(errs))
        out[method.name] = MethodEvidence(
            method=method.name, unfaithfulness=float(unfaith), top1_miss=top1_miss(recs, reference),
            misplacement=record_misplacement(recs, reference),
            pileup=float(excess), pileup_class=cls, pileup_share=float(share), reference_share=float(ref_share),
            top1_pileup=float(top_excess), top1_pileup_class=top_cls, top1_share=float(top_share),
            reference_top1_share=float(ref_top_share),
            content_top1=float(content), content_top1_words=content_words[:8],
            aopc_comprehensiveness=float(faith.aopc_comprehensiveness),
            aopc_random=float(rand_faith.aopc_comprehensiveness),
            aopc_reference=float(ref_faith.aopc_comprehensiveness), seconds=round(seconds[i], 2), extras=extras)
    return BehavioralEvidence(
        n_inputs=len(texts), methods=out, magnitude_ratio=ratio, first_order_miss=fo_miss,
        seconds=round(time.time() - started, 2),
        extras={"reference_aopc_sufficiency": float(ref_faith.aopc_sufficiency),
                "magnitude_ratio_quartiles": [float(q) for q in np.percentile(ratios, [25, 50, 75])]
                if ratios else []})
