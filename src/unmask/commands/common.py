"""Arguments and output conventions shared by several commands (no command of its own).

Output conventions (issue 16, item 6): a command that runs long shows a progress bar that ``--quiet``
turns off (``--no-progress`` is the same flag), and a command that produces results takes ``--json PATH``,
where ``--json -`` prints one strict-JSON document on stdout and nothing else there: while such a command
runs, ``unmask.cli.main`` sends everything else it prints to stderr (``json_on_stdout``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_STDOUT: list[TextIO] = []  # the real stdout of each running `--json -` command (innermost last)


def add_data_arguments(p: argparse.ArgumentParser, files: str, label_use: str) -> None:
    """``--data`` (a bundled task or a file of type ``files``), ``--split`` and a data file's column names."""
    p.add_argument("--data", required=True, help=f"sst2 or rte (bundled, --split) or a {files} file")
    p.add_argument("--split", choices=["dev", "train"], default="dev", help="split of a bundled task (default dev)")
    p.add_argument("--text-column", default="text", help="text column of a --data file")
    p.add_argument("--pair-column", default=None, help="second-sentence column of a --data file")
    p.add_argument("--label-column", default="label", help=f"label column of a --data file ({label_use})")


def add_quiet_argument(p: argparse.ArgumentParser, what: str = "no progress bars") -> None:
    """``--quiet`` (alias ``--no-progress``) -> ``args.quiet``."""
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help=what)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice; set it when other jobs share the cores)")


def apply_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` for a ``--threads`` value (None: leave torch's choice); < 1 is an error."""
    if threads is None:
        return
    if threads < 1:
        from unmask.errors import UnmaskError

        raise UnmaskError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def add_json_argument(p: argparse.ArgumentParser, what: str = "the results", *names: str) -> None:
    """``--json PATH`` (and older spellings in ``names``): ``-`` = stdout, and nothing else there."""
    p.add_argument("--json", *names, dest="json", default=None, metavar="PATH",
                   help=f"write {what} as JSON here ('-': to stdout, and nothing else there)")


def json_ready(value):
    """``value`` as strict JSON data: NaN / infinity -> None, numpy scalars and arrays -> Python, paths -> str."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy array or scalar, torch tensor
        return json_ready(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextlib.contextmanager
def json_on_stdout(path: str | None) -> Iterator[None]:
    """With ``path == "-"``, what is printed inside goes to stderr; ``emit_json(path, ...)`` still reaches stdout."""
    if path != "-":
        yield
        return
    _STDOUT.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _STDOUT.pop()


@contextlib.contextmanager
def quiet_libraries(quiet: bool) -> Iterator[None]:
    """With ``quiet``, the libraries' own progress bars (transformers' "Writing model shards" when a model is
    saved) stay off too; restored afterwards."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def emit_json(path: str | None, data, what: str = "JSON", indent: int | None = 2) -> None:
    """Write ``data`` as strict JSON (see ``json_ready``) to ``path`` atomically, or to stdout for ``-``."""
    if not path:
        return
    text = json.dumps(json_ready(data), indent=indent, allow_nan=False) + "\n"
    if path == "-":
        out = _STDOUT[-1] if _STDOUT else sys.stdout
        out.write(text)
        out.flush()
        return
    from unmask.io import write_text_atomic

    write_text_atomic(path, text)
    print(f"{what} written to {path}")
