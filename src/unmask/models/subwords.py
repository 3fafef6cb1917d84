"""A tokenizer's sub-word convention: which pieces form one word, and the text of each piece.

Code that edits token ids and rebuilds the word view itself (``perturbation/tokens.py``: HotFlip,
triggers, input reduction) asks the model adapter (``subwords_of(model)``) instead of assuming
WordPiece's ``##``. The convention is read from the fast tokenizer's backend (else guessed from the
vocabulary):

- ``"prefix"``: a continuation prefix marks the pieces inside a word (WordPiece ``##``: BERT, DistilBERT,
  ELECTRA, MiniLM); every other piece starts a word;
- ``"byte_level"``: byte-level BPE (RoBERTa, GPT-2), where ``Ġ`` is the byte-level space. Words are the
  tokenizer's own pre-tokens of the decoded segment (its backend ``pre_tokenizer``: ``film`` ``,`` are two
  words, ``don`` ``'t`` too), so for unedited text they are the word ids ``encode`` gives. Without a
  backend pre-tokenizer: a piece starting with ``Ġ`` starts a word, and so does a change between letters,
  digits and other characters;
- ``"metaspace"``: SentencePiece (ALBERT, XLM-R, T5): a piece starting with ``▁`` starts a word;
- ``"none"``: nothing known; every piece is a word.

The first piece of a segment always starts a word.
"""
from __future__ import annotations

import bisect
import json
import unicodedata
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

KINDS = ("prefix", "byte_level", "metaspace", "none")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: the printable stand-in of each byte -> the byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _bytes(text: str) -> bytes:
    dec = _byte_decoder()
    return b"".join(bytes([dec[c]]) if c in dec else c.encode("utf-8") for c in text)


def _char_class(ch: str) -> str:
    """The classes the byte-level pre-tokenizer splits between: letters, digits, spaces, other."""
    if ch.isspace():
        return "space"
    cat = unicodedata.category(ch)
    return "letter" if cat.startswith("L") else "number" if cat.startswith("N") else "other"


@dataclass(frozen=True)
class SubwordScheme:
    """One tokenizer's convention (see the module docstring); ``marker`` is ``##``, ``Ġ`` or ``▁``;
    ``pre_tokenizer`` the backend's (byte-level only)."""

    kind: str = "none"
    marker: str = ""
    pre_tokenizer: Any = field(default=None, compare=False, repr=False)

    def is_continuation(self, piece: str) -> bool:
        """True if ``piece`` carries no word-start mark, i.e. it is made to follow another piece inside a
        word (WordPiece ``##ing``; byte-level ``ing`` without ``Ġ``; SentencePiece ``ing`` without ``▁``)."""
        if self.kind == "prefix":
            return piece.startswith(self.marker)
        if self.kind in ("byte_level", "metaspace"):
            return not piece.startswith(self.marker)
        return False

    def word_ids(self, pieces: list[str]) -> list[int]:
        """Word index (0, 1, ...) of each piece of one segment."""
        if self.kind == "byte_level" and self.pre_tokenizer is not None and pieces:
            found = self._pre_token_ids(pieces)
            if found is not None:
                return found
        out: list[int] = []
        for i, piece in enumerate(pieces):
            new = i == 0 or self._starts_word(pieces[i - 1], piece)
            out.append(out[-1] + new if out else 0)
        return out

    def _pre_token_ids(self, pieces: list[str]) -> list[int] | None:
        """Byte-level: the index of the pre-token (of the decoded segment) each piece starts in."""
        raw = [_bytes(p) for p in pieces]
        text = b"".join(raw).decode("utf-8", errors="replace")
        try:
            spans = [span for _, span in self.pre_tokenizer.pre_tokenize_str(text)]
        except Exception:  # noqa: BLE001 - any backend failure: fall back to the marker rule
            return None
        starts = [s for s, _ in spans]
        out: list[int] = []
        chars, pending = 0, b""  # chars decoded before the current piece; bytes not yet counted
        for i, b in enumerate(raw):
            if i and (not b or (b[0] & 0xC0) == 0x80):  # empty, or inside a character begun before
                out.append(out[-1])
            else:
                chars += len(pending.decode("utf-8", errors="replace"))
                pending = b""
                out.append(max(bisect.bisect_right(starts, chars) - 1, 0))
            pending += b
        seen: dict[int, int] = {}
        return [seen.setdefault(w, len(seen)) for w in out]  # consecutive from 0, in order

    def _starts_word(self, previous: str, piece: str) -> bool:
        if self.kind != "byte_level":
            return not self.is_continuation(piece)
        if piece.startswith(self.marker):
            return True
        cur, prev = _bytes(piece), _bytes(previous)
        if not cur or (cur[0] & 0xC0) == 0x80:  # empty, or inside a character begun in ``previous``
            return False
        prev_text = prev.decode("utf-8", errors="ignore")
        if prev_text.strip() == "":  # a lone space piece belongs to the word after it
            return False
        first = cur.decode("utf-8", errors="ignore")[:1]
        return bool(first) and _char_class(first) != _char_class(prev_text[-1])

    def text(self, piece: str) -> str:
        """The piece with its marker removed (byte-level: still in byte stand-ins; ``join`` decodes)."""
        return piece[len(self.marker):] if self.marker and piece.startswith(self.marker) else piece

    def join(self, texts: list[str]) -> str:
        """A word from the ``text`` of its pieces."""
        joined = "".join(texts)
        if self.kind == "byte_level":
            return _bytes(joined).decode("utf-8", errors="replace").strip()
        return joined


_SCHEMES: "weakref.WeakKeyDictionary[Any, SubwordScheme]" = weakref.WeakKeyDictionary()


def _flat(node: Any) -> list[dict]:
    """The pre-tokenizer specs in a (possibly nested ``Sequence``) tokenizer.json node."""
    if not isinstance(node, dict):
        return []
    inner = node.get("pretokenizers") or node.get("pre_tokenizers")
    return [x for n in inner for x in _flat(n)] if isinstance(inner, list) else [node]


def _from_backend(tokenizer) -> SubwordScheme | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        spec = json.loads(backend.to_str())
    except (AttributeError, TypeError, ValueError):
        return None
    model = spec.get("model") or {}
    prefix = model.get("continuing_subword_prefix")
    if model.get("type") == "WordPiece" or prefix:
        return SubwordScheme("prefix", prefix or "##")
    pres = _flat(spec.get("pre_tokenizer"))
    if any(p.get("type") == "ByteLevel" for p in pres):
        return SubwordScheme("byte_level", "Ġ", getattr(backend, "pre_tokenizer", None))
    meta = next((p for p in pres if p.get("type") == "Metaspace"), None)
    if meta is not None:
        return SubwordScheme("metaspace", meta.get("replacement") or "▁")
    return None


def _from_vocab(tokenizer) -> SubwordScheme:
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return SubwordScheme()
    schemes = {"##": SubwordScheme("prefix", "##"), "Ġ": SubwordScheme("byte_level", "Ġ"),
               "▁": SubwordScheme("metaspace", "▁")}
    counts = {m: sum(1 for t in vocab if isinstance(t, str) and t.startswith(m)) for m in schemes}
    best = max(counts, key=counts.get)
    return schemes[best] if counts[best] else SubwordScheme()


def subword_scheme(tokenizer) -> SubwordScheme:
    """The convention of ``tokenizer`` (cached per tokenizer object)."""
    try:
        return _SCHEMES[tokenizer]
    except (KeyError, TypeError):
        pass
    scheme = _from_backend(tokenizer) or _from_vocab(tokenizer)
    try:
        _SCHEMES[tokenizer] = scheme
    except TypeError:  # not weak-referenceable / hashable: no cache
        pass
    return scheme


def subwords_of(model) -> SubwordScheme:
    """The adapter's ``subwords`` member if it has one, else the convention of its ``tokenizer``."""
    scheme = getattr(model, "subwords", None)
    return scheme if isinstance(scheme, SubwordScheme) else subword_scheme(model.tokenizer)
