"""Facade tables: the paper's "Gradient" (Eq. 1, g . x) is keyed and labelled gradient_x_input, never "gradient"
(the registry's L2-norm gradient); results JSON written under the old key still renders the same numbers."""
import pytest

from unmask.errors import UnmaskError
from unmask.facade.evaluate import EvalConfig, paper_methods
from unmask.facade.tables import facade_markdown, saliency_of


def _results(key: str) -> dict:
    cell = {key: {"p1": 12.5, "attr": 30.25}, "smoothgrad": {"p1": 1.0, "attr": 2.0}}
    return {"task": "sst2", "command": "c", "accuracy": {"f_orig": 90.0}, "agreement": {}, "max_logit_diff": {},
            "saliency": {"ft": {"f_orig": cell}}, "config": {"evaluation": {"methods": [key, "smoothgrad"]}}}


def test_the_paper_gradient_is_gradient_x_input():
    from unmask.attribution.gradient_x_input import GradientXInput

    methods = paper_methods(EvalConfig())
    assert list(methods) == ["gradient_x_input", "smoothgrad", "integrated_gradients"]
    assert type(methods["gradient_x_input"]) is GradientXInput and methods["smoothgrad"].reduce == "dot"
    with pytest.raises(UnmaskError, match="'gradient' is now called 'gradient_x_input'"):
        paper_methods(EvalConfig(methods=("gradient",)))


@pytest.mark.parametrize("key", ["gradient_x_input", "gradient"])  # new results, and results from before
def test_table_labels_and_old_results(key):
    md = facade_markdown(_results(key))
    header = next(line for line in md.splitlines() if line.startswith("| model | Gradient"))
    assert header.startswith("| model | Gradient (g.x, Eq. 1) P@1 | Gradient (g.x, Eq. 1) Attr | SmoothGrad P@1")
    row = next(line for line in md.splitlines() if line.startswith("| f_orig | 12.5"))
    assert row == "| f_orig | 12.5 [8.3] | 30.2 [6.2] | 1.0 [7.9] | 2.0 [6.0] | - [2.2] | - [3.8] |"
    assert "Methods computed: gradient_x_input, smoothgrad" in md


def test_saliency_of_prefers_the_new_key():
    assert saliency_of({"gradient": {"p1": 1}, "gradient_x_input": {"p1": 2}}, "gradient_x_input") == {"p1": 2}
    assert saliency_of({"gradient": {"p1": 1}}, "gradient_x_input") == {"p1": 1}
    assert saliency_of({}, "smoothgrad") == {}


def test_regularized_merges_use_a_facade_trained_against_rp_unless_shared():
    from unmask.errors import UnmaskError
    from unmask.facade.pipeline import PipelineConfig

    own = PipelineConfig(targets=("stop",)).merges()
    assert own == {"merged_stop": ("f_orig", "g_stop"), "merged_stop_rp": ("rp", "g_stop_rp")}
    shared = PipelineConfig(rp_facades="shared").merges()
    assert shared["merged_ft_rp"] == ("rp", "g_ft") and shared["merged_stop_rp"] == ("rp", "g_stop")
    assert PipelineConfig(with_rp=False).merges() == {"merged_ft": ("f_orig", "g_ft"),
                                                      "merged_stop": ("f_orig", "g_stop")}
    with pytest.raises(UnmaskError, match="rp_facades"):
        PipelineConfig(rp_facades="mine")
