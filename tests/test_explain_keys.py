"""``explain()`` result keys: one entry per method instance, never two silently merged into one."""
import numpy as np
import pytest

import unmask
from unmask.attribution.explain import method_keys
from unmask.attribution.gradient import Gradient
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.errors import UnmaskError

TEXT = ["a gripping , funny film"]


def test_unique_names_stay_plain_keys_in_order(tiny_model):
    records = unmask.explain(tiny_model, TEXT, methods=["integrated_gradients", "gradient", "occlusion"])
    assert list(records) == ["integrated_gradients", "gradient", "leave_one_out"]  # alias -> its name


def test_two_integrated_gradients_with_different_steps_keep_both(tiny_model):
    ig8, ig32 = IntegratedGradients(steps=8, tolerance=None), IntegratedGradients(steps=32, tolerance=None)
    records = unmask.explain(tiny_model, TEXT, methods=[ig8, "gradient", ig32])
    assert list(records) == ["integrated_gradients(steps=8)", "gradient", "integrated_gradients(steps=32)"]
    a, b = records["integrated_gradients(steps=8)"][0], records["integrated_gradients(steps=32)"][0]
    assert a.params["steps"] == 8 and b.params["steps"] == 32 and a.method == b.method == "integrated_gradients"
    # each entry holds its own instance's result
    alone = unmask.explain(tiny_model, TEXT, methods=[IntegratedGradients(steps=8, tolerance=None)])
    assert np.array_equal(a.scores, alone["integrated_gradients"][0].scores)
    assert not np.array_equal(a.scores, b.scores)


def test_keys_name_every_parameter_that_differs():
    keys = method_keys([SmoothGrad(samples=4, seed=1), SmoothGrad(samples=4, seed=2), SmoothGrad(samples=8, seed=1)],
                       ["smoothgrad"] * 3)
    assert keys == ["smoothgrad(samples=4, seed=1)", "smoothgrad(samples=4, seed=2)", "smoothgrad(samples=8, seed=1)"]
    assert method_keys([Gradient(reduce="dot"), Gradient()], ["gradient", "gradient"]) == \
        ["gradient(reduce=dot)", "gradient(reduce=l2)"]


def test_same_public_parameters_but_different_objects_are_numbered():
    class Wrapped(Gradient):
        def __init__(self, state):
            super().__init__()
            self._state = state  # private: not a parameter, compared by identity

    assert method_keys([Wrapped(object()), Wrapped(object())], ["gradient", "gradient"]) == \
        ["gradient#1", "gradient#2"]


@pytest.mark.parametrize("methods, message", [
    (["leave_one_out", "loo"],
     "'leave_one_out' given twice with the same parameters \\(as 'leave_one_out' and 'loo'\\)"),
    (["gradient", "gradient"], "'gradient' given twice"),
    ([IntegratedGradients(steps=8), IntegratedGradients(steps=8)], "'integrated_gradients' given twice"),
])
def test_the_same_method_twice_is_an_error(tiny_model, methods, message):
    with pytest.raises(UnmaskError, match=message):
        unmask.explain(tiny_model, TEXT, methods=methods)
