"""Dataset-scale attribution: stream examples through methods into resumable Parquet (local or Ray)."""
from unmask.dataset.run import attribute_dataset
from unmask.dataset.source import DataSpec, Item, iter_items
from unmask.dataset.store import read_results

__all__ = ["DataSpec", "Item", "attribute_dataset", "iter_items", "read_results"]
