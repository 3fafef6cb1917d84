"""Merge a predictive BERT f and a Facade BERT g into one standard-form BERT whose logits are f + g.

The merged model keeps each model's activations in its own block of the hidden axis (f first):

- word / position / token-type embeddings are concatenated along the hidden axis;
- every Linear (Q, K, V, attention output, intermediate, output, pooler) is block diagonal, biases
  stacked; HF splits the Q/K/V output into heads contiguously, so f's heads are the first ones and g's
  the rest (same head size, heads summed);
- every LayerNorm becomes a ``SplitLayerNorm`` that normalizes f's block and g's block separately
  (recorded in the config as ``unmask_layernorm_groups`` index lists, and as block sizes
  ``unmask_split_layernorm: [h_f, h_g]``, so ``load_model`` rebuilds it);
- the classifier is ``W = [W_f  W_g]``, ``b = b_f + b_g``: the merged logits are the sum of both.

The model is a ``MergedBertForSequenceClassification`` (``facade/modeling_merged.py``): saved, it
carries its modeling code (``auto_map``) and a model type plain transformers refuses without
``trust_remote_code=True``, so it never loads silently as an ordinary BERT.

An already merged f (split LayerNorm) can be merged again: its groups are kept and g's is appended.
"""
from __future__ import annotations

import copy
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from unmask.errors import UnmaskError
from unmask.facade.model import check_bert, head_size_of
from unmask.models.classifier import TextClassifier
from unmask.models.split_layernorm import SplitLayerNorm

# Config fields f and g must agree on, with the name used in the error message.
MUST_MATCH = (
    ("vocab_size", "vocabulary size"),
    ("num_hidden_layers", "layer count"),
    ("num_labels", "number of labels"),
    ("max_position_embeddings", "max positions"),
    ("type_vocab_size", "token type vocabulary size"),
    ("hidden_act", "activation function"),
    ("layer_norm_eps", "LayerNorm eps"),
)


def block_groups(config) -> list[list[int]]:
    """LayerNorm groups of a model (index lists): its split groups if merged before, else all units."""
    from unmask.facade.modeling_merged import layernorm_groups

    return layernorm_groups(config) or [list(range(int(config.hidden_size)))]


def check_mergeable(f: TextClassifier, g: TextClassifier) -> None:
    """Raise one clear ``UnmaskError`` for the first property in which f and g cannot be merged."""
    check_bert(f, "predictive (f)")
    check_bert(g, "facade (g)")
    cf, cg = f.model.config, g.model.config
    for key, what in MUST_MATCH:
        a, b = getattr(cf, key, None), getattr(cg, key, None)
        if a != b:
            raise UnmaskError(f"cannot merge: {what} differs (f has {key}={a!r}, g has {key}={b!r})")
    hf, hg = head_size_of(cf), head_size_of(cg)
    if hf != hg:
        raise UnmaskError(f"cannot merge: head size differs (f has {cf.num_attention_heads} heads of {hf}, "
                          f"g has {cg.num_attention_heads} heads of {hg}); build g with head size {hf}")
    if f.tokenizer.get_vocab() != g.tokenizer.get_vocab():
        raise UnmaskError("cannot merge: f and g use different tokenizer vocabularies")


def merged_config(f: TextClassifier, g: TextClassifier):
    """Config of the merged model: f's config with hidden, heads and FFN summed and the split recorded."""
    from unmask.facade.modeling_merged import MODEL_CLASS, set_layernorm_groups

    cf, cg = f.model.config, g.model.config
    config = copy.deepcopy(cf)
    config.hidden_size = cf.hidden_size + cg.hidden_size
    config.num_attention_heads = cf.num_attention_heads + cg.num_attention_heads
    config.intermediate_size = cf.intermediate_size + cg.intermediate_size
    config.architectures = [MODEL_CLASS]
    config._name_or_path = ""
    config._attn_implementation = "eager"
    h_f = int(cf.hidden_size)
    set_layernorm_groups(config, block_groups(cf) + [[h_f + i for i in grp] for grp in block_groups(cg)])
    return config


def block_diagonal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[[a, 0], [0, b]] for 2-D weights."""
    return torch.block_diag(a, b)


@torch.no_grad()
def _fill(merged: nn.Module, f: nn.Module, g: nn.Module) -> None:
    """Copy f's and g's weights into the merged module tree, module by module (same names)."""
    fm, gm = dict(f.named_modules()), dict(g.named_modules())
    done: set[str] = set()
    for name, m in merged.named_modules():
        if not list(m.parameters(recurse=False)):
            continue
        a, b = fm.get(name), gm.get(name)
        if a is None or b is None:
            raise UnmaskError(f"cannot merge: module {name!r} is missing from f or g")
        cast = lambda t: t.to(m.weight.dtype)  # noqa: E731
        if isinstance(m, nn.Embedding):
            m.weight.copy_(torch.cat([cast(a.weight), cast(b.weight)], 1))
        elif isinstance(m, (nn.LayerNorm, SplitLayerNorm)):
            m.weight.copy_(torch.cat([cast(a.weight), cast(b.weight)]))
            m.bias.copy_(torch.cat([cast(a.bias), cast(b.bias)]))
        elif isinstance(m, nn.Linear) and name == "classifier":
            m.weight.copy_(torch.cat([cast(a.weight), cast(b.weight)], 1))
            m.bias.copy_(cast(a.bias) + cast(b.bias))
        elif isinstance(m, nn.Linear):
            m.weight.copy_(block_diagonal(cast(a.weight), cast(b.weight)))
            m.bias.copy_(torch.cat([cast(a.bias), cast(b.bias)]))
        else:
            raise UnmaskError(f"cannot merge: unsupported module {name!r} ({type(m).__name__})")
        done.update(f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False))
    left = [n for n, _ in merged.named_parameters() if n not in done]
    if left:
        raise UnmaskError(f"cannot merge: parameters not covered by the merge rules: {left[:3]}")


def merge(f: TextClassifier, g: TextClassifier, out: str | Path | None = None) -> TextClassifier:
    """One BertForSequenceClassification computing ``f(x) + g(x)``; saved to ``out`` if given.

    The result uses f's tokenizer, labels and max length; its dtype is the wider of f's and g's.
    The saved directory loads back with ``unmask.models.load_model(out)``.
    """
    from unmask.facade.modeling_merged import MergedBertForSequenceClassification

    check_mergeable(f, g)
    config = merged_config(f, g)
    ref_f, ref_g = f.embedding_matrix, g.embedding_matrix
    dtype = torch.promote_types(ref_f.dtype, ref_g.dtype)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
        model = MergedBertForSequenceClassification(config)  # split LayerNorms from the config
    model = model.to(dtype=dtype, device=ref_f.device)
    _fill(model, f.model, g.model)
    merged = TextClassifier(model, f.tokenizer, max_length=f.max_length, name="merged")
    if out is not None:
        save_atomic(merged, out)
    return merged


def save_atomic(model: TextClassifier, out: str | Path) -> Path:
    """Save into a temporary sibling directory, then rename it to ``out`` (replacing an old model).

    Refuses to replace a non-empty directory that is not a model directory (no config.json).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise UnmaskError(f"{out} exists and is not a model directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        model.save(tmp)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out
