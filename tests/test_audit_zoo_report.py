"""experiments/audit_zoo.py report on hand-made evidence: calibration from clean calibration models only,
statistics filled from raw records, the evidence archive read back without the models, markdown tables."""
import gzip
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
METHODS = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients")


def _zoo():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return importlib.import_module("audit_zoo")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def _row(name, kind, split, variant, rng, facade=False):
    """Evidence of 6 inputs of 5 tokens; a facade's gradient methods sit on the token occlusion ignores."""
    records = []
    for _ in range(6):
        occl = [0.0, 1.0, 0.05, 0.6, 0.0] + 0.01 * rng.random(5)
        scores = {"leave_one_out": list(occl)}
        for m in METHODS:
            if facade and m != "integrated_gradients":
                s = [0.0, 0.1, 2.0, 0.1, 0.0]
            else:
                s = list(np.abs(occl) + 0.3 * rng.random(5))
            scores[m] = s
        records.append({"tokens": ["[CLS]", "a", "the", "b", "[SEP]"], "sequence_ids": [None, 0, 0, 0, None],
                        "word_ids": [None, 0, 1, 2, None], "words": [["a", "the", "b"]], "prediction": 1,
                        "scores": scores})
    methods = {m: {"method": m, "unfaithfulness": 0.5, "top1_miss": 0.4 + 0.05 * rng.random(),
                   "pileup": (0.5 if facade and m != "integrated_gradients" else 0.01 + 0.01 * rng.random()),
                   "pileup_class": "stop words", "pileup_share": 0.5, "reference_share": 0.05,
                   "aopc_comprehensiveness": 0.2, "aopc_random": 0.1, "aopc_reference": 0.3, "seconds": 1.0,
                   "extras": {}} for m in METHODS}
    behavior = {"n_inputs": 6, "methods": methods, "magnitude_ratio": -0.9 + 0.05 * rng.random(),
                "first_order_miss": 0.5, "reference": "leave_one_out", "seconds": 1.0, "extras": {}}
    return {"key": "k", "name": name, "kind": kind, "variant": variant, "split": split, "task": "sst2",
            "target": "stop", "audit_seconds": 1.0, "evidence": {"behavior": behavior, "structure": {"coupling": None}},
            "p_at_1": {m: (0.9 if facade and m != "integrated_gradients" else 0.1) for m in METHODS},
            "dev_accuracy": 0.8, "agreement_with_f": 0.99 if facade else None, "records": records}


def test_fill_record_statistics_matches_placement():
    from unmask.audit.placement import content_mask, misplacement

    zoo = _zoo()
    row = _row("m", "facade", "heldout", "merge-plain", np.random.default_rng(0), facade=True)
    zoo.fill_record_statistics(row)
    got = row["evidence"]["behavior"]["methods"]["gradient_x_input"]["misplacement"]
    want = misplacement([np.array(r["scores"]["gradient_x_input"]) for r in row["records"]],
                        [np.array(r["scores"]["leave_one_out"]) for r in row["records"]],
                        [content_mask(r["sequence_ids"]) for r in row["records"]])
    assert got == pytest.approx(want) and got > 1.0  # on the token occlusion ignores: worse than chance
    row["evidence"]["behavior"]["methods"]["gradient"]["misplacement"] = 0.123
    zoo.fill_record_statistics(row)  # a stored value is kept
    assert row["evidence"]["behavior"]["methods"]["gradient"]["misplacement"] == 0.123


def test_report_calibrates_on_clean_calibration_models_and_reads_the_archive(tmp_path, monkeypatch):
    zoo = _zoo()
    rng = np.random.default_rng(1)
    rows = [_row(f"clean_c{i}", "clean", "calibration", "minilm-finetune", rng) for i in range(5)]
    rows += [_row(f"clean_h{i}", "clean", "heldout", "lstm" if i else "minilm-finetune", rng) for i in range(3)]
    rows += [_row("merged_stop_plain", "facade", "calibration", "merge-plain", rng, facade=True),
             _row("merged_stop_noise", "facade", "heldout", "merge-noise1e-3", rng, facade=True)]
    low = _row("unmerged_low", "facade", "heldout", "unmerged-distilled", rng, facade=True)
    low["agreement_with_f"] = 0.95  # fools g.x, keeps too few predictions: counted, but not a working attack
    weak = _row("unmerged_weak", "facade", "heldout", "unmerged-distilled", rng, facade=True)
    weak["p_at_1"] = {m: 0.1 for m in METHODS}  # fools nothing: listed, not counted
    rows += [low, weak]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src/unmask/audit").mkdir(parents=True)
    monkeypatch.setattr(zoo, "ROOT", tmp_path / "runs/zoo")
    monkeypatch.setattr(zoo, "EVIDENCE_ARCHIVE", tmp_path / "results/audit_zoo_evidence.jsonl.gz")
    monkeypatch.setattr(zoo, "roc_plot", lambda *a, **k: None)
    monkeypatch.setattr(zoo, "EVAL_N", 6)  # the default size: evidence in runs/zoo/evidence, the default archive
    (tmp_path / "experiments/results").mkdir(parents=True)
    ev = tmp_path / "runs/zoo/evidence"
    ev.mkdir(parents=True)
    for r in rows:
        (ev / f"{r['name']}.json").write_text(json.dumps(r))
    zoo.report(6, None)
    first = json.loads((tmp_path / "experiments/results/audit_zoo.json").read_text())
    assert first["calibration_models"] == [f"clean_c{i}" for i in range(5)]
    cal = json.loads((tmp_path / "src/unmask/audit/calibration.json").read_text())
    assert cal["stats"]["gradient_x_input.misplacement"]["n"] == 5
    verdicts = {m["name"]: m["verdict"] for m in first["per_model"]}
    assert verdicts["merged_stop_noise"] != "trustworthy" and verdicts["clean_h0"] == "trustworthy"
    assert "gradient_x_input.misplacement" in first["suspect_values"]["values"]
    status = {m["name"]: m["attack"] for m in first["per_model"] if m["kind"] == "facade"}
    assert status == {"merged_stop_plain": "working", "merged_stop_noise": "working", "unmerged_low": "low agreement",
                      "unmerged_weak": "weak"}
    assert first["n_facade"] == 2 and first["n_working"] == 1 and "unmerged_weak" not in first["heldout_models"]
    md = (tmp_path / "experiments/results/audit_zoo.md").read_text()
    assert "unmerged_weak" in md and "not an attack, not counted" in md
    assert "Held-out clean models by family" in md and "lstm" in md and "fires (suspect) at" in md
    with gzip.open(tmp_path / "results/audit_zoo_evidence.jsonl.gz", "rt") as fh:
        assert sorted(json.loads(line)["name"] for line in fh) == sorted(r["name"] for r in rows)
    for f in ev.iterdir():  # without runs/zoo/evidence the archive is read back: same result
        f.unlink()
    zoo.report(6, None)
    again = json.loads((tmp_path / "experiments/results/audit_zoo.json").read_text())
    assert again["per_model"] == first["per_model"]
