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


def pairs_of(examples: list[Example]) -> list[str | None] | None:
    """The second segments of ``examples``, or None for a single-sentence task (as ``encode`` takes them)."""
    return [e.pair for e in examples] if examples and examples[0].pair is not None else None


def _bundled(*parts: str) -> resources.abc.Traversable:
    return resources.files("unmask.data").joinpath("files", *parts)


def _read_rows(text: str, path: str, delimiter: str) -> list[dict[str, str]]:
    """TSV as GLUE writes it (quotes are literal text); CSV with standard quoting ("a, b" is one field)."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    if not reader.fieldnames:
        raise UnmaskError(f"{path}: empty file, expected a header row")
    return list(reader)


def _label(value, where: str) -> int:
    """An integer label: int, integral float, or a string of digits (not bool, not 1.5)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise UnmaskError(f"{where}: label {value!r} is not an integer")


def _rows_to_examples(rows: list, path: str, text_col: str, pair_col: str | None,
                      label_col: str, line_numbers: list[int] | None = None) -> list[Example]:
    """Check every row (columns present, strings, integer label); rows are named by file line."""
    if not rows:
        return []
    need = {text_col, label_col} | ({pair_col} if pair_col else set())
    if isinstance(rows[0], dict) and (missing := need - set(rows[0])):
        raise UnmaskError(f"{path}: missing column(s) {sorted(missing)}; found {sorted(rows[0])}")
    out = []
    for i, row in enumerate(rows):
        where = f"{path}: line {line_numbers[i]}" if line_numbers else f"{path}: row {i + 2}"
        if not isinstance(row, dict):
            raise UnmaskError(f"{where}: expected an object with {sorted(need)}, got {type(row).__name__}")
        if missing := need - set(row):
            raise UnmaskError(f"{where}: missing column(s) {sorted(missing)}")
        for col in (text_col, pair_col) if pair_col else (text_col,):
            if not isinstance(row[col], str):
                raise UnmaskError(f"{where}: {col} {row[col]!r} is not a string")
        out.append(Example(row[text_col], _label(row[label_col], where), row[pair_col] if pair_col else None))
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
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UnmaskError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    lines = None
    if p.suffix == ".jsonl":
        rows, lines = [], []
        for i, line in enumerate(raw.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UnmaskError(f"{p}: line {i + 1} is not JSON: {e.msg}") from None
                lines.append(i + 1)
    elif p.suffix in (".tsv", ".csv"):
        rows = _read_rows(raw, str(p), "\t" if p.suffix == ".tsv" else ",")
    else:
        raise UnmaskError(f"{p}: unsupported file type {p.suffix!r}; use .tsv, .csv or .jsonl")
    return _rows_to_examples(rows, str(p), text_col, pair_col, label_col, lines)


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """NLTK's English stop-word list (179 words), as the Facade paper uses it."""
    words = _bundled("stopwords_en.txt").read_text(encoding="utf-8").split()
    return frozenset(w.strip().lower() for w in words if w.strip())


def task_or_file(data: str, limit: int | None = None, split: str = "dev", text_col: str = "text",
                 label_col: str = "label", pair_col: str | None = None) -> list[Example]:
    """``data`` = a bundled task name (its ``split``) or a user file; the first ``limit`` examples.

    One clear error for a non-positive ``limit`` or no examples."""
    if limit is not None and limit < 1:
        raise UnmaskError(f"the number of inputs must be positive, got {limit}")
    if data in TASKS:
        examples = load_task(data, split, limit=limit)
    else:
        examples = read_examples(data, text_col, label_col, pair_col)[:limit]
    if not examples:
        raise UnmaskError(f"{data}: no examples")
    return examples
