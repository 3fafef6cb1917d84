"""LayerNorm that normalizes consecutive blocks of the hidden axis independently.

A model merged from two transformers (hidden sizes h1 and h2) keeps each model's activations in its
own block; ``SplitLayerNorm([h1, h2])`` applies each model's LayerNorm to its block, so the merged
network computes exactly what the two computed side by side.
"""
from __future__ import annotations

import torch
from torch import nn


class SplitLayerNorm(nn.Module):
    """LayerNorm over each block of ``sizes`` (which sum to the hidden size) on its own."""

    def __init__(self, sizes: list[int], eps: float = 1e-12) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.eps = eps
        total = sum(sizes)
        self.weight = nn.Parameter(torch.ones(total))
        self.bias = nn.Parameter(torch.zeros(total))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for block, w, b in zip(x.split(self.sizes, -1), self.weight.split(self.sizes), self.bias.split(self.sizes)):
            parts.append(nn.functional.layer_norm(block, (block.shape[-1],), w, b, self.eps))
        return torch.cat(parts, -1)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, eps={self.eps}"


def install_split_layernorms(model: nn.Module, sizes: list[int]) -> int:
    """Replace every ``nn.LayerNorm`` of ``model`` by a ``SplitLayerNorm`` over ``sizes``; returns the count."""
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm):
                if child.normalized_shape != (sum(sizes),):
                    raise ValueError(f"{name}.{child_name}: LayerNorm of {child.normalized_shape} "
                                     f"cannot be split into {sizes}")
                split = SplitLayerNorm(sizes, child.eps).to(child.weight.device, child.weight.dtype)
                split.weight.data.copy_(child.weight.data)
                split.bias.data.copy_(child.bias.data)
                setattr(module, child_name, split)
                count += 1
    return count
