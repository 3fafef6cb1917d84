"""Per-layer probes: a small MLP per hidden layer maps each position's state to a gate location (logit).

Probe k reads ``[x_i; h_i^(k)]`` in input mode (the paper's Eq. 8 conditions on the input vector and the
layer's state) and ``h_i^(k)`` in hidden mode. As in the authors' released code, the location is bounded:
``max_activation * tanh(MLP(.)) + bias`` with the bias starting at ``init_bias`` (gates start open, so
the KL constraint holds at the beginning), and the MLP is ``Linear -> Tanh -> Linear``.
With ``max_activation=None`` the location is unbounded: ``MLP(.) + bias``.

Input-mode probes read two parts of very different widths in some models (the toy GRU: a 64-d symbol
embedding next to a 2-d layer-1 state). One ``Linear`` over the concatenation, initialized by its total
fan-in (PyTorch's default bound ``1 / sqrt(fan_in)``), gives the narrow part almost no say: its columns
get the wide part's small bound, the layer state that carries the decision is drowned by the input
vector, and the gates stay uniformly open (toy: 90 % kept on every position after 6000 steps, KL to the
ground truth 0.74-1.07, worse than uniform). So the first layer is initialized as the sum of one
``Linear`` per part, each with the default bound of its own width, ``1 / sqrt(width_part)``. (Measured
on the toy, 10000 steps: this bound reaches KL 0.015; ``1 / sqrt(n_parts * width_part)``, which would
have left equal-width parts at the old init, stalls at 0.18.) For BERT (768 + 768) the bound grows by
sqrt(2) over the old single-Linear init.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def balance_parts(linear: nn.Linear, parts: Sequence[int]) -> None:
    """Rescale ``linear``'s input columns (drawn with the default bound ``1 / sqrt(fan_in)``), part by
    part, to the bound ``1 / sqrt(width)`` of a ``Linear`` reading that part alone (no-op for one part)."""
    parts = [int(w) for w in parts]
    if sum(parts) != linear.in_features or any(w < 1 for w in parts):
        raise ValueError(f"parts {parts} do not split the {linear.in_features} inputs")
    with torch.no_grad():
        start = 0
        for width in parts:
            linear.weight[:, start:start + width] *= (linear.in_features / width) ** 0.5
            start += width


class Probe(nn.Module):
    def __init__(self, size: int, hidden: int, max_activation: float | None, init_bias: float,
                 parts: Sequence[int] | None = None) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(size, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        if parts is not None:
            balance_parts(self.mlp[0], parts)
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
        self.probes = nn.ModuleList(
            Probe(size + extra, hidden, max_activation, init_bias, parts=[extra, size] if self.with_input else None)
            for size in self.sizes)

    def __len__(self) -> int:
        return len(self.probes)

    def layer(self, hidden: Sequence[torch.Tensor], k: int, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Gate locations (B, T) of probe k."""
        x = torch.cat([inputs, hidden[k]], -1) if self.with_input else hidden[k]
        return self.probes[k](x)

    def upto(self, hidden: Sequence[torch.Tensor], k: int, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Gate locations (B, T, k + 1) of probes 0..k (the votes input gating multiplies)."""
        return torch.stack([self.layer(hidden, j, inputs) for j in range(k + 1)], -1)
