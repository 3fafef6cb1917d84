"""The one interface attribution methods use to talk to a model (``ModelAdapter``).

Implemented by ``TextClassifier`` (Hugging Face encoders), ``LSTMClassifier`` (models/lstm.py) and
``ToyGRUAdapter`` (the DiffMask toy GRU, models/gru_toy.py). Methods never tokenize and never know the
model family: they call ``encode`` once (through ``explain``), then only ``embed`` / ``forward_embeds``.

What each member is for:

- ``encode(texts, pairs, on_too_long) -> Batch``: token ids, mask, segment ids, and per token its
  ``word_ids`` / ``sequence_ids`` (``None`` = special token or padding) so records can show words;
- ``embed(input_ids)``: the attribution point (the word-embedding lookup) every gradient method
  differentiates at; ``embedding_matrix`` (vocab, dim) its weights (occlusion fills, HotFlip);
- ``forward_embeds(embeds, attention_mask, token_type_ids, **kwargs)``: the model output from those
  embeddings. Objectives (``unmask.attribution.objectives``) are functions of this output: ``.logits``
  for classifiers, ``.start_logits`` / ``.end_logits`` for span QA; that is the output-scores hook;
- ``num_labels`` / ``label_names`` / ``label_index``: target resolution for classifiers;
- ``tokenizer.mask_token_id`` / ``unk_token_id`` / ``pad_token_id`` / ``all_special_ids`` and
  ``special_token_ids``: occlusion replacements and the tokens perturbations must not touch;
- ``supports_attention`` (optional, default True): False when ``forward_embeds`` cannot return attention
  weights (attention methods then fail with one ``UnmaskError``);
- ``subwords`` (optional; default: read from ``tokenizer`` by ``unmask.models.subwords.subword_scheme``):
  the tokenizer's sub-word convention, i.e. which piece starts a word (WordPiece ``##``, byte-level BPE
  ``Ġ``, SentencePiece ``▁``) and the text of each piece. Code that edits token ids and rebuilds the word
  view itself (``perturbation/tokens.py``) asks ``subwords_of(model)``, never a hard-coded ``##``;
  ``encode`` already gives ``word_ids`` for unedited text;
- ``hidden_state_modules()`` (optional; transformer encoders, ``TextClassifier`` finds them by structure):
  the modules whose outputs are the hidden states 0..L of ``forward_embeds(..., output_hidden_states=True)``
  (embedding block, then each layer). DiffMask's hidden-state gates hook them to replace a layer's states
  (``masking/adapters.py``, which checks the correspondence); the legacy structural detector reads the
  layers' weights from them (``facade/structure.py``). Without it those two fail with one ``UnmaskError``;
- ``check_supported(texts, pairs)`` (optional; ``TextClassifier`` has it): one ``UnmaskError`` naming the
  architecture when ``forward_embeds(embed(ids))`` fails or gives other logits than the model gives from the
  ids on a padded batch (decoder-style classifiers, models that need the ids). ``explain`` and the audit
  call it first, through ``ensure_supported`` (once per model object).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from unmask.models.batch import Batch

MEMBERS = ("name", "tokenizer", "max_length", "num_labels", "label_names", "label_index", "encode", "embed",
           "embedding_matrix", "forward_embeds", "special_token_ids")


@runtime_checkable
class ModelAdapter(Protocol):
    """What attribution methods need from a model (see the module docstring)."""

    name: str
    tokenizer: Any
    max_length: int

    @property
    def num_labels(self) -> int: ...

    @property
    def label_names(self) -> list[str]: ...

    def label_index(self, label: int | str) -> int: ...

    def encode(self, texts: list[str], pairs: list[str | None] | None = None,
               on_too_long: str = "truncate") -> Batch: ...

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    @property
    def embedding_matrix(self) -> torch.Tensor: ...

    def forward_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, **kwargs) -> Any: ...

    @property
    def special_token_ids(self) -> set[int]: ...


def missing_members(model: object) -> list[str]:
    """Members of ``ModelAdapter`` that ``model`` lacks (empty if it implements the protocol)."""
    missing = [m for m in MEMBERS if not hasattr(model, m)]
    tok = getattr(model, "tokenizer", None)
    missing += [f"tokenizer.{a}" for a in ("mask_token_id", "unk_token_id", "pad_token_id", "all_special_ids")
                if tok is not None and not hasattr(tok, a)]
    return missing


def supports_attention(model: object) -> bool:
    return bool(getattr(model, "supports_attention", True))


def ensure_supported(model: object, texts, pairs=None) -> None:
    """Run the adapter's optional ``check_supported`` on (a few of) ``texts`` once per model object: a model
    explanations cannot be taken from faithfully fails here with one ``UnmaskError``, before any method runs."""
    check = getattr(model, "check_supported", None)
    texts = list(texts)
    if check is None or not texts or getattr(model, "_unmask_supported", False):
        return
    if pairs is not None and len(list(pairs)) != len(texts):
        return  # bad input, not a bad model: the caller's ``encode`` names the mismatch
    check(texts, None if pairs is None else list(pairs))
    try:
        model._unmask_supported = True
    except AttributeError:  # an adapter with __slots__: check again next time
        pass
