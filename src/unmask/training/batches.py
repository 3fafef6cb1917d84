"""Deterministic, length-bucketed training batches over pre-tokenized examples."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from unmask.data.readers import Example
from unmask.models.classifier import TextClassifier


@dataclass
class Tokenized:
    """Token ids per example (no padding) with labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def tokenize_examples(model: TextClassifier, examples: list[Example], max_length: int = 128) -> Tokenized:
    has_pair = examples[0].pair is not None
    texts = [e.text for e in examples]
    args = (texts, [e.pair for e in examples]) if has_pair else (texts,)
    enc = model.tokenizer(*args, truncation=True, max_length=min(max_length, model.max_length))
    tti = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return Tokenized(enc["input_ids"], tti, [e.label for e in examples])


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  pool: int = 50) -> list[list[int]]:
    """Shuffle, sort within pools of ``pool`` batches by length, cut into batches, shuffle batches."""
    idx = list(range(len(lengths)))
    if not shuffle:
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = random.Random(seed * 1000003 + epoch)
    rng.shuffle(idx)
    batches = []
    span = batch_size * pool
    for s in range(0, len(idx), span):
        group = sorted(idx[s:s + span], key=lambda i: lengths[i])
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """A random permutation of ``range(n)`` cut into batches; a function of (seed, epoch) only."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + epoch)).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def collate(data: Tokenized, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(data.input_ids[i]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    tti = torch.zeros((len(index), width), dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for r, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[r, :n] = torch.tensor(data.input_ids[i])
        tti[r, :n] = torch.tensor(data.token_type_ids[i])
        mask[r, :n] = 1
    return {"input_ids": ids, "token_type_ids": tti, "attention_mask": mask,
            "labels": torch.tensor([data.labels[i] for i in index])}
