"""Attribution methods; each module registers one method under its name."""
from unmask.attribution import (attention, gradient, gradient_x_input, integrated_gradients,  # noqa: F401
                                kernel_shap, leave_one_out, lime, smoothgrad)
from unmask.attribution.base import METHODS, AttributionMethod, get_method, register
from unmask.attribution.explain import explain
from unmask.attribution.record import Attribution

__all__ = ["METHODS", "Attribution", "AttributionMethod", "explain", "get_method", "register"]
