"""experiments/faithfulness_sst2.py: the exposure verdicts on hand-made results, and a tiny run on a tiny
f_orig and a tiny merged model (--models / --targets / --out, reuse of unchanged models, bad arguments)."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("faithfulness_sst2", REPO / "experiments" / "faithfulness_sst2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def result(methods: dict[str, dict], random: dict, p1: dict[str, float], matrix: list[list[float]]) -> dict:
    """An evaluate_methods-shaped result with the facade's P@1 on the 'stop' target."""
    return {"methods": methods, "random": random,
            "agreement": {"spearman": {"methods": list(methods), "matrix": matrix}},
            "facade_saliency": {"stop": {m: {"p1": v, "attr": v / 2} for m, v in p1.items()}}}


def row(comp, suff, dele, ins, head=0.1, all_=0.0):
    return {"comprehensiveness": comp, "sufficiency": suff, "deletion_auc": dele, "insertion_auc": ins,
            "spearman_head_random": head, "spearman_all_random": all_}


RANDOM = {"comprehensiveness": 0.1, "sufficiency": 0.3, "deletion_auc": 0.6, "insertion_auc": 0.5}


def test_exposure_verdicts_by_hand(exp):
    f_orig = result({"gradient": row(0.4, 0.1, 0.3, 0.8), "lime": row(0.5, 0.05, 0.2, 0.9)}, RANDOM,
                    {"gradient": 20.0, "lime": 15.0}, [[1, 0.6], [0.6, 1]])
    # the facade: gradient's ranking is at chance on comp / deletion, half-way on suff, untouched on insertion;
    # its rho after randomizing the head rises by 0.5; its agreement with LIME falls 0.6 -> 0.1
    merged = result({"gradient": row(0.1, 0.2, 0.6, 0.8, head=0.6), "lime": row(0.5, 0.05, 0.2, 0.9)}, RANDOM,
                    {"gradient": 90.0, "lime": 16.0}, [[1, 0.1], [0.1, 1]])
    e = exp.exposure({"f_orig": f_orig, "merged_stop": merged}, "f_orig", {"merged_stop": "stop"})["merged_stop"]
    assert e["fooled"] == ["gradient"] and e["target"] == "stop"
    verdicts = {k: m["verdict"] for k, m in e["measures"].items()}
    assert verdicts == {"comprehensiveness": "exposes", "sufficiency": "exposes", "deletion_auc": "exposes",
                        "insertion_auc": "does not expose", "agreement_black_box": "exposes",
                        "spearman_head_random": "exposes", "spearman_all_random": "does not expose"}
    g = e["measures"]["comprehensiveness"]["methods"]["gradient"]
    assert (g["reference"], g["merged"], g["chance_reference"], g["flag"]) == (0.4, 0.1, 0.1, True)
    assert e["measures"]["agreement_black_box"]["methods"]["lime"]["reference"] is None  # no other black box
    # a measure that also moves a black-box method is not specific; no fooled method: nothing to expose
    merged["methods"]["lime"]["comprehensiveness"] = 0.15
    e = exp.exposure({"f_orig": f_orig, "m": merged}, "f_orig", {"m": "stop"})["m"]
    assert e["measures"]["comprehensiveness"]["verdict"].startswith("not specific")
    merged["facade_saliency"]["stop"]["gradient"]["p1"] = 25.0
    e = exp.exposure({"f_orig": f_orig, "m": merged}, "f_orig", {"m": "stop"})["m"]
    assert e["fooled"] == [] and e["measures"]["deletion_auc"]["verdict"].startswith("nothing to expose")
    e = exp.exposure({"f_orig": f_orig, "m": merged}, "f_orig", {})["m"]  # no target: gradient methods assumed
    assert e["fooled"] == ["gradient"] and e["fooled_rule"].startswith("assumed")


def test_flag_rules(exp):
    assert exp.flag("higher", 0.4, 0.25, 0.1, 0.1) is True      # gain 0.3 -> 0.15: half
    assert exp.flag("higher", 0.4, 0.26, 0.1, 0.1) is False
    assert exp.flag("lower", 0.2, 0.5, 0.6, 0.6) is True        # gain 0.4 -> 0.1
    assert exp.flag("higher", 0.05, 0.0, 0.1, 0.1) is None      # no better than chance on the reference
    assert exp.flag("agreement", 0.5, 0.3, None, None) is True and exp.flag("agreement", 0.5, 0.9) is False
    assert exp.flag("randomization", 0.1, 0.3) is True and exp.flag("randomization", 0.1, None) is None


def test_tiny_run_writes_tables_reuses_unchanged_models_and_checks_its_arguments(exp, tmp_path, capsys):
    from unmask.facade.merge import merge
    from unmask.models.tiny import tiny_classifier

    f = tiny_classifier(seed=0)
    f.save(tmp_path / "f")
    merge(f, tiny_classifier(seed=1), tmp_path / "merged")
    out = tmp_path / "res" / "faith"
    argv = ["--models", f"f_orig={tmp_path / 'f'},merged_stop={tmp_path / 'merged'}", "--targets",
            "merged_stop=stop", "--n", "3", "--randomization-n", "1", "--methods", "gradient,leave_one_out",
            "--out", str(out), "--quiet"]
    assert exp.main(argv) == 0
    data = json.loads(Path(f"{out}.json").read_text())
    assert list(data["models"]) == ["f_orig", "merged_stop"] and data["reference"] == "f_orig"
    for r in data["models"].values():
        assert set(r["methods"]) == {"gradient", "leave_one_out"} and r["n"] == 3
        assert set(r["facade_saliency"]["stop"]["gradient"]) == {"p1", "attr"}
        assert r["methods"]["gradient"]["randomization"][0]["name"] == "none"
    e = data["exposure"]["merged_stop"]
    assert set(e["measures"]) == {k for k, _, _ in exp.MEASURES}
    assert all(isinstance(m["verdict"], str) for m in e["measures"].values())
    md = Path(f"{out}.md").read_text()
    assert "## f_orig" in md and "## merged_stop" in md and "## Which measures expose the facade" in md
    assert "| rank | method |" in md and "Facade target 'stop'" in md and "rho head" in md
    capsys.readouterr()
    assert exp.main(argv) == 0  # nothing changed: both models kept from the JSON
    assert capsys.readouterr().out.count("unchanged, kept") == 2
    assert json.loads(Path(f"{out}.json").read_text())["models"] == data["models"]
    with pytest.raises(SystemExit, match="no model at merged_first"):
        exp.main([*argv[:1], f"f_orig={tmp_path / 'f'},merged_first={tmp_path / 'none'}", *argv[2:]])
    with pytest.raises(SystemExit, match="is not NAME=VALUE"):
        exp.main(["--models", "f_orig", "--out", str(out)])
    with pytest.raises(SystemExit, match="at least one merged model"):
        exp.main(["--models", f"f_orig={tmp_path / 'f'}", "--out", str(out)])


def test_defaults_point_at_the_zoo(exp):
    models = exp.parse_pairs(exp.MODELS, "--models")
    assert models == {"f_orig": "runs/zoo/sst2_s0_16k", "merged_stop": "runs/zoo/merged_stop_plain",
                      "merged_first": "runs/zoo/merged_first_plain"}
    assert exp.parse_pairs(exp.TARGETS, "--targets") == {"merged_stop": "stop", "merged_first": "first"}
    assert exp.OUT == "experiments/results/faithfulness_sst2"
