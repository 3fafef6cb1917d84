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

README.md's ```python blocks run too (second half of this file), verbatim, in README order, in the same working
directory after the commands, each in a fresh namespace that first runs its prelude from ``PYTHON_PRELUDES`` (the
names the block uses but does not define, e.g. ``model = unmask.load_model("runs/sst2")`` and 8 SST-2 dev sentences
as ``texts``); a block neither there nor in ``PYTHON_SKIPPED`` fails
``test_every_readme_python_block_is_run_or_skipped``.
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

from test_readme_commands import PLACEHOLDER, README, _drop_comment, _fence_commands, _inline_commands, _paths

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


# ---------------------------------------------------------------------------------------------------------------
# README.md's ```python blocks, run verbatim in README order, each in a fresh namespace, in the working directory
# where the shell commands above made runs/sst2, runs/rte, ... (the readme_runs fixture). The names a block uses but
# does not define come from its prelude in PYTHON_PRELUDES (test_python_preludes_define_exactly_the_free_names:
# a prelude defines those names and nothing else). The one size change: ``texts`` is the first 8 SST-2 dev
# sentences where the README means a data set's texts (the CLI audits 200 inputs by default); the README's own
# ``texts[:32]`` stays as written. Everything else, method defaults included, runs as the README has it.

_SST2_MODEL_AND_TEXTS = (
    "import unmask.data\n"
    'model = unmask.load_model("runs/sst2")\n'
    'texts = [e.text for e in unmask.data.load_task("sst2", "dev", limit=8)]\n'
)

# First code line of a README python block (its comment dropped) -> the prelude run before it.
PYTHON_PRELUDES: dict[str, str] = {
    "report = unmask.audit(model, texts)": _SST2_MODEL_AND_TEXTS,  # section "Audit", after `unmask audit runs/sst2`
    "import unmask": "",  # Quickstart (Python): self-contained
    "from unmask.metrics.faithfulness import faithfulness, random_faithfulness, deletion_curve, insertion_curve":
        _SST2_MODEL_AND_TEXTS,  # "Faithfulness, sanity checks and method agreement"
}

# First code line of a README python block -> why it is not run. Every other README python block runs.
PYTHON_SKIPPED: dict[str, str] = {}


def readme_python_blocks() -> list[str]:
    """The code of README.md's ```python blocks, in README order."""
    blocks, lines, lang = [], None, ""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            if lines is not None:
                if lang in ("python", "py", "python3", "pycon"):
                    blocks.append("\n".join(lines) + "\n")
                lines = None
            else:
                lines, lang = [], line.strip()[3:].strip()
        elif lines is not None:
            lines.append(line)
    return blocks


def block_key(block: str) -> str:
    return next(_drop_comment(line) for line in block.splitlines() if _drop_comment(line).strip())


def _bound_and_free(code: str) -> tuple[set[str], set[str]]:
    """Names ``code`` binds at top level, and the names it reads without binding them first (builtins aside)."""
    import ast
    import builtins

    bound, free = set(), set()
    for stmt in ast.parse(code).body:
        local = {n.id for c in ast.walk(stmt) if isinstance(c, ast.comprehension)  # a comprehension's own names
                 for n in ast.walk(c.target) if isinstance(n, ast.Name)}
        reads = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        free |= reads - local - bound - set(dir(builtins))
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in local:
                bound.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound |= {a.asname or a.name.split(".")[0] for a in node.names}
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
    return bound, free


def run_block(code: str, namespace: dict, name: str) -> list:
    """Run ``code`` top-level statement by statement in ``namespace`` (as ``exec`` of the whole block would) and
    return the values of its expression statements, as a REPL would show them."""
    import ast

    values = []
    for stmt in ast.parse(code).body:
        if isinstance(stmt, ast.Expr):
            values.append(eval(compile(ast.Expression(stmt.value), name, "eval"), namespace))
        else:
            exec(compile(ast.Module([stmt], type_ignores=[]), name, "exec"), namespace)
    return values


def test_every_readme_python_block_is_run_or_skipped():
    keys = [block_key(b) for b in readme_python_blocks()]
    assert len(keys) >= 3 and len(set(keys)) == len(keys), keys
    missing = [k for k in keys if k not in PYTHON_PRELUDES and k not in PYTHON_SKIPPED]
    assert not missing, f"README python blocks neither run nor skipped: add a prelude or a skip reason: {missing}"
    stale = (set(PYTHON_PRELUDES) | set(PYTHON_SKIPPED)) - set(keys)
    assert not stale, f"PYTHON_PRELUDES / PYTHON_SKIPPED entries that are no longer README blocks: {sorted(stale)}"
    assert not set(PYTHON_PRELUDES) & set(PYTHON_SKIPPED)


@pytest.mark.parametrize("block", readme_python_blocks(), ids=block_key)
def test_python_preludes_define_exactly_the_free_names(block):
    if block_key(block) in PYTHON_SKIPPED:
        pytest.skip(PYTHON_SKIPPED[block_key(block)])
    prelude = PYTHON_PRELUDES[block_key(block)]
    assert _bound_and_free(prelude)[0] == _bound_and_free(block)[1], prelude


def _check_audit(ns, values, stdout):
    verdict, score, summary, reasons = values[-1]
    assert verdict in ("trustworthy", "suspect", "manipulated")
    assert ns["report"].verdict == verdict and isinstance(score, float) and score >= 0
    assert isinstance(summary, str) and summary and isinstance(reasons, list)


def _check_quickstart(ns, values, stdout):
    import math

    records, ig = ns["records"], ns["ig"]
    assert set(records) == {"gradient_x_input", "smoothgrad", "integrated_gradients"}
    assert ig.tokens[1:-1] == ["a", "gripping", ",", "funny", "film", "."]
    error = ig.extras["completeness_error"]
    assert isinstance(error, float) and math.isfinite(error)
    assert [w for _, w, _ in ig.word_scores("sum")] == ["a", "gripping", ",", "funny", "film", "."]
    assert "gripping" in ns["html"] and "gripping" in stdout
    (pair_records,) = values[-1].values()
    assert pair_records[0].target_name == "entailment" and pair_records[0].pair == "A person rests."
    assert pair_records[0].params["steps"] == 64


def _check_faithfulness(ns, values, stdout):
    import math

    printed = stdout.split()
    assert len(printed) == 2 and all(math.isfinite(float(x)) for x in printed)
    _, spearman, (names, matrix) = values
    assert spearman[0] == pytest.approx(1.0) and len(spearman) > 1  # stage "none" first: the model vs itself
    assert names == ["integrated_gradients", "lime"] and matrix.shape == (2, 2)


PYTHON_CHECKS = {
    "report = unmask.audit(model, texts)": _check_audit,
    "import unmask": _check_quickstart,
    "from unmask.metrics.faithfulness import faithfulness, random_faithfulness, deletion_curve, insertion_curve":
        _check_faithfulness,
}


@pytest.mark.parametrize("block", readme_python_blocks(), ids=block_key)
def test_readme_python_block_runs_as_written(block, readme_runs, monkeypatch):
    key = block_key(block)
    if key in PYTHON_SKIPPED:
        pytest.skip(PYTHON_SKIPPED[key])
    work, _ = readme_runs
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__readme__"}
    exec(PYTHON_PRELUDES[key], namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        values = run_block(block, namespace, f"README.md python block {key!r}")
    if key in PYTHON_CHECKS:
        PYTHON_CHECKS[key](namespace, values, out.getvalue())


def test_python_block_helpers():
    assert _bound_and_free("import a.b\nx = f(y)  # c\n[z for z in x]\n") == ({"a", "x"}, {"f", "y"})
    ns: dict = {}
    assert run_block("x = 2\nx + 1\nprint()\n", ns, "t") == [3, None] and ns["x"] == 2
    assert block_key("\n# note\nreport = f(m)   # comment\n") == "report = f(m)"
