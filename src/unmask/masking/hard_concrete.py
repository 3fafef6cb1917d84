"""Hard Concrete gates (Louizos et al. 2018), as DiffMask uses them (paper Appendix B).

A Binary Concrete sample ``s = sigmoid((log u - log(1 - u) + logit) / temperature)`` is stretched to
``(l, r)`` and clipped to ``[0, 1]``: ``z = clamp(s * (r - l) + l, 0, 1)``. With ``l < 0`` the gate is
exactly 0 with non-zero probability; with ``r = 1`` (DiffMask's choice) it is never exactly 1, so only
"zero" vs "non-zero" matters. The probability of a non-zero gate (the expected L0 of one gate) is

    P(z != 0) = sigmoid(logit - temperature * log(-l / r)).

(The paper's Eq. 11 writes the stretch as ``s * (l - r) + r``, the mirror image; the expected-L0 formula
above, which DESIGN.md states, belongs to the orientation used here.)
"""
from __future__ import annotations

import math

import torch

from unmask.errors import UnmaskError

TEMPERATURE = 0.2
LEFT = -0.2
RIGHT = 1.0


def check_hard_concrete(temperature: float, left: float, right: float) -> None:
    """Raise ``UnmaskError`` unless ``temperature > 0``, ``left < 0`` and ``right >= 1``."""
    if not temperature > 0:
        raise UnmaskError(f"hard concrete temperature must be positive, got {temperature}")
    if not left < 0:
        raise UnmaskError(f"hard concrete stretch l must be negative (so gates can be exactly 0), got {left}")
    if not right >= 1:
        raise UnmaskError(f"hard concrete stretch r must be >= 1, got {right}")


class HardConcrete:
    """Stretched and rectified Binary Concrete gates with location ``logits`` (any shape)."""

    def __init__(self, logits: torch.Tensor, temperature: float = TEMPERATURE, left: float = LEFT,
                 right: float = RIGHT) -> None:
        check_hard_concrete(temperature, left, right)
        self.logits = logits
        self.temperature, self.left, self.right = temperature, left, right

    @property
    def _shift(self) -> float:
        return self.temperature * math.log(-self.left / self.right)

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterized gate samples in [0, 1] (differentiable w.r.t. ``logits``)."""
        u = torch.rand(self.logits.shape, dtype=self.logits.dtype, generator=generator,
                       device=self.logits.device).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.logits) / self.temperature)
        return (s * (self.right - self.left) + self.left).clamp(0.0, 1.0)

    def expected_l0(self) -> torch.Tensor:
        """P(gate != 0), in closed form."""
        return torch.sigmoid(self.logits - self._shift)

    def expected_l0_tangent(self, bound: float) -> torch.Tensor:
        """P(gate != 0) for locations <= ``bound``, continued by its tangent at ``bound`` above it.

        The exact expected L0 saturates: its derivative ``p (1 - p)`` decays like ``exp(-logit)``, so a
        gate pushed far into the open region (e.g. dragged there by probe parameters shared with needed
        gates) no longer feels the sparsity pressure even when closing it costs nothing. The tangent keeps
        the derivative at its value at ``bound`` beyond it; the result is an upper bound on P(gate != 0)
        (the sigmoid is concave there when ``bound`` exceeds the shift), exact up to ``bound``.
        """
        at = torch.sigmoid(torch.as_tensor(bound - self._shift, dtype=self.logits.dtype, device=self.logits.device))
        line = at + at * (1 - at) * (self.logits - bound)
        return torch.where(self.logits > bound, line, self.expected_l0())

    def log_expected_l0(self) -> torch.Tensor:
        """log P(gate != 0) (sums of these give the keep probability of a product of gates)."""
        return torch.nn.functional.logsigmoid(self.logits - self._shift)

    def prob_zero(self) -> torch.Tensor:
        return 1.0 - self.expected_l0()

    def deterministic(self) -> torch.Tensor:
        """The test-time gate of Louizos et al.: ``clamp(sigmoid(logit) * (r - l) + l, 0, 1)``."""
        return (torch.sigmoid(self.logits) * (self.right - self.left) + self.left).clamp(0.0, 1.0)
