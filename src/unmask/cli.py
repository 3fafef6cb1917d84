"""``unmask`` command line: train, explain, facade, reduce/hotflip/triggers, diffmask, demo.

Long-running commands show progress bars that --quiet turns off; commands that produce results take
--json PATH, and with --json - print only JSON on stdout (status lines go to stderr)."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from unmask.errors import UnmaskError

COMMANDS: dict[str, tuple[str, str, Callable[[argparse.Namespace], int]]] = {}  # name -> (help, epilog, run)


def command(name: str, help: str, epilog: str = ""):
    """Register the runner of sub-command ``name`` (its arguments come from ``commands.builder``)."""
    def wrap(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, epilog, run)
        return run
    return wrap


def _import_commands() -> None:
    from unmask import commands  # noqa: F401  (registers sub-commands)


def build_parser() -> argparse.ArgumentParser:
    _import_commands()
    parser = argparse.ArgumentParser(prog="unmask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = parser.add_subparsers(dest="command", required=True)
    from unmask.commands import BUILDERS

    for name, (help_text, epilog, _) in COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        BUILDERS[name](sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from unmask.commands.common import json_on_stdout, quiet_libraries

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # `--json -`: stdout carries the JSON only; `--quiet`: no progress bar, also none of the libraries'
        with json_on_stdout(getattr(args, "json", None)), quiet_libraries(getattr(args, "quiet", False)):
            return COMMANDS[args.command][2](args) or 0
    except UnmaskError as e:
        print(f"unmask {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout piped into a reader that stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":  # `python -m unmask.cli`: commands register in the imported module
    from unmask.cli import main as _main

    sys.exit(_main())
