"""Issue 16 item 6: long commands take ``--quiet``; commands with results take ``--json PATH`` and, with
``--json -``, print one strict-JSON document on stdout and nothing else there."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from unmask.cli import build_parser, main
from unmask.commands.common import emit_json, json_on_stdout, json_ready

# Commands that run long (training, data sets, searches, audits): a progress bar that --quiet turns off.
LONG = {"train", "audit", "evaluate-methods", "attribute-dataset", "triggers", "demo", "serve", "diffmask train",
        "facade merge", "facade finetune-merged", "facade train-unmerged", "facade train", "facade regularize",
        "facade evaluate"}
# Commands without --json (every command has it today).
NO_JSON: set[str] = set()
# The old spelling of --quiet stays accepted where it existed.
NO_PROGRESS = {"train", "demo", "diffmask train", "facade merge", "facade finetune-merged", "facade train-unmerged",
               "facade train", "facade regularize", "facade evaluate"}


def _leaves(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), p
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, path + (name,))


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unmask.models.tiny import tiny_classifier

    d = tmp_path_factory.mktemp("tiny")
    tiny_classifier(seed=0).save(d)
    return str(d)


def test_every_command_follows_the_output_conventions():
    leaves = dict(_leaves(build_parser()))
    assert LONG | NO_JSON | NO_PROGRESS <= set(leaves), sorted(set(LONG | NO_JSON | NO_PROGRESS) - set(leaves))
    for name, p in leaves.items():
        options = p._option_string_actions
        if name not in NO_JSON:
            assert "--json" in options, f"unmask {name} has no --json"
        if name in LONG:
            assert "--quiet" in options, f"unmask {name} has no --quiet"
        if name in NO_PROGRESS:
            assert options["--no-progress"].dest == options["--quiet"].dest == "quiet", name


def test_json_ready_is_strict():
    data = {"a": float("nan"), "b": [np.float32(1.5), np.int64(2), np.array([1.0, np.inf])], 3: (None, "x")}
    assert json_ready(data) == {"a": None, "b": [1.5, 2, [1.0, None]], "3": [None, "x"]}


def test_json_dash_sends_everything_else_to_stderr(capsys, tmp_path):
    with json_on_stdout("-"):
        print("status line")
        emit_json("-", {"x": math.nan})
    out, err = capsys.readouterr()
    assert _strict(out) == {"x": None} and err == "status line\n"
    emit_json(tmp_path / "r.json", {"y": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"y": 1}
    assert capsys.readouterr().out == f"JSON written to {tmp_path / 'r.json'}\n"


@pytest.mark.parametrize("argv", [
    ["reduce", "a dull film"],
    ["hotflip", "a fine film", "--max-flips", "2"],
])
def test_perturbations_print_json_on_stdout(model_dir, capsys, tmp_path, argv):
    assert main([*argv, "--model", model_dir, "--json", "-"]) == 0
    out, err = capsys.readouterr()
    record = _strict(out)
    assert "steps" in record and err.strip()  # the steps were described, on stderr
    assert main([*argv, "--model", model_dir, "--json", str(tmp_path / "r.json")]) == 0
    assert _strict((tmp_path / "r.json").read_text()) == record


def test_triggers_quiet_has_no_bar_and_json_on_stdout(model_dir, capsys, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\n" + "".join(f"review {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n"
                                              for i in range(16)))
    assert main(["triggers", "--model", model_dir, "--data", str(data), "--label", "1", "--length", "1",
                 "--iterations", "2", "--batch-size", "4", "--candidates", "3", "--quiet", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    result = _strict(out)
    assert len(result["tokens"]) == 1 and "trigger found:" in err and "trigger search" not in err


def test_audit_json_dash_is_strict_json(model_dir, capsys):
    assert main(["audit", model_dir, "--n", "4", "--no-structure", "--quiet", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    report = _strict(out)  # the reference method's p-value is NaN in the report: null here
    assert report["methods"]["leave_one_out"]["p_value"] is None
    assert f"verdict: {report['verdict'].upper()}" in err


def test_conceal_json(model_dir, capsys, tmp_path):
    out_dir = tmp_path / "perm"
    assert main(["facade", "conceal", model_dir, "--out", str(out_dir), "--permute", "1", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    result = _strict(out)
    assert result["out"] == str(out_dir) and result["agreement"] == 100.0 and "concealed model written" in err
    assert result["max_logit_change"] == json.loads((out_dir / "conceal_check.json").read_text())["max_logit_change"]


def test_train_quiet_json(model_dir, capsys, tmp_path):
    out_dir = tmp_path / "trained"
    assert main(["train", "--task", "sst2", "--model", model_dir, "--out", str(out_dir), "--max-steps", "1",
                 "--train-limit", "8", "--quiet", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    result = _strict(out)
    assert result["out"] == str(out_dir) and result["steps"] == 1 and "best_dev_accuracy" in result
    assert "model written to" in err
    assert "Writing model shards" not in err and "it/s]" not in err  # no bar, not even transformers' own
