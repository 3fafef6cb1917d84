"""Target positions A of a Facade: the first token, stop words, or any token set / predicate."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from unmask.data.readers import stopwords
from unmask.errors import UnmaskError

TargetSpec = str | Iterable[str] | Callable[[str], bool]
KINDS = ("first", "stop")


class TargetPositions:
    """Maps token ids (rows x tokens) to a boolean mask of target positions.

    ``"first"``: the token right after [CLS] (first token of the premise for pairs).
    ``"stop"``: word pieces whose lowercased text is an NLTK stop word (exact match; both segments).
    A set of strings or a predicate on the lowercased word piece selects any other lexical target
    (e.g. gendered words). Special tokens and padding are never targets.
    """

    def __init__(self, spec: TargetSpec, tokenizer) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.special_ids = torch.tensor(sorted(tokenizer.all_special_ids))
        if isinstance(spec, str):
            if spec not in KINDS:
                raise UnmaskError(f"unknown facade target {spec!r}; use 'first', 'stop', a word set or a predicate")
            self.name = spec
            self.vocab_mask = None if spec == "first" else self._vocab_mask(tokenizer, stopwords().__contains__)
        else:
            if callable(spec):
                predicate, self.name = spec, getattr(spec, "__name__", "predicate")
            else:
                words = frozenset(w.lower() for w in spec)
                if not words:
                    raise UnmaskError("the facade target word set is empty")
                predicate, self.name = words.__contains__, "words"
            self.vocab_mask = self._vocab_mask(tokenizer, predicate)

    @staticmethod
    def _vocab_mask(tokenizer, predicate: Callable[[str], bool]) -> torch.Tensor:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        return torch.tensor([bool(predicate(t.lower())) for t in vocab])

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        valid = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)
        if self.vocab_mask is None:
            out = torch.zeros_like(valid)
            out[:, 1] = True
            return out & valid
        return self.vocab_mask[input_ids] & valid

    def mask_tokens(self, tokens: list[str], sequence_ids: list[int | None]) -> np.ndarray:
        """Target mask for one record's token strings (as in ``Attribution.tokens``)."""
        ids = torch.tensor([self.tokenizer.convert_tokens_to_ids(tokens)])
        special = torch.tensor([[s is None for s in sequence_ids]])
        return (self.mask(ids, torch.ones_like(ids)) & ~special)[0].numpy()
