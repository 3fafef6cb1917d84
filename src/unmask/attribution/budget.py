"""Token budgets from the model's size: how many padded tokens one forward (+ backward) may hold.

Activation bytes per token of a BERT-style encoder (hidden h, FFN f, a heads, L layers, width W of the
chunk, float bytes b), counted from what autograd keeps for the backward pass (eager attention):

- per layer: x, Q, K, V, the attention context, both LayerNorm inputs and the FFN input (8h), the FFN
  activation before and after GELU (2f) and the softmax output (a x W: one row of attention per head);
- the embedding LayerNorm's input and output (2h);
- one layer's transient buffers while it runs forward or backward (4h + 2f + 2aW).

``mode="forward"`` (no gradients) needs only the transient term, ``"backward"`` all of it, and
``"double_backward"`` (``create_graph=True``, e.g. Facade training) three times the backward figure. The
saved part matches ``torch.autograd.graph.saved_tensors_hooks`` to within 5% (tests/test_budget.py). The
double-backward factor is measured: with ``create_graph=True`` autograd saves 2.3-2.4x what the forward
saves (tiny models, saved_tensors_hooks), and the demo's Facade g (h 256, FFN 3072, 6 layers, width 64)
grew the peak RSS by 677 KiB per token for its attribution term against a backward figure of 238 KiB
(2.85x; 2026-12-07, 4 vs 32 rows). Twice the backward figure let Facade training peak at 2.5 GiB.

The memory cap defaults to 512 MiB of activations (1 GiB let IG on one 512-token MiniLM input peak at
1476 MiB, over the 1.5 GB target; 512 MiB: 1268 MiB, and on a CPU the 2048-token cap binds first for
MiniLM inputs up to about 160 tokens, so short inputs run the same chunks); set ``UNMASK_MEMORY_BUDGET`` (``"512MiB"``, ``"2G"``,
bytes) or pass ``memory``. On a CPU the budget is also capped at ``CPU_CHUNK_TOKENS`` (larger chunks were
not faster there, bench/results.md); on a GPU only memory bounds it.
"""
from __future__ import annotations

import os
import re

import torch

from unmask.errors import UnmaskError

MODES = ("forward", "backward", "double_backward")
DOUBLE_BACKWARD_FACTOR = 3  # measured 2.85x the backward figure (module docstring)
DEFAULT_MEMORY = 512 << 20  # bytes of activations per forward (+ backward)
MEMORY_ENV = "UNMASK_MEMORY_BUDGET"
CPU_CHUNK_TOKENS = 2048  # padded tokens per forward beyond which a CPU gets no faster
FALLBACK_TOKENS = 2048  # models whose config does not describe a transformer encoder
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


class AutoTokenBudget(int):
    """The default ``token_budget``: an int (``CPU_CHUNK_TOKENS``) for code that buckets by it, marked so
    that the gradient engine replaces it by ``token_budget_for(model, ...)``. An int given explicitly
    (``token_budget=4096``, ``--token-budget 4096``) is a plain ``int`` and is used as given."""

    def __repr__(self) -> str:
        return "auto"


AUTO_TOKEN_BUDGET = AutoTokenBudget(CPU_CHUNK_TOKENS)


def is_auto(token_budget: int) -> bool:
    return isinstance(token_budget, AutoTokenBudget)


def parse_memory(value: str | int | float) -> int:
    """Bytes from ``1073741824``, ``"1GiB"``, ``"512MiB"``, ``"1.5G"`` (k/M/G = powers of 1000, KiB/MiB/GiB
    of 1024); an ``UnmaskError`` naming the value otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise UnmaskError(f"memory budget {value!r}: give bytes or a size such as '1GiB' or '512MiB'")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise UnmaskError(f"memory budget {value!r} must be positive")
    return size


def memory_budget(memory: str | int | None = None) -> int:
    """Bytes of activations allowed per forward: ``memory``, else ``$UNMASK_MEMORY_BUDGET``, else 512 MiB."""
    if memory is not None:
        return parse_memory(memory)
    env = os.environ.get(MEMORY_ENV)
    return parse_memory(env) if env else DEFAULT_MEMORY


def encoder_shape(config) -> tuple[int, int, int, int] | None:
    """(hidden, ffn, heads, layers) of a BERT / RoBERTa / ELECTRA / DistilBERT-style config, else None."""
    for names in (("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers"),
                  ("dim", "hidden_dim", "n_heads", "n_layers")):
        values = [getattr(config, n, None) for n in names]
        if all(isinstance(v, int) and v > 0 for v in values):
            return tuple(values)  # type: ignore[return-value]
    return None


def activation_bytes_per_token(hidden: int, ffn: int, heads: int, layers: int, width: int,
                               mode: str = "backward", dtype_bytes: int = 4) -> int:
    """Bytes one token of a chunk ``width`` tokens wide costs (see the module docstring)."""
    if mode not in MODES:
        raise UnmaskError(f"unknown budget mode {mode!r}; choose one of {', '.join(MODES)}")
    if width < 1:
        raise UnmaskError(f"width must be positive, got {width}")
    transient = 4 * hidden + 2 * ffn + 2 * heads * width
    if mode == "forward":
        return dtype_bytes * transient
    saved = layers * (8 * hidden + 2 * ffn + heads * width) + 2 * hidden
    per_token = dtype_bytes * (saved + transient)
    return DOUBLE_BACKWARD_FACTOR * per_token if mode == "double_backward" else per_token


def model_device(model) -> torch.device:
    """The device of the model's word embeddings (methods follow it)."""
    try:
        return model.embedding_matrix.device
    except (AttributeError, NotImplementedError):
        return torch.device("cpu")


def token_budget_for(model, width: int | None = None, mode: str = "backward",
                     memory: str | int | None = None) -> int:
    """Padded tokens per forward for ``model`` at chunk ``width`` (default: its maximum length) within the
    memory budget; on a CPU at most ``CPU_CHUNK_TOKENS``; at least one row of ``width`` tokens. A model made
    of parts run side by side (``model.parts``, e.g. ``SummedModel``'s f and g) costs the sum of its parts."""
    width = int(width or getattr(model, "max_length", 512))
    per_token = _bytes_per_token(model, width, mode)
    if per_token is None:
        return FALLBACK_TOKENS
    budget = memory_budget(memory) // per_token
    if model_device(model).type == "cpu":
        budget = min(budget, CPU_CHUNK_TOKENS)
    return max(int(budget), width)


def _bytes_per_token(model, width: int, mode: str) -> int | None:
    """Activation bytes per token of ``model`` (summed over ``model.parts``), or None if any part's config
    does not describe a transformer encoder."""
    parts = getattr(model, "parts", None)
    if parts:
        sizes = [_bytes_per_token(part, width, mode) for part in parts]
        return None if any(s is None for s in sizes) else sum(sizes)
    shape = encoder_shape(getattr(getattr(model, "model", None), "config", None))
    if shape is None:
        return None
    try:
        dtype_bytes = model.embedding_matrix.element_size()
    except (AttributeError, NotImplementedError):
        dtype_bytes = 4
    return activation_bytes_per_token(*shape, width=width, mode=mode, dtype_bytes=dtype_bytes)


def resolve_token_budget(token_budget: int, model, width: int | None = None, mode: str = "backward") -> int:
    """``token_budget`` as given, or derived from ``model`` when it is the default (``AUTO_TOKEN_BUDGET``)."""
    return token_budget_for(model, width, mode) if is_auto(token_budget) else int(token_budget)


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that a long
    process running stages one after another (``unmask demo``) peaks at its largest stage, not their sum."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
