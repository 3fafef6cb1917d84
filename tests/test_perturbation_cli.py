"""``unmask reduce`` / ``hotflip`` / ``triggers`` on a saved tiny model."""
import json

import pytest

from unmask.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unmask.models.tiny import tiny_classifier

    d = tmp_path_factory.mktemp("tiny")
    tiny_classifier(seed=0).save(d)
    return str(d)


def test_reduce_prints_the_reduced_sentence_and_writes_json(model_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["reduce", "a gripping , funny and moving film", "--model", model_dir, "--beam", "2",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["kind"] == "input_reduction" and record["params"]["beam_size"] == 2
    kept = [t for t, s in zip(record["final_tokens"], record["final_segments"]) if s == 0]
    assert f"reduced input ({len(kept)} of 7 pieces kept" in text
    assert len(record["steps"]) == 7 - len(kept)
    for step in record["steps"]:
        assert f"remove {step['change']['removed']!r}" in text


def test_hotflip_prints_each_flip(model_dir, tmp_path, capsys):
    out = tmp_path / "h.json"
    assert main(["hotflip", "a man sleeps .", "--pair", "a person rests .", "--model", model_dir,
                 "--segment", "0", "--max-flips", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert 1 <= len(record["steps"]) <= 2
    for step in record["steps"]:
        assert f"flip {step['change']['old']!r} -> {step['change']['new']!r}" in text
    assert ("prediction flipped" in text) == record["success"]


def test_triggers_from_a_data_file(model_dir, tmp_path, capsys):
    data = tmp_path / "d.tsv"
    rows = ["text\tlabel"] + [f"review number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(24)]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "t.json"
    assert main(["triggers", "--model", model_dir, "--data", str(data), "--label", "1", "--length", "2",
                 "--iterations", "2", "--batch-size", "4", "--candidates", "5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert len(record["tokens"]) == 2 and len(record["history"]) == 2
    assert record["evaluation"]["n_total"] == 6
    assert "trigger found:" in text


@pytest.mark.parametrize("argv, message", [
    (["hotflip", "a film", "--max-flips", "0"],
     "unmask hotflip: error: max_flips (the flip budget) must be >= 1 or None, got 0"),
    (["reduce", "a film", "--segment", "1"],
     "unmask reduce: error: segment 1 (the pair text) was requested but the input has no pair text"),
    (["reduce", " "], "unmask reduce: error: input text #0 is empty"),
    (["triggers", "--task", "sst2", "--label", "neutral"],
     "unmask triggers: error: unknown label 'neutral'; this model has labels 0=LABEL_0, 1=LABEL_1"),
])
def test_cli_errors_exit_2_with_one_message(model_dir, capsys, argv, message):
    assert main(argv + ["--model", model_dir]) == 2
    out, err = capsys.readouterr()
    assert err == message + "\n" and out == ""  # exactly one line, nothing else
