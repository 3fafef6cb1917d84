"""Append-only JSONL caches, so a long run killed half-way resumes where it stopped.

One line per finished item (``{"key": ..., ...}``; keys are JSON scalars: strings or integers), flushed
and fsynced after each ``append``. A torn last line (a kill during a write) is ignored on reading, and
opening the cache rewrites the file without it so the next append starts on a fresh line. A sidecar
``<name>.config.json`` pins the settings that produced the lines: opening the cache with other settings
raises ``UnmaskError`` instead of silently mixing results.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from unmask.cache import WEIGHTS, file_stamp
from unmask.errors import UnmaskError
from unmask.io import write_json_atomic, write_text_atomic


def read_jsonl(path: str | Path) -> dict:
    """``{key: item}`` of a cache file, read-only (no settings check); torn lines skipped, a missing file
    is empty. A key written twice keeps its last item."""
    items: dict = {}
    p = Path(path)
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            items[item["key"]] = item
    return items


def weights_stamp(model_dir: str | Path) -> str:
    """``unmask.cache.file_stamp`` (size and mtime) of a model directory's weights, for cache settings: a
    retrained model invalidates its caches. Not ``model_fingerprint`` (which also hashes config.json): the
    caches on disk were written with this format."""
    return file_stamp(Path(model_dir) / WEIGHTS)


def _differing(old: dict, new: dict) -> list[str]:
    return sorted(k for k in {*old, *new} if old.get(k, "<absent>") != new.get(k, "<absent>"))


class JsonlCache:
    """The items of ``path`` made with ``config`` (a JSON-able dict); ``append`` adds finished ones."""

    def __init__(self, path: str | Path, config: dict) -> None:
        self.path = Path(path)
        self.config_path = self.path.with_suffix(".config.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(config))  # as it reads back (tuples -> lists, int keys -> str)
        if self.config_path.is_file():
            try:
                old = json.loads(self.config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise UnmaskError(f"{self.config_path}: unreadable settings of the cache {self.path} ({e}); "
                                  f"delete both files to start that cache over") from None
            if old != config:
                keys = _differing(old, config) if isinstance(old, dict) else ["<all>"]
                detail = "; ".join(f"{k}: {old.get(k, '<absent>')!r} -> {config.get(k, '<absent>')!r}"
                                   for k in keys) if isinstance(old, dict) else f"{old!r} -> {config!r}"
                raise UnmaskError(
                    f"{self.path} was made with other settings (differing: {', '.join(keys)}; {detail}). "
                    f"Delete it and {self.config_path.name} to redo it with the new settings, or write the "
                    f"cache to another directory")
        else:
            write_json_atomic(self.config_path, config)
        self.items: dict = read_jsonl(self.path)
        self._repair()

    def _repair(self) -> None:
        """Rewrite the file without a torn tail so appends start on a fresh line."""
        if self.path.is_file():
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                write_text_atomic(self.path, "".join(json.dumps(v) + "\n" for v in self.items.values()))

    def __contains__(self, key) -> bool:
        return key in self.items

    def __len__(self) -> int:
        return len(self.items)

    def missing(self, keys: Iterable) -> list:
        """The ``keys`` not cached yet, in their order."""
        return [k for k in keys if k not in self.items]

    def append(self, records: list[dict]) -> None:
        """Write ``records`` (each with a ``"key"``) and fsync: they survive a kill once this returns."""
        if bad := [r for r in records if not isinstance(r, dict) or "key" not in r]:
            raise UnmaskError(f"{self.path}: a cache record needs a 'key' (got {bad[0]!r:.200})")
        lines = "".join(json.dumps(r) + "\n" for r in records)  # all serialised before anything is written
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            self.items[r["key"]] = r
