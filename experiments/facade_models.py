"""Where experiments/facade_reproduce.py leaves its models, for the scripts that re-read them."""
from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path


def command_line(script: str, argv: list[str] | None) -> str:
    """The command as it can be pasted back into a shell (recorded in every result file)."""
    return f"python experiments/{script} " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))


def model_path(task: str, name: str, root: str | None = None) -> Path:
    """runs/TASK for f_orig, else ROOT/NAME (default root runs/facade/TASK)."""
    return Path(f"runs/{task}") if name == "f_orig" else Path(root or f"runs/facade/{task}") / name


def existing_models(task: str, names: tuple[str, ...], root: str | None = None) -> Iterator[tuple[str, Path]]:
    """(name, directory) for each model that has been trained; says which are missing."""
    for name in names:
        path = model_path(task, name, root)
        if (path / "model.safetensors").is_file():
            yield name, path
        else:
            print(f"skipping {name}: {path} has no model", flush=True)
