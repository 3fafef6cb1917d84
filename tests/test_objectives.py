"""Objectives as functions of the model output: classification margins and span-QA start / end logits."""
import pytest
import torch

from unmask.attribution import objectives
from unmask.attribution.base import objective_values
from unmask.attribution.gradient import Gradient
from unmask.attribution.gradient_x_input import GradientXInput
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.errors import UnmaskError


def test_named_objectives_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.0]])
    target = torch.tensor([1, 2])
    torch.testing.assert_close(objectives.margin(logits, target), torch.tensor([1.0, -0.5]))
    torch.testing.assert_close(objectives.logit(logits, target), torch.tensor([3.0, 0.0]))
    p = torch.exp(torch.tensor(3.0)) / torch.exp(torch.tensor([1.0, 3.0, 2.0])).sum()
    torch.testing.assert_close(objectives.prob(logits, target)[0], p)
    torch.testing.assert_close(objectives.loss(logits, target), -objectives.log_prob(logits, target))
    torch.testing.assert_close(objective_values(logits, target, "margin"), torch.tensor([1.0, -0.5]))


def test_bad_objectives():
    with pytest.raises(UnmaskError, match="unknown objective 'median'"):
        Gradient(objective="median")
    with pytest.raises(UnmaskError, match="start_logits"):
        objectives.qa_start(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(UnmaskError, match="out of range"):
        objectives.logit(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_custom_callable_objective(tiny_model_f64):
    """A callable objective is differentiated like a named one: logit difference = logit(1) - logit(0)."""
    def logit_difference(output, target):
        return output.logits[:, 1] - output.logits[:, 0]

    batch = tiny_model_f64.encode(["a gripping , funny film ."])
    t = torch.tensor([0])
    custom, _ = GradientXInput(objective=logit_difference).attribute(tiny_model_f64, batch, t)
    one, _ = GradientXInput(objective="logit").attribute(tiny_model_f64, batch, torch.tensor([1]))
    zero, _ = GradientXInput(objective="logit").attribute(tiny_model_f64, batch, torch.tensor([0]))
    torch.testing.assert_close(custom, one - zero)
    assert GradientXInput(objective=logit_difference).params["objective"] == "logit_difference"


@pytest.fixture(scope="module")
def qa_model():
    """A tiny random BertForQuestionAnswering (float64) wrapped so forward_embeds returns its QA output."""
    from transformers import AutoTokenizer, BertForQuestionAnswering

    from unmask.models.classifier import TextClassifier, default_model_path
    from unmask.models.tiny import tiny_bert_config

    torch.manual_seed(0)
    model = BertForQuestionAnswering(tiny_bert_config()).double()
    return TextClassifier(model, AutoTokenizer.from_pretrained(default_model_path(), use_fast=True), name="qa")


def _qa_batch(qa_model):
    return qa_model.encode(["who wrote the play ?", "where is it ?"],
                           ["the play was written by a young author in paris .", "it is in rome ."])


@pytest.mark.parametrize("kind", ["qa_start", "qa_end"])
def test_qa_gradient_matches_finite_differences(qa_model, kind):
    batch = _qa_batch(qa_model)
    target = torch.tensor([12, 9])  # token positions inside the context
    scores, _ = Gradient(reduce="dot", objective=kind).attribute(qa_model, batch, target)
    x = qa_model.embed(batch.input_ids).detach()
    fn = objectives.NAMED[kind]
    field = "start_logits" if kind == "qa_start" else "end_logits"
    h = 1e-6
    for r in range(2):
        for t in (1, 5, int(batch.lengths[r]) - 2):
            up, down = x.clone(), x.clone()
            up[r, t] *= 1 + h
            down[r, t] *= 1 - h
            with torch.no_grad():
                f = lambda e: fn(qa_model.forward_embeds(e, batch.attention_mask, batch.token_type_ids),  # noqa: E731
                                 target)[r]
                fd = (f(up) - f(down)) / (2 * h)
            assert float(scores[r, t]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9), (r, t)
        with torch.no_grad():
            out = qa_model.forward_embeds(x, batch.attention_mask, batch.token_type_ids)
        assert float(getattr(out, field)[r, target[r]]) == pytest.approx(
            float(fn(out, target)[r]))


@pytest.mark.parametrize("kind", ["qa_start", "qa_end"])
def test_qa_integrated_gradients_completeness(qa_model, kind):
    batch = _qa_batch(qa_model)
    target = torch.tensor([3, 6])
    scores, extras = IntegratedGradients(steps=16, tolerance=1e-6, max_steps=512,
                                         objective=kind).attribute(qa_model, batch, target)
    x = qa_model.embed(batch.input_ids).detach()
    fn = objectives.NAMED[kind]
    with torch.no_grad():
        fx = fn(qa_model.forward_embeds(x, batch.attention_mask, batch.token_type_ids), target)
        f0 = fn(qa_model.forward_embeds(torch.zeros_like(x), batch.attention_mask, batch.token_type_ids), target)
    torch.testing.assert_close(scores.sum(1), fx - f0, rtol=1e-5, atol=1e-8)
    assert all(e["relative_error"] <= 1e-6 for e in extras)
    # start and end attributions differ: the two heads read different directions
    other = "qa_end" if kind == "qa_start" else "qa_start"
    s2, _ = IntegratedGradients(steps=16, tolerance=None, objective=other).attribute(qa_model, batch, target)
    assert not torch.allclose(scores, s2)
