"""What a gradient method differentiates: a function of the model output.

An ``Objective`` is any callable ``(model_output, target) -> (rows,)`` tensor, where ``model_output`` is
what the adapter's ``forward_embeds`` returns and ``target`` holds one integer per row (a class for
classifiers, a token position for span QA). The named ones:

- ``log_prob`` (default), ``logit``, ``prob``, ``loss`` (= -log_prob): of class ``target``, from ``.logits``;
- ``margin``: logit of ``target`` minus the best other logit;
- ``qa_start`` / ``qa_end``: the start / end logit at token position ``target``, from ``.start_logits`` /
  ``.end_logits`` (a logit, not a softmax over positions, so trimming padding cannot change it).

Values are computed in at least float32 (bfloat16 outputs are promoted; float64 models stay float64).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from unmask.errors import UnmaskError

Objective = Callable[[Any, torch.Tensor], torch.Tensor]


def _field(output: Any, name: str) -> torch.Tensor:
    value = output if isinstance(output, torch.Tensor) and name == "logits" else getattr(output, name, None)
    if value is None:
        raise UnmaskError(f"this objective reads the model output's {name!r}, which "
                          f"{type(output).__name__} does not have")
    return value.to(torch.promote_types(value.dtype, torch.float32))


def _pick(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if target.shape != (scores.shape[0],):
        raise UnmaskError(f"objective needs one target per row ({scores.shape[0]}), got shape {tuple(target.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= scores.shape[1]):
        raise UnmaskError(f"target out of range: targets span {int(target.min())}..{int(target.max())} but the "
                          f"model output has {scores.shape[1]} scores per row")
    return scores.gather(1, target[:, None].to(torch.int64))[:, 0]


def log_prob(output: Any, target: torch.Tensor) -> torch.Tensor:
    return _pick(_field(output, "logits").log_softmax(-1), target)


def loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    return -log_prob(output, target)


def logit(output: Any, target: torch.Tensor) -> torch.Tensor:
    return _pick(_field(output, "logits"), target)


def prob(output: Any, target: torch.Tensor) -> torch.Tensor:
    return _pick(_field(output, "logits").softmax(-1), target)


def margin(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Target logit minus the largest other logit (positive iff the target is the prediction)."""
    logits = _field(output, "logits")
    if logits.shape[1] < 2:
        raise UnmaskError("the margin objective needs at least 2 labels")
    chosen = _pick(logits, target)
    others = logits.scatter(1, target[:, None].to(torch.int64), float("-inf"))
    return chosen - others.amax(1)


def qa_start(output: Any, target: torch.Tensor) -> torch.Tensor:
    return _pick(_field(output, "start_logits"), target)


def qa_end(output: Any, target: torch.Tensor) -> torch.Tensor:
    return _pick(_field(output, "end_logits"), target)


NAMED: dict[str, Objective] = {"log_prob": log_prob, "logit": logit, "prob": prob, "loss": loss,
                               "margin": margin, "qa_start": qa_start, "qa_end": qa_end}
CLASS_OBJECTIVES = ("log_prob", "logit", "prob", "loss", "margin")  # functions of ``.logits`` alone


def resolve_objective(spec: "str | Objective") -> Objective:
    """The callable for a name in ``NAMED`` or a callable given as is."""
    if isinstance(spec, str):
        if spec not in NAMED:
            raise UnmaskError(f"unknown objective {spec!r}; choose one of {', '.join(NAMED)} or pass a callable "
                              f"(model_output, target) -> per-row values")
        return NAMED[spec]
    if callable(spec):
        return spec
    raise UnmaskError(f"objective must be a name or a callable, got {type(spec).__name__}")


def objective_name(spec: "str | Objective") -> str:
    """A readable name for records' parameters (the callable's ``__name__`` for custom objectives)."""
    resolve_objective(spec)
    return spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)
