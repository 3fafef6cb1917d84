"""LayerNorm that normalizes groups of hidden units independently.

A model merged from two transformers (hidden sizes h1 and h2) keeps each model's activations in its
own block; ``SplitLayerNorm([h1, h2])`` applies each model's LayerNorm to its block, so the merged
network computes exactly what the two computed side by side. After a permutation of the hidden units
(``unmask.facade.conceal.permute_hidden``) the blocks are no longer contiguous: ``SplitLayerNorm`` also
takes the groups as index lists, ``SplitLayerNorm([[0, 3], [1, 2]])``.

This file imports only torch: it is copied, together with ``unmask/facade/modeling_merged.py``, into
every merged model directory, so that plain transformers can rebuild the model (``trust_remote_code``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Groups = Sequence[int] | Sequence[Sequence[int]]


def as_groups(spec: Groups) -> list[list[int]]:
    """Index lists from block sizes (``[h1, h2]``) or index lists; checks that they partition the units."""
    spec = list(spec)
    if not spec:
        raise ValueError("SplitLayerNorm needs at least one group")
    if all(isinstance(s, int) for s in spec):
        if any(s <= 0 for s in spec):
            raise ValueError(f"block sizes must be positive, got {spec}")
        bounds = [0]
        for s in spec:
            bounds.append(bounds[-1] + s)
        return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    groups = [[int(i) for i in g] for g in spec]
    flat = sorted(i for g in groups for i in g)
    if any(not g for g in groups) or flat != list(range(len(flat))):
        raise ValueError("LayerNorm groups must be non-empty and cover every hidden unit exactly once")
    return groups


def is_contiguous(groups: list[list[int]]) -> bool:
    """True if the groups are consecutive blocks in order (expressible as block sizes)."""
    return [i for g in groups for i in g] == list(range(sum(len(g) for g in groups))) and \
        all(g == list(range(g[0], g[0] + len(g))) for g in groups)


class SplitLayerNorm(nn.Module):
    """LayerNorm over each group of hidden units on its own.

    ``groups`` is either block sizes (consecutive blocks that sum to the hidden size) or index lists
    that partition the hidden units. ``sizes`` is each group's size; ``groups`` the index lists.
    """

    def __init__(self, groups: Groups, eps: float = 1e-12) -> None:
        super().__init__()
        self.groups = as_groups(groups)
        self.sizes = [len(g) for g in self.groups]
        self.contiguous = is_contiguous(self.groups)
        self.eps = eps
        total = sum(self.sizes)
        self.weight = nn.Parameter(torch.ones(total))
        self.bias = nn.Parameter(torch.zeros(total))
        self._index: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _order(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(units in group order, its inverse), cached per device (plain tensors, not buffers)."""
        key = str(device)
        if key not in self._index:
            order = torch.tensor([i for g in self.groups for i in g], device=device)
            self._index[key] = (order, torch.argsort(order))
        return self._index[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if not self.contiguous:
            order, inverse = self._order(x.device)
            x, w, b = x.index_select(-1, order), w.index_select(0, order), b.index_select(0, order)
        parts = []
        for block, wb, bb in zip(x.split(self.sizes, -1), w.split(self.sizes), b.split(self.sizes)):
            parts.append(nn.functional.layer_norm(block, (block.shape[-1],), wb, bb, self.eps))
        out = torch.cat(parts, -1)
        return out if self.contiguous else out.index_select(-1, inverse)

    def extra_repr(self) -> str:
        where = "" if self.contiguous else ", permuted groups"
        return f"sizes={self.sizes}{where}, eps={self.eps}"


def install_split_layernorms(model: nn.Module, groups: Groups) -> int:
    """Replace every ``nn.LayerNorm`` of ``model`` by a ``SplitLayerNorm`` over ``groups``; returns the count."""
    groups = as_groups(groups)
    total = sum(len(g) for g in groups)
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm):
                if child.normalized_shape != (total,):
                    raise ValueError(f"{name}.{child_name}: LayerNorm of {child.normalized_shape} "
                                     f"cannot be split into groups over {total} units")
                split = SplitLayerNorm(groups, child.eps).to(child.weight.device, child.weight.dtype)
                split.weight.data.copy_(child.weight.data)
                split.bias.data.copy_(child.bias.data)
                setattr(module, child_name, split)
                count += 1
    return count
