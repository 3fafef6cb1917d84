"""Gradient x input (Shrikumar et al. 2016; the Facade paper's Eq. 1 before normalization): g . x."""
from __future__ import annotations

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, register
from unmask.attribution.gradient import Gradient
from unmask.attribution.objectives import Objective


@register
class GradientXInput(Gradient):
    """Token score sum_d g_d x_d (signed). ``normalized()`` of it is the Facade paper's Gradient."""

    name = "gradient_x_input"
    aliases = ("input_x_gradient",)

    def __init__(self, objective: "str | Objective" = "log_prob", token_budget: int = DEFAULT_TOKEN_BUDGET,
                 precision: str = "auto") -> None:
        super().__init__(reduce="dot", objective=objective, token_budget=token_budget, precision=precision)
