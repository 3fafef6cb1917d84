"""Parquet output written chunk by chunk: a directory of part files and a manifest.

``OUT/part-000012.parquet`` holds every (example, method) row of chunk 12 (examples 12*B .. 13*B-1). A part
is written to a hidden temporary file, fsynced and renamed into place, and the directory is fsynced: a
part either exists whole or not at all. A run killed at any point loses at most the chunks it was
computing; a rerun computes exactly the chunks whose part is missing (names are fixed by chunk index, so
nothing is ever duplicated). ``OUT/_manifest.json`` records the settings (model, methods, batch size,
data fingerprint): a rerun with other settings is refused instead of mixing results. Readers
(``pyarrow.parquet.read_table(OUT)``, pandas, Spark, DuckDB) skip the ``_``/``.`` files.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from unmask.errors import UnmaskError

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST = "_manifest.json"
PART = re.compile(r"part-(\d{6})\.parquet")


@lru_cache(maxsize=1)
def schema() -> "pa.Schema":
    """The columns of every part (pyarrow is imported here: the ``dataset`` extra)."""
    import pyarrow as pa

    return pa.schema([
        ("index", pa.int64()), ("text", pa.string()), ("pair", pa.string()), ("label", pa.int64()),
        ("method", pa.string()), ("tokens", pa.list_(pa.string())), ("scores", pa.list_(pa.float64())),
        ("target", pa.int64()), ("target_name", pa.string()), ("prediction", pa.int64()),
        ("probabilities", pa.list_(pa.float64())), ("params", pa.string()), ("extras", pa.string()),
    ])


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class PartStore:
    """The output directory of one run (see the module docstring)."""

    def __init__(self, out: str | Path, settings: dict) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise UnmaskError(f"{self.out} exists and is not a results directory (unmask writes a directory of "
                              f"Parquet parts there); give a new --out")
        manifest = self.out / MANIFEST
        if self.out.is_dir() and any(self.out.iterdir()) and not manifest.is_file():
            raise UnmaskError(f"{self.out} is a non-empty directory without {MANIFEST}; give a new --out")
        self.out.mkdir(parents=True, exist_ok=True)
        if manifest.is_file():
            try:
                old = json.loads(manifest.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise UnmaskError(f"{manifest}: broken manifest: {e.msg}") from None
            differ = sorted(k for k in set(old["settings"]) | set(settings) if old["settings"].get(k) != settings.get(k))
            if differ:
                raise UnmaskError(f"{self.out} was started with other settings ({', '.join(differ)} differ); "
                                  f"resume with the same ones or give a new --out")
        else:
            self._write_manifest({"settings": settings, "complete": False})
        self.settings = settings
        for stale in self.out.glob(".part-*.tmp"):  # a part whose writer was killed mid-write
            stale.unlink(missing_ok=True)

    def _write_manifest(self, content: dict) -> None:
        _write_durable(self.out / MANIFEST, (json.dumps(content, indent=2) + "\n").encode("utf-8"))

    def done(self) -> set[int]:
        """Chunk indices whose part file exists."""
        return {int(m.group(1)) for p in self.out.iterdir() if (m := PART.fullmatch(p.name))}

    def write(self, chunk: int, table: "pa.Table") -> Path:
        """Write chunk ``chunk``'s rows as one part, durably and atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table.cast(schema()), sink)
        path = self.out / f"part-{chunk:06d}.parquet"
        _write_durable(path, sink.getvalue().to_pybytes())
        return path

    def finish(self, examples: int, rows: int) -> None:
        self._write_manifest({"settings": self.settings, "complete": True, "examples": examples, "rows": rows})


def read_results(out: str | Path) -> "pa.Table":
    """All rows of a results directory, in chunk order (example index, then method order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(p for p in Path(out).iterdir() if PART.fullmatch(p.name))
    if not parts:
        return schema().empty_table()
    return pa.concat_tables([pq.read_table(p, schema=schema()) for p in parts])
