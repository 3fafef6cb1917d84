"""DiffMask core: hard concrete gates, objective, training on an exactly solvable counting model, errors."""
import math

import numpy as np
import pytest
import torch

from unmask.data.toy_counting import ToyTaskConfig, generate_toy
from unmask.errors import UnmaskError
from unmask.masking import (DiffMask, DiffMaskTrainConfig, HardConcrete, MaskableModel, ModelStates,
                            diffmask_for, evaluate_diffmask, keep_probabilities, load_diffmask, train_diffmask)
from unmask.masking.hard_concrete import LEFT, RIGHT, TEMPERATURE


# ---------------------------------------------------------------------------------------------- gates
def test_expected_l0_formula_matches_monte_carlo():
    torch.manual_seed(0)
    logits = torch.tensor([-4.0, -1.5, -0.3, 0.0, 0.3, 1.0, 2.5, 5.0])
    dist = HardConcrete(logits[:, None].expand(-1, 100_000))
    samples = dist.rsample()
    assert samples.min() >= 0 and samples.max() <= 1
    mc = (samples > 0).double().mean(1)
    closed = torch.sigmoid(logits - TEMPERATURE * math.log(-LEFT / RIGHT)).double()
    assert torch.allclose(dist.expected_l0()[:, 0].double(), closed)
    stderr = (closed * (1 - closed) / 100_000).sqrt()
    assert ((mc - closed).abs() <= 5 * stderr + 1e-4).all(), (mc, closed)
    # the stretch really produces exact zeros with non-trivial probability
    assert (samples == 0).double().mean() > 0.1


def test_product_of_votes_keep_probability_matches_sampling():
    torch.manual_seed(1)
    logits = torch.tensor([[0.5, -0.2, 1.0]]).expand(50_000, -1)
    dist = HardConcrete(logits)
    product = dist.rsample().prod(-1)
    closed = dist.log_expected_l0().sum(-1).exp()[0]
    assert abs(float((product > 0).float().mean()) - float(closed)) < 0.01


def test_gate_samples_are_differentiable():
    logits = torch.zeros(5, requires_grad=True)
    HardConcrete(logits).rsample().sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_tangent_l0_keeps_the_gradient_of_a_saturated_gate():
    """Location 14: exact dP(open)/dlogit = p (1 - p) ~ 6e-7; continued by the tangent at 5 it stays at the
    slope there, s (1 - s) with s = sigmoid(5 - 0.2 log 0.2) ~ 4.8e-3. Below the bound nothing changes."""
    logits = torch.tensor([14.0, 5.0, 2.0, -3.0], dtype=torch.float64, requires_grad=True)
    dist = HardConcrete(logits)
    exact, = torch.autograd.grad(dist.expected_l0().sum(), logits)
    tangent, = torch.autograd.grad(dist.expected_l0_tangent(5.0).sum(), logits)
    s = 1 / (1 + math.exp(-(5.0 - 0.2 * math.log(0.2))))
    p = 1 / (1 + math.exp(-(14.0 - 0.2 * math.log(0.2))))
    assert exact[0].item() == pytest.approx(p * (1 - p), rel=1e-6) and exact[0] < 1e-6
    assert tangent[0].item() == pytest.approx(s * (1 - s), rel=1e-9) and tangent[0] > 4e-3
    assert torch.equal(tangent[1:], exact[1:])
    values = dist.expected_l0_tangent(5.0).detach()
    assert values[0].item() == pytest.approx(s + s * (1 - s) * 9.0, rel=1e-12)  # an upper bound on P(open)
    assert torch.equal(values[1:], dist.expected_l0().detach()[1:])


def test_saturated_gates_are_pushed_closed_when_closing_is_free(counting):
    """Every hidden gate at location 14 and multiplier 0 (the KL costs nothing): the Lagrangian's gradient on
    the probe's bias is the L0 slope, ~6e-7 exact, ~4.8e-3 with ``l0_bound=5``; the reported L0 is exact."""
    data, model = counting
    states = model.states(data.select(range(16)))
    grads, l0s = [], []
    for bound in (None, 5.0):
        torch.manual_seed(0)
        dm = diffmask_for(model, "hidden", l0_bound=bound)
        dm.init_baselines(model, states)
        with torch.no_grad():
            dm.probes.probes[1].bias.fill_(14.0)
            dm.multipliers.zero_()
        parts = dm.lagrangian(model, data.select(range(16)), states, 1)
        grads.append(torch.autograd.grad(parts["loss"], dm.probes.probes[1].bias)[0].item())
        l0s.append(parts["l0"].item())
    s = 1 / (1 + math.exp(-(5.0 - 0.2 * math.log(0.2))))
    assert 0 < grads[0] < 1e-6
    assert grads[1] == pytest.approx(s * (1 - s), rel=1e-4)
    assert l0s[0] == l0s[1]


@pytest.mark.parametrize("bound", [-1.0, float("nan"), float("inf"), "5", True])
def test_bad_l0_bound_is_a_clear_error(bound):
    with pytest.raises(UnmaskError, match="l0_bound"):
        DiffMask(4, [4, 4], l0_bound=bound)
    with pytest.raises(UnmaskError, match="vote0_init_bias"):
        DiffMask(4, [4, 4], vote0_init_bias=float("nan") if bound == -1.0 else bound)


def test_input_vote0_starts_saturated_open(counting):
    """Input mode: vote 0 starts at location 10, the other votes (and hidden gates) at init_bias 5."""
    data, model = counting
    states = model.states(data.select(range(4)))
    votes = diffmask_for(model, "input").distribution(states, 1).logits
    assert torch.all(votes[..., 0] == 10.0) and torch.all(votes[..., 1] == 5.0)
    assert torch.all(diffmask_for(model, "hidden").distribution(states, 0).logits == 5.0)
    assert torch.all(diffmask_for(model, "input", vote0_init_bias=None).distribution(states, 1).logits == 5.0)


@pytest.mark.parametrize("kwargs", [dict(temperature=0.0), dict(left=0.0), dict(right=0.5)])
def test_bad_hard_concrete_parameters(kwargs):
    with pytest.raises(UnmaskError):
        HardConcrete(torch.zeros(2), **kwargs)


# ------------------------------------------------------------------- an exactly solvable counting model
class CountingModel(MaskableModel):
    """Toy-task model solved by construction: layer 0 = one-hot symbol, layer 1 = (is n, is m);
    logit of "more n than m" = 4 * (#n - #m - 0.5) from layer 1. Items are indices into ``data``."""

    def __init__(self, data):
        self.data = data
        k = data.config.num_symbols + 1
        self.input_size = k
        self.layer_sizes = [k, 2]

    def parameters(self):
        return []

    def collate(self, items):
        return self.data.select(list(items))

    def lengths(self, items):
        return self.data.lengths[list(items)].tolist()

    def _run(self, batch, x=None, h1=None):
        k = self.input_size
        x = torch.nn.functional.one_hot(batch.sequences, k).float() if x is None else x
        if h1 is None:
            n = torch.nn.functional.one_hot(batch.queries[:, 0], k).float()
            m = torch.nn.functional.one_hot(batch.queries[:, 1], k).float()
            h1 = torch.stack([(x * n[:, None]).sum(-1), (x * m[:, None]).sum(-1)], -1)
        diff = ((h1[..., 0] - h1[..., 1]) * batch.mask).sum(1)
        logits = torch.stack([torch.zeros_like(diff), 4 * (diff - 0.5)], -1)
        return logits, x, h1

    def states(self, batch):
        logits, x, h1 = self._run(batch)
        return ModelStates(logits, x, [x, h1], batch.mask)

    def logits_with(self, batch, where, new):
        if where in ("input", 0):
            return self._run(batch, x=new)[0]
        return self._run(batch, h1=new)[0]


def kl_to_ground_truth(scores, data):
    gt = data.ground_truth().double()
    q = scores.double() * data.mask
    q = q / q.sum(1, keepdim=True)
    ok = data.has_ground_truth()
    terms = torch.where(gt > 0, gt * (gt.clamp_min(1e-300).log() - q.clamp_min(1e-300).log()), torch.zeros_like(gt))
    return float(terms.sum(1)[ok].mean())


@pytest.fixture(scope="module")
def counting():
    data = generate_toy(600, seed=3, config=ToyTaskConfig(num_symbols=6, max_length=8))
    return data, CountingModel(data)


def test_counting_model_solves_the_task(counting):
    data, model = counting
    assert (model.states(data).logits.argmax(-1) == data.labels).all()


def test_short_training_beats_random_attribution(counting, tmp_path):
    data, model = counting
    torch.manual_seed(0)
    dm = diffmask_for(model, "hidden", eps=0.1, probe_hidden=8)
    config = DiffMaskTrainConfig(steps=800, batch_size=64, lr_gates=5e-3, layers=[1], warmup_steps=100,
                                 checkpoint_every=10_000)
    train_diffmask(dm, model, list(range(len(data))), tmp_path, config, progress=False, log=lambda s: None)
    keep, _ = keep_probabilities(dm, model, data)
    kl_diffmask = kl_to_ground_truth(keep[:, 1], data)
    g = torch.Generator().manual_seed(0)
    kl_random = kl_to_ground_truth(torch.rand(keep[:, 1].shape, generator=g), data)
    kl_uniform = kl_to_ground_truth(torch.ones_like(keep[:, 1]), data)
    assert kl_diffmask < 0.3 * min(kl_random, kl_uniform), (kl_diffmask, kl_random, kl_uniform)
    # the learned masks really keep the prediction
    ev = evaluate_diffmask(dm, model, list(range(len(data))), layers=[1])
    assert ev["1"]["kl_deterministic"] < 0.1
    assert ev["1"]["expected_kept"] < 0.7


def test_resume_continues_exactly_where_it_stopped(counting, tmp_path):
    data, model = counting
    items = list(range(200))

    def run(out, steps):
        torch.manual_seed(0)
        dm = diffmask_for(model, "input", eps=0.1, probe_hidden=4)
        cfg = DiffMaskTrainConfig(steps=steps, batch_size=32, lr_gates=1e-2, checkpoint_every=3, seed=5)
        train_diffmask(dm, model, items, out, cfg, progress=False, log=lambda s: None)
        return dm

    straight = run(tmp_path / "a", 7)
    run(tmp_path / "b", 3)  # "killed" after its step-3 checkpoint
    resumed = run(tmp_path / "b", 7)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    loaded, saved = load_diffmask(tmp_path / "b")
    assert saved["metrics"]["steps"] == 7
    for p, q in zip(loaded.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)


def test_input_mode_keep_is_product_over_layers(counting):
    data, model = counting
    torch.manual_seed(0)
    dm = diffmask_for(model, "input")
    for p in dm.probes.parameters():
        torch.nn.init.normal_(p)
    states = model.states(data.select(range(5)))
    all_layers = dm.keep_all_layers(states)
    for k in range(2):
        assert torch.allclose(all_layers[:, k], dm.keep_probability(states, k), atol=1e-6)
    votes = dm.distribution(states, 1).expected_l0()
    assert torch.allclose(all_layers[:, 1], votes.prod(-1) * states.mask, atol=1e-6)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_eps_is_a_clear_error(eps):
    with pytest.raises(UnmaskError, match="eps"):
        DiffMask(4, [4, 4], eps=eps)


def test_bad_mode_is_a_clear_error():
    with pytest.raises(UnmaskError, match="mode"):
        DiffMask(4, [4, 4], mode="attention")


@pytest.mark.parametrize("layer", [-1, 2, 1.0, None])
def test_bad_layer_index_is_a_clear_error(counting, layer):
    data, model = counting
    dm = diffmask_for(model, "hidden")
    states = model.states(data.select(range(3)))
    with pytest.raises(UnmaskError, match="layer"):
        dm.keep_probability(states, layer)
    with pytest.raises(UnmaskError, match="layer"):
        DiffMaskTrainConfig(layers=[layer]).check(dm.num_layers)


def test_bad_training_settings_are_clear_errors(counting, tmp_path):
    data, model = counting
    dm = diffmask_for(model, "hidden")
    with pytest.raises(UnmaskError, match="steps"):
        train_diffmask(dm, model, [0, 1], tmp_path, DiffMaskTrainConfig(steps=0), progress=False)
    with pytest.raises(UnmaskError, match="lr_gates"):
        train_diffmask(dm, model, [0, 1], tmp_path, DiffMaskTrainConfig(lr_gates=-1.0), progress=False)
    with pytest.raises(UnmaskError, match="no training data"):
        train_diffmask(dm, model, [], tmp_path, progress=False)
    with pytest.raises(UnmaskError, match="not a trained DiffMask"):
        load_diffmask(tmp_path / "nothing")


def test_masked_positions_take_the_baseline(counting):
    data, model = counting
    dm = diffmask_for(model, "hidden")
    with torch.no_grad():
        dm.baselines[1].fill_(0.0)
    batch = data.select(range(8))
    states = model.states(batch)
    relevant = batch.relevant()
    # closing exactly the irrelevant positions changes nothing; closing everything does
    keep_relevant = dm.masked_logits(model, batch, states, 1, relevant.float())
    assert torch.allclose(keep_relevant, states.logits)
    closed = dm.masked_logits(model, batch, states, 1, torch.zeros_like(relevant, dtype=torch.float))
    assert np.allclose(closed[:, 1].detach().numpy(), -2.0)


# ------------------------------------------------- input gates when the deciding layer is much narrower
def test_input_probe_parts_get_the_init_bound_of_their_own_width():
    """Issue 14: a probe over [x (64-d); h (2-d)] must give h the bound of a 2-input Linear, not 1/sqrt(66)."""
    from unmask.masking.probes import LayerProbes

    torch.manual_seed(0)
    probes = LayerProbes([64, 2], input_size=64, hidden=64)
    w = probes.probes[1].mlp[0].weight
    assert w[:, :64].abs().max() <= 1 / math.sqrt(64) + 1e-7
    assert w[:, 64:].abs().max() <= 1 / math.sqrt(2) + 1e-7
    assert w[:, 64:].abs().max() > 0.5  # not stuck at the concatenation's bound 1 / sqrt(66) = 0.12
    hidden = LayerProbes([64, 2], input_size=None, hidden=64).probes[1].mlp[0].weight
    assert hidden.abs().max() <= 1 / math.sqrt(2) + 1e-7  # hidden mode: one part, PyTorch's default

