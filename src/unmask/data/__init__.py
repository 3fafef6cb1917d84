"""Data: bundled SST-2 / RTE, stop words, user files, and synthetic tasks."""
from unmask.data.readers import Example, load_task, pairs_of, read_examples, stopwords, task_or_file

__all__ = ["Example", "load_task", "pairs_of", "read_examples", "stopwords", "task_or_file"]
