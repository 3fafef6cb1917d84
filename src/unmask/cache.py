"""Fingerprints of the inputs a cached result was made from, and ``stage.json`` records that keep them.

A cache entry is valid only for the inputs that produced it: the model weights (``model_fingerprint``),
the settings (``settings_fingerprint``: sha256 of their canonical JSON) and the data slice
(``data_fingerprint``). ``inputs_fingerprint`` combines named parts into one key. A stage directory
(a trained model, a merged model) records its key in ``stage.json``; ``stage_state`` tells whether the
directory was finished for the same inputs, is half-way for them (resume), or is stale.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from unmask.errors import UnmaskError
from unmask.io import write_json_atomic

STAGE_FILE = "stage.json"
WEIGHTS = "model.safetensors"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value) -> str:
    """Deterministic JSON: sorted keys, no spaces; dataclasses as dicts, tuples as lists, paths as strings."""
    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.asdict(v)
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (set, frozenset)):
            return sorted(v, key=repr)
        raise TypeError(f"cannot fingerprint a {type(v).__name__}: {v!r}")

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=plain, allow_nan=True)


class _FieldsOmittedAtDefault:
    """A dataclass's ``__dataclass_fields__``: every field on the class; on an instance, every field except
    those that hold their default while their ``when`` predicate holds. ``dataclasses.fields`` of an instance,
    and so ``asdict``, ``replace`` and ``canonical_json``, read the instance's view (an omitted field is at its
    default, so ``replace`` rebuilds it exactly)."""

    def __init__(self, fields: dict, when: dict) -> None:
        self.fields, self.when = fields, when

    def __get__(self, obj, cls=None):
        if obj is None:
            return self.fields
        return {k: f for k, f in self.fields.items()
                if not (k in self.when and getattr(obj, k) == f.default and self.when[k](obj))}


def omit_at_default(**when):
    """Class decorator (above ``@dataclass``): leave field ``name`` out of ``asdict`` (so out of a run's
    settings, ``canonical_json`` and every fingerprint of them) while it holds its default value and, if
    ``when[name]`` is a predicate rather than ``True``, ``when[name](obj)`` holds (e.g. "its term is off").

    For fields added to a settings dataclass after runs, checkpoints or caches were keyed on it: at the
    default the new field changes nothing, so the old keys stay valid (older checkpoints resume, cached stages
    are reused), and a field that is used is always recorded with its value (a later change of its default
    cannot alias two configurations that differ in effect). Used by ``FacadeObjective`` and
    ``UnmergedConfig``.
    """
    bad = [n for n, w in when.items() if w is not True and not callable(w)]
    if bad:
        raise TypeError(f"omit_at_default: give True or a predicate for {bad}")
    predicates = {n: (_always if w is True else w) for n, w in when.items()}

    def wrap(cls):
        fields = cls.__dict__["__dataclass_fields__"]
        unknown = [n for n in predicates if n not in fields]
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {unknown}")
        cls.__dataclass_fields__ = _FieldsOmittedAtDefault(fields, predicates)
        return cls
    return wrap


def _always(obj) -> bool:
    return True


def settings_fingerprint(settings) -> str:
    """sha256 of the canonical JSON of ``settings`` (a dict, a dataclass, lists of them ...)."""
    return _sha256(canonical_json(settings).encode())


def file_stamp(path: str | Path) -> str:
    """``"size:mtime_ns"`` of a file (``"missing"`` if absent): cheap, changes whenever the file is rewritten."""
    p = Path(path)
    if not p.is_file():
        return "missing"
    st = p.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(model_dir: str | Path, content: bool = False) -> str:
    """Fingerprint of a saved model: hash of ``config.json`` and of the weights' size + mtime (or, with
    ``content=True``, of the weights' bytes: survives copying, costs a full read)."""
    d = Path(model_dir)
    config, weights = d / "config.json", d / WEIGHTS
    if not config.is_file() or not weights.is_file():
        raise UnmaskError(f"{d}: no saved model to fingerprint (needs config.json and {WEIGHTS})")
    stamp = f"sha256:{file_digest(weights)}" if content else file_stamp(weights)
    return settings_fingerprint({"config": _sha256(config.read_bytes()), "weights": stamp})


def data_fingerprint(texts: Iterable, labels: Iterable | None = None, pairs: Iterable | None = None) -> str:
    """Fingerprint of a data slice: the texts (or ``Example``s, whose text / pair / label are used), pairs
    and labels, in order."""
    texts = list(texts)
    if texts and all(hasattr(t, "text") for t in texts):
        rows = [[e.text, getattr(e, "pair", None), getattr(e, "label", None)] for e in texts]
    else:
        labels = list(labels) if labels is not None else [None] * len(texts)
        pairs = list(pairs) if pairs is not None else [None] * len(texts)
        if len(labels) != len(texts) or len(pairs) != len(texts):
            raise UnmaskError(f"data fingerprint: {len(texts)} texts, {len(pairs)} pairs, {len(labels)} labels")
        rows = [list(r) for r in zip(texts, pairs, labels)]
    return settings_fingerprint(rows)


def inputs_fingerprint(**parts) -> str:
    """One key from named parts (fingerprints, settings, anything JSON-able)."""
    return settings_fingerprint(parts)


# ------------------------------------------------------------------------------------- stage records
def read_stage(directory: str | Path) -> dict | None:
    """The ``stage.json`` of ``directory`` (``None`` if absent or unreadable)."""
    p = Path(directory) / STAGE_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_stage(directory: str | Path, fingerprint: str, inputs: dict, done: bool) -> Path:
    """Record which inputs the stage in ``directory`` is (``done=False``: being) made from."""
    return write_json_atomic(Path(directory) / STAGE_FILE,
                             {"fingerprint": fingerprint, "done": bool(done), "inputs": inputs})


def stage_state(directory: str | Path, fingerprint: str) -> str:
    """``"done"`` (finished for these inputs), ``"partial"`` (started for them: resume), ``"stale"`` (made
    from other inputs, or with no record of them) or ``"absent"`` (nothing there)."""
    d = Path(directory)
    if not d.exists() or not any(d.iterdir()):
        return "absent"
    record = read_stage(d)
    if record is None or record.get("fingerprint") != fingerprint:
        return "stale"
    return "done" if record.get("done") else "partial"


def changed_inputs(old: dict | None, new: dict) -> str:
    """Which named inputs differ between a stage's ``stage.json`` record and the current ones (for log lines)."""
    if not old or "inputs" not in old:
        return "no record of its inputs"
    keys = sorted(k for k in {*old["inputs"], *new} if old["inputs"].get(k) != new.get(k))
    return "changed: " + ", ".join(keys)
