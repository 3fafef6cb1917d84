"""Stream examples from a bundled task (``sst2`` / ``rte``) or a file (.jsonl, .csv, .tsv, .parquet).

Files are read row by row (Parquet by record batch), never loaded whole; the label column is optional
(attribution explains the model's prediction). Every row must have a non-empty text (and pair text when
a pair column is given): a bad row is an ``UnmaskError`` naming the file and row.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from unmask.errors import UnmaskError

TASKS = ("sst2", "rte")
FILE_TYPES = (".jsonl", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class Item:
    """One example: its 0-based position in the data, text, optional pair text and label."""

    index: int
    text: str
    pair: str | None = None
    label: int | None = None


@dataclass(frozen=True)
class DataSpec:
    """Where the examples come from: ``data`` is a task name or a file path."""

    data: str
    split: str = "dev"
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str | None = "label"
    limit: int | None = None

    def fingerprint(self) -> dict:
        """What identifies the data for a resumed run: task and split, or the file's path, size and mtime."""
        if self.data in TASKS:
            return {"task": self.data, "split": self.split, "limit": self.limit}
        p = Path(self.data)
        st = p.stat()
        return {"file": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "limit": self.limit,
                "text_column": self.text_column, "pair_column": self.pair_column}


def check_spec(spec: DataSpec) -> None:
    if spec.limit is not None and spec.limit < 1:
        raise UnmaskError(f"--limit must be positive, got {spec.limit}")
    if spec.data in TASKS:
        return
    p = Path(spec.data)
    if not p.is_file():
        raise UnmaskError(f"data not found: {spec.data} (give sst2, rte or a .jsonl/.csv/.tsv/.parquet file)")
    if p.suffix not in FILE_TYPES:
        raise UnmaskError(f"{p}: unsupported file type {p.suffix!r}; use {', '.join(FILE_TYPES)}")


def iter_items(spec: DataSpec) -> Iterator[Item]:
    """The examples in order, at most ``spec.limit``."""
    check_spec(spec)
    rows = _task_rows(spec) if spec.data in TASKS else _file_rows(spec)
    return islice(rows, spec.limit)


def count_items(spec: DataSpec) -> int:
    """How many examples ``iter_items`` yields (one streaming pass; Parquet from its metadata)."""
    check_spec(spec)
    if spec.data not in TASKS and Path(spec.data).suffix == ".parquet":
        import pyarrow.parquet as pq

        n = pq.ParquetFile(spec.data).metadata.num_rows
        return min(n, spec.limit) if spec.limit else n
    return sum(1 for _ in iter_items(spec))


def _task_rows(spec: DataSpec) -> Iterator[Item]:
    from unmask.data import load_task

    for i, e in enumerate(load_task(spec.data, spec.split)):
        yield Item(i, e.text, e.pair, e.label)


def _item(spec: DataSpec, index: int, row: dict, where: str) -> Item:
    def text(col: str, what: str) -> str:
        if col not in row:
            raise UnmaskError(f"{where}: no {what} column {col!r} (columns: {', '.join(map(str, row))})")
        value = row[col]
        if not isinstance(value, str) or not value.strip():
            raise UnmaskError(f"{where}: empty or non-text {what} in column {col!r}")
        return value

    label = row.get(spec.label_column) if spec.label_column else None
    try:
        label = int(label) if label not in (None, "") else None
    except (TypeError, ValueError):
        raise UnmaskError(f"{where}: label {label!r} in column {spec.label_column!r} is not an integer") from None
    pair = text(spec.pair_column, "pair text") if spec.pair_column else None
    return Item(index, text(spec.text_column, "text"), pair, label)


def _file_rows(spec: DataSpec) -> Iterator[Item]:
    p = Path(spec.data)
    if p.suffix == ".parquet":
        yield from _parquet_rows(spec, p)
        return
    with open(p, encoding="utf-8", newline="") as f:
        try:
            if p.suffix == ".jsonl":
                index = 0
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UnmaskError(f"{p}: line {n} is not JSON: {e.msg}") from None
                    if not isinstance(row, dict):
                        raise UnmaskError(f"{p}: line {n} is not a JSON object")
                    yield _item(spec, index, row, f"{p}: line {n}")
                    index += 1
            else:
                reader = csv.DictReader(f, delimiter="\t" if p.suffix == ".tsv" else ",")
                for index, row in enumerate(reader):
                    yield _item(spec, index, row, f"{p}: row {index + 2}")
        except UnicodeDecodeError as e:
            raise UnmaskError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def _parquet_rows(spec: DataSpec, p: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(p)
    names = set(f.schema_arrow.names)
    wanted = [c for c in (spec.text_column, spec.pair_column, spec.label_column) if c]
    missing = [c for c in wanted[:2] if c not in names]
    if missing:
        raise UnmaskError(f"{p}: no column {missing[0]!r} (columns: {', '.join(sorted(names))})")
    index = 0
    for batch in f.iter_batches(batch_size=1024, columns=[c for c in wanted if c in names]):
        for row in batch.to_pylist():
            yield _item(spec, index, row, f"{p}: row {index}")
            index += 1
