"""Per-layer probes: a small MLP per hidden layer maps each position's state to a gate location (logit).

Probe k reads ``[x_i; h_i^(k)]`` in input mode (the paper's Eq. 8 conditions on the input vector and the
layer's state) and ``h_i^(k)`` in hidden mode. As in the authors' released code, the location is bounded:
``max_activation * tanh(MLP(.)) + bias`` with the bias starting at ``init_bias`` (gates start open, so
the KL constraint holds at the beginning), and the MLP is ``Linear -> Tanh -> Linear``.
With ``max_activation=None`` the location is unbounded: ``MLP(.) + bias``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Probe(nn.Module):
    def __init__(self, size: int, hidden: int, max_activation: float | None, init_bias: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(size, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.max_activation = max_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x).squeeze(-1)
        if self.max_activation is not None:
            out = self.max_activation * torch.tanh(out)
        return out + self.bias


class LayerProbes(nn.Module):
    """One probe per layer k (layer sizes ``sizes``); with ``input_size`` the probes also read the input."""

    def __init__(self, sizes: Sequence[int], input_size: int | None = None, hidden: int = 64,
                 max_activation: float | None = 10.0, init_bias: float = 5.0) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.with_input = input_size is not None
        extra = input_size or 0
        self.probes = nn.ModuleList(Probe(size + extra, hidden, max_activation, init_bias) for size in self.sizes)

    def __len__(self) -> int:
        return len(self.probes)

    def layer(self, hidden: Sequence[torch.Tensor], k: int, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Gate locations (B, T) of probe k."""
        x = torch.cat([inputs, hidden[k]], -1) if self.with_input else hidden[k]
        return self.probes[k](x)

    def upto(self, hidden: Sequence[torch.Tensor], k: int, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Gate locations (B, T, k + 1) of probes 0..k (the votes input gating multiplies)."""
        return torch.stack([self.layer(hidden, j, inputs) for j in range(k + 1)], -1)
