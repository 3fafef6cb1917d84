"""Perturbation analyses: input reduction (beam), HotFlip, universal triggers; all work on word-piece ids."""
from unmask.perturbation.hotflip import hotflip
from unmask.perturbation.input_reduction import reduce_inputs
from unmask.perturbation.record import PerturbationResult, Step, TriggerResult
from unmask.perturbation.triggers import evaluate_trigger, search_trigger

__all__ = ["PerturbationResult", "Step", "TriggerResult", "evaluate_trigger", "hotflip", "reduce_inputs",
           "search_trigger"]
