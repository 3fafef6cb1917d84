"""f + g run apart (facade/summed.py) against the dense merged model: logits, every paper method, P@1 inputs."""
import pytest
import torch

from test_facade_merge import PAIRS, TEXTS, random_bert
from unmask.attribution.explain import explain
from unmask.attribution.gradient import Gradient
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.errors import UnmaskError
from unmask.facade.evaluate import gradient_split_ratio, split_sizes
from unmask.facade.merge import merge
from unmask.facade.summed import SummedModel
from unmask.data.readers import Example


@pytest.fixture(scope="module")
def parts():
    f = random_bert(seed=1, heads=4, intermediate=24)
    g = random_bert(seed=2, heads=2, intermediate=16)
    return f, g, merge(f, g), SummedModel(f, g)


def test_logits_equal_the_merged_model(parts):
    f, g, merged, summed = parts
    batch = merged.encode(TEXTS, PAIRS)
    dense, apart = merged.logits(batch), summed.logits(batch)
    assert torch.allclose(dense, apart, atol=1e-9, rtol=1e-9)
    assert torch.allclose(apart, f.logits(batch) + g.logits(batch), atol=1e-12)
    assert summed.embedding_matrix.shape == merged.embedding_matrix.shape
    assert torch.allclose(summed.embedding_matrix, merged.embedding_matrix)


@pytest.mark.parametrize("method", [Gradient(precision="float32"), GradientXInput(precision="float32"),
                                    SmoothGrad(samples=4, seed=3, precision="float32"),
                                    IntegratedGradients(steps=8, tolerance=None)],
                         ids=["gradient", "gradient_x_input", "smoothgrad", "ig"])
def test_every_paper_method_gives_the_dense_models_scores(parts, method):
    _, _, merged, summed = parts
    (dense,) = explain(merged, TEXTS, method).values()
    (apart,) = explain(summed, TEXTS, method).values()
    assert len(dense) == len(apart) == len(TEXTS)
    for a, b in zip(dense, apart):
        assert a.tokens == b.tokens and a.target == b.target
        assert torch.allclose(torch.as_tensor(a.scores), torch.as_tensor(b.scores), atol=1e-8, rtol=1e-6)


def test_split_ratio_is_the_same_apart(parts):
    _, _, merged, summed = parts
    examples = [Example(t, 0) for t in TEXTS]
    assert split_sizes(summed) == split_sizes(merged)
    assert gradient_split_ratio(summed, examples) == pytest.approx(gradient_split_ratio(merged, examples), rel=1e-9)


def test_attention_and_wrong_widths_are_clear_errors(parts):
    f, g, merged, summed = parts
    batch = merged.encode(TEXTS[:1])
    with pytest.raises(UnmaskError, match="logits only"):
        summed.forward_embeds(summed.embed(batch.input_ids), batch.attention_mask, output_attentions=True)
    with pytest.raises(UnmaskError, match="width"):
        summed.forward_embeds(f.embed(batch.input_ids), batch.attention_mask)
    with pytest.raises(UnmaskError, match="cannot merge"):
        SummedModel(f, random_bert(seed=3, head_size=4, heads=2))


def test_token_budget_adds_up_both_parts(parts):
    """f and g run side by side, so a chunk costs both parts' activations: the budget is the memory over their
    sum (it fell back to a fixed 2048 tokens, ignoring the memory budget, and peaked the demo's RSS)."""
    from unmask.attribution.budget import token_budget_for

    f, g, merged, summed = parts
    memory = 4 << 20
    one = {m: memory // token_budget_for(m, 32, memory=memory) for m in (f, g)}  # ~bytes per token of each
    both = token_budget_for(summed, 32, memory=memory)
    assert both < min(token_budget_for(f, 32, memory=memory), token_budget_for(g, 32, memory=memory))
    assert both == pytest.approx(memory / (one[f] + one[g]), rel=0.02)
