"""README.md's ``unmask`` commands run as written, on tiny models (about half a minute on one core).

Every ``unmask ...`` line of README.md's shell code blocks (the extraction of ``test_readme_commands``), and every
inline ``unmask ...`` code span that is a command line rather than a fragment (it has a ``--flag`` and no
ellipsis), is run in-process through ``unmask.cli.main`` in a temporary working directory, in README order, except
that a command reading a ``runs/`` model directory runs after the README command that writes it (the audit section
comes before the Quickstart that trains its models). Each must exit 0 and leave the files it names (``--out``,
``--html``, ``--json``, ``--markdown``); ``--json -`` must print one JSON document.

The command line is run verbatim except for the substitutions of ``SUBSTITUTIONS`` below (sizes: steps,
examples, inputs audited; and the base encoder), so that the models the README makes under ``runs/`` are tiny
random BERTs made by the README's own commands. A synopsis (placeholders such as DIR, alternatives ``a|b``,
optional ``[...]`` parts) runs as the one concrete line of ``SYNOPSES``. Commands that cannot run offline in
seconds are in ``SKIPPED`` with the reason; a README command that is neither run nor skipped fails
``test_every_readme_command_is_run_or_skipped``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import time

import pytest

from test_readme_commands import PLACEHOLDER, README, _fence_commands, _inline_commands, _paths

TINY_BASE = "tiny/bert"  # made by the fixture: a 2-layer, 32-hidden random BERT with MiniLM's tokenizer

# The only changes made to a README command line. Sub-command -> {flag: value}: the value replaces the README's
# value of that flag, or the flag is appended when the README line leaves it at its default.
SUBSTITUTIONS: dict[tuple[str, ...], dict[str, str]] = {
    # fine-tuning: the bundled MiniLM (train's default --model "minilm", 22M parameters) -> TINY_BASE;
    # epochs over 67k SST-2 / 2.5k RTE sentences -> 2 steps on the first 64 (an --arch lstm line ignores --model)
    ("train",): {"--model": TINY_BASE, "--max-steps": "2", "--train-limit": "64"},
    ("facade", "train"): {"--steps": "2"},  # 400 steps -> 2
    ("facade", "merge"): {"--check-limit": "16"},  # equivalence check on all 872 dev sentences -> 16
    ("facade", "evaluate"): {"--limit": "8"},  # all 872 dev sentences -> 8
    ("audit",): {"--n": "8"},  # 200 inputs (the default, or README's --n 200) -> 8
    ("evaluate-methods",): {"--n": "8"},  # README's --n 200 -> 8
    ("facade", "finetune-merged"): {"--steps": "2", "--train-limit": "64", "--check-limit": "16"},  # 100 steps -> 2
    ("facade", "train-unmerged"): {"--train-limit": "64"},  # --steps N is a placeholder (SYNOPSES: 2)
}

# A synopsis runs once as one concrete line: an alternative "a|b" takes its first choice, optional "[...]" parts are
# kept, and these words (placeholders; a list: one value per occurrence, in order) are replaced.
SYNOPSES: dict[str, dict[str, str | list[str]]] = {
    "unmask attribute-dataset --data sst2|rte|FILE.jsonl|.csv|.tsv|.parquet --model DIR --methods "
    "gradient,integrated_gradients --out results.parquet [--batch-size 64] [--limit N] [--precision auto] "
    "[--backend local|ray] [--workers 2] [--quiet]": {"DIR": "runs/sst2", "N": "8"},
    "unmask evaluate-methods --model DIR --data sst2|rte|FILE --n 200 [--methods a,b] [--mode remove|mask] "
    "[--json OUT|-] [--markdown OUT] [--quiet]":
        {"DIR": "runs/sst2", "a,b": "gradient,leave_one_out", "OUT": ["methods.json", "methods.md"]},
    "unmask facade conceal MODEL --out DIR --permute SEED":
        {"MODEL": "runs/facade/sst2/merged_stop", "DIR": "runs/facade/sst2/merged_perm", "SEED": "1"},
    "unmask facade finetune-merged --model M --task sst2 --distill F --steps 100 --out DIR":
        {"M": "runs/facade/sst2/merged_stop", "F": "runs/sst2", "DIR": "runs/facade/sst2/merged_tuned"},
    "unmask facade train-unmerged --model F --task sst2 --target stop --out DIR --steps N [--share-cap 0.3]":
        {"F": "runs/sst2", "DIR": "runs/facade/sst2/unmerged_stop", "N": "2"},
}

# README command -> why it is not run here. Every other README command runs.
SKIPPED: dict[str, str] = {
    "unmask reduce|hotflip|triggers ...":
        "a synopsis (alternatives, ellipsis); the concrete examples of each sub-command's --help are checked "
        "by test_readme_commands and the commands run in tests/test_perturbation_cli.py",
    "unmask diffmask train|explain ...":
        "a synopsis (alternatives, ellipsis); runs in tests/test_diffmask_models.py",
    "unmask attribute-dataset --data /shared/big.parquet --model /shared/runs/sst2 --methods gradient,smoothgrad "
    "--out /shared/attr.parquet --backend ray --address auto --workers 8 --gpus-per-worker 1 --batch-size 256":
        "needs a running Ray cluster (--address auto), GPUs and files under /shared; the Ray backend runs on a "
        "local Ray instance in tests/test_attribute_dataset.py",
    "unmask serve --model runs/sst2 --compare runs/facade/sst2/merged_stop":
        "a web server that runs until stopped; tests/test_server.py and tests/test_browser.py run it",
    "unmask demo --json -":
        "make demo's command: minutes on the real MiniLM; tests/test_demo.py runs it on a tiny encoder",
}

OUTPUT_FLAGS = ("--out", "--html", "--json", "--markdown")


def _complete(command: str) -> bool:
    """An inline span that is a command line (possibly a synopsis), not a mention ("unmask audit") or a
    fragment ("unmask facade merge ... --permute SEED")."""
    words = shlex.split(command)
    return any(w.startswith("--") for w in words) and not any(w in ("...", "…") for w in words)


def concrete(command: str) -> str:
    """The line that runs for README line ``command``: itself, or its synopsis made concrete (``SYNOPSES``)."""
    if command not in SYNOPSES:
        return command
    values = {k: list(v) if isinstance(v, list) else v for k, v in SYNOPSES[command].items()}
    words = []
    for word in shlex.split(command):
        word = word.strip("[]")
        word = word.split("|")[0] if "|" in word and not word.startswith("|") else word
        value = values.get(word, word)
        words.append(value.pop(0) if isinstance(value, list) else value)
    return shlex.join(words)


def readme_run_commands() -> list[str]:
    """The README commands this test answers for, in README order, each once."""
    text = README.read_text(encoding="utf-8")
    commands = _fence_commands(text) + [c for c in _inline_commands(text) if _complete(c)]
    return list(dict.fromkeys(commands))


def _sub_command(words: list[str]) -> tuple[str, ...]:
    return tuple(words[1:3]) if words[1] in ("facade", "diffmask") else (words[1],)


def substitute(command: str) -> list[str]:
    """argv (without "unmask") of ``command`` with ``SUBSTITUTIONS`` applied."""
    words = shlex.split(command)
    assert words[0] == "unmask", command
    argv = words[1:]
    for flag, value in SUBSTITUTIONS.get(_sub_command(words), {}).items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def run_order(commands: list[str]) -> list[str]:
    """README order, except that a command reading a runs/ directory waits for the command that writes it."""
    pending, done, written = list(commands), [], set()
    writers = {p for c in commands for p in _paths(c)[1]}
    while pending:
        ready = next((c for c in pending if not ((_paths(c)[0] & writers) - written)), None)
        assert ready is not None, f"no README command writes what these read: {pending}"
        pending.remove(ready)
        done.append(ready)
        written |= _paths(ready)[1]
    return done


def _outputs(argv: list[str]) -> list[str]:
    return [v for f, v in zip(argv, argv[1:]) if f in OUTPUT_FLAGS and v != "-"]


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """command -> (exit code, stdout, stderr, seconds, argv), every runnable README command run once in order."""
    from unmask.cli import main
    from unmask.models.tiny import tiny_classifier

    work = tmp_path_factory.mktemp("readme")
    old = os.getcwd()
    os.chdir(work)
    results = {}
    try:
        tiny_classifier(seed=0).save(TINY_BASE)
        readme_line = {concrete(c): c for c in readme_run_commands() if c not in SKIPPED}
        for line in run_order(list(readme_line)):
            command, argv = readme_line[line], substitute(line)
            out, err = io.StringIO(), io.StringIO()
            started = time.time()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = main(argv)
            except SystemExit as e:  # argparse errors
                code = e.code
            except Exception as e:  # noqa: BLE001 - a crash is a failure of this command, not of the next ones
                code = f"{type(e).__name__}: {e}"
            results[command] = (code, out.getvalue(), err.getvalue(), time.time() - started, argv)
    finally:
        os.chdir(old)
    return work, results


def test_every_readme_command_is_run_or_skipped():
    commands = readme_run_commands()
    fenced = set(_fence_commands(README.read_text(encoding="utf-8")))
    assert fenced <= set(commands)
    assert len(set(commands) - set(SKIPPED)) >= 10, commands
    stale = (set(SKIPPED) | set(SYNOPSES)) - set(commands)
    assert not stale, f"SKIPPED / SYNOPSES entries that are no longer README commands: {sorted(stale)}"
    for command in commands:
        if command not in SKIPPED:
            assert _sub_command(shlex.split(command)) not in (("serve",), ("demo",)), \
                f"{command!r} would not return; add it to SKIPPED"
            words = shlex.split(concrete(command))
            left = [w for w in words if PLACEHOLDER.match(w) or "|" in w or w.startswith("[")]
            assert not left, f"{command!r} is a synopsis: give {left} values in SYNOPSES"


@pytest.mark.parametrize("command", [c for c in readme_run_commands() if c not in SKIPPED])
def test_readme_command_runs_as_written(command, readme_runs):
    work, results = readme_runs
    code, stdout, stderr, seconds, argv = results[command]
    assert code == 0, f"unmask {' '.join(argv)}: exit {code}\n{stderr[-3000:]}"
    for path in _outputs(argv):
        assert (work / path).exists(), f"{command!r} did not write {path}"
        if (work / path).is_dir() and argv[0] in ("train", "facade"):
            assert (work / path / "config.json").exists(), f"{command!r}: no model in {path}"
    if "--json" in argv and argv[argv.index("--json") + 1] == "-":
        json.loads(stdout)  # one JSON document on stdout, nothing else
    if "--list-methods" in argv:
        assert re.search(r"\bintegrated_gradients\b", stdout) and re.search(r"\bgradient_x_input\b", stdout)


def test_substitutions_keep_the_rest_of_the_line():
    assert substitute("unmask audit runs/x --n 200 --html a.html") == ["audit", "runs/x", "--n", "8", "--html",
                                                                       "a.html"]
    assert substitute("unmask facade train --model m --out o") == ["facade", "train", "--model", "m", "--out", "o",
                                                                   "--steps", "2"]
    assert substitute("unmask explain 'a b .' --model m") == ["explain", "a b .", "--model", "m"]
    assert concrete("unmask evaluate-methods --model DIR --data sst2|rte|FILE --n 200 [--methods a,b] "
                    "[--mode remove|mask] [--json OUT|-] [--markdown OUT] [--quiet]") == \
        ("unmask evaluate-methods --model runs/sst2 --data sst2 --n 200 --methods gradient,leave_one_out "
         "--mode remove --json methods.json --markdown methods.md --quiet")
    assert run_order(["unmask audit runs/m", "unmask train --task sst2 --out runs/m", "unmask explain --list-methods"]) \
        == ["unmask train --task sst2 --out runs/m", "unmask audit runs/m", "unmask explain --list-methods"]
