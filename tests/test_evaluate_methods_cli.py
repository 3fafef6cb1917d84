"""``unmask evaluate-methods`` on a tiny saved model: table, JSON (file and stdout), errors."""
from __future__ import annotations

import json

import pytest

from unmask.cli import main
from unmask.commands.evaluate_methods_cmd import default_methods, evaluate_methods, evaluation_markdown
from unmask.metrics.faithfulness import faithfulness

FAST = "gradient,leave_one_out,attention"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unmask.models.tiny import tiny_classifier

    d = tmp_path_factory.mktemp("tiny")
    tiny_classifier(seed=0).save(d)
    return str(d)


def test_json_to_stdout_with_every_part(model_dir, capsys):
    code = main(["evaluate-methods", "--model", model_dir, "--data", "sst2", "--n", "4", "--methods", FAST,
                 "--randomization-n", "2", "--json", "-", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out)  # stdout is pure JSON; the table went to stderr
    assert "| rank | method |" in err and "*random*" in err
    assert result["n"] == 4 and result["data"] == "sst2" and result["randomization"]["n"] == 2
    assert sorted(result["ranking"]) == sorted(FAST.split(","))
    for name in FAST.split(","):
        m = result["methods"][name]
        for key in ("comprehensiveness", "sufficiency", "deletion_auc", "insertion_auc", "agreement",
                    "seconds_per_sentence", "spearman_head_random", "spearman_all_random", "mean_rank"):
            assert key in m, (name, key)
        assert [s["name"] for s in m["randomization"]][:2] == ["none", "classifier"]
        assert m["randomization"][0]["spearman"] == pytest.approx(1.0, abs=1e-6)
        assert len(m["faithfulness"]["comprehensiveness"]) == 5 and len(m["deletion"]["mean_probs"]) == 11
    assert result["agreement"]["spearman"]["methods"] == FAST.split(",")
    assert set(result["random"]) >= {"comprehensiveness", "sufficiency", "deletion_auc", "insertion_auc"}


def test_json_and_markdown_files_and_rte_pairs(model_dir, tmp_path, capsys):
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    code = main(["evaluate-methods", "--model", model_dir, "--data", "rte", "--n", "3", "--methods",
                 "gradient_x_input,leave_one_out", "--mode", "mask", "--randomization-n", "0", "--json", str(out),
                 "--markdown", str(md), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and f"JSON written to {out}" in printed and "| rank | method |" in printed
    result = json.loads(out.read_text())
    assert result["mode"] == "mask" and result["randomization"]["not_run"] == "randomization_n = 0"
    assert "spearman_head_random" not in result["methods"]["leave_one_out"]
    assert md.read_text().startswith("Model `")


def test_library_numbers_equal_the_metric_functions(tiny_model):
    from unmask.attribution import explain

    texts = ["a gripping , funny film .", "the plot is thin", "ok then"]
    kept = {}
    result = evaluate_methods(tiny_model, texts, methods=["gradient_x_input", "leave_one_out"], randomization_n=2,
                              records_out=kept)
    recs = explain(tiny_model, texts, ["leave_one_out"])["leave_one_out"]
    assert list(kept) == ["gradient_x_input", "leave_one_out"] and len(kept["leave_one_out"]) == 3
    assert all((a.scores == b.scores).all() for a, b in zip(kept["leave_one_out"], recs))
    f = faithfulness(tiny_model, recs)
    assert result["methods"]["leave_one_out"]["comprehensiveness"] == pytest.approx(f.aopc_comprehensiveness)
    assert result["methods"]["leave_one_out"]["sufficiency"] == pytest.approx(f.aopc_sufficiency)
    assert "| leave_one_out |" in evaluation_markdown(result)


def test_progress_bar_on_stderr_unless_quiet(model_dir, capsys):
    argv = ["evaluate-methods", "--model", model_dir, "--data", "sst2", "--n", "2", "--methods", "gradient",
            "--randomization-n", "1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "evaluate-methods" in err and "100%" in err and "| rank | method |" in out
    assert main([*argv, "--quiet"]) == 0
    assert "evaluate-methods" not in capsys.readouterr().err


def test_default_methods_are_every_registered_method_once():
    from unmask.attribution import METHODS

    names = default_methods()
    assert len(names) == len(set(names)) and set(names) == {c.name for c in METHODS.values()}
    assert "occlusion" not in names and "leave_one_out" in names  # aliases are not run twice


def test_ranking_follows_the_measures():
    from unmask.commands.evaluate_methods_cmd import _mean_rank

    rows = {"good": {"comprehensiveness": 0.5, "sufficiency": 0.0, "deletion_auc": 0.2, "insertion_auc": 0.9},
            "bad": {"comprehensiveness": 0.1, "sufficiency": 0.3, "deletion_auc": 0.6, "insertion_auc": 0.4},
            "mixed": {"comprehensiveness": 0.6, "sufficiency": 0.4, "deletion_auc": 0.5, "insertion_auc": 0.5}}
    ranks = _mean_rank(rows)
    assert ranks["good"] < ranks["mixed"] < ranks["bad"]


@pytest.mark.parametrize("argv, message", [
    (["--data", "imdb"], "data file not found: imdb"),
    (["--data", "sst2", "--methods", "nope"], "unknown method 'nope'"),
    (["--data", "sst2", "--n", "0"], "--n must be positive"),
    (["--data", "sst2", "--methods", "gradient,gradient"], "listed twice"),
    (["--data", "sst2", "--methods", " , "], "--methods is empty"),
])
def test_bad_input_exits_2_with_one_message(model_dir, capsys, argv, message):
    code = main(["evaluate-methods", "--model", model_dir, "--quiet", "--n", "2", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_model_dir_exits_2(tmp_path, capsys):
    assert main(["evaluate-methods", "--model", str(tmp_path / "none"), "--data", "sst2", "--n", "2"]) == 2
    assert "model path not found" in capsys.readouterr().err


def test_user_data_file(model_dir, tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    data.write_text('review,y\n"a fine, funny film",1\na dull mess,0\nok,1\n', encoding="utf-8")
    code = main(["evaluate-methods", "--model", model_dir, "--data", str(data), "--text-column", "review",
                 "--label-column", "y", "--methods", "gradient", "--randomization-n", "1", "--json", "-",
                 "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 3 and result["methods"]["gradient"]["agreement"] is None  # no other method
