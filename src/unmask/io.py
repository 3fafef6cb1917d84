"""Atomic file writes: every output file unmask writes goes through here.

The content goes to a temporary file in the target's directory, which is then renamed over the target,
so a reader (or a run killed mid-write) never sees a half-written file.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling file and ``os.replace``; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # one per writer
    try:
        tmp.write_bytes(data)  # default permissions (umask), unlike mkstemp's 0600
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically (see ``write_bytes_atomic``)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data) -> Path:
    """Write ``data`` as indented JSON (trailing newline) atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")
