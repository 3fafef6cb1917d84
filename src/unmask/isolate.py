"""Run one stage of a long command in a fresh process, so that the command peaks at its largest stage.

A process that fine-tunes, then trains a facade, then audits keeps part of each stage's heap (fragmented
arenas that ``malloc_trim`` cannot return), so later stages start high: in one process ``unmask demo``
peaked at 2.58 GiB in the audit of the merged model, which peaks at 1.34 GiB in a fresh process
(2026-12-07). ``run_isolated`` runs a function in a spawned
child with the caller's torch thread count, its stdout redirection (``--json -`` sends status lines to
stderr) and its transformers progress-bar setting, returns the function's result, and re-raises its
exception; a child that dies (e.g. killed for memory) raises one ``UnmaskError`` naming the stage.
"""
from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from unmask.errors import UnmaskError

T = TypeVar("T")


def _caller_context() -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    return {"threads": torch.get_num_threads(), "stdout_to_stderr": sys.stdout is sys.stderr,
            "hf_progress": hf_logging.is_progress_bar_enabled()}


def _enter_context(context: dict) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(context["threads"])
    if context["stdout_to_stderr"]:
        sys.stdout = sys.stderr
    if not context["hf_progress"]:
        hf_logging.disable_progress_bar()


def run_isolated(fn: Callable[..., T], /, *args: Any, what: str = "stage", **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a fresh spawned process (``fn`` and its arguments must be picklable,
    i.e. ``fn`` is a module-level function). Returns its result; its exceptions reach the caller as raised."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_enter_context, initargs=(_caller_context(),)) as pool:
        try:
            return pool.submit(fn, *args, **kwargs).result()
        except BrokenProcessPool as e:
            raise UnmaskError(f"the {what} process died before it finished (out of memory?)") from e


def peak_rss_gib() -> float:
    """The larger of this process's peak resident set and that of the largest finished child, in GiB
    (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 2**20
