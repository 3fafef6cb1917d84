"""A tokenized batch: tensors for the model plus the token / word bookkeeping explanations need."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    """Tokenized inputs, padded to the longest row.

    ``sequence_ids[b][t]`` is 0 for the first text, 1 for the pair, ``None`` for special tokens and
    padding; ``word_ids[b][t]`` indexes ``words[b][sequence_id]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    tokens: list[list[str]]
    word_ids: list[list[int | None]]
    sequence_ids: list[list[int | None]]
    words: list[tuple[list[str], ...]]
    texts: list[str]
    pairs: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def lengths(self) -> list[int]:
        return self.attention_mask.sum(1).tolist()

    def special_mask(self) -> torch.Tensor:
        """True at special tokens ([CLS], [SEP]) and padding."""
        rows = [[s is None for s in seq] for seq in self.sequence_ids]
        return torch.tensor(rows, dtype=torch.bool)

    def select(self, index: list[int]) -> "Batch":
        """Rows ``index``, re-padded to the longest of them."""
        width = max(self.lengths[i] for i in index)
        pick = lambda t: None if t is None else t[index, :width].clone()  # noqa: E731
        return Batch(
            input_ids=pick(self.input_ids), attention_mask=pick(self.attention_mask),
            token_type_ids=pick(self.token_type_ids),
            tokens=[self.tokens[i][:width] for i in index],
            word_ids=[self.word_ids[i][:width] for i in index],
            sequence_ids=[self.sequence_ids[i][:width] for i in index],
            words=[self.words[i] for i in index], texts=[self.texts[i] for i in index],
            pairs=[self.pairs[i] for i in index] if self.pairs else [],
        )

    def repeat(self, n: int) -> dict[str, torch.Tensor | None]:
        """Model tensors with every row repeated ``n`` times consecutively (for samples / steps)."""
        rep = lambda t: None if t is None else t.repeat_interleave(n, dim=0)  # noqa: E731
        return {"attention_mask": rep(self.attention_mask), "token_type_ids": rep(self.token_type_ids)}


def length_buckets(lengths: list[int], token_budget: int, rows_per_token: int = 1) -> list[list[int]]:
    """Group row indices by similar length so each group pads to at most ``token_budget`` tokens.

    ``rows_per_token`` is how many model rows each example expands to (IG steps, SmoothGrad samples).
    Groups keep sorted-by-length order, so padding waste stays small.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = max([lengths[j] for j in current] + [lengths[i]])
        if current and width * (len(current) + 1) * rows_per_token > token_budget:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups
