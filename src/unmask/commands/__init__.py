"""CLI sub-commands: every module in this package registers its commands when imported.

Add a command by adding a module with a ``@builder(name)`` argument builder and a ``@command(name, ...)``
runner (see ``train_cmd.py``); it is discovered automatically.
"""
import argparse
import importlib
import pkgutil
from collections.abc import Callable

BUILDERS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def builder(name: str):
    def wrap(fn):
        BUILDERS[name] = fn
        return fn
    return wrap


for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
