"""Bad input fails with one clear ``UnmaskError`` naming the input; the CLI exits with code 2 and prints one
line to stderr, and writes no output file."""
import json
import re
import shutil
import warnings

import numpy as np
import pytest
import torch

import unmask
from unmask.attribution import get_method
from unmask.cli import main
from unmask.data import load_task, read_examples
from unmask.errors import UnmaskError
from unmask.models import load_model

LIMIT = 64  # max_position_embeddings of the saved CLI model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny classifier saved like a fine-tuned model, with a short position limit and named labels."""
    from unmask.models.tiny import tiny_classifier

    m = tiny_classifier(seed=3, max_position=LIMIT)
    m.model.config.id2label = {0: "negative", 1: "positive"}
    m.model.config.label2id = {"negative": 0, "positive": 1}
    return m.save(tmp_path_factory.mktemp("tiny64") / "model")


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_cli_error(capsys, *argv, contains: str, command: str = "explain"):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"unmask {command}: error: ")
    assert contains in lines[0], lines[0]


# ----------------------------------------------------------------------------------- texts

@pytest.mark.parametrize("texts, pairs, message", [
    ([""], None, "input text #0 is empty"),
    (["ok", "   \n\t"], None, "input text #1 is empty"),
    (["ok"], [""], "pair text #0 is empty"),
    (["ok"], ["  "], "pair text #0 is empty"),
    (["a", "b"], ["c"], "got 2 texts but 1 pair texts"),
    (["a"], ["b", "c"], "got 1 texts but 2 pair texts"),
    (["a", "b"], ["c", None], "either every input has a pair text or none has"),
    ([], None, "no input texts"),
    ([None], None, "input text #0 is not a string"),
    (["a"], [3], "pair text #0 is not a string"),
    (["\u200b"], None, "input text #0 has no tokens"),
    (["fine"], ["\x00\x01"], "pair text #0 has no tokens"),
])
def test_bad_texts(model, texts, pairs, message):
    with pytest.raises(UnmaskError, match=message):
        model.encode(texts, pairs)
    with pytest.raises(UnmaskError, match=message):
        unmask.explain(model, texts, methods=["gradient"], pairs=pairs)


def test_too_long_text_is_truncated_with_a_warning_or_refused(model):
    text = " ".join(["word"] * 100)
    with pytest.warns(UserWarning, match=rf"input #0 has 102 tokens, over the model's limit of {LIMIT}"):
        rec = unmask.explain(model, [text], methods=["gradient"])["gradient"][0]
    assert len(rec.tokens) == LIMIT and rec.tokens[-1] == "[SEP]"
    with pytest.raises(UnmaskError, match=f"over the model's limit of {LIMIT}"):
        unmask.explain(model, ["short", text], methods=["gradient"], on_too_long="error")
    with pytest.warns(UserWarning, match="over the model's limit"):
        batch = model.encode(["a premise"], [text])
    assert batch.lengths == [LIMIT] and batch.sequence_ids[0].count(0) == 2
    with pytest.raises(UnmaskError, match="on_too_long must be"):
        model.encode(["a"], on_too_long="drop")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exactly at the limit: no warning
        model.encode([" ".join(["word"] * (LIMIT - 2))])


# ----------------------------------------------------------------------------------- methods and labels

@pytest.mark.parametrize("spec, params, message", [
    ("nope", {}, "unknown method 'nope'; choose from .*integrated_gradients"),
    ("integrated_gradients", {"steps": 0}, "steps must be >= 1"),
    ("integrated_gradients", {"rule": "simpson"}, "unknown integration rule 'simpson'"),
    ("integrated_gradients", {"tolerance": 0}, "tolerance must be positive"),
    ("smoothgrad", {"samples": 0}, "samples must be >= 1"),
    ("smoothgrad", {"noise_scale": -1}, "noise_scale must be >= 0"),
    ("gradient", {"reduce": "mean"}, "unknown reduction 'mean'"),
    ("gradient", {"objective": "median"}, "unknown objective 'median'"),
    ("gradient", {"token_budget": 0}, "token_budget must be positive"),
    ("leave_one_out", {"replace": "blank"}, "unknown replacement 'blank'"),
    ("attention", {"mode": "max"}, "unknown attention mode 'max'"),
])
def test_bad_method_or_parameter(spec, params, message):
    with pytest.raises(UnmaskError, match=message):
        get_method(spec, **params)


def test_unknown_method_in_explain(model):
    with pytest.raises(UnmaskError, match="unknown method 'gradients'"):
        unmask.explain(model, ["fine"], methods=["gradient", "gradients"])
    with pytest.raises(UnmaskError, match="no attribution method"):
        unmask.explain(model, ["fine"], methods=[])


def test_attention_layer_out_of_range(model):
    with pytest.raises(UnmaskError, match="layer 7 out of range for a 2-layer model"):
        unmask.explain(model, ["fine"], methods=[get_method("attention", layer=7)])


def test_smoothgrad_noise_of_wrong_shape(model):
    batch = model.encode(["fine film"])
    with pytest.raises(UnmaskError, match="noise must have shape"):
        get_method("smoothgrad", samples=2).attribute(model, batch, torch.tensor([0]), noise=torch.zeros(1, 4, 32))


@pytest.mark.parametrize("target, message", [
    (2, "unknown label 2; this model has labels 0=negative, 1=positive"),
    (-1, "unknown label -1"),
    ("neutral", "unknown label 'neutral'"),
    (True, "unknown label True"),
    (1.0, "unknown label 1.0"),
    ([0], "got 1 targets for 2 inputs"),
    ([0, "neutral"], "unknown label 'neutral'"),
])
def test_unknown_label(model, target, message):
    with pytest.raises(UnmaskError, match=message):
        unmask.explain(model, ["good", "bad"], methods=["gradient"], target=target)


def test_labels_accepted_in_every_reasonable_spelling(model):
    for spelling in (1, "1", " 1", "positive", np.int64(1), torch.tensor(1)):
        assert model.label_index(spelling) == 1
    recs = unmask.explain(model, ["good", "bad"], methods=["gradient"], target=["negative", 1])["gradient"]
    assert [r.target for r in recs] == [0, 1] and recs[0].target_name == "negative"


# ----------------------------------------------------------------------------------- model paths

@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("broken")
    cases = {}
    cases["missing"] = root / "does-not-exist"
    (root / "no_config").mkdir()
    (root / "no_config" / "model.safetensors").write_bytes(b"")
    cases["no_config"] = root / "no_config"
    for name, config in [("bad_json", '{"model_type": "bert",'), ("no_model_type", "{}")]:
        (root / name).mkdir()
        (root / name / "config.json").write_text(config)
        cases[name] = root / name
    for name in ("no_weights", "corrupt_weights", "truncated_weights", "no_tokenizer"):
        shutil.copytree(model_dir, root / name)
        cases[name] = root / name
    (root / "no_weights" / "model.safetensors").unlink()
    (root / "corrupt_weights" / "model.safetensors").write_bytes(b"\xff" * 100)
    weights = (model_dir / "model.safetensors").read_bytes()
    (root / "truncated_weights" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    for f in (root / "no_tokenizer").iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            f.unlink()
    a_file = root / "model.txt"
    a_file.write_text("not a directory")
    cases["a_file"] = a_file
    return cases


MODEL_ERRORS = {
    "missing": "model path not found",
    "a_file": "model path not found",
    "no_config": "not a model directory (no config.json)",
    "bad_json": "broken model config",
    "no_model_type": "broken model config",
    "no_weights": "cannot load model",
    "corrupt_weights": "model.safetensors",
    "truncated_weights": "model.safetensors",
    "no_tokenizer": "no tokenizer vocabulary",
}


@pytest.mark.parametrize("case", sorted(MODEL_ERRORS))
def test_bad_model_path(broken_models, case):
    path = broken_models[case]
    with pytest.raises(UnmaskError, match=re.escape(MODEL_ERRORS[case])) as info:
        load_model(path)
    assert str(path.name) in str(info.value)
    if case in ("corrupt_weights", "truncated_weights"):  # also where the classifier head is probed
        with pytest.raises(UnmaskError, match="model.safetensors"):
            load_model(path, num_labels=2)


@pytest.mark.parametrize("case", ["missing", "no_config", "bad_json", "corrupt_weights", "no_tokenizer"])
def test_cli_bad_model_path(capsys, broken_models, case, tmp_path):
    out = tmp_path / "out.json"
    assert_cli_error(capsys, "explain", "fine", "--model", broken_models[case], "--json", out,
                     contains=MODEL_ERRORS[case])
    assert not out.exists()


# ----------------------------------------------------------------------------------- data files

@pytest.mark.parametrize("name, content, kwargs, message", [
    ("wrong.csv", "sentence,label\nhi,1\n", {}, r"missing column\(s\) \['text'\]; found \['label', 'sentence'\]"),
    ("wrong.tsv", "text\tgold\nhi\t1\n", {}, r"missing column\(s\) \['label'\]"),
    ("nopair.csv", "text,label\nhi,1\n", {"pair_col": "hypothesis"}, r"missing column\(s\) \['hypothesis'\]"),
    ("label.csv", "text,label\nhi,1\nho,positive\n", {}, "row 3: label 'positive' is not an integer"),
    ("float.csv", "text,label\nhi,1.5\n", {}, "row 2: label '1.5' is not an integer"),
    ("short.tsv", "text\tlabel\nhi\t1\nbye\n", {}, "row 3: label None is not an integer"),
    ("float.jsonl", '{"text": "a", "label": 1.5}\n', {}, "line 1: label 1.5 is not an integer"),
    ("bool.jsonl", '{"text": "a", "label": true}\n', {}, "line 1: label True is not an integer"),
    ("later.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b"}\n', {}, r"line 3: missing column\(s\) \['label'\]"),
    ("text.jsonl", '{"text": 5, "label": 1}\n', {}, "line 1: text 5 is not a string"),
    ("array.jsonl", "[1, 2]\n", {}, "line 1: expected an object"),
    ("broken.jsonl", '{"text": "a", "label": 1}\n{"text": \n', {}, "line 2 is not JSON"),
    ("data.xlsx", "text,label\nhi,1\n", {}, "unsupported file type '.xlsx'; use .tsv, .csv or .jsonl"),
    ("empty.csv", "", {}, "empty file, expected a header row"),
])
def test_bad_data_file(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UnmaskError, match=message) as info:
        read_examples(path, **kwargs)
    assert name in str(info.value)


def test_data_file_missing_or_not_utf8(tmp_path):
    with pytest.raises(UnmaskError, match="data file not found"):
        read_examples(tmp_path / "nope.csv")
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncafé,1\n".encode("latin-1"))
    with pytest.raises(UnmaskError, match="latin1.csv: not UTF-8 text"):
        read_examples(path)


def test_good_data_files_read(tmp_path):
    """The checks above do not reject valid files: quoted CSV fields, TSV with literal quotes, JSONL pairs."""
    (tmp_path / "a.csv").write_text('text,label\n"hi, there",1\nplain,0\n')
    assert read_examples(tmp_path / "a.csv") == [unmask.data.Example("hi, there", 1),
                                                  unmask.data.Example("plain", 0)]
    (tmp_path / "a.tsv").write_text('text\tlabel\nhe said "no\t0\n')
    assert read_examples(tmp_path / "a.tsv")[0].text == 'he said "no'
    (tmp_path / "a.jsonl").write_text(json.dumps({"p": "A man sleeps.", "h": "A person rests.", "y": 0}) + "\n")
    ex = read_examples(tmp_path / "a.jsonl", text_col="p", pair_col="h", label_col="y")
    assert ex == [unmask.data.Example("A man sleeps.", 0, "A person rests.")]


def test_unknown_task_or_split():
    with pytest.raises(UnmaskError, match="unknown task 'mnli'; choose one of sst2, rte"):
        load_task("mnli", "train")
    with pytest.raises(UnmaskError, match="unknown split 'test'; choose one of train, dev"):
        load_task("sst2", "test")


# ----------------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv, contains", [
    (["", ], "input text #0 is empty"),
    (["   "], "input text #0 is empty"),
    (["fine", "--pair", ""], "pair text #0 is empty"),
    (["fine", "--method", "gradient,nope"], "unknown method 'nope'"),
    (["fine", "--method", ","], "no attribution method"),
    (["fine", "--target", "7"], "unknown label 7"),
    (["fine", "--target", "neutral"], "unknown label 'neutral'"),
    ([" ".join(["word"] * 100), "--strict-length"], f"over the model's limit of {LIMIT}"),
])
def test_cli_explain_bad_input(capsys, model_dir, tmp_path, argv, contains):
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    assert_cli_error(capsys, "explain", *argv, "--model", model_dir, "--json", out_json, "--html", out_html,
                     contains=contains)
    assert not out_json.exists() and not out_html.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left either


def test_cli_explain_truncates_long_text_by_default(capsys, model_dir, tmp_path):
    out_json = tmp_path / "r.json"
    with pytest.warns(UserWarning, match="truncated"):
        code, out, _ = run_cli(capsys, "explain", " ".join(["word"] * 100), "--model", model_dir,
                               "--method", "gradient", "--json", out_json)
    assert code == 0 and "JSON written to" in out
    rec = json.loads(out_json.read_text())["gradient"][0]
    assert len(rec["tokens"]) == LIMIT


def test_cli_explain_works_on_good_input(capsys, model_dir, tmp_path):
    """The same command line that fails above succeeds once the input is fixed (the errors are not spurious)."""
    out_json = tmp_path / "r.json"
    code, out, err = run_cli(capsys, "explain", "fine", "--pair", "good", "--model", model_dir, "--target",
                             "positive", "--method", "gradient", "--json", out_json)
    assert code == 0, err
    rec = json.loads(out_json.read_text())["gradient"][0]
    assert rec["target"] == 1 and rec["pair"] == "good"


def test_cli_train_bad_input(capsys, tmp_path, broken_models):
    with pytest.raises(SystemExit) as info:  # argparse rejects the choice itself
        main(["train", "--task", "mnli", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "invalid choice: 'mnli'" in capsys.readouterr().err
    assert_cli_error(capsys, "train", "--task", "sst2", "--out", tmp_path / "o", "--model",
                     broken_models["missing"], contains="model path not found", command="train")
