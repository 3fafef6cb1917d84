"""README.md's ``unmask`` command lines must name sub-commands and flags the CLI has (no model needed).

Every ``unmask ...`` line of a shell code block and every inline ``unmask ...`` / ``facade ...`` code span is
checked: the sub-command (and nested sub-command) exists, each ``--flag`` exists there, values of flags with
choices are among them, and a line without an ellipsis parses as a whole with the real parser (placeholders
such as N or SEED stand for a number where the flag takes one). Synopsis notation is understood: ``[...]``
marks optional parts, ``a|b`` alternatives (each alternative sub-command is checked), ``...`` "more here".
The same check runs over the examples in every command's ``--help`` epilog, and every ``runs/`` model directory
a README command reads must be written (``--out``) by some README command.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from unmask.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # N, SEED, SCALE, DIR, OUT, F_ORIG, ...


def _fence_commands(text: str) -> list[str]:
    """``unmask`` lines of bash / sh / untyped code blocks."""
    blocks, lines, in_block, lang = [], [], False, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if in_block and lang in ("bash", "sh", "shell", "console", ""):
                blocks.append(lines)
            in_block, lang, lines = not in_block, stripped[3:].strip(), []
        elif in_block:
            lines.append(line)
    return [c for block in blocks for c in _shell_commands(block)]


def _shell_commands(lines: list[str]) -> list[str]:
    """The ``unmask ...`` commands of shell lines: continuations joined, comments dropped, split at ; && |."""
    out, pending = [], ""
    for line in lines:
        line = (pending + " " + line.strip()) if pending else line.strip()
        if line.endswith("\\"):
            pending = line[:-1].strip()
            continue
        pending = ""
        for part in re.split(r";|&&|\s\|\s", _drop_comment(line)):
            part = part.strip().removeprefix("$ ").strip()
            if part.startswith("unmask "):
                out.append(part)
    return out


def _drop_comment(line: str) -> str:
    """The line up to an unquoted ``#`` that starts a word."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _inline_commands(text: str) -> list[str]:
    """Inline code spans outside code blocks that are command lines: ``unmask X ...`` or ``facade X ...``."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = re.findall(r"(?<!`)`([^`]+)`(?!`)", prose)
    out = []
    for span in spans:
        span = " ".join(span.split())  # a span may wrap over lines
        if re.match(r"^unmask [a-z]", span):
            out.append(span)
        elif re.match(r"^facade [a-z]", span):  # the attack-variants table names `facade ...` sub-commands
            out.append("unmask " + span)
    return out


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return _fence_commands(text) + _inline_commands(text)


def epilog_commands() -> list[tuple[str, str]]:
    """(where, command) for the ``unmask ...`` example lines in every command's and sub-command's epilog."""
    out = []
    for path, p in _all_parsers(build_parser(), ("unmask",)):
        out.extend((" ".join(path), c) for c in _shell_commands((p.epilog or "").splitlines()))
    return out


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _all_parsers(p: argparse.ArgumentParser, path: tuple[str, ...]):
    yield path, p
    for name, sub in _subparsers(p).items():
        yield from _all_parsers(sub, path + (name,))


def _words(command: str) -> list[str]:
    """Shell words, synopsis brackets dropped: "[--limit N]" -> "--limit", "N"."""
    return [w for w in (w.strip("[]") for w in shlex.split(command)) if w]


def check(command: str, parser: argparse.ArgumentParser | None = None) -> list[str]:
    """What is wrong with one command line (empty: nothing)."""
    parser = parser or build_parser()
    words = _words(command)
    assert words[0] == "unmask", command
    problems: list[str] = []
    _check_words(words[1:], parser, "unmask", problems, command)
    return problems


def _check_words(words: list[str], p: argparse.ArgumentParser, where: str, problems: list[str],
                 command: str) -> None:
    subs = _subparsers(p)
    if subs:
        if not words:
            problems.append(f"{command!r}: {where} needs a sub-command")
            return
        for name in words[0].split("|"):  # "reduce|hotflip|triggers": each must exist
            if name not in subs:
                problems.append(f"{command!r}: no sub-command {where} {name!r} (has {', '.join(subs)})")
            else:
                _check_words(words[1:], subs[name], f"{where} {name}", problems, command)
        return
    options = p._option_string_actions
    ellipsis = any(w in ("...", "…") for w in words)
    concrete: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            flag, eq, inline_value = w.partition("=")
            action = options.get(flag)
            if action is None:
                problems.append(f"{command!r}: {where} has no option {flag}")
                i += 1
                continue
            concrete.append(flag)
            if action.nargs == 0:
                i += 1
                continue
            value = inline_value if eq else (words[i + 1] if i + 1 < len(words) else None)
            i += 1 if eq else 2
            if value is None or value in ("...", "…"):
                if not ellipsis:
                    problems.append(f"{command!r}: {where} {flag} needs a value")
                continue
            alternatives = value.split("|")
            if action.choices is not None:
                bad = [a for a in alternatives if not PLACEHOLDER.match(a) and a not in action.choices]
                if bad:
                    problems.append(f"{command!r}: {where} {flag} {'|'.join(bad)} not among "
                                    f"{sorted(action.choices)}")
            concrete.append(_sample_value(alternatives[0], action))
        else:
            concrete.append(w)
            i += 1
    if ellipsis or problems or not words or "--help" in words:  # "unmask audit" alone: a mention
        return
    try:  # the whole line, with the real parser (required options, positionals, types)
        _parse(p, concrete)
    except _ParseError as e:
        problems.append(f"{command!r}: {where}: {e}")


def _sample_value(value: str, action: argparse.Action) -> str:
    """A placeholder (N, SEED, SCALE) becomes a number for a numeric flag, a choice for a choice flag."""
    if not PLACEHOLDER.match(value):
        return value
    if action.choices is not None:
        return str(next(iter(action.choices)))
    if action.type is int:
        return "1"
    if action.type is float:
        return "1.0"
    return value


class _ParseError(Exception):
    pass


def _parse(p: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    def fail(message: str):
        raise _ParseError(message)

    old = p.error
    p.error = fail  # type: ignore[method-assign]
    try:
        return p.parse_args([w for w in words if w not in ("...", "…")])
    finally:
        p.error = old  # type: ignore[method-assign]


# ----------------------------------------------------------------------------------------------- tests
def test_the_readme_has_commands_to_check():
    commands = readme_commands()
    assert len(commands) >= 20, commands
    names = {c.split()[1] for c in commands}
    assert {"audit", "train", "explain", "facade", "serve", "attribute-dataset", "evaluate-methods"} <= names


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_matches_the_cli(command):
    assert check(command) == []


@pytest.mark.parametrize("where, command", epilog_commands())
def test_help_example_matches_the_cli(where, command):
    assert check(command) == [], where


@pytest.mark.parametrize("command, problem", [
    ("unmask explian x", "no sub-command unmask 'explian'"),
    ("unmask explain x --metod gradient", "has no option --metod"),
    ("unmask facade merj --model a", "no sub-command unmask facade 'merj'"),
    ("unmask evaluate-methods --model M --data sst2 --mode remove|delete", "--mode delete not among"),
    ("unmask audit --n 3", "the following arguments are required: model"),
    ("unmask facade train --model M --task sst2 --out D --steps many", "invalid int value: 'many'"),
    ("unmask reduce|hotfilp ...", "no sub-command unmask 'hotfilp'"),
])
def test_the_check_itself_catches_drift(command, problem):
    problems = check(command)
    assert any(problem in p for p in problems), problems


def test_synopsis_notation_is_understood():
    assert check("unmask evaluate-methods --model DIR --data sst2|rte|FILE --n 200 [--methods a,b] "
                 "[--mode remove|mask] [--json OUT|-] [--quiet]") == []
    assert check("unmask facade merge ... --permute SEED --noise SCALE") == []
    assert _fence_commands("```bash\nunmask audit x --n 3   # note\nls; unmask explain \\\n  a --json -\n```\n"
                           "```python\nunmask.audit(m)\n```\n") == ["unmask audit x --n 3",
                                                                   "unmask explain a --json -"]


INPUT_FLAGS = ("--model", "--facade", "--compare", "--distill", "--diffmask")


def _paths(command: str) -> tuple[set[str], set[str]]:
    """(model directories the command reads, directories it writes with --out), as written under runs/."""
    words = _words(command)
    reads, writes = set(), set()
    for flag, value in zip(words, words[1:]):
        value = value.partition("=")[2] if flag == "--model" and "=" in value else value  # NAME=DIR
        if flag in INPUT_FLAGS:
            reads.add(value)
        elif flag == "--out":
            writes.add(value)
    if words[1] == "audit" or words[1:3] == ["facade", "conceal"]:  # the model is the first positional
        rest = words[2 if words[1] == "audit" else 3:]
        if rest and not rest[0].startswith("-"):
            reads.add(rest[0])
    return {p for p in reads if p.startswith("runs/")}, {p for p in writes if p.startswith("runs/")}


def test_every_runs_directory_the_readme_reads_is_made_by_a_readme_command():
    reads, writes = set(), set()
    for command in readme_commands():
        r, w = _paths(command)
        reads |= r
        writes |= w
    assert {"runs/sst2", "runs/rte", "runs/facade/sst2/merged_stop"} <= reads
    assert reads <= writes, f"read but made by no README command: {sorted(reads - writes)}"
