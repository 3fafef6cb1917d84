"""Target positions A of a Facade: positional (first / last token), lexical (stop words, punctuation,
a custom word set) or any predicate on the word piece.

Spec strings (``parse_target`` turns command-line text into a spec):

- ``"first"``: the token right after [CLS] (the premise's first token for pairs);
- ``"last"``: the token right before the first [SEP] (the premise's last token for pairs); on SST-2 this
  is mostly the final "." (a punctuation target in disguise);
- ``"last_word"``: every piece of the last word before the first [SEP] that is not punctuation only
  (a word = a piece not starting with ``##`` and the ``##`` pieces after it: WordPiece convention);
- ``"stop"``: word pieces whose lowercased text is an NLTK stop word (exact match; both segments);
- ``"punct"``: word pieces made only of punctuation (BERT's definition: ASCII non-alphanumeric
  symbols and Unicode category P*; a leading "##" is ignored);
- ``"words:film,movie,the"``: a custom word set, matched against whole lowercased word pieces that are
  whole words (a piece followed by a ``##`` continuation is part of a longer word: "movie" in
  "movie ##go ##ers" is not the word "movie");
  ``"words:@FILE"`` reads the words from a file (one per line or comma-separated, ``#`` comments);
- any other text is a comma-separated word set (``"he,she,his,her"``, ``"film"``).

A word set or predicate that matches no vocabulary token is an error naming the words. Special
tokens and padding are never targets.
"""
from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from unmask.data.readers import stopwords
from unmask.errors import UnmaskError, UnmaskWarning

TargetSpec = str | Iterable[str] | Callable[[str], bool]
POSITIONAL = ("first", "last", "last_word")
LEXICAL = ("stop", "punct")
KINDS = POSITIONAL + LEXICAL
WORDS_PREFIX = "words:"


def is_punctuation_piece(piece: str) -> bool:
    """True if a word piece (``##`` prefix ignored) is non-empty and made only of punctuation."""
    text = piece[2:] if piece.startswith("##") else piece
    return bool(text) and all(_is_punctuation(c) for c in text)


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def read_words(text: str) -> list[str]:
    """Words from comma- / newline-separated text; ``#`` starts a comment."""
    words = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        words.extend(w.strip() for w in line.split(",") if w.strip())
    return words


def parse_target(text: str) -> TargetSpec:
    """A command-line target: a kind, ``words:a,b``, ``words:@FILE``, else a comma-separated word list."""
    text = text.strip()
    if text in KINDS:
        return text
    body = text[len(WORDS_PREFIX):].strip() if text.startswith(WORDS_PREFIX) else text
    if body.startswith("@"):
        path = Path(body[1:])
        if not path.is_file():
            raise UnmaskError(f"facade target word file not found: {path}")
        try:
            body = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UnmaskError(f"facade target word file {path} is not UTF-8 text") from None
    words = read_words(body)
    if not words:
        raise UnmaskError(f"empty facade target {text!r}; use {', '.join(KINDS)}, "
                          f"'words:w1,w2,...', 'words:@FILE' or a comma-separated word list")
    return words


class TargetPositions:
    """Maps token ids (rows x tokens) to a boolean mask of target positions (see the module docstring).

    ``spec`` is a kind (``"first"``, ``"last"``, ``"last_word"``, ``"stop"``, ``"punct"``), a ``"words:..."``
    string, a set of words, or a predicate on the lowercased word piece.
    """

    def __init__(self, spec: TargetSpec, tokenizer) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.special_ids = torch.tensor(sorted(tokenizer.all_special_ids))
        self.position: str | None = None
        self.vocab_mask: torch.Tensor | None = None
        self.whole_words = False  # word sets: a piece counts only if no ## continuation follows it
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.continuation = torch.tensor([t.startswith("##") for t in vocab])
        self.punct = torch.tensor([is_punctuation_piece(t) for t in vocab])
        if isinstance(spec, str) and spec not in KINDS:
            spec = parse_target(spec)
        if isinstance(spec, str):
            self.name = spec
            if spec in POSITIONAL:
                self.position = spec
            else:
                predicate = stopwords().__contains__ if spec == "stop" else is_punctuation_piece
                self.vocab_mask = self._vocab_mask(tokenizer, predicate)
                self._require_match(f"the {spec!r} target")
        elif callable(spec):
            self.name = getattr(spec, "__name__", "predicate")
            self.vocab_mask = self._vocab_mask(tokenizer, spec)
            self._require_match(f"the target predicate {self.name!r}")
        else:
            words = sorted({w.strip().lower() for w in spec if w.strip()})
            if not words:
                raise UnmaskError("the facade target word set is empty")
            self.name = "words"
            self.words = words
            self.whole_words = True
            self.vocab_mask = self._vocab_mask(tokenizer, frozenset(words).__contains__)
            known = set(tokenizer.get_vocab()) | {t.lower() for t in tokenizer.get_vocab()}
            missing = [w for w in words if w not in known]
            if len(missing) == len(words):
                raise UnmaskError(f"no facade target word is a vocabulary token (as one word piece): "
                                  f"{', '.join(words[:20])}{' ...' if len(words) > 20 else ''} "
                                  f"(other targets: {', '.join(KINDS)})")
            if missing:
                warnings.warn(f"facade target words that are no vocabulary token, ignored: {', '.join(missing[:20])}",
                              UnmaskWarning, stacklevel=2)

    def _require_match(self, what: str) -> None:
        mask = self.vocab_mask.clone()
        mask[self.special_ids] = False
        if not mask.any():
            raise UnmaskError(f"{what} matches no token of this tokenizer's vocabulary")

    @staticmethod
    def _vocab_mask(tokenizer, predicate: Callable[[str], bool]) -> torch.Tensor:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        return torch.tensor([bool(predicate(t.lower())) for t in vocab])

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        valid = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids.to(input_ids.device))
        if self.vocab_mask is not None:
            out = self.vocab_mask.to(input_ids.device)[input_ids] & valid
            if self.whole_words:
                follows = self.continuation.to(input_ids.device)[input_ids[:, 1:]] & attention_mask[:, 1:].bool()
                out[:, :-1] &= ~follows
            return out
        out = torch.zeros_like(valid)
        if self.position == "first":
            out[:, 1] = True
            return out & valid
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        cols = torch.arange(input_ids.shape[1], device=input_ids.device)
        end = self._first_segment_end(input_ids, attention_mask, valid, cols)
        if self.position == "last":
            keep = end >= 0
            out[rows[keep], end[keep]] = True
            return out & valid
        # last_word: the last non-punctuation piece of the first segment, back to the start of its word
        first_segment = valid & (cols[None, :] <= end[:, None])
        word_piece = first_segment & ~self.punct.to(input_ids.device)[input_ids]
        stop = torch.where(word_piece, cols, -1).max(1).values
        starts = first_segment & ~self.continuation.to(input_ids.device)[input_ids]
        start = torch.where(starts & (cols[None, :] <= stop[:, None]), cols, -1).max(1).values
        first = torch.where(first_segment, cols, input_ids.shape[1]).min(1).values
        start = torch.where(start >= 0, start, first)  # no word start before it (## pieces only): from the first
        out = (cols[None, :] >= start[:, None]) & (cols[None, :] <= stop[:, None]) & (stop[:, None] >= 0)
        return out & valid

    def _first_segment_end(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, valid: torch.Tensor,
                           cols: torch.Tensor) -> torch.Tensor:
        """Per row, the position right before the first [SEP] (the last valid position if there is none)."""
        last_valid = torch.where(valid, cols, -1).max(1).values  # fallback: no [SEP] in the row
        sep_id = self.tokenizer.sep_token_id
        if sep_id is None:
            return last_valid
        sep = (input_ids == sep_id) & attention_mask.bool()
        first_sep = torch.where(sep, cols, input_ids.shape[1]).min(1).values
        return torch.where(sep.any(1), first_sep - 1, last_valid)

    def has_target(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per row: does it hold at least one target position?"""
        return self.mask(input_ids, attention_mask).any(1)

    def mask_tokens(self, tokens: list[str], sequence_ids: list[int | None]) -> np.ndarray:
        """Target mask for one record's token strings (as in ``Attribution.tokens``)."""
        ids = torch.tensor([self.tokenizer.convert_tokens_to_ids(tokens)])
        special = torch.tensor([[s is None for s in sequence_ids]])
        return (self.mask(ids, torch.ones_like(ids)) & ~special)[0].numpy()
