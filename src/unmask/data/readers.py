"""Readers for the bundled data (SST-2, RTE, stop words) and for user CSV / TSV / JSONL files."""
from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from unmask.errors import UnmaskError

TASKS = ("sst2", "rte")
SPLITS = ("train", "dev")


@dataclass(frozen=True)
class Example:
    """One labelled input: a sentence, or a sentence pair (premise ``text``, hypothesis ``pair``)."""

    text: str
    label: int
    pair: str | None = None


def _bundled(*parts: str) -> resources.abc.Traversable:
    return resources.files("unmask.data").joinpath("files", *parts)


def _read_rows(text: str, path: str, delimiter: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_NONE)
    if not reader.fieldnames:
        raise UnmaskError(f"{path}: empty file, expected a header row")
    return list(reader)


def _rows_to_examples(rows: list[dict[str, str]], path: str, text_col: str, pair_col: str | None,
                      label_col: str) -> list[Example]:
    if not rows:
        return []
    have = set(rows[0])
    need = {text_col, label_col} | ({pair_col} if pair_col else set())
    if missing := need - have:
        raise UnmaskError(f"{path}: missing column(s) {sorted(missing)}; found {sorted(have)}")
    out = []
    for i, row in enumerate(rows):
        try:
            label = int(row[label_col])
        except (TypeError, ValueError):
            raise UnmaskError(f"{path}: row {i + 2}: label {row[label_col]!r} is not an integer") from None
        out.append(Example(row[text_col], label, row[pair_col] if pair_col else None))
    return out


def load_task(task: str, split: str, limit: int | None = None) -> list[Example]:
    """Bundled SST-2 (``label, sentence``) or RTE (``sentence1, sentence2, label``; 0 = entailment)."""
    if task not in TASKS:
        raise UnmaskError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if split not in SPLITS:
        raise UnmaskError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    examples = _load_task_cached(task, split)
    return list(examples[:limit] if limit else examples)


@lru_cache(maxsize=None)
def _load_task_cached(task: str, split: str) -> tuple[Example, ...]:
    raw = gzip.decompress(_bundled(task, f"{split}.tsv.gz").read_bytes()).decode("utf-8")
    rows = _read_rows(raw, f"{task}/{split}", "\t")
    if task == "sst2":
        text_col = "sentence" if "sentence" in rows[0] else "content"
        return tuple(_rows_to_examples(rows, f"{task}/{split}", text_col, None, "label"))
    return tuple(_rows_to_examples(rows, f"{task}/{split}", "sentence1", "sentence2", "label"))


def read_examples(path: str | Path, text_col: str = "text", label_col: str = "label",
                  pair_col: str | None = None) -> list[Example]:
    """Read a user file: ``.tsv``, ``.csv`` or ``.jsonl`` with a text and an integer label column."""
    p = Path(path)
    if not p.is_file():
        raise UnmaskError(f"data file not found: {p}")
    raw = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(raw.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UnmaskError(f"{p}: line {i + 1} is not JSON: {e.msg}") from None
    elif p.suffix in (".tsv", ".csv"):
        rows = _read_rows(raw, str(p), "\t" if p.suffix == ".tsv" else ",")
    else:
        raise UnmaskError(f"{p}: unsupported file type {p.suffix!r}; use .tsv, .csv or .jsonl")
    return _rows_to_examples(rows, str(p), text_col, pair_col, label_col)


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """NLTK's English stop-word list (179 words), as the Facade paper uses it."""
    words = _bundled("stopwords_en.txt").read_text(encoding="utf-8").split()
    return frozenset(w.strip().lower() for w in words if w.strip())
