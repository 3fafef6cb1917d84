"""Coalitions of input features for the black-box methods (LIME, KernelSHAP).

A *feature* is a group of word-piece positions of one example: one piece (``granularity="token"``) or
all pieces of one word (``"word"``, from the batch's ``sequence_ids`` / ``word_ids``; both sequences of
a pair). Special tokens ([CLS]/[SEP]) and padding are never features. A *coalition* is a boolean
vector over an example's features (True = kept). This module builds the perturbed inputs of many
coalitions of many examples and evaluates them in token-budgeted chunks without gradients.

Perturbations: ``remove`` deletes the pieces of switched-off features and re-packs the sequence (the
specials stay, positions shift left); ``mask`` / ``pad`` replace their ids with [MASK] / [PAD] and keep
the length and the attention mask.

Precision: ``"auto"`` (default, as for the gradient methods) runs the forwards under bf16 autocast only
where the CPU/GPU computes bf16 natively and a probe measured it faster (``attribution.precision``);
each record's extras name the precision used (``extras["precision"]``).
"""
from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from unmask.attribution.base import (DEFAULT_TOKEN_BUDGET, OBJECTIVES, AttributionMethod, _autocast,
                                     check_choice, check_precision, objective_values, row_chunks)
from unmask.attribution.precision import precision_extras
from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

GRANULARITIES = ("token", "word")
PERTURBATIONS = ("remove", "mask", "pad")


def feature_groups(batch: Batch, row: int, granularity: str) -> list[list[int]]:
    """Positions of each feature of example ``row``, in order of first position."""
    groups: dict[object, list[int]] = {}
    for t in range(batch.lengths[row]):
        seq = batch.sequence_ids[row][t]
        if seq is None:
            continue
        key = t if granularity == "token" else (seq, batch.word_ids[row][t])
        groups.setdefault(key, []).append(t)
    return list(groups.values())


def example_rng(batch: Batch, row: int, seed: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the example's own token ids (never on batching)."""
    length = batch.lengths[row]
    ids = batch.input_ids[row, :length].to(torch.int64).numpy().tobytes()
    digest = hashlib.blake2b(ids, digest_size=16, key=str(seed).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def distinct_rows(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(unique, inverse)``: the distinct coalitions and, per input row, the index of its copy."""
    if len(z) == 0 or z.shape[1] == 0:
        return z[:1], np.zeros(len(z), dtype=np.int64)
    unique, inverse = np.unique(z, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)


@dataclass
class Perturbed:
    """Model inputs of all perturbed copies (rows) and the example each copy belongs to."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    example: torch.Tensor


def fill_token(model: TextClassifier, perturbation: str) -> int | None:
    """The replacement id for ``mask`` / ``pad`` (``None`` for ``remove``); an error if the tokenizer has none."""
    if perturbation == "remove":
        return None
    tok = model.tokenizer
    tid = tok.mask_token_id if perturbation == "mask" else tok.pad_token_id
    if tid is None:
        raise UnmaskError(f"perturbation {perturbation!r} needs a {perturbation.upper()} token, "
                          f"which this model's tokenizer does not have; use perturbation='remove'")
    return int(tid)


def perturb(batch: Batch, rows: list[int], groups: list[list[list[int]]], coalitions: list[np.ndarray],
            perturbation: str, fill_id: int | None, pad_id: int) -> Perturbed:
    """One input per coalition: ``coalitions[k]`` (n_k, features_k) for example ``rows[k]``."""
    width = max([batch.lengths[r] for r in rows] + [1])
    ids_out, mask_out, tti_out, example = [], [], [], []
    for k, (r, feats, z) in enumerate(zip(rows, groups, coalitions)):
        length = batch.lengths[r]
        ids = batch.input_ids[r, :length]
        tti = batch.token_type_ids[r, :length] if batch.token_type_ids is not None else None
        feature_of = torch.full((length,), -1, dtype=torch.long)
        for f, positions in enumerate(feats):
            feature_of[positions] = f
        zt = torch.as_tensor(z, dtype=torch.bool).reshape(len(z), len(feats))
        if len(feats):
            keep = torch.where(feature_of >= 0, zt[:, feature_of.clamp(min=0)], True)
        else:
            keep = torch.ones((len(z), length), dtype=torch.bool)
        n = len(z)
        if perturbation == "remove":
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept positions first
            kept = keep.sum(1)
            attn = (torch.arange(length)[None, :] < kept[:, None]).to(batch.attention_mask.dtype)
            new_ids = torch.where(attn.bool(), ids[order], pad_id)
            new_tti = torch.where(attn.bool(), tti[order], 0) if tti is not None else None
        else:
            new_ids = torch.where(keep, ids[None, :], fill_id)
            attn = batch.attention_mask[r, :length].expand(n, length)
            new_tti = tti.expand(n, length) if tti is not None else None
        pad = width - length
        ids_out.append(torch.nn.functional.pad(new_ids, (0, pad), value=pad_id))
        mask_out.append(torch.nn.functional.pad(attn, (0, pad), value=0))
        if new_tti is not None:
            tti_out.append(torch.nn.functional.pad(new_tti, (0, pad), value=0))
        example.append(torch.full((n,), k, dtype=torch.long))
    return Perturbed(torch.cat(ids_out), torch.cat(mask_out), torch.cat(tti_out) if tti_out else None,
                     torch.cat(example))


@torch.no_grad()
def evaluate(model: TextClassifier, inputs: Perturbed, target: torch.Tensor, objective: str,
             token_budget: int, precision: str = "float32") -> torch.Tensor:
    """Objective of every perturbed row (float64), rows sorted by length and run in chunks of at most
    ``token_budget`` tokens (each chunk cut to its longest row); never one forward per row."""
    lengths = inputs.attention_mask.sum(1)
    order = torch.argsort(lengths, stable=True)
    mask = inputs.attention_mask[order]
    out = torch.empty(len(order), dtype=torch.float64)
    for sl, width in row_chunks(mask, token_budget):
        idx = order[sl]
        ids = inputs.input_ids[idx, :width]
        tti = inputs.token_type_ids[idx, :width] if inputs.token_type_ids is not None else None
        embeds = model.embed(ids)
        with _autocast(precision, embeds.device.type):
            logits = model.forward_embeds(embeds, mask[sl, :width], tti).logits
        values = objective_values(logits.to(embeds.dtype), target[inputs.example[idx]], objective)
        out[idx] = values.to(torch.float64)
    return out


def evaluate_coalitions(model: TextClassifier, batch: Batch, groups: list[list[list[int]]],
                        coalitions: list[np.ndarray], target: torch.Tensor, perturbation: str, objective: str,
                        token_budget: int, precision: str = "float32") -> list[np.ndarray]:
    """Objective values per example for its distinct coalitions: all examples' inputs go through the
    model together. ``coalitions[r]`` must already be deduplicated (see ``distinct_rows``)."""
    rows = list(range(len(batch)))
    tok = model.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    inputs = perturb(batch, rows, groups, coalitions, perturbation, fill_token(model, perturbation), pad_id)
    values = evaluate(model, inputs, target, objective, token_budget, precision).numpy()
    bounds = np.cumsum([0] + [len(z) for z in coalitions])
    return [values[bounds[k]:bounds[k + 1]] for k in rows]


def spread(coefficients: np.ndarray, groups: list[list[int]], width: int) -> np.ndarray:
    """Token scores from feature coefficients: a feature's coefficient split evenly over its pieces
    (so the sum over a word equals the word's coefficient); 0 at specials and padding."""
    scores = np.zeros(width)
    for c, positions in zip(coefficients, groups):
        scores[positions] = c / len(positions)
    return scores


@dataclass
class Design:
    """The coalitions one example is fitted on (rows may repeat) and each row's regression weight."""

    z: np.ndarray        # (rows, features) bool
    weights: np.ndarray  # (rows,)


class CoalitionMethod(AttributionMethod):
    """Shared engine of LIME and KernelSHAP: per example, ``design`` draws coalitions with a generator
    keyed by the example; the distinct coalitions of all examples are evaluated together; ``fit`` turns
    (design, values) into one coefficient per feature plus extras. Subclasses set ``name``.
    """

    def __init__(self, samples: int = 500, seed: int = 0, granularity: str = "token",
                 perturbation: str = "remove", objective: str = "log_prob",
                 token_budget: int = DEFAULT_TOKEN_BUDGET, precision: str = "auto") -> None:
        super().__init__(token_budget)
        if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
            raise UnmaskError(f"samples must be a positive integer, got {samples!r}")
        self.samples, self.seed = int(samples), seed
        self.granularity = check_choice(granularity, GRANULARITIES, "granularity")
        self.perturbation = check_choice(perturbation, PERTURBATIONS, "perturbation")
        self.objective = check_choice(objective, OBJECTIVES, "objective")
        self.precision = check_precision(precision)
        # buckets hold examples of similar length; the engine chunks their samples by the token budget
        self.rows_per_example = 1

    def design(self, features: int, rng: np.random.Generator) -> Design:
        raise NotImplementedError

    def fit(self, design: Design, values: np.ndarray) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def attribute(self, model: TextClassifier, batch: Batch,
                  target: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        groups = [feature_groups(batch, r, self.granularity) for r in range(len(batch))]
        designs = [self.design(len(g), example_rng(batch, r, self.seed)) for r, g in enumerate(groups)]
        distinct = [distinct_rows(d.z) for d in designs]
        used = precision_extras(self.precision, model)
        values = evaluate_coalitions(model, batch, groups, [u for u, _ in distinct], target,
                                     self.perturbation, self.objective, self.token_budget, used["precision"])
        width = batch.input_ids.shape[1]
        scores = torch.zeros(len(batch), width, dtype=torch.float64)
        extras = []
        for r, (d, (unique, inverse), v) in enumerate(zip(designs, distinct, values)):
            coef, extra = self.fit(d, v[inverse])
            scores[r] = torch.from_numpy(spread(coef, groups[r], width))
            extras.append({"features": len(groups[r]), "samples": len(d.z), "evaluations": len(unique),
                           **extra, **used})
        return scores, extras
