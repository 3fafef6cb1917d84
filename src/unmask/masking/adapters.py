"""Adapters that connect the model-agnostic DiffMask core to concrete models.

An adapter turns a list of data items into model inputs (``collate``), runs the frozen model once to
get the original logits and all hidden states (``states``), and reruns it with the input vectors or one
layer's hidden states replaced (``logits_with``). Layer 0 is the first hidden state (for BERT: the
embedding layer output), layer L the last; ``"input"`` is the vector input gating replaces (for BERT:
the word-embedding lookup, the attribution point of every other method in unmask).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unmask.errors import UnmaskError


@dataclass
class ModelStates:
    """One frozen forward pass: logits (B, C), input vectors (B, T, D), hidden states 0..L, real positions."""

    logits: torch.Tensor
    inputs: torch.Tensor
    hidden: list[torch.Tensor]
    mask: torch.Tensor

    @property
    def num_layers(self) -> int:
        return len(self.hidden) - 1


class MaskableModel:
    """Interface DiffMask needs; subclasses wrap one model family."""

    input_size: int
    layer_sizes: list[int]

    @property
    def num_layers(self) -> int:
        """L: hidden states are numbered 0..L."""
        return len(self.layer_sizes) - 1

    def parameters(self) -> list[torch.nn.Parameter]:
        """The analysed model's weights (frozen while DiffMask trains)."""
        raise NotImplementedError

    def collate(self, items: Sequence[Any]) -> Any:
        raise NotImplementedError

    def lengths(self, items: Sequence[Any]) -> list[int]:
        raise NotImplementedError

    def states(self, inputs: Any) -> ModelStates:
        raise NotImplementedError

    def logits_with(self, inputs: Any, where: int | str, new: torch.Tensor) -> torch.Tensor:
        """Logits with the input vectors (``where="input"``) or layer ``where``'s states replaced by ``new``."""
        raise NotImplementedError

    def input_baseline(self, states: ModelStates) -> torch.Tensor:
        """Initial value of the learned input baseline vector (D,)."""
        return masked_mean(states.inputs, states.mask)

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.num_layers:
            raise UnmaskError(f"layer index must be an integer in 0..{self.num_layers} for this model "
                              f"(0 = embedding output, {self.num_layers} = last layer), got {layer!r}")
        return layer


def _first(output):
    """The hidden-state tensor of a module's output (a tensor, or a tuple / model output led by one)."""
    return output if isinstance(output, torch.Tensor) else output[0]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum((0, 1)) / w.sum().clamp_min(1.0)


class ClassifierAdapter(MaskableModel):
    """A ``TextClassifier`` (Hugging Face transformer encoder: BERT, RoBERTa, DistilBERT, ...). Items are
    ``Example``s or strings.

    Hidden-state replacement uses a forward hook on the module whose output is hidden state k, as the
    model adapter names them (``hidden_state_modules()``, see ``models/adapter.py``): the embedding block
    (layer 0) or transformer layer k - 1 (layer k); the hook returns the new states, so the rest of the
    network runs on them. The first ``states`` call checks that those modules' outputs are exactly the
    hidden states ``forward_embeds(..., output_hidden_states=True)`` returns.
    """

    def __init__(self, model) -> None:
        self.model = model
        hf = model.model
        if not hasattr(model, "hidden_state_modules"):
            raise UnmaskError(f"DiffMask's hidden-state gates need a model adapter with hidden_state_modules(); "
                              f"{type(model).__name__} has none")
        try:
            self.state_modules = list(model.hidden_state_modules())
        except UnmaskError as e:
            raise UnmaskError(f"DiffMask needs a transformer encoder: {e}") from None
        hidden = int(hf.config.hidden_size)
        self.input_size = int(model.embedding_matrix.shape[1])
        self.layer_sizes = [hidden] * len(self.state_modules)
        self._checked = False

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.model.parameters())

    def collate(self, items: Sequence[Any]):
        texts = [getattr(e, "text", e) for e in items]
        pairs = [getattr(e, "pair", None) for e in items]
        return self.model.encode(texts, pairs if any(p is not None for p in pairs) else None)

    def lengths(self, items: Sequence[Any]) -> list[int]:
        texts = [getattr(e, "text", e) for e in items]
        pairs = [getattr(e, "pair", None) for e in items]
        args = (texts, pairs) if pairs and pairs[0] is not None else (texts,)
        enc = self.model.tokenizer(*args, truncation=True, max_length=self.model.max_length)
        return [len(ids) for ids in enc["input_ids"]]

    @torch.no_grad()
    def states(self, batch) -> ModelStates:
        x = self.model.embed(batch.input_ids)
        seen: dict[int, torch.Tensor] = {}
        handles = [] if self._checked else [
            m.register_forward_hook(lambda _m, _a, out, k=k: seen.setdefault(k, _first(out)))
            for k, m in enumerate(self.state_modules)]
        try:
            out = self.model.forward_embeds(x, batch.attention_mask, batch.token_type_ids,
                                            output_hidden_states=True)
        finally:
            for h in handles:
                h.remove()
        hidden = [h.detach() for h in out.hidden_states]
        if len(hidden) != len(self.layer_sizes):
            raise UnmaskError(f"model returned {len(hidden)} hidden states, expected {len(self.layer_sizes)}")
        if not self._checked:
            bad = [k for k, h in enumerate(hidden) if k not in seen or not torch.equal(seen[k], h)]
            if bad:
                raise UnmaskError(f"hidden state {bad[0]} of {type(self.model.model).__name__} is not the output "
                                  f"of the module the adapter names for it; DiffMask cannot replace it")
            self._checked = True
        return ModelStates(out.logits.detach(), x.detach(), hidden, batch.attention_mask.bool())

    def _module(self, layer: int):
        return self.state_modules[layer]

    def logits_with(self, batch, where: int | str, new: torch.Tensor) -> torch.Tensor:
        if where == "input":
            return self.model.forward_embeds(new, batch.attention_mask, batch.token_type_ids).logits

        def hook(module, args, output):
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = self._module(self.check_layer(where)).register_forward_hook(hook)
        try:
            x = self.model.embed(batch.input_ids)
            return self.model.forward_embeds(x, batch.attention_mask, batch.token_type_ids).logits
        finally:
            handle.remove()

    def input_baseline(self, states: ModelStates) -> torch.Tensor:
        """The [MASK] token's word embedding (DESIGN.md), else the mean input vector."""
        mask_id = self.model.tokenizer.mask_token_id
        if mask_id is None:
            return super().input_baseline(states)
        return self.model.embedding_matrix[mask_id].detach().clone()


class ToyAdapter(MaskableModel):
    """The toy GRU (``unmask.models.gru_toy``); items are indices into a ``ToyData``."""

    def __init__(self, model, data) -> None:
        self.model, self.data = model, data
        self.input_size = model.embed_size
        self.layer_sizes = model.layer_sizes

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def collate(self, items: Sequence[int]):
        return self.data.select(list(items))

    def lengths(self, items: Sequence[int]) -> list[int]:
        return self.data.lengths[list(items)].tolist()

    @torch.no_grad()
    def states(self, batch) -> ModelStates:
        out = self.model.run(batch)
        return ModelStates(out.logits, out.hidden[0], out.hidden, batch.mask)

    def logits_with(self, batch, where: int | str, new: torch.Tensor) -> torch.Tensor:
        layer = 0 if where == "input" else self.check_layer(where)
        return self.model.run(batch, {layer: new}).logits
