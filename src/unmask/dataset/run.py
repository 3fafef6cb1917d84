"""``attribute_dataset``: stream a data set through attribution methods into resumable Parquet parts."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from itertools import groupby
from pathlib import Path

from unmask.dataset.source import DataSpec, Item, count_items, iter_items
from unmask.dataset.store import PartStore
from unmask.errors import UnmaskError

BACKENDS = ("local", "ray")


def chunks(spec: DataSpec, batch_size: int, skip: set[int]) -> Iterator[tuple[int, list[Item]]]:
    """``(chunk index, items)`` for every chunk not in ``skip`` (skipped chunks are read, not computed)."""
    for k, group in groupby(iter_items(spec), key=lambda it: it.index // batch_size):
        items = list(group)
        if k not in skip:
            yield k, items


def _model_id(model: str) -> str:
    """What the manifest records as the model: ``"minilm"`` (the bundled encoder) as is, a model directory by
    its content (``model_fingerprint``: config.json and the sha256 of the weights), not its path, so a model
    retrained in place is a different model (the rerun is refused instead of mixing in stale parts) while a
    copied or moved one still resumes. Anything else keeps its resolved path (``load_model`` rejects it)."""
    if model == "minilm":
        return model
    path = Path(model)
    if not path.is_dir():
        return str(path.resolve())
    from unmask.cache import model_fingerprint

    return model_fingerprint(path, content=True)


def attribute_dataset(spec: DataSpec, model: str, methods: Sequence[str], out: str | Path, batch_size: int = 64,
                      backend: str = "local", workers: int = 2, precision: str | None = None,
                      progress: bool = True, address: str | None = None, gpus_per_worker: float = 0,
                      threads_per_worker: int = 1) -> dict:
    """Explain every example of ``spec`` with ``methods`` and write ``out`` (see ``dataset.store``); a rerun
    with the same settings continues where a killed run stopped. Returns counts and the examples/s of this
    run. ``backend="ray"``: chunks go through a Ray actor pool of ``workers`` (one model per actor)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise UnmaskError(f"--batch-size must be positive, got {batch_size}")
    if backend not in BACKENDS:
        raise UnmaskError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise UnmaskError(f"--workers must be positive, got {workers}")
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise UnmaskError("--methods is empty")
    if len(set(methods)) != len(methods):
        raise UnmaskError(f"a method is listed twice: {', '.join(methods)}")
    from unmask.dataset.worker import make_methods

    make_methods(methods, precision)  # unknown method or precision: fail before any work
    total = count_items(spec)
    if total == 0:
        raise UnmaskError(f"{spec.data}: no examples")
    settings = {"model": _model_id(model), "methods": methods, "batch_size": batch_size,
                "precision": precision, "data": spec.fingerprint()}
    store = PartStore(out, settings)
    done = store.done()
    done_examples = sum(min(batch_size, total - k * batch_size) for k in done if k * batch_size < total)
    bar = tqdm(total=total, initial=done_examples, unit="ex", desc="attribute-dataset", disable=not progress,
               smoothing=0.1)
    import time

    start, computed = time.perf_counter(), 0
    pending = chunks(spec, batch_size, done)
    if backend == "local":
        from unmask.dataset.worker import ChunkExplainer

        explainer = ChunkExplainer(model, methods, precision)
        for k, items in pending:
            store.write(k, explainer(items))
            computed += len(items)
            bar.update(len(items))
    else:
        from unmask.dataset.ray_backend import run_on_ray

        def written(k: int, n: int) -> None:
            nonlocal computed
            computed += n
            bar.update(n)

        run_on_ray(pending, store, model, methods, precision, workers, len(methods), written, address,
                   gpus_per_worker, threads_per_worker)
    bar.close()
    seconds = time.perf_counter() - start
    rows = total * len(methods)
    missing = set(range(-(-total // batch_size))) - store.done()
    if missing:
        raise UnmaskError(f"chunks {sorted(missing)[:5]} were not written")
    store.finish(total, rows)
    return {"out": str(store.out), "examples": total, "rows": rows, "computed": computed,
            "resumed_from": done_examples, "seconds": seconds,
            "examples_per_second": computed / seconds if computed and seconds > 0 else None,
            "backend": backend, "workers": workers if backend == "ray" else 1, "pid": os.getpid()}
