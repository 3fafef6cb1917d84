"""One model and its methods, turning a chunk of examples into result rows (local and Ray backends)."""
from __future__ import annotations

import inspect
import json
from collections.abc import Sequence

from typing import TYPE_CHECKING

import numpy as np

from unmask.dataset.source import Item
from unmask.dataset.store import schema
from unmask.errors import UnmaskError

if TYPE_CHECKING:
    import pyarrow as pa


def make_methods(names: Sequence[str], precision: str | None = None) -> list:
    """Method instances by name; ``precision`` goes to every method that takes one."""
    from unmask.attribution import METHODS, get_method

    out = []
    for name in names:
        if name not in METHODS:
            get_method(name)  # the registry's error, listing the methods
        takes = "precision" in inspect.signature(METHODS[name].__init__).parameters
        out.append(get_method(name, **({"precision": precision} if precision and takes else {})))
    return out


def _json(value) -> str:
    def default(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        return repr(v)
    return json.dumps(value, default=default, sort_keys=True)


class ChunkExplainer:
    """``explainer(items)`` -> a table of one row per (example, method), example-major."""

    def __init__(self, model, methods: Sequence[str], precision: str | None = None) -> None:
        if isinstance(model, str):
            from unmask.models import load_model

            model = load_model(model)
        if not methods:
            raise UnmaskError("no attribution method given")
        self.model, self.names = model, list(methods)
        self.methods = make_methods(self.names, precision)

    def __call__(self, items: Sequence[Item]) -> "pa.Table":
        import pyarrow as pa

        from unmask.attribution import explain

        texts = [it.text for it in items]
        pairs = [it.pair for it in items] if items and items[0].pair is not None else None
        results = explain(self.model, texts, methods=self.methods, pairs=pairs)
        keys = list(results)
        cols: dict[str, list] = {f.name: [] for f in schema()}
        for j, it in enumerate(items):
            for key in keys:
                rec = results[key][j]
                for name, value in (("index", it.index), ("text", it.text), ("pair", it.pair),
                                    ("label", it.label), ("method", key), ("tokens", list(rec.tokens)),
                                    ("scores", rec.scores.tolist()), ("target", rec.target),
                                    ("target_name", rec.target_name), ("prediction", rec.prediction),
                                    ("probabilities", list(rec.probabilities)), ("params", _json(rec.params)),
                                    ("extras", _json(rec.extras))):
                    cols[name].append(value)
        return pa.table(cols, schema=schema())
