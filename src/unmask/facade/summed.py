"""f + g run apart: the function of ``merge(f, g)`` without the merged model's zero blocks.

``merge`` builds one dense model whose hidden axis is ``[f's h_f units, g's h_g units]``; its weights are
block-diagonal, so a forward multiplies zeros and g's FFN rides along at the merged width. ``SummedModel``
is an adapter (``unmask.models.adapter.ModelAdapter``) that computes the same function from the parts:

- ``embed(ids)`` is ``[f.embed(ids), g.embed(ids)]`` along the hidden axis: the merged model's word
  embeddings, the point every gradient method attributes to;
- ``forward_embeds(e)`` is ``f.forward_embeds(e[..., :h_f]).logits + g.forward_embeds(e[..., h_f:]).logits``.

Every attribution method sees the same inputs, gradients and outputs as on the merged model (up to float
rounding), so P@1, SmoothGrad noise (drawn on the joint embedding) and IG paths agree with the dense model:
tests/test_facade_summed.py checks logits and every paper method against ``merge(f, g)``. The merged model
stays what a user inspects and ships; this is for evaluating it fast.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from unmask.errors import UnmaskError
from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier


class SummedModel:
    """The adapter for ``f(x) + g(x)`` with f and g kept apart (see the module docstring)."""

    supports_attention = False  # two attention stacks: no single attention map to show

    def __init__(self, f: TextClassifier, g: TextClassifier, name: str = "f+g") -> None:
        from unmask.facade.merge import check_mergeable

        check_mergeable(f, g)
        if f.num_labels != g.num_labels:
            raise UnmaskError(f"cannot sum f and g: f has {f.num_labels} labels, g has {g.num_labels}")
        self.f, self.g, self.name = f, g, name
        self.tokenizer = f.tokenizer
        self.max_length = f.max_length
        self.split = int(f.embedding_matrix.shape[1])
        self._matrix: torch.Tensor | None = None

    # ---------------------------------------------------------------- labels
    @property
    def num_labels(self) -> int:
        return self.f.num_labels

    @property
    def label_names(self) -> list[str]:
        return self.f.label_names

    def label_index(self, label: int | str) -> int:
        return self.f.label_index(label)

    @property
    def parts(self) -> tuple[TextClassifier, TextClassifier]:
        """f and g: what runs per forward (token budgets add up their activations)."""
        return self.f, self.g

    @property
    def block_sizes(self) -> tuple[int, int]:
        """Embedding dimensions of f's and g's parts, in order (the merged model's split)."""
        return self.split, int(self.g.embedding_matrix.shape[1])

    # ---------------------------------------------------------------- model
    def encode(self, texts: list[str], pairs: list[str | None] | None = None,
               on_too_long: str = "truncate") -> Batch:
        return self.f.encode(texts, pairs, on_too_long=on_too_long)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        ef, eg = self.f.embed(input_ids), self.g.embed(input_ids)
        dtype = torch.promote_types(ef.dtype, eg.dtype)
        return torch.cat([ef.to(dtype), eg.to(dtype)], -1)

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """(vocab, h_f + h_g) joint word embeddings (a detached copy, built once)."""
        if self._matrix is None:
            with torch.no_grad():
                self._matrix = self.embed(torch.arange(self.f.embedding_matrix.shape[0]))
        return self._matrix

    def forward_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        wanted = sorted(k for k, v in kwargs.items() if v)
        if wanted:
            raise UnmaskError(f"f + g run apart returns logits only; {wanted} needs the merged model itself")
        if embeds.shape[-1] != sum(self.block_sizes):
            raise UnmaskError(f"embeddings of width {embeds.shape[-1]} given; f + g takes {sum(self.block_sizes)}")
        ef, eg = embeds[..., :self.split], embeds[..., self.split:]
        lf = self.f.forward_embeds(ef.to(self.f.embedding_matrix.dtype), attention_mask, token_type_ids).logits
        lg = self.g.forward_embeds(eg.to(self.g.embedding_matrix.dtype), attention_mask, token_type_ids).logits
        dtype = torch.promote_types(lf.dtype, lg.dtype)
        return SequenceClassifierOutput(logits=lf.to(dtype) + lg.to(dtype))

    def logits(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.forward_embeds(self.embed(batch.input_ids), batch.attention_mask,
                                       batch.token_type_ids).logits

    def predict(self, texts: list[str], pairs: list[str | None] | None = None,
                batch_size: int = 64) -> torch.Tensor:
        """Softmax probabilities, (n, num_labels)."""
        out = [self.logits(self.encode(texts[i:i + batch_size], pairs[i:i + batch_size] if pairs else None))
               .softmax(-1) for i in range(0, len(texts), batch_size)]
        return torch.cat(out)

    @property
    def special_token_ids(self) -> set[int]:
        return self.f.special_token_ids
