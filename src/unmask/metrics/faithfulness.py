"""Faithfulness of token attributions: ERASER comprehensiveness / sufficiency / AOPC, deletion and
insertion curves, and a random-ordering baseline for each (DeYoung et al. 2020; /work/shared/DESIGN.md).

For a record with target y (the model's prediction unless the record says otherwise) and candidates =
its non-special tokens (both segments of a pair; [CLS]/[SEP]/padding are never touched):

- comprehensiveness at fraction f = p(y|x) - p(y|x without its top-k candidates),
- sufficiency at f               = p(y|x) - p(y|x with only its top-k candidates),
  with k = max(1, ceil(f * n_candidates)); AOPC = the mean over examples and fractions;
- deletion / insertion curve: p(y|...) with the top ceil(f * n) candidates removed / only they kept, at
  f = 0, 1/steps, ..., 1; AUC by the trapezoid rule over f, averaged over examples.

Ranking is by the signed score (positive supports y) or by |score|; ties go to the earlier position.
``mode="remove"`` deletes the word pieces and re-packs the row (specials and token types kept);
``mode="mask"`` replaces them by [MASK] (length kept). Every perturbed input of every record goes through
the model in one pass of token-budgeted, length-bucketed chunks; identical perturbed rows run once. A
``RowCache`` passed to several calls on one model extends that across the calls (the audit's curves).
"""
from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET
from unmask.attribution.record import Attribution
from unmask.errors import UnmaskError
from unmask.models.batch import Batch, length_buckets
from unmask.models.classifier import TextClassifier

FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5)
MODES = ("remove", "mask")
RANKINGS = ("signed", "abs")


@dataclass
class Faithfulness:
    """Comprehensiveness and sufficiency, (n_examples, n_fractions) each. Higher comprehensiveness and
    lower sufficiency mean a more faithful ranking."""

    fractions: tuple[float, ...]
    comprehensiveness: np.ndarray
    sufficiency: np.ndarray

    @property
    def aopc_comprehensiveness(self) -> float:
        return float(np.mean(self.comprehensiveness))

    @property
    def aopc_sufficiency(self) -> float:
        return float(np.mean(self.sufficiency))

    @property
    def n_examples(self) -> int:
        return int(self.comprehensiveness.shape[0])

    def to_dict(self) -> dict:
        """Means per fraction (lists aligned with ``fractions``) and the two AOPCs."""
        return {"fractions": [float(f) for f in self.fractions],
                "comprehensiveness": self.comprehensiveness.mean(0).tolist(),
                "sufficiency": self.sufficiency.mean(0).tolist(),
                "aopc_comprehensiveness": self.aopc_comprehensiveness,
                "aopc_sufficiency": self.aopc_sufficiency,
                "n_examples": self.n_examples}


@dataclass
class Curve:
    """p(y|perturbed x) at each fraction of candidates deleted (or inserted); ``auc``: trapezoid over
    ``fractions``, mean over examples."""

    fractions: np.ndarray
    probs: np.ndarray
    auc: float

    def to_dict(self) -> dict:
        return {"fractions": self.fractions.tolist(), "mean_probs": self.probs.mean(0).tolist(),
                "auc": self.auc, "n_examples": int(self.probs.shape[0])}


# ----------------------------------------------------------------------------------- preparation
@dataclass
class _Inputs:
    """Records re-encoded by the model: unpadded ids / token types, candidate positions, targets."""

    ids: list[np.ndarray]
    types: list[np.ndarray] | None
    candidates: list[np.ndarray]
    targets: np.ndarray


def _check(mode: str, rank_by: str | None, token_budget: int) -> None:
    if mode not in MODES:
        raise UnmaskError(f"unknown perturbation mode {mode!r}; choose one of {', '.join(MODES)}")
    if rank_by is not None and rank_by not in RANKINGS:
        raise UnmaskError(f"unknown rank_by {rank_by!r}; choose one of {', '.join(RANKINGS)}")
    if not isinstance(token_budget, int) or token_budget < 1:
        raise UnmaskError(f"token_budget must be a positive integer, got {token_budget!r}")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(f) for f in fractions)
    if not out:
        raise UnmaskError("no fractions given")
    bad = [f for f in out if not 0 < f <= 1]
    if bad:
        raise UnmaskError(f"fractions must lie in (0, 1], got {bad[0]!r}")
    return out


def _prepare(model: TextClassifier, records: Sequence[Attribution]) -> _Inputs:
    """Re-encode the records' texts; every record must carry exactly the model's tokens."""
    records = list(records)
    if not records:
        raise UnmaskError("no attribution records given")
    pairs = [r.pair for r in records]
    with warnings.catch_warnings():  # over-long texts were truncated (and warned about) when explained
        warnings.simplefilter("ignore", UserWarning)
        batch = model.encode([r.text for r in records], pairs if pairs[0] is not None else None)
    lengths = batch.lengths
    ids, types, candidates = [], [] if batch.token_type_ids is not None else None, []
    for i, r in enumerate(records):
        n = lengths[i]
        if list(r.tokens) != batch.tokens[i][:n]:
            raise UnmaskError(f"record #{i} ({r.method}) does not match model {model.name!r}: its tokens "
                              f"differ from the model's tokenization of its text {r.text!r}")
        if not 0 <= r.target < model.num_labels:
            raise UnmaskError(f"record #{i} ({r.method}) has target {r.target}, outside the model's "
                              f"{model.num_labels} labels")
        ids.append(batch.input_ids[i, :n].numpy().copy())
        if types is not None:
            types.append(batch.token_type_ids[i, :n].numpy().copy())
        candidates.append(np.array([t for t, s in enumerate(batch.sequence_ids[i][:n]) if s is not None]))
    return _Inputs(ids, types, candidates, np.array([r.target for r in records]))


def _ranked(record: Attribution, candidates: np.ndarray, rank_by: str) -> np.ndarray:
    """Candidate positions, most important first (stable: ties keep position order)."""
    s = record.scores[candidates]
    key = -np.abs(s) if rank_by == "abs" else -s
    return candidates[np.argsort(key, kind="stable")]


def _random_orders(inputs: _Inputs, repeats: int, seed: int) -> list[list[np.ndarray]]:
    """``repeats`` random orderings per record, keyed by (seed, the record's token ids): an input gets the
    same orderings wherever it sits in a batch."""
    out = []
    for ids, cand in zip(inputs.ids, inputs.candidates):
        rng = np.random.default_rng([seed, zlib.crc32(ids.tobytes())])
        out.append([rng.permutation(cand) for _ in range(repeats)])
    return out


def _k(fraction: float, n: int, at_least_one: bool) -> int:
    k = math.ceil(round(fraction * n, 9))
    return max(1, k) if at_least_one else k


# ----------------------------------------------------------------------------------- batched rows
RowKey = tuple[bytes, bytes]


def _key(ids: np.ndarray, types: np.ndarray | None) -> RowKey:
    """A row as the model sees it: its token ids and token types."""
    return ids.tobytes(), types.tobytes() if types is not None else b""


class RowCache:
    """Softmax outputs of the rows ``model`` has run, keyed by the row itself (``_key``). Pass one cache to
    several calls on the model and each distinct row runs once across them; the model must not change
    while the cache is in use."""

    def __init__(self, model: TextClassifier) -> None:
        self.model = model
        self.probs: dict[RowKey, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.probs)

    def add_inputs(self, batch: Batch, logits: torch.Tensor) -> None:
        """Store the unperturbed rows of ``batch`` with their ``logits``, already computed by the caller."""
        types = batch.token_type_ids
        for i, n in enumerate(batch.lengths):
            key = _key(batch.input_ids[i, :n].numpy(), types[i, :n].numpy() if types is not None else None)
            self.probs[key] = logits[i].double().softmax(-1).numpy()


class _Rows:
    """Perturbed inputs of many records; each distinct row runs once (once per ``cache`` if one is given),
    all rows in length buckets."""

    def __init__(self, model: TextClassifier, inputs: _Inputs, mode: str, cache: RowCache | None = None) -> None:
        self.model, self.inputs, self.mode = model, inputs, mode
        self.cache = cache if cache is not None else RowCache(model)
        if self.cache.model is not model:
            raise UnmaskError(f"this RowCache holds rows of model {self.cache.model.name!r}, not of "
                              f"{model.name!r}: use one cache per model")
        self.keys: dict[RowKey, int] = {}
        self.rows: list[tuple[np.ndarray, np.ndarray | None]] = []
        if mode == "mask":
            self.mask_id = model.tokenizer.mask_token_id
            if self.mask_id is None:
                raise UnmaskError(f"model {model.name!r} has no [MASK] token; use mode='remove'")

    def add(self, i: int, absent: np.ndarray) -> int:
        """Row for record ``i`` with the candidate positions ``absent`` removed (or masked)."""
        ids = self.inputs.ids[i]
        types = self.inputs.types[i] if self.inputs.types is not None else None
        if self.mode == "remove":
            keep = np.ones(len(ids), dtype=bool)
            keep[absent] = False
            ids, types = ids[keep], (types[keep] if types is not None else None)
        else:
            ids = ids.copy()
            ids[absent] = self.mask_id
        key = _key(ids, types)
        if key not in self.keys:
            self.keys[key] = len(self.rows)
            self.rows.append((ids, types))
        return self.keys[key]

    def probabilities(self, token_budget: int, progress: bool = False) -> np.ndarray:
        """Softmax probabilities (rows, labels) of every distinct row; runs only the rows not yet cached."""
        keys = list(self.keys)
        todo = [j for j, key in enumerate(keys) if key not in self.cache.probs]
        for j, p in zip(todo, self._run([self.rows[j] for j in todo], token_budget, progress)):
            self.cache.probs[keys[j]] = p
        return np.stack([self.cache.probs[key] for key in keys])

    @torch.no_grad()
    def _run(self, rows: list[tuple[np.ndarray, np.ndarray | None]], token_budget: int,
             progress: bool) -> np.ndarray:
        """Softmax probabilities (rows, labels) of ``rows``, in length buckets."""
        model = self.model
        pad = model.tokenizer.pad_token_id or 0
        out = np.zeros((len(rows), model.num_labels))
        lengths = [len(r[0]) for r in rows]
        bar = tqdm(total=len(rows), desc="faithfulness", disable=not progress, leave=False)
        for idx in length_buckets(lengths, token_budget):
            width = max(lengths[j] for j in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            types = torch.zeros((len(idx), width), dtype=torch.long) if self.inputs.types is not None else None
            for b, j in enumerate(idx):
                row_ids, row_types = rows[j]
                ids[b, :len(row_ids)] = torch.from_numpy(row_ids)
                mask[b, :len(row_ids)] = 1
                if types is not None:
                    types[b, :len(row_ids)] = torch.from_numpy(row_types)
            logits = model.forward_embeds(model.embed(ids), mask, types).logits
            out[idx] = logits.double().softmax(-1).numpy()
            bar.update(len(idx))
        bar.close()
        return out


def _target_probs(rows: _Rows, index: np.ndarray, token_budget: int, progress: bool) -> np.ndarray:
    """p(target of the row's record) for an index array whose first axis is the record."""
    probs = rows.probabilities(token_budget, progress)
    targets = rows.inputs.targets.reshape((-1,) + (1,) * (index.ndim - 1))
    return probs[index, np.broadcast_to(targets, index.shape)]


# ----------------------------------------------------------------------------------- metrics
def _comp_suff(model: TextClassifier, inputs: _Inputs, orders: list[list[np.ndarray]],
               fractions: tuple[float, ...], mode: str, token_budget: int, progress: bool,
               cache: RowCache | None) -> Faithfulness:
    """Comprehensiveness / sufficiency averaged over each record's orderings (one for a method)."""
    rows = _Rows(model, inputs, mode, cache)
    n, reps = len(orders), len(orders[0])
    full = np.zeros((n, 1, 1), dtype=int)
    comp = np.zeros((n, reps, len(fractions)), dtype=int)
    suff = np.zeros_like(comp)
    for i, record_orders in enumerate(orders):
        full[i] = rows.add(i, np.array([], dtype=int))
        for r, order in enumerate(record_orders):
            for j, f in enumerate(fractions):
                k = _k(f, len(order), at_least_one=True)
                comp[i, r, j] = rows.add(i, order[:k])
                suff[i, r, j] = rows.add(i, order[k:])
    p = _target_probs(rows, np.concatenate([full.repeat(len(fractions), 2), comp, suff], 1),
                      token_budget, progress)
    base, p_comp, p_suff = p[:, :1], p[:, 1:1 + reps], p[:, 1 + reps:]
    return Faithfulness(fractions, (base - p_comp).mean(1), (base - p_suff).mean(1))


def _curve(model: TextClassifier, inputs: _Inputs, orders: list[list[np.ndarray]], steps: int, mode: str,
           insertion: bool, token_budget: int, progress: bool) -> Curve:
    if not isinstance(steps, int) or steps < 1:
        raise UnmaskError(f"steps must be a positive integer, got {steps!r}")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    rows = _Rows(model, inputs, mode)
    index = np.zeros((len(orders), len(orders[0]), steps + 1), dtype=int)
    for i, record_orders in enumerate(orders):
        for r, order in enumerate(record_orders):
            for j, f in enumerate(fractions):
                k = _k(f, len(order), at_least_one=False)
                index[i, r, j] = rows.add(i, order[k:] if insertion else order[:k])
    probs = _target_probs(rows, index, token_budget, progress).mean(1)
    auc = float(np.mean(np.trapezoid(probs, fractions, axis=1)))
    return Curve(fractions, probs, auc)


def faithfulness(model: TextClassifier, records: Sequence[Attribution], fractions: Sequence[float] = FRACTIONS,
                 mode: str = "remove", rank_by: str = "signed", token_budget: int = DEFAULT_TOKEN_BUDGET,
                 progress: bool = False, cache: RowCache | None = None) -> Faithfulness:
    """Comprehensiveness and sufficiency of each record's ranking at each fraction (see module doc);
    ``cache``: rows already run by ``model`` (filled with this call's rows)."""
    _check(mode, rank_by, token_budget)
    fractions = _check_fractions(fractions)
    inputs = _prepare(model, records)
    orders = [[_ranked(r, c, rank_by)] for r, c in zip(records, inputs.candidates)]
    return _comp_suff(model, inputs, orders, fractions, mode, token_budget, progress, cache)


def random_faithfulness(model: TextClassifier, records: Sequence[Attribution],
                        fractions: Sequence[float] = FRACTIONS, mode: str = "remove", repeats: int = 3,
                        seed: int = 0, token_budget: int = DEFAULT_TOKEN_BUDGET,
                        progress: bool = False, cache: RowCache | None = None) -> Faithfulness:
    """The chance level: random orderings of the same candidates, averaged over ``repeats``; ``cache`` as
    in ``faithfulness``."""
    _check(mode, None, token_budget)
    fractions = _check_fractions(fractions)
    if not isinstance(repeats, int) or repeats < 1:
        raise UnmaskError(f"repeats must be a positive integer, got {repeats!r}")
    inputs = _prepare(model, records)
    return _comp_suff(model, inputs, _random_orders(inputs, repeats, seed), fractions, mode,
                      token_budget, progress, cache)


def deletion_curve(model: TextClassifier, records: Sequence[Attribution], steps: int = 10,
                   mode: str = "remove", rank_by: str = "signed", token_budget: int = DEFAULT_TOKEN_BUDGET,
                   progress: bool = False) -> Curve:
    """p(y) as the top-ranked candidates are deleted; a faithful ranking makes it fall fast (low AUC)."""
    _check(mode, rank_by, token_budget)
    inputs = _prepare(model, records)
    orders = [[_ranked(r, c, rank_by)] for r, c in zip(records, inputs.candidates)]
    return _curve(model, inputs, orders, steps, mode, False, token_budget, progress)


def insertion_curve(model: TextClassifier, records: Sequence[Attribution], steps: int = 10,
                    mode: str = "remove", rank_by: str = "signed", token_budget: int = DEFAULT_TOKEN_BUDGET,
                    progress: bool = False) -> Curve:
    """p(y) as the top-ranked candidates are inserted into an empty (or all-[MASK]) input: high AUC is
    faithful. At fraction 0 only the special tokens remain (or every candidate is [MASK])."""
    _check(mode, rank_by, token_budget)
    inputs = _prepare(model, records)
    orders = [[_ranked(r, c, rank_by)] for r, c in zip(records, inputs.candidates)]
    return _curve(model, inputs, orders, steps, mode, True, token_budget, progress)


def random_curve(model: TextClassifier, records: Sequence[Attribution], kind: str = "deletion",
                 steps: int = 10, mode: str = "remove", repeats: int = 3, seed: int = 0,
                 token_budget: int = DEFAULT_TOKEN_BUDGET, progress: bool = False) -> Curve:
    """Deletion or insertion curve of random orderings (the chance level), averaged over ``repeats``."""
    if kind not in ("deletion", "insertion"):
        raise UnmaskError(f"unknown curve kind {kind!r}; choose deletion or insertion")
    _check(mode, None, token_budget)
    if not isinstance(repeats, int) or repeats < 1:
        raise UnmaskError(f"repeats must be a positive integer, got {repeats!r}")
    inputs = _prepare(model, records)
    return _curve(model, inputs, _random_orders(inputs, repeats, seed), steps, mode, kind == "insertion",
                  token_budget, progress)
