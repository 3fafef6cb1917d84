"""Arguments and output conventions shared by several commands (no command of its own)."""
from __future__ import annotations

import argparse


def add_data_arguments(p: argparse.ArgumentParser, files: str, label_use: str) -> None:
    """``--data`` (a bundled task or a file of type ``files``), ``--split`` and a data file's column names."""
    p.add_argument("--data", required=True, help=f"sst2 or rte (bundled, --split) or a {files} file")
    p.add_argument("--split", choices=["dev", "train"], default="dev", help="split of a bundled task (default dev)")
    p.add_argument("--text-column", default="text", help="text column of a --data file")
    p.add_argument("--pair-column", default=None, help="second-sentence column of a --data file")
    p.add_argument("--label-column", default="label", help=f"label column of a --data file ({label_use})")
