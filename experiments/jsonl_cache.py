"""Append-only JSONL caches so long experiment runs resume after a kill.

One line per finished item (``{"key": ..., ...}``), flushed and fsynced after each append; a torn last
line (kill during a write) is ignored on reading. A sidecar ``.config.json`` pins the settings that
produced the lines: resuming with different settings is refused instead of silently mixing results.
Fingerprints come from the library (``unmask.cache``), which the Facade pipeline uses too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from unmask.cache import WEIGHTS, file_stamp


def read_jsonl(path: str | Path) -> dict:
    """``{key: item}`` of a cache file, read-only (no settings check); torn lines skipped."""
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


def fingerprint(model_dir: str | Path) -> str:
    """Size and modification time of a model's weights (``unmask.cache.file_stamp``; the format caches
    written before the move into the library used): a retrained model invalidates its caches."""
    return file_stamp(Path(model_dir) / WEIGHTS)


class JsonlCache:
    def __init__(self, path: str | Path, config: dict) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        side = self.path.with_suffix(".config.json")
        if side.is_file():
            old = json.loads(side.read_text())
            if old != json.loads(json.dumps(config)):
                raise SystemExit(f"{self.path} was made with other settings:\n  {old}\nnow:\n  {config}\n"
                                 f"delete it (and {side.name}) or use another --runs directory")
        else:
            tmp = side.with_name(side.name + ".tmp")
            tmp.write_text(json.dumps(config, indent=1))
            os.replace(tmp, side)
        self.items: dict = read_jsonl(self.path)
        self._repair()

    def _repair(self) -> None:
        """Rewrite the file without a torn tail so appends start on a fresh line."""
        if self.path.is_file():
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text("".join(json.dumps(v) + "\n" for v in self.items.values()), encoding="utf-8")
                os.replace(tmp, self.path)

    def __contains__(self, key) -> bool:
        return key in self.items

    def missing(self, keys) -> list:
        return [k for k in keys if k not in self.items]

    def append(self, records: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
                self.items[r["key"]] = r
            f.flush()
            os.fsync(f.fileno())
