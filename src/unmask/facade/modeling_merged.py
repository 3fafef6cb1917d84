"""Modeling code of a Facade-merged BERT classifier, saved next to its weights (``auto_map``).

A merged model is a BertForSequenceClassification whose LayerNorms normalize groups of hidden units
on their own (``SplitLayerNorm``). Plain transformers would build ordinary LayerNorms and compute a
different function, so a merged model directory is written with

- ``model_type: "unmask_merged_bert"``, which transformers does not know: without
  ``trust_remote_code=True`` it refuses to load the model instead of loading it silently wrong;
- ``auto_map`` pointing AutoConfig / AutoModelForSequenceClassification at the classes below, and this
  file plus ``split_layernorm.py`` copied into the directory, so that
  ``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)`` rebuilds it exactly;
- ``unmask_layernorm_groups``: the LayerNorm groups as index lists (``unmask_split_layernorm``, block
  sizes, is kept too while the groups are contiguous; older unmask merges have only that key).

This file imports only torch and transformers (and ``split_layernorm.py`` beside it), because it runs
without unmask installed. unmask itself imports it from the installed package and never executes code
from a model directory.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

from transformers import BertConfig, BertForSequenceClassification

try:  # inside a saved model directory (transformers' dynamic module): the copied file beside this one
    from .split_layernorm import SplitLayerNorm, as_groups, install_split_layernorms, is_contiguous
except ImportError:  # inside the unmask package
    from unmask.models.split_layernorm import SplitLayerNorm, as_groups, install_split_layernorms, is_contiguous

MODEL_TYPE = "unmask_merged_bert"
GROUPS_KEY = "unmask_layernorm_groups"
SIZES_KEY = "unmask_split_layernorm"
MODEL_CLASS = "MergedBertForSequenceClassification"
AUTO_MAP = {"AutoConfig": "modeling_merged.MergedBertConfig",
            "AutoModelForSequenceClassification": f"modeling_merged.{MODEL_CLASS}"}

__all__ = ["AUTO_MAP", "GROUPS_KEY", "MODEL_TYPE", "SIZES_KEY", "MergedBertConfig",
           "MergedBertForSequenceClassification", "SplitLayerNorm", "layernorm_groups", "protect_saved_model"]


def layernorm_groups(config) -> list[list[int]] | None:
    """The split-LayerNorm groups recorded in ``config`` (index lists), or None for an ordinary BERT."""
    groups = getattr(config, GROUPS_KEY, None)
    if groups:
        return as_groups(groups)
    sizes = getattr(config, SIZES_KEY, None)
    return as_groups(sizes) if sizes else None


def set_layernorm_groups(config, groups) -> None:
    """Record ``groups`` in ``config``: index lists always, block sizes only while contiguous."""
    groups = as_groups(groups)
    setattr(config, GROUPS_KEY, groups)
    if is_contiguous(groups):
        setattr(config, SIZES_KEY, [len(g) for g in groups])
    elif SIZES_KEY in config.__dict__:
        delattr(config, SIZES_KEY)


class MergedBertConfig(BertConfig):
    """BertConfig under its own model type, so that only this modeling code builds the model."""

    model_type = MODEL_TYPE


class MergedBertForSequenceClassification(BertForSequenceClassification):
    """BertForSequenceClassification whose LayerNorms are split into the config's groups.

    Saving (``save_pretrained``) writes the protected format described in the module docstring.
    """

    config_class = MergedBertConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        groups = layernorm_groups(config)
        if groups is None:
            raise ValueError(f"a merged BERT config needs {GROUPS_KEY} (LayerNorm groups as index lists)")
        set_layernorm_groups(config, groups)
        install_split_layernorms(self, groups)

    def save_pretrained(self, save_directory, *args, **kwargs):
        result = super().save_pretrained(save_directory, *args, **kwargs)
        protect_saved_model(save_directory)
        return result


def protect_saved_model(directory: str | os.PathLike) -> None:
    """Rewrite ``directory/config.json`` as a merged model and copy the modeling code beside it."""
    directory = Path(directory)
    path = directory / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    groups = config.get(GROUPS_KEY) or config.get(SIZES_KEY)
    if not groups:
        raise ValueError(f"{path}: not a merged model (no {GROUPS_KEY})")
    config[GROUPS_KEY] = as_groups(groups)
    config.update(model_type=MODEL_TYPE, auto_map=AUTO_MAP, architectures=[MODEL_CLASS])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    for source in (inspect.getsourcefile(MergedBertConfig), inspect.getsourcefile(SplitLayerNorm)):
        target = directory / Path(source).name
        if Path(source).resolve() != target.resolve():
            shutil.copyfile(source, target)
