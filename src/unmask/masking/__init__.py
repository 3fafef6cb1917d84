"""DiffMask: learned hard-concrete masks on inputs or hidden states (De Cao et al. 2020)."""
from unmask.masking.adapters import ClassifierAdapter, MaskableModel, ModelStates, ToyAdapter
from unmask.masking.diffmask import MODES, DiffMask, diffmask_for, kl_divergence
from unmask.masking.explain import DiffMaskAttribution, explain_diffmask, keep_probabilities
from unmask.masking.hard_concrete import HardConcrete
from unmask.masking.trainer import (DiffMaskTrainConfig, evaluate_diffmask, load_diffmask, save_diffmask,
                                    train_diffmask)

__all__ = ["MODES", "ClassifierAdapter", "DiffMask", "DiffMaskAttribution", "DiffMaskTrainConfig", "HardConcrete",
           "MaskableModel", "ModelStates", "ToyAdapter", "diffmask_for", "evaluate_diffmask", "explain_diffmask",
           "keep_probabilities", "kl_divergence", "load_diffmask", "save_diffmask", "train_diffmask"]
