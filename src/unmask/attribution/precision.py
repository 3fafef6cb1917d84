"""``precision="auto"``: bfloat16 autocast only where the hardware computes it natively and it is faster.

- CUDA: bfloat16 when ``torch.cuda.is_bf16_supported()``.
- CPU: bfloat16 only with native bf16 instructions (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo, or a
  BF16/AMX capability reported by torch) AND a one-time micro-measurement on the model (forward + backward
  of a small synthetic batch in both precisions) showing bf16 at least ``MIN_SPEEDUP`` faster. Without native
  bf16 a CPU emulates it (measured 3.2x slower than float32 on an AVX512 Xeon), so the measurement is not run.
- float32 otherwise, and always for models whose word embeddings are not float32 (float64 oracles stay
  exact) or that expose no ``embedding_matrix``.

A caller that needs a given accuracy passes ``max_error``: IG with a completeness tolerance gets bf16 from
``"auto"`` only if the probe's bf16 gradient error is within it (on SST-2 MiniLM it is 1.7%: bf16 IG then
needs 4-7x the steps and still leaves 7 of 16 sentences over a 1e-3 tolerance, so ``"auto"`` keeps float32).

The measurement is cached per process and model shape (class, hidden, FFN, heads, layers, device); it also
gives the relative error of the bf16 gradient against float32 on the probe batch, which records carry as
``extras["precision_error"]`` beside the resolved ``extras["precision"]``.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import lru_cache

import torch

from unmask.attribution.budget import encoder_shape, model_device
from unmask.errors import UnmaskError

PRECISIONS = ("auto", "float32", "bfloat16")
MIN_SPEEDUP = 1.15  # bf16 must beat float32 by this factor on the probe to be chosen
PROBE_ROWS, PROBE_WIDTH = 4, 32  # synthetic batch of the probe
PROBE_PAIRS, PROBE_MAX_PAIRS, PROBE_SECONDS = 3, 25, 0.3  # timed (float32, bf16) pairs: at least 3, then until 0.3 s


@dataclass(frozen=True)
class Probe:
    """One micro-measurement: median seconds per forward + backward in each precision, the median of the
    per-pair ratios (float32 / bf16 time, robust to a busy core) and the bf16 gradient's relative error."""

    float32_seconds: float
    bfloat16_seconds: float
    relative_error: float
    ratio: float | None = None

    @property
    def speedup(self) -> float:
        if self.ratio is not None:
            return self.ratio
        return self.float32_seconds / max(self.bfloat16_seconds, 1e-12)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UnmaskError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 dot products in hardware (AVX512-BF16 or AMX-BF16)."""
    if {"avx512_bf16", "amx_bf16"} & cpu_flags():
        return True
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "BF16" in capability or "AMX" in capability


def device_has_native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def _probe_key(model) -> tuple:
    net = getattr(model, "model", model)
    return (type(net).__name__, encoder_shape(getattr(net, "config", None)), tuple(model.embedding_matrix.shape),
            str(model_device(model)))


_PROBES: dict[tuple, Probe] = {}


def probe(model) -> Probe:
    """Time forward + backward of a fixed synthetic batch in float32 and under bf16 autocast (alternating
    pairs after one warm-up each, at least ``PROBE_PAIRS`` and until ``PROBE_SECONDS``) and compare the
    gradients; cached per process and model shape."""
    key = _probe_key(model)
    if key not in _PROBES:
        _PROBES[key] = _measure(model)
    return _PROBES[key]


def _measure(model) -> Probe:
    device = model_device(model)
    vocab = model.embedding_matrix.shape[0]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (PROBE_ROWS, PROBE_WIDTH), generator=gen).to(device)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        embeds = model.embed(ids).detach()

    def run(bf16: bool) -> tuple[float, torch.Tensor]:
        x = embeds.clone().requires_grad_(True)
        start = time.perf_counter()
        with torch.enable_grad():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model.forward_embeds(x, mask).logits
            (grad,) = torch.autograd.grad(logits.float().log_softmax(-1)[:, 0].sum(), x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, grad

    run(False), run(True)  # warm-up (oneDNN / cuBLAS kernel selection)
    times: dict[bool, list[float]] = {False: [], True: []}
    grads = {}
    start = time.perf_counter()
    while len(times[True]) < PROBE_MAX_PAIRS and (len(times[True]) < PROBE_PAIRS
                                                  or time.perf_counter() - start < PROBE_SECONDS):
        for bf16 in (False, True):
            t, grads[bf16] = run(bf16)
            times[bf16].append(t)
    ratios = [a / max(b, 1e-12) for a, b in zip(times[False], times[True])]
    error = float((grads[True] - grads[False]).norm() / grads[False].norm().clamp_min(1e-30))
    return Probe(statistics.median(times[False]), statistics.median(times[True]), error, statistics.median(ratios))


def resolve_precision(precision: str, model, max_error: float | None = None) -> str:
    """``"float32"`` or ``"bfloat16"``: as given, or for ``"auto"`` by the rules in the module docstring;
    with ``max_error`` (e.g. IG's completeness tolerance) ``"auto"`` also needs the probe's relative bf16
    gradient error within it."""
    check_precision(precision)
    if precision != "auto":
        return precision
    weights = getattr(model, "embedding_matrix", None)  # duck-typed models without one: float32
    if not isinstance(weights, torch.Tensor) or weights.dtype != torch.float32:
        return "float32"
    if not device_has_native_bf16(model_device(model)):
        return "float32"
    if max_error is not None and probe(model).relative_error > max_error:
        return "float32"
    if model_device(model).type == "cuda":
        return "bfloat16"
    return "bfloat16" if probe(model).speedup >= MIN_SPEEDUP else "float32"


def precision_extras(precision: str, model, max_error: float | None = None) -> dict:
    """``{"precision": resolved}``, plus the probe's bf16 gradient error when bf16 is used."""
    resolved = resolve_precision(precision, model, max_error)
    if resolved == "float32":
        return {"precision": resolved}
    return {"precision": resolved, "precision_error": probe(model).relative_error}
