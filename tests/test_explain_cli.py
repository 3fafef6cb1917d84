"""``unmask explain`` output: --list-methods without a text, a plain score table when piped, colour only on a
terminal, ``--json -`` on stdout alone, and one clean warning line for over-long input."""
import io
import json
import os
import re
import subprocess
import sys
import warnings

import pytest

from unmask.attribution import METHODS
from unmask.cli import main
from unmask.errors import UnmaskWarning

LIMIT = 32
ROW = re.compile(r"^\s+(\d+)\s+(\S+)\s+([-+][0-9.e+-]+)\s+([0-9.]+)%$")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unmask.models.tiny import tiny_classifier

    return str(tiny_classifier(seed=0, max_position=LIMIT).save(tmp_path_factory.mktemp("tiny") / "m"))


def rows(text: str) -> list[tuple[int, str, float, float]]:
    return [(int(m[1]), m[2], float(m[3]), float(m[4])) for m in map(ROW.match, text.splitlines()) if m]


def test_list_methods_needs_no_text_and_describes_every_method(capsys):
    assert main(["explain", "--list-methods"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    names = sorted({c.name for c in METHODS.values()})
    assert [line.split()[0] for line in lines] == names and err == ""
    for line in lines:
        assert len(line.split(None, 1)[1]) > 10  # a description follows the name
    loo = next(line for line in lines if line.startswith("leave_one_out "))
    assert "F(x) - F(x with token i replaced)" in loo and "(aliases: occlusion, loo)" in loo


def test_no_text_is_one_clear_error(capsys):
    assert main(["explain", "--model", "minilm"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'unmask explain: error: no text given: unmask explain "TEXT" [--model DIR] (or --list-methods)']


def test_piped_output_is_a_table_of_every_signed_score(capsys, model_dir, tmp_path):
    out_json = tmp_path / "r.json"
    assert main(["explain", "a gripping , funny film", "--model", model_dir, "--method",
                 "gradient_x_input,leave_one_out", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # no colour codes when stdout is not a terminal
    saved = json.loads(out_json.read_text())
    blocks = out.split("\n\n")
    for method, block in zip(["gradient_x_input", "leave_one_out"], blocks):
        rec = saved[method][0]
        assert block.startswith(f"{method}: target {rec['target_name']} (p=")
        got = rows(block)
        assert [r[1] for r in got] == rec["tokens"] and [r[0] for r in got] == list(range(len(rec["tokens"])))
        for (_, _, score, share), s, n in zip(got, rec["scores"], rec["normalized"]):
            assert score == pytest.approx(s, rel=1e-3, abs=1e-12)
            assert share == pytest.approx(100 * n, abs=0.051)


def test_top_k_lists_the_largest_scores_first(capsys, model_dir, tmp_path):
    out_json = tmp_path / "r.json"
    assert main(["explain", "a gripping , funny film", "--model", model_dir, "--method", "leave_one_out",
                 "--top", "2", "--json", str(out_json)]) == 0
    got = rows(capsys.readouterr().out)
    scores = json.loads(out_json.read_text())["leave_one_out"][0]["scores"]
    order = sorted(range(len(scores)), key=lambda i: -abs(scores[i]))[:2]
    assert [r[0] for r in got] == order


def test_colour_only_on_a_terminal(capsys, model_dir, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    assert main(["explain", "a fine film", "--model", model_dir, "--method", "gradient"]) == 0
    assert "\x1b[" in term.getvalue() and "fine" in term.getvalue()


def test_json_dash_writes_only_json_to_stdout(capsys, model_dir, tmp_path):
    html = tmp_path / "r.html"
    assert main(["explain", "a fine film", "--model", model_dir, "--method", "gradient,integrated_gradients",
                 "--json", "-", "--html", str(html)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)  # the whole of stdout is one JSON document
    assert list(data) == ["gradient", "integrated_gradients"]
    assert data["gradient"][0]["tokens"] == ["[CLS]", "a", "fine", "film", "[SEP]"]
    assert f"HTML written to {html}" in err and html.is_file()


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_over_long_input_gives_one_clean_warning_line(model_dir):
    long = " ".join(["word"] * 40)
    expected = (f"unmask: warning: input #0 has 42 tokens, over the model's limit of {LIMIT}; "
                f"truncated (1 input(s) affected)\n")
    cli = _run(f"import sys; from unmask.cli import main; sys.exit(main(['explain', {long!r}, '--model', "
               f"{model_dir!r}, '--method', 'gradient']))")
    assert cli.returncode == 0, cli.stderr
    assert cli.stderr == expected and "gradient: target" in cli.stdout
    api = _run(f"import unmask; unmask.explain(unmask.load_model({model_dir!r}), [{long!r}])")
    assert api.returncode == 0 and api.stderr == expected


def test_other_warnings_keep_pythons_format():
    line = warnings.formatwarning("plain", UserWarning, "f.py", 3)
    assert line.startswith("f.py:3: UserWarning: plain")
    assert warnings.formatwarning("x", UnmaskWarning, "f.py", 3, "src line") == "unmask: warning: x\n"
    assert issubclass(UnmaskWarning, UserWarning)  # pytest.warns(UserWarning) and filters keep working
