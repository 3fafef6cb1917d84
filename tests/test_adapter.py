"""One model-adapter protocol: BERT, LSTM and the toy GRU implement it; library methods run on the toy GRU."""
import copy

import pytest
import torch

import unmask
from unmask.attribution.gradient import Gradient
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.leave_one_out import LeaveOneOut
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.data.toy_counting import generate_toy
from unmask.errors import UnmaskError
from unmask.masking import ToyAdapter
from unmask.models.adapter import ModelAdapter, missing_members
from unmask.models.gru_toy import GRUCounter, ToyGRUAdapter
from unmask.models.lstm import new_lstm_classifier


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = GRUCounter(hidden=16).double().eval()
    return model, generate_toy(40, seed=1)


def test_every_model_family_implements_the_protocol(tiny_model, toy):
    lstm = new_lstm_classifier(hidden=4, glove="no")
    for m in (tiny_model, lstm, ToyGRUAdapter(toy[0], 0), ToyGRUAdapter(toy[0], 1)):
        assert missing_members(m) == [] and isinstance(m, ModelAdapter), type(m).__name__
    assert missing_members(object()) != []


@pytest.mark.parametrize("layer", [0, 1])
def test_toy_adapter_embed_and_forward_equal_the_model(toy, layer):
    model, data = toy
    adapter = ToyGRUAdapter(model, layer)
    batch = adapter.encode(data)
    states = ToyAdapter(model, data).states(data)
    x = adapter.embed(batch.input_ids)
    torch.testing.assert_close(x[data.mask], states.hidden[layer][data.mask], rtol=0, atol=1e-12)
    out = adapter.forward_embeds(x, batch.attention_mask, batch.token_type_ids)
    torch.testing.assert_close(out.logits, states.logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", [0, 1])
def test_library_methods_on_the_toy_match_hand_computed_ones(toy, layer):
    """Oracles: autograd at the model's own states (gradient), occlusion by hand, IG completeness."""
    model, data = toy
    states = ToyAdapter(model, data).states(data)
    h = states.hidden[layer]
    fill = h[data.mask].mean(0)
    target = states.logits.argmax(-1)
    adapter = ToyGRUAdapter(model, layer, fill=fill)
    batch = adapter.encode(data)

    def logp(hh):
        return ToyAdapter(model, data).logits_with(data, layer, hh).log_softmax(-1).gather(1, target[:, None])[:, 0]

    hg = h.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(logp(hg).sum(), hg)
    grad, _ = Gradient().attribute(adapter, batch, target)
    torch.testing.assert_close(grad, g.norm(dim=-1) * data.mask, rtol=0, atol=1e-10)
    loo, _ = LeaveOneOut().attribute(adapter, batch, target)
    occluded = h.clone()
    occluded[:, 0] = fill
    with torch.no_grad():
        torch.testing.assert_close(loo[:, 0], logp(h) - logp(occluded), rtol=0, atol=1e-10)
    ig, extras = IntegratedGradients(steps=32, tolerance=1e-6, max_steps=512).attribute(adapter, batch, target)
    with torch.no_grad():
        gap = logp(h) - logp(torch.zeros_like(h))
    torch.testing.assert_close(ig.sum(1), gap, rtol=1e-5, atol=1e-8)
    sg, _ = SmoothGrad(samples=4).attribute(adapter, batch, target)
    assert sg.shape == grad.shape and torch.isfinite(sg).all()


def test_explain_runs_on_the_toy_from_text(toy):
    model, _ = toy
    adapter = ToyGRUAdapter(copy.deepcopy(model), 1)
    recs = unmask.explain(adapter, ["3 5: 3 1 5 3", "0 9: 2 2"], methods=["gradient_x_input", "leave_one_out"])
    assert recs["leave_one_out"][0].tokens == ["3", "1", "5", "3"]
    with pytest.raises(UnmaskError, match="no attention weights"):
        unmask.explain(adapter, ["3 5: 3 1"], methods=["attention"])
    with pytest.raises(UnmaskError, match="not 'n m: s1 s2"):
        adapter.encode(["three five: 1"])


def test_the_toy_experiment_runs_the_library_methods(toy):
    """experiments/diffmask_toy.py (Table 1) attributes through ``library_methods``: unmask's own classes on
    ``ToyGRUAdapter``, checked here against autograd at the layer's states and occlusion by hand."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "diffmask_toy.py"
    spec = importlib.util.spec_from_file_location("diffmask_toy", path)
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    model, data = toy
    states = ToyAdapter(model, data).states(data)
    layer, target = 1, states.logits.argmax(-1)
    h = states.hidden[layer]
    fill = h[data.mask].mean(0)
    got = exp.library_methods(model, data, layer, fill, target, seed=0)
    assert set(got) == {"gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "leave_one_out",
                        "_ig_error"}

    def logp(hh):
        return ToyAdapter(model, data).logits_with(data, layer, hh).log_softmax(-1).gather(1, target[:, None])[:, 0]

    hg = h.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(logp(hg).sum(), hg)
    torch.testing.assert_close(got["gradient"], g.norm(dim=-1) * data.mask, rtol=0, atol=1e-10)
    torch.testing.assert_close(got["gradient_x_input"], (g * h).sum(-1) * data.mask, rtol=0, atol=1e-10)
    occluded = h.clone()
    occluded[:, 2] = fill
    with torch.no_grad():
        torch.testing.assert_close(got["leave_one_out"][:, 2], (logp(h) - logp(occluded)) * data.mask[:, 2],
                                   rtol=0, atol=1e-10)
    assert got["_ig_error"][2] < 1e-3  # IG (64 Gauss-Legendre points) is complete on the toy
