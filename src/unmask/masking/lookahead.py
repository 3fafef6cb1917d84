"""Lookahead (Zhang et al. 2019) around any optimizer: every ``k`` steps the slow weights move
``alpha`` of the way to the fast weights and the fast weights restart from there.

The slow weights live in an ``nn.Module`` (``state``) so checkpoints store them as safetensors.
DiffMask trains with Lookahead RMSprop (paper Tables 3 and 4).
"""
from __future__ import annotations

import torch
from torch import nn

from unmask.errors import UnmaskError


class LookaheadState(nn.Module):
    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__()
        for i, p in enumerate(params):
            self.register_buffer(f"slow_{i}", p.detach().clone())
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def slow(self) -> list[torch.Tensor]:
        return [getattr(self, f"slow_{i}") for i in range(len(self._buffers) - 1)]


class Lookahead:
    """``step()`` runs the inner optimizer, then syncs slow and fast weights every ``k`` steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise UnmaskError(f"lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.optimizer, self.k, self.alpha = optimizer, k, alpha
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.state = LookaheadState(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.optimizer.step()
        self.state.steps += 1
        if int(self.state.steps) % self.k == 0:
            for p, slow in zip(self.params, self.state.slow()):
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)
