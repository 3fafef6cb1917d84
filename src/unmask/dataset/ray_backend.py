"""The Ray backend: chunks through ``ray.data`` ``map_batches`` with an actor pool, one model per actor.

Each chunk is one row of a Ray dataset (its examples as JSON); an actor (``_RayExplainer``: the model is
loaded once in its constructor) turns it into result rows; the driver collects each chunk's rows and
writes its part through the same ``PartStore`` as the local backend, so outputs are identical and resume
the same way. The results come back to the driver, so workers need no shared file system.

On a cluster: ``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the others, then
``unmask attribute-dataset ... --backend ray --address auto --workers N [--gpus-per-worker 1]``.
The model directory must exist at the same path on every node.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from unmask.dataset.source import Item
from unmask.dataset.store import PartStore
from unmask.errors import UnmaskError

if TYPE_CHECKING:
    import pyarrow as pa


class _RayExplainer:
    """Actor body: ``ChunkExplainer`` built once per actor, applied to batches of chunk rows."""

    def __init__(self, model: str, methods: list[str], precision: str | None, threads: int, gpus: float) -> None:
        import torch

        torch.set_num_threads(threads)
        from unmask.dataset.worker import ChunkExplainer

        self.explainer = ChunkExplainer(model, methods, precision)
        if gpus and torch.cuda.is_available():
            self.explainer.model.model.to("cuda")

    def __call__(self, batch: dict) -> "pa.Table":
        import pyarrow as pa

        tables = []
        for k, payload in zip(batch["chunk"], batch["items"]):
            items = [Item(**d) for d in json.loads(payload)]
            t = self.explainer(items)
            t = t.append_column("chunk", pa.array([int(k)] * len(t), pa.int64()))
            tables.append(t.append_column("position", pa.array(range(len(t)), pa.int64())))
        return pa.concat_tables(tables)


def run_on_ray(pending: Iterator[tuple[int, list[Item]]], store: PartStore, model: str, methods: Sequence[str],
               precision: str | None, workers: int, methods_per_example: int, written: Callable[[int, int], None],
               address: str | None = None, gpus_per_worker: float = 0, threads: int = 1) -> None:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import ray
        import ray.data
    except ImportError:
        raise UnmaskError("--backend ray needs Ray: pip install 'ray[data]' (or the 'dataset' extra)") from None
    todo = {k: items for k, items in pending}
    if not todo:
        return
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # unmask's own bar counts examples
    ds = ray.data.from_items([{"chunk": k, "items": json.dumps([it.__dict__ for it in items])}
                              for k, items in sorted(todo.items())], override_num_blocks=len(todo))
    out = ds.map_batches(_RayExplainer, batch_size=1, batch_format="numpy",
                         fn_constructor_args=(model, list(methods), precision, threads, gpus_per_worker),
                         compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
                         num_gpus=gpus_per_worker or None)
    buffers: dict[int, list["pa.Table"]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        for k in set(batch.column("chunk").to_pylist()):
            rows = batch.filter(pc.equal(batch.column("chunk"), k))
            buffers[k].append(rows)
            counts[k] += len(rows)
            if counts[k] == len(todo[k]) * methods_per_example:
                table = pa.concat_tables(buffers.pop(k)).sort_by("position").drop_columns(["chunk", "position"])
                store.write(k, table)
                written(k, len(todo[k]))
