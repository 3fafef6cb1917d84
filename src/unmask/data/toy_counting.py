"""The DiffMask toy task (De Cao et al. 2020, section 4.1) with its ground-truth attribution.

Given a sequence of symbols (digits 0..9 by default, length 1..10) and a query ``<n, m>`` of two different
symbols, decide whether ``n`` occurs more often than ``m``. Each element is, with probability
``p_query`` (0.5), drawn uniformly from ``{n, m}`` (so each query symbol appears with p = 0.25), and
otherwise uniformly from the remaining symbols.

Ground truth: the label depends on the counts of ``n`` and ``m`` only, so the prediction is attributed
uniformly to every position holding ``n`` or ``m`` (and to nothing else). Sequences without any
query symbol have no defined ground truth (``has_ground_truth`` is False for them).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from unmask.errors import UnmaskError


@dataclass(frozen=True)
class ToyTaskConfig:
    num_symbols: int = 10
    min_length: int = 1
    max_length: int = 10
    p_query: float = 0.5

    def __post_init__(self) -> None:
        if self.num_symbols < 3:
            raise UnmaskError(f"the toy task needs at least 3 symbols, got {self.num_symbols}")
        if not 1 <= self.min_length <= self.max_length:
            raise UnmaskError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if not 0.0 <= self.p_query <= 1.0:
            raise UnmaskError(f"p_query must be in [0, 1], got {self.p_query}")

    @property
    def pad(self) -> int:
        """Index of the padding symbol (one past the real symbols)."""
        return self.num_symbols


def toy_label(sequence: list[int], n: int, m: int) -> int:
    """1 if ``n`` occurs more often than ``m`` in ``sequence``, else 0."""
    return int(sequence.count(n) > sequence.count(m))


def relevant_positions(sequence: list[int], n: int, m: int) -> list[int]:
    """Positions the label depends on: those holding ``n`` or ``m``."""
    return [i for i, s in enumerate(sequence) if s in (n, m)]


@dataclass
class ToyData:
    """Padded sequences (``pad`` after ``lengths``), queries ``(N, 2)`` and labels."""

    sequences: torch.Tensor
    lengths: torch.Tensor
    queries: torch.Tensor
    labels: torch.Tensor
    config: ToyTaskConfig

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def fingerprint(self) -> str:
        """sha256 of the sequences, lengths, queries and labels (a cache or checkpoint key)."""
        h = hashlib.sha256()
        for t in (self.sequences, self.lengths, self.queries, self.labels):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def select(self, index) -> "ToyData":
        index = torch.as_tensor(index, dtype=torch.long)
        width = int(self.lengths[index].max()) if len(index) else 0
        return ToyData(self.sequences[index, :width].clone(), self.lengths[index].clone(),
                       self.queries[index].clone(), self.labels[index].clone(), self.config)

    @property
    def mask(self) -> torch.Tensor:
        """(N, T) True at real positions."""
        return torch.arange(self.sequences.shape[1])[None, :] < self.lengths[:, None]

    def relevant(self) -> torch.Tensor:
        """(N, T) True where the symbol is ``n`` or ``m``."""
        s = self.sequences
        return ((s == self.queries[:, :1]) | (s == self.queries[:, 1:])) & self.mask

    def has_ground_truth(self) -> torch.Tensor:
        return self.relevant().any(1)

    def ground_truth(self) -> torch.Tensor:
        """(N, T) attribution distribution: uniform over relevant positions (all zero if there are none)."""
        rel = self.relevant().to(torch.float64)
        return rel / rel.sum(1, keepdim=True).clamp_min(1.0)

    def split(self, dev_fraction: float) -> tuple["ToyData", "ToyData"]:
        n_dev = int(round(len(self) * dev_fraction))
        idx = torch.arange(len(self))
        return self.select(idx[n_dev:]), self.select(idx[:n_dev])


def generate_toy(n: int, seed: int = 0, config: ToyTaskConfig = ToyTaskConfig()) -> ToyData:
    """``n`` random examples, deterministic in ``seed``."""
    if n < 1:
        raise UnmaskError(f"number of toy examples must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)
    k = config.num_symbols
    first = torch.randint(0, k, (n,), generator=g)
    second = (first + torch.randint(1, k, (n,), generator=g)) % k  # uniform over symbols != first
    lengths = torch.randint(config.min_length, config.max_length + 1, (n,), generator=g)
    width = config.max_length
    is_query = torch.rand(n, width, generator=g) < config.p_query
    which = torch.randint(0, 2, (n, width), generator=g)
    query_symbol = torch.where(which == 0, first[:, None], second[:, None])
    # uniform over the k - 2 other symbols: draw r in [0, k-2) and skip the two query symbols
    r = torch.randint(0, k - 2, (n, width), generator=g)
    lo = torch.minimum(first, second)[:, None]
    hi = torch.maximum(first, second)[:, None]
    other = r + (r >= lo).long()
    other = other + (other >= hi).long()
    seq = torch.where(is_query, query_symbol, other)
    seq = torch.where(torch.arange(width)[None, :] < lengths[:, None], seq, torch.full_like(seq, config.pad))
    queries = torch.stack([first, second], 1)
    labels = ((seq == first[:, None]).sum(1) > (seq == second[:, None]).sum(1)).long()
    return ToyData(seq, lengths, queries, labels, config)
