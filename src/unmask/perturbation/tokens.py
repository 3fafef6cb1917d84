"""Inputs at the word-piece level: perturbations edit token ids, never strings.

Re-tokenizing an edited string can split or merge word pieces; editing ids and building the ``Batch``
directly keeps every piece exactly where the search put it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from unmask.errors import UnmaskError
from unmask.models.batch import Batch, length_buckets
from unmask.models.classifier import TextClassifier
from unmask.models.subwords import SubwordScheme, subwords_of

SEGMENTS = (0, 1)


@dataclass(frozen=True)
class TokenRow:
    """One input as ids: ``segments[i]`` is 0 (text), 1 (pair) or ``None`` ([CLS]/[SEP])."""

    ids: tuple[int, ...]
    segments: tuple[int | None, ...]
    type_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_pair(self) -> bool:
        return 1 in self.segments

    def positions(self, segment: int) -> list[int]:
        """Positions of the word pieces of ``segment`` (never [CLS]/[SEP])."""
        return [i for i, s in enumerate(self.segments) if s == segment]

    def remove(self, position: int) -> "TokenRow":
        if self.segments[position] is None:
            raise UnmaskError(f"position {position} is a special token and cannot be removed")
        cut = lambda t: t[:position] + t[position + 1:]  # noqa: E731
        return TokenRow(cut(self.ids), cut(self.segments), cut(self.type_ids))

    def replace(self, position: int, token_id: int) -> "TokenRow":
        if self.segments[position] is None:
            raise UnmaskError(f"position {position} is a special token and cannot be replaced")
        return TokenRow(self.ids[:position] + (int(token_id),) + self.ids[position + 1:], self.segments,
                        self.type_ids)

    def insert_front(self, segment: int, token_ids: list[int]) -> tuple["TokenRow", list[int]]:
        """Insert ``token_ids`` at the start of ``segment``; returns the row and their positions."""
        pos = self.positions(segment)
        if not pos:
            raise UnmaskError(f"the input has no segment {segment}")
        at, k = pos[0], len(token_ids)
        type_id = self.type_ids[at]
        row = TokenRow(self.ids[:at] + tuple(int(t) for t in token_ids) + self.ids[at:],
                       self.segments[:at] + (segment,) * k + self.segments[at:],
                       self.type_ids[:at] + (type_id,) * k + self.type_ids[at:])
        return row, list(range(at, at + k))


def check_segment(segment: int, has_pair: bool) -> int:
    """``segment`` must be 0 (text / premise) or 1 (pair / hypothesis, only for pairs)."""
    if segment not in SEGMENTS:
        raise UnmaskError(f"unknown segment {segment!r}; use 0 (the text / premise) or 1 (the pair / "
                          "hypothesis)")
    if segment == 1 and not has_pair:
        raise UnmaskError("segment 1 (the pair text) was requested but the input has no pair text")
    return segment


def rows_from_batch(batch: Batch) -> list[TokenRow]:
    """Unpadded id rows of a tokenized batch."""
    rows = []
    for b, n in enumerate(batch.lengths):
        types = batch.token_type_ids[b, :n].tolist() if batch.token_type_ids is not None else [0] * n
        rows.append(TokenRow(tuple(batch.input_ids[b, :n].tolist()), tuple(batch.sequence_ids[b][:n]),
                             tuple(types)))
    return rows


def encode_rows(model: TextClassifier, texts: list[str] | str, pairs: list[str | None] | None = None,
                on_too_long: str = "truncate") -> list[TokenRow]:
    """Tokenize once (with the adapter's checks for empty / too long input) and keep the ids."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(pairs, str):
        pairs = [pairs]
    return rows_from_batch(model.encode(list(texts), list(pairs) if pairs is not None else None,
                                        on_too_long=on_too_long))


def _word_ids(tokens: list[str], segments: tuple[int | None, ...], scheme: SubwordScheme) -> list[int | None]:
    """Word index within its segment; the adapter's sub-word convention (``scheme``: WordPiece's '##'
    continuation pieces, byte-level BPE's pre-tokens, ...) decides which pieces form one word."""
    out: list[int | None] = [None] * len(tokens)
    for seg in SEGMENTS:
        pos = [i for i, s in enumerate(segments) if s == seg]
        for i, w in zip(pos, scheme.word_ids([tokens[i] for i in pos])):
            out[i] = w
    return out


def segment_text(model: TextClassifier, row: TokenRow, segment: int) -> str:
    tokens = model.tokenizer.convert_ids_to_tokens([row.ids[i] for i in row.positions(segment)])
    return model.tokenizer.convert_tokens_to_string(tokens)


def row_tokens(model: TextClassifier, row: TokenRow) -> list[str]:
    return model.tokenizer.convert_ids_to_tokens(list(row.ids))


def batch_from_rows(model: TextClassifier, rows: list[TokenRow]) -> Batch:
    """A padded ``Batch`` built from id rows (tokens, words, texts filled in for reports)."""
    if not rows:
        raise UnmaskError("no inputs to batch")
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    tokens, word_ids, seq_ids, words, texts, pairs = [], [], [], [], [], []
    has_pair = rows[0].has_pair
    scheme = subwords_of(model)
    for b, r in enumerate(rows):
        n = len(r)
        ids[b, :n] = torch.tensor(r.ids)
        types[b, :n] = torch.tensor(r.type_ids)
        mask[b, :n] = 1
        toks = model.tokenizer.convert_ids_to_tokens(list(r.ids))
        wid = _word_ids(toks, r.segments, scheme)
        row_pieces: list[list[list[str]]] = [[], []] if has_pair else [[]]
        for tok, seg, w in zip(toks, r.segments, wid):
            if seg is None or seg >= len(row_pieces):
                continue
            if w >= len(row_pieces[seg]):
                row_pieces[seg].append([])
            row_pieces[seg][w].append(scheme.text(tok))
        row_words = [[scheme.join(p) for p in seg_pieces] for seg_pieces in row_pieces]
        tokens.append(toks + [model.tokenizer.pad_token] * (width - n))
        word_ids.append(wid + [None] * (width - n))
        seq_ids.append(list(r.segments) + [None] * (width - n))
        words.append(tuple(row_words))
        texts.append(segment_text(model, r, 0))
        pairs.append(segment_text(model, r, 1) if has_pair else None)
    return Batch(input_ids=ids, attention_mask=mask, token_type_ids=types, tokens=tokens, word_ids=word_ids,
                 sequence_ids=seq_ids, words=words, texts=texts, pairs=pairs if has_pair else [])


def logits_rows(model: TextClassifier, rows: list[TokenRow], token_budget: int = 8192) -> torch.Tensor:
    """Logits (rows, labels), forward passes grouped by length."""
    out = torch.zeros(len(rows), model.num_labels, dtype=torch.float64)
    for idx in length_buckets([len(r) for r in rows], token_budget):
        out[idx] = model.logits(batch_from_rows(model, [rows[i] for i in idx])).double()
    return out


def predict_rows(model: TextClassifier, rows: list[TokenRow], token_budget: int = 8192) -> torch.Tensor:
    """Softmax probabilities (rows, labels)."""
    return logits_rows(model, rows, token_budget).softmax(-1)


_PUNCT = re.compile(r"^\W+$")


def candidate_vocab(model: TextClassifier, allow_subwords: bool = False,
                    allow_punctuation: bool = False) -> torch.Tensor:
    """Boolean mask over the vocabulary of tokens a flip / trigger may use.

    Excluded always: special tokens and bracketed placeholders ([unused0], [PAD], ...). Excluded unless
    allowed: continuation pieces (the adapter's sub-word convention: WordPiece '##' pieces, byte-level BPE
    pieces without 'Ġ', ...) and tokens with no letter or digit (punctuation, symbols).
    """
    vocab = model.embedding_matrix.shape[0]
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(vocab)))
    special = model.special_token_ids
    scheme = subwords_of(model)
    keep = []
    for i, tok in enumerate(tokens):
        ok = tok is not None and i not in special and not (tok.startswith("[") and tok.endswith("]"))
        if ok and not allow_subwords and scheme.is_continuation(tok):
            ok = False
        text = scheme.join([scheme.text(tok)]) if ok else ""
        if ok and not allow_punctuation and (not text.strip() or _PUNCT.match(text) or "_" == tok):
            ok = False
        keep.append(ok)
    return torch.tensor(keep, dtype=torch.bool)
