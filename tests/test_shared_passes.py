"""Gradient passes shared between methods requested together: bitwise the scores of each method alone."""
import numpy as np
import pytest
import torch

from unmask.attribution import explain
from unmask.attribution.base import gradient_chunks
from unmask.attribution.explain import attribute_methods, predict_batch
from unmask.attribution.gradient import Gradient
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.leave_one_out import LeaveOneOut
from unmask.attribution.shared import pass_groups
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.audit import behavior
from unmask.audit.first_order import FirstOrderOcclusion

TEXTS = ["a good film", "the plot was dull and far too long , sadly", "it is not bad", "wonderful",
         "an utterly forgettable , tedious mess of a movie that never finds its footing", "fine ."] * 3


def _equal(a, b) -> bool:
    return all(torch.equal(torch.from_numpy(x.scores), torch.from_numpy(y.scores)) and x.extras == y.extras
               and x.params == y.params and x.method == y.method for x, y in zip(a, b, strict=True))


def test_shared_pass_scores_are_bitwise_those_of_each_method_alone(tiny_model):
    # token budget 64: several length buckets and several chunks per bucket
    methods = [Gradient(token_budget=64), GradientXInput(token_budget=64), FirstOrderOcclusion(token_budget=64)]
    assert pass_groups(tiny_model, methods) == [[0, 1, 2]]
    together = explain(tiny_model, TEXTS, methods)
    for key, method in zip(together, methods):
        assert _equal(together[key], explain(tiny_model, TEXTS, [method])[key]), key


def test_one_forward_per_chunk_for_the_shared_pass(tiny_model, monkeypatch):
    batch = tiny_model.encode(TEXTS)
    logits = predict_batch(tiny_model, batch)
    target = logits.argmax(-1)
    calls = []
    forward = tiny_model.forward_embeds
    monkeypatch.setattr(tiny_model, "forward_embeds", lambda *a, **k: calls.append(1) or forward(*a, **k))
    methods = [Gradient(token_budget=64), GradientXInput(token_budget=64), FirstOrderOcclusion(token_budget=64)]
    attribute_methods(tiny_model, batch, methods, target, logits)
    shared, calls[:] = len(calls), []
    for m in methods:
        attribute_methods(tiny_model, batch, [m], target, logits)
    assert shared > 1 and len(calls) == 3 * shared


def test_only_equal_passes_are_shared(tiny_model):
    methods = [Gradient(), SmoothGrad(samples=2), GradientXInput(), IntegratedGradients(steps=4), LeaveOneOut(),
               GradientXInput(objective="logit"), Gradient(token_budget=2048), FirstOrderOcclusion(),
               Gradient(precision="bfloat16"), GradientXInput(precision="float32")]
    # "auto" resolves to float32 here (conftest plants a probe without speed-up), so it shares with "float32";
    # an explicit 2048 is not the model-derived default budget, whatever number that gives
    assert pass_groups(tiny_model, methods) == [[0, 2, 7, 9], [1], [3], [4], [5], [6], [8]]


def test_methods_that_do_not_share_are_unaffected(tiny_model):
    methods = [SmoothGrad(samples=2), Gradient(), IntegratedGradients(steps=4), GradientXInput(), LeaveOneOut()]
    together = explain(tiny_model, TEXTS[:6], methods)
    for key, method in zip(together, methods):
        assert _equal(together[key], explain(tiny_model, TEXTS[:6], [method])[key]), key


def test_a_custom_objective_shares_by_identity(tiny_model):
    class Margin:  # unhashable (defines __eq__), compared by ==
        def __eq__(self, other):
            return self is other

        def __call__(self, output, target):
            return output.logits.gather(1, target[:, None])[:, 0] - output.logits.mean(-1)

    fn = Margin()
    methods = [Gradient(objective=fn), GradientXInput(objective=fn), Gradient(objective=Margin())]
    assert pass_groups(tiny_model, methods) == [[0, 1], [2]]
    together = explain(tiny_model, TEXTS[:6], methods[:2])
    for key, method in zip(together, methods):
        assert _equal(together[key], explain(tiny_model, TEXTS[:6], [method])[key]), key


def test_first_order_occlusion_over_a_batch_is_the_former_computation(tiny_model):
    """``first_order_occlusion`` (whole batch, as the audit computed it before sharing): bitwise g . (x - m)."""
    batch = tiny_model.encode(TEXTS)
    target = predict_batch(tiny_model, batch).argmax(-1)
    embeds = tiny_model.embed(batch.input_ids).detach()
    m = tiny_model.embedding_matrix[tiny_model.tokenizer.mask_token_id].detach()
    want = torch.zeros(embeds.shape[:2])
    for sl, grads, _ in gradient_chunks(tiny_model, embeds, batch.attention_mask, batch.token_type_ids, target,
                                        "log_prob", 64):
        want[sl] = (grads * (embeds[sl] - m)).sum(-1)
    want = want * (~batch.special_mask()).to(want.dtype)
    assert torch.equal(behavior.first_order_occlusion(tiny_model, batch, target, token_budget=64), want)


def _evidence(model, texts, **kw):
    records = {}
    ev = behavior.behavioral_evidence(model, texts, methods=("gradient", "gradient_x_input", "smoothgrad"),
                                      records_out=records, **kw).to_dict()
    ev.pop("seconds")
    for m in ev["methods"].values():
        m.pop("seconds")
    return ev, records


def test_audit_evidence_with_shared_passes_is_that_of_separate_passes(tiny_model, monkeypatch):
    stages = []
    shared, shared_records = _evidence(tiny_model, TEXTS, token_budget=64, progress=stages.append)
    assert "one pass with gradient, gradient_x_input" in stages[2]
    monkeypatch.setattr(behavior, "pass_groups", lambda model, methods: [[i] for i in range(len(methods))])
    separate, separate_records = _evidence(tiny_model, TEXTS, token_budget=64)
    assert shared == separate
    for name in separate_records:
        assert _equal(shared_records[name], separate_records[name]), name


def test_audit_magnitude_matches_the_whole_batch_first_order_pass(tiny_model):
    """Before sharing, the audit took first-order occlusion from one pass over the whole batch (other chunks
    than the length buckets the methods use): the magnitude statistics agree to float32 rounding."""
    ev, records = _evidence(tiny_model, TEXTS, token_budget=64)
    batch = tiny_model.encode(TEXTS)
    target = predict_batch(tiny_model, batch).argmax(-1)
    whole = behavior.first_order_occlusion(tiny_model, batch, target, token_budget=64)
    ratio, miss, _ = behavior.magnitude_consistency(whole, records["leave_one_out"])
    assert ev["magnitude_ratio"] == pytest.approx(ratio, rel=1e-5, abs=1e-7)
    assert ev["first_order_miss"] == pytest.approx(miss, rel=1e-5, abs=1e-7)
    assert np.isfinite(ratio) and np.isfinite(miss)
